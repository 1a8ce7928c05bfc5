"""The toy controller ``f(x) = t1 x^2 + t2 x`` of the paper's Figure 1 (scalar in, scalar out)."""

from dataclasses import dataclass

import numpy as np

from ..adjoint.contract import kernel, forward_sig, param_grad_sig, vjp_sig


@kernel(forward_sig)
def quadratic_forward(theta, spec, x, acts, n, nsteps, c):
    for b in range(x.shape[0]):
        c[b, 0] = theta[0] * x[b, 0] ** 2 + theta[1] * x[b, 0]


@kernel(vjp_sig)
def quadratic_vjp(theta, spec, x, acts, n, nsteps, mu, dx, deltas):
    batch = x.shape[0]
    for b in range(batch):
        dx[b, 0] = (2.0 * theta[0] * x[b, 0] + theta[1]) * mu[b, 0]
        deltas[n * batch + b] = mu[b, 0]


@kernel(param_grad_sig)
def quadratic_param_grad(theta, spec, xs, acts, deltas, nsteps, g):
    for r in range(xs.shape[0]):
        g[0] += xs[r, 0] ** 2 * deltas[r]
        g[1] += xs[r, 0] * deltas[r]


@dataclass(frozen=True)
class Quadratic:
    n_inputs = 1
    n_outputs = 1
    n_params = 2
    spec = np.zeros(1, dtype=np.int64)

    forward = staticmethod(quadratic_forward)
    vjp = staticmethod(quadratic_vjp)
    param_grad = staticmethod(quadratic_param_grad)

    def acts_size(self, rows):
        return 0

    def deltas_size(self, rows):
        return rows

    def init(self, rng=None, dtype=np.float64):
        return np.zeros(2, dtype=dtype)
