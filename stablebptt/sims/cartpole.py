"""Cart-pole with any number of poles on one cart (the reference's multi-pole dynamics).

State ``(B, 2*(1+P))``: the row-major flattening of ``(B, 1+P, 2)`` = cart ``(x, x_dot)`` then each
pole ``(theta, theta_dot)``; ``theta = pi`` hangs down. Control ``(B, 1)``: the force on the cart.
Semi-implicit Euler, velocity first. The poles interact only through the cart: each pole's angular
acceleration uses the same force, and the cart's acceleration sums the poles' reactions.
"""

import math
from dataclasses import dataclass

import numpy as np

from ..contract import kernel, loss_grad_sig, loss_sig, sample_kernel, step_sig, step_vjp_sig

# indices into the parameter vector
_G, _M_POLE, _M_TOTAL, _LENGTH, _DT = range(5)


@sample_kernel
def pole_acceleration(th, td, force, g, m, total_mass, length):
    """One pole's angular acceleration and the intermediates its adjoint reuses."""
    cos = math.cos(th)
    sin = math.sin(th)
    sintd2 = sin * td * td
    a = (force + m * length * sintd2) / total_mass
    bb = length * (4.0 / 3.0 - m * cos * cos / total_mass)
    tdd = (g * sin - cos * a) / bb
    return cos, sin, sintd2, a, bb, tdd


@sample_kernel
def pole_adjoint(forward, td, lam_th, lam_td, g_csum, g, m, total_mass, length, dt):
    """Adjoint of one pole's update: the cotangents of (theta, theta_dot) and the pole's share of
    the force cotangent, given the new state's cotangents, that of the cart's pole sum, and the
    pole's ``forward`` intermediates (the tuple ``pole_acceleration`` returns)."""
    cos, sin, sintd2, a, bb, tdd = forward
    ml = m * length
    # th_new = th + dt*td_new, td_new = td + dt*tdd
    g_td_new = lam_td + dt * lam_th
    g_th = lam_th
    g_td = g_td_new
    g_tdd = dt * g_td_new
    # csum += sintd2 - tdd*cos
    g_sintd2 = g_csum
    g_tdd -= cos * g_csum
    g_cos = -tdd * g_csum
    # tdd = (g*sin - cos*a) / bb
    g_sin = g * g_tdd / bb
    g_cos -= a * g_tdd / bb
    g_a = -cos * g_tdd / bb
    g_bb = -tdd * g_tdd / bb
    # bb = l*(4/3 - m*cos^2/M)
    g_cos -= g_bb * length * 2.0 * m * cos / total_mass
    # a = (force + ml*sintd2) / M
    g_force = g_a / total_mass
    g_sintd2 += ml * g_a / total_mass
    # sintd2 = sin*td^2
    g_sin += td * td * g_sintd2
    g_td += 2.0 * sin * td * g_sintd2
    g_th += cos * g_sin - sin * g_cos
    return g_th, g_td, g_force


# ---- the physics of one sample (run by the CPU batch loops below and by the GPU threads) ----


