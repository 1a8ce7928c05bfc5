"""Cart-pole with any number of poles on one cart (the reference's multi-pole dynamics).

State ``(B, 2*(1+P))``: the row-major flattening of ``(B, 1+P, 2)`` = cart ``(x, x_dot)`` then each
pole ``(theta, theta_dot)``; ``theta = pi`` hangs down. Control ``(B, 1)``: the force on the cart.
Semi-implicit Euler, velocity first. The poles interact only through the cart: each pole's angular
acceleration uses the same force, and the cart's acceleration sums the poles' reactions.
"""

import math
from dataclasses import dataclass

import numpy as np

from numba import njit

from ..contract import kernel, loss_grad_sig, loss_sig, step_sig, step_vjp_sig

# indices into the parameter vector
_G, _M_POLE, _M_TOTAL, _LENGTH, _DT = range(5)


def pole_acceleration(th, td, force, g, m, total_mass, length):
    """One pole's angular acceleration and the intermediates its adjoint reuses.

    Plain scalar code, compiled here for the CPU and in :mod:`stablebptt.cuda.engine` for the GPU.
    """
    cos = math.cos(th)
    sin = math.sin(th)
    sintd2 = sin * td * td
    a = (force + m * length * sintd2) / total_mass
    bb = length * (4.0 / 3.0 - m * cos * cos / total_mass)
    tdd = (g * sin - cos * a) / bb
    return cos, sin, sintd2, a, bb, tdd


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


_pole_acceleration = njit(cache=True, inline="always", error_model="numpy")(pole_acceleration)
_pole_adjoint = njit(cache=True, inline="always", error_model="numpy")(pole_adjoint)


@kernel(step_sig)
def cartpole_step(p, x, c, x_next):
    g, m, total_mass, length, dt = p[_G], p[_M_POLE], p[_M_TOTAL], p[_LENGTH], p[_DT]
    ml = m * length
    n_poles = x.shape[1] // 2 - 1
    for b in range(x.shape[0]):
        force = c[b, 0]
        csum = 0.0
        for i in range(n_poles):
            th = x[b, 2 + 2 * i]
            td = x[b, 3 + 2 * i]
            cos, sin, sintd2, a, bb, tdd = _pole_acceleration(th, td, force, g, m, total_mass, length)
            csum += sintd2 - tdd * cos
            td_new = td + dt * tdd
            x_next[b, 3 + 2 * i] = td_new
            x_next[b, 2 + 2 * i] = th + dt * td_new
        xdd = (force + ml * csum) / total_mass
        xd_new = x[b, 1] + dt * xdd
        x_next[b, 1] = xd_new
        x_next[b, 0] = x[b, 0] + dt * xd_new


@kernel(step_vjp_sig)
def cartpole_step_vjp(p, x, c, lam_next, dx, dc):
    g, m, total_mass, length, dt = p[_G], p[_M_POLE], p[_M_TOTAL], p[_LENGTH], p[_DT]
    ml = m * length
    n_poles = x.shape[1] // 2 - 1
    for b in range(x.shape[0]):
        force = c[b, 0]
        # cart: x_new = x + dt*xd_new, xd_new = xd + dt*xdd
        g_xd_new = lam_next[b, 1] + dt * lam_next[b, 0]
        dx[b, 0] = lam_next[b, 0]
        dx[b, 1] = g_xd_new
        g_xdd = dt * g_xd_new
        g_force = g_xdd / total_mass
        g_csum = ml * g_xdd / total_mass
        for i in range(n_poles):
            th, td = x[b, 2 + 2 * i], x[b, 3 + 2 * i]
            forward = _pole_acceleration(th, td, force, g, m, total_mass, length)
            g_th, g_td, g_force_pole = _pole_adjoint(forward, td, lam_next[b, 2 + 2 * i],
                                                     lam_next[b, 3 + 2 * i], g_csum, g, m,
                                                     total_mass, length, dt)
            dx[b, 2 + 2 * i] = g_th
            dx[b, 3 + 2 * i] = g_td
            g_force += g_force_pole
        dc[b, 0] = g_force


@kernel(loss_sig)
def cartpole_loss(p, x):
    """1 - mean cos(theta) over the batch and the poles (0 when all poles stand upright)."""
    n_poles = x.shape[1] // 2 - 1
    total = 0.0
    for b in range(x.shape[0]):
        for i in range(n_poles):
            total += np.cos(x[b, 2 + 2 * i])
    return 1.0 - total / (x.shape[0] * n_poles)


@kernel(loss_grad_sig)
def cartpole_loss_grad(p, x, scale, gx):
    n_poles = x.shape[1] // 2 - 1
    w = scale / (x.shape[0] * n_poles)
    for b in range(x.shape[0]):
        for i in range(n_poles):
            gx[b, 2 + 2 * i] += w * np.sin(x[b, 2 + 2 * i])


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
