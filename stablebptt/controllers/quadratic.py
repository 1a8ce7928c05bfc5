"""Toy controllers: ``f(x) = t1 x^2 + t2 x`` (the paper's Figure 1) and a constant ``f(x) = theta``."""

from dataclasses import dataclass

import numpy as np

from ..contract import forward_sig, kernel, param_grad_sig, sample_kernel, vjp_sig
from ._params import FlatParameters


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


@sample_kernel
def quadratic_forward_one(theta, spec, x, acts, c, work):
    c[0] = theta[0] * x[0] ** 2 + theta[1] * x[0]


@sample_kernel
def quadratic_backward_one(theta, spec, x, acts, mu, dx, g, work):
    dx[0] = (2.0 * theta[0] * x[0] + theta[1]) * mu[0]
    g[0] += x[0] ** 2 * mu[0]
    g[1] += x[0] * mu[0]


@dataclass(frozen=True)
class Quadratic(FlatParameters):
    """``f(x) = t1 x^2 + t2 x`` of a scalar state, the paper's Figure 1 controller."""

    n_inputs = 1
    n_outputs = 1
    spec = np.zeros(1, dtype=np.int64)

    steps_as_rows = True  # step n's samples are rows n*B..(n+1)*B of every buffer block
    forward = staticmethod(quadratic_forward)
    vjp = staticmethod(quadratic_vjp)
    param_grad = staticmethod(quadratic_param_grad)
    forward_one = staticmethod(quadratic_forward_one)
    backward_one = staticmethod(quadratic_backward_one)

    def acts_size(self, rows):
        return 0

    delta_widths = (1,)

    def deltas_size(self, rows):
        return rows * sum(self.delta_widths)

    def layer_shapes(self):
        return [("theta", (2,))]

    def init(self, rng=None, dtype=np.float64):
        return np.zeros(2, dtype=dtype)


@kernel(forward_sig)
def constant_forward(theta, spec, x, acts, n, nsteps, c):
    for b in range(x.shape[0]):
        c[b, :] = theta


@kernel(vjp_sig)
def constant_vjp(theta, spec, x, acts, n, nsteps, mu, dx, deltas):
    batch, dim = mu.shape
    dx[:, :] = 0.0
    for b in range(batch):
        for i in range(dim):
            deltas[(n * batch + b) * dim + i] = mu[b, i]


@kernel(param_grad_sig)
def constant_param_grad(theta, spec, xs, acts, deltas, nsteps, g):
    dim = g.shape[0]
    for r in range(xs.shape[0]):
        for i in range(dim):
            g[i] += deltas[r * dim + i]


@sample_kernel
def constant_forward_one(theta, spec, x, acts, c, work):
    for i in range(c.shape[0]):
        c[i] = theta[i]


@sample_kernel
def constant_backward_one(theta, spec, x, acts, mu, dx, g, work):
    for i in range(dx.shape[0]):
        dx[i] = 0.0
    for i in range(mu.shape[0]):
        g[i] += mu[i]


@dataclass(frozen=True)
class Constant(FlatParameters):
    """An open-loop control that ignores the state: ``f(x) = theta`` (``n_outputs`` parameters)."""

    n_inputs: int
    n_outputs: int

    spec = np.zeros(1, dtype=np.int64)
    steps_as_rows = True  # step n's samples are rows n*B..(n+1)*B of every buffer block
    forward = staticmethod(constant_forward)
    vjp = staticmethod(constant_vjp)
    param_grad = staticmethod(constant_param_grad)
    forward_one = staticmethod(constant_forward_one)
    backward_one = staticmethod(constant_backward_one)

    def layer_shapes(self):
        return [("theta", (self.n_outputs,))]

    def acts_size(self, rows):
        return 0

    @property
    def delta_widths(self):
        return (self.n_outputs,)

    def deltas_size(self, rows):
        return rows * sum(self.delta_widths)

    def init(self, rng=None, dtype=np.float64):
        return np.zeros(self.n_outputs, dtype=dtype)