@sample_kernel
def cartpole_step_one(p, x, c, x_next, work):
    g, m, total_mass, length, dt = p[_G], p[_M_POLE], p[_M_TOTAL], p[_LENGTH], p[_DT]
    force = c[0]
    csum = 0.0
    for i in range(x.shape[0] // 2 - 1):
        th, td = x[2 + 2 * i], x[3 + 2 * i]
        cos, sin, sintd2, a, bb, tdd = pole_acceleration(th, td, force, g, m, total_mass, length)
        csum += sintd2 - tdd * cos
        td_new = td + dt * tdd
        x_next[3 + 2 * i] = td_new
        x_next[2 + 2 * i] = th + dt * td_new
    xdd = (force + m * length * csum) / total_mass
    xd_new = x[1] + dt * xdd
    x_next[1] = xd_new
    x_next[0] = x[0] + dt * xd_new


@sample_kernel
def cartpole_step_vjp_one(p, x, c, lam_next, dx, dc, work):
    g, m, total_mass, length, dt = p[_G], p[_M_POLE], p[_M_TOTAL], p[_LENGTH], p[_DT]
    force = c[0]
    # cart: x_new = x + dt*xd_new, xd_new = xd + dt*xdd
    g_xd_new = lam_next[1] + dt * lam_next[0]
    dx[0] = lam_next[0]
    dx[1] = g_xd_new
    g_xdd = dt * g_xd_new
    g_force = g_xdd / total_mass
    g_csum = m * length * g_xdd / total_mass
    for i in range(x.shape[0] // 2 - 1):
        th, td = x[2 + 2 * i], x[3 + 2 * i]
        forward = pole_acceleration(th, td, force, g, m, total_mass, length)
        g_th, g_td, g_force_pole = pole_adjoint(forward, td, lam_next[2 + 2 * i],
                                                lam_next[3 + 2 * i], g_csum, g, m, total_mass,
                                                length, dt)
        dx[2 + 2 * i] = g_th
        dx[3 + 2 * i] = g_td
        g_force += g_force_pole
    dc[0] = g_force


@sample_kernel
def cartpole_loss_one(p, x):
    """1 - mean cos(theta) over the poles (0 when all poles stand upright)."""
    n_poles = x.shape[0] // 2 - 1
    total = 0.0
    for i in range(n_poles):
        total += math.cos(x[2 + 2 * i])
    return 1.0 - total / n_poles


@sample_kernel
def cartpole_loss_grad_one(p, x, scale, gx):
    n_poles = x.shape[0] // 2 - 1
    for i in range(n_poles):
        gx[2 + 2 * i] += scale / n_poles * math.sin(x[2 + 2 * i])


# ---- the CPU batch kernels: the per-sample physics once per sample ----


@kernel(step_sig)
def cartpole_step(p, x, c, x_next):
    work = np.empty(0)
    for b in range(x.shape[0]):
        cartpole_step_one(p, x[b], c[b], x_next[b], work)


@kernel(step_vjp_sig)
def cartpole_step_vjp(p, x, c, lam_next, dx, dc):
    work = np.empty(0)
    for b in range(x.shape[0]):
        cartpole_step_vjp_one(p, x[b], c[b], lam_next[b], dx[b], dc[b], work)


@kernel(loss_sig)
def cartpole_loss(p, x):
    """The batch mean of :func:`cartpole_loss_one`."""
    total = 0.0
    for b in range(x.shape[0]):
        total += cartpole_loss_one(p, x[b])
    return total / x.shape[0]


@kernel(loss_grad_sig)
def cartpole_loss_grad(p, x, scale, gx):
    for b in range(x.shape[0]):
        cartpole_loss_grad_one(p, x[b], scale / x.shape[0], gx[b])


@dataclass(frozen=True)
class CartPole:
    """Physical parameters; defaults are the reference's (total mass fixed for any pole count)."""

    poles: int = 1
    dt: float = 0.01
    gravity: float = 9.8
    pole_mass: float = 0.1
    total_mass: float = 1.1
    length: float = 0.5

    name = "cartpole"
    control_dim = 1
    # the reference's CONTINUOUS loss is a mean over time as well as batch and poles
    continuous_reduction = "mean"

    step = staticmethod(cartpole_step)
    step_vjp = staticmethod(cartpole_step_vjp)
    loss = staticmethod(cartpole_loss)
    loss_grad = staticmethod(cartpole_loss_grad)
    step_one = staticmethod(cartpole_step_one)
    step_vjp_one = staticmethod(cartpole_step_vjp_one)
    loss_one = staticmethod(cartpole_loss_one)
    loss_grad_one = staticmethod(cartpole_loss_grad_one)
    work_size = 0

    def __post_init__(self):
        if self.poles < 1:
            raise ValueError(f"poles must be >= 1, got {self.poles}")
        if not self.dt > 0:
            raise ValueError(f"dt must be > 0, got {self.dt}")

    @property
    def state_dim(self):
        return 2 * (1 + self.poles)

    @property
    def params(self):
        return np.array([self.gravity, self.pole_mass, self.total_mass, self.length, self.dt])

    def sample(self, n, rng):
        """The reference sampler: x, x_dot, theta_dot uniform in [-1, 1], theta = pi +- pi/6.

        ``rng`` is a legacy ``numpy.random.RandomState`` so that a seed reproduces the reference's
        ``np.random.seed(seed); np.random.rand(...)`` draws bit for bit.
        """
        states = rng.rand(n, self.poles + 1, 2).astype(np.float32) * 2 - 1
        states[:, 1:, 0] = np.pi + states[:, 1:, 0] * np.pi / 6
        return states.reshape(n, self.state_dim)

    def datasets(self, n, rng):
        """Train and test sets as the reference draws them: n train states, then n test states."""
        return self.sample(n, rng), self.sample(n, rng)
