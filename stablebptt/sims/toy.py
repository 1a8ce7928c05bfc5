"""The paper's toy problems: a state moved by its control, ``s(x, c) = x + c``.

Stage loss ``1/2 mean_b |x - y|^2`` for a target ``y``. Scalar, with the
:class:`~stablebptt.controllers.Quadratic` controller ``f(x) = t1 x^2 + t2 x``, ``x0 = -0.3``,
``y = 2`` and 4 steps, this is Figure 1's problem; in 2-D with a constant control and one step,
the loss is ``|theta|^2 / 2``, Figure 2's.
"""

from dataclasses import dataclass

import numpy as np

from ..contract import kernel, loss_grad_sig, loss_sig, sample_kernel, step_sig, step_vjp_sig


# ---- one sample (run by the CPU batch loops below and by the GPU threads) ----


@sample_kernel
def shift_step_one(p, x, c, x_next, work):
    for i in range(x.shape[0]):
        x_next[i] = x[i] + c[i]


@sample_kernel
def shift_step_vjp_one(p, x, c, lam_next, dx, dc, work):
    for i in range(x.shape[0]):
        dx[i] = lam_next[i]
        dc[i] = lam_next[i]


@sample_kernel
def target_loss_one(p, x):
    total = 0.0
    for i in range(x.shape[0]):
        total += 0.5 * (x[i] - p[i]) ** 2
    return total


@sample_kernel
def target_loss_grad_one(p, x, scale, gx):
    for i in range(x.shape[0]):
        gx[i] += scale * (x[i] - p[i])


# ---- the CPU batch kernels: the per-sample code once per sample ----


@kernel(step_sig)
def shift_step(p, x, c, x_next):
    work = np.empty(0)
    for b in range(x.shape[0]):
        shift_step_one(p, x[b], c[b], x_next[b], work)


@kernel(step_vjp_sig)
def shift_step_vjp(p, x, c, lam_next, dx, dc):
    work = np.empty(0)
    for b in range(x.shape[0]):
        shift_step_vjp_one(p, x[b], c[b], lam_next[b], dx[b], dc[b], work)


@kernel(loss_sig)
def target_loss(p, x):
    """The batch mean of :func:`target_loss_one`."""
    total = 0.0
    for b in range(x.shape[0]):
        total += target_loss_one(p, x[b])
    return total / x.shape[0]


@kernel(loss_grad_sig)
def target_loss_grad(p, x, scale, gx):
    for b in range(x.shape[0]):
        target_loss_grad_one(p, x[b], scale / x.shape[0], gx[b])


@dataclass(frozen=True)
class Shift:
    """``x_{n+1} = x_n + c_n``, loss ``1/2 |x - target|^2``; ``target`` a number or a point."""

    target: object = 2.0

    name = "toy"
    continuous_reduction = "sum"

    @property
    def state_dim(self):
        return int(np.size(self.target))

    control_dim = state_dim

    step = staticmethod(shift_step)
    step_vjp = staticmethod(shift_step_vjp)
    loss = staticmethod(target_loss)
    loss_grad = staticmethod(target_loss_grad)
    step_one = staticmethod(shift_step_one)
    step_vjp_one = staticmethod(shift_step_vjp_one)
    loss_one = staticmethod(target_loss_one)
    loss_grad_one = staticmethod(target_loss_grad_one)

    @property
    def params(self):
        return np.atleast_1d(np.asarray(self.target, dtype=np.float64)).copy()

    def sample(self, n, rng):
        """States uniform in [-1, 1] in every component (float32, ``rng`` a RandomState)."""
        return (2 * rng.rand(n, self.state_dim) - 1).astype(np.float32)
