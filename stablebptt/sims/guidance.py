"""Guidance by repulsion: drivers herd evaders in 2-D (the reference's driver-evader system).

State ``(B, 4*(n_drivers+n_evaders))``: the row-major flattening of ``(B, agents, 2, 2)`` =
per agent ``(x, y, vx, vy)``, drivers first. Control ``(B, 2*n_drivers)``: per driver two
coefficients, along ``driver - sum of evader positions`` (the reference sums, it does not average)
and along that vector turned by 90 degrees. Explicit Euler: positions move with the old velocities.

Pair forces have the form ``phi(d) r`` with ``d = eps + |r|``:

- evaders are repelled by every driver: ``c_evade * phi(d) (x_driver - x_evader)``, ``phi = -1/d^2``;
- evaders flock: on evader k from i, ``c_flock ((d_flock/d - 1)/d) (x_i - x_k)``;
- drivers spread: on driver j from i, ``c_spread (x_j - x_i) / d^2``;
- friction ``-c_fric v`` on both (the reference's ``c_drive`` is unused, so it is absent here).
"""

import math
from dataclasses import dataclass

import numpy as np

from ..contract import kernel, loss_grad_sig, loss_sig, sample_kernel, step_sig, step_vjp_sig

# parameter vector layout
(_DT, _N_DRIVERS, _EPS, _C_EVADE, _C_FRIC_EV, _C_FLOCK, _D_FLOCK, _C_SPREAD, _C_FRIC_DR,
 _TARGET_X, _TARGET_Y) = range(11)
SPREAD, EVADE, FLOCK = 0, 1, 2  # pair-force kinds


@sample_kernel
def radial_profile(kind, d, d_flock):
    """The radial profile of a pair force and its derivative in ``d``, from one division (a
    division or square root costs as much as ~10 multiplications; every pair needs one of each)."""
    inv = 1.0 / d
    inv2 = inv * inv
    if kind == SPREAD:
        return inv2, -2.0 * inv2 * inv
    if kind == EVADE:
        return -inv2, 2.0 * inv2 * inv
    return (d_flock * inv - 1.0) * inv, (1.0 - 2.0 * d_flock * inv) * inv2


@sample_kernel
def _pair_force(kind, rx, ry, eps, d_flock):
    norm = math.sqrt(rx * rx + ry * ry)
    phi, _ = radial_profile(kind, eps + norm, d_flock)
    return phi * rx, phi * ry


@sample_kernel
def _pair_force_vjp_scatter(kind, x, dx, i, k, wx, wy, eps, d_flock):
    """Adjoint of a force ``phi(eps + |r|) r``, ``r = x_i - x_k``, with cotangent ``w``: the
    cotangent of ``r`` added to agent i's position and subtracted from agent k's."""
    rx, ry = x[4 * i] - x[4 * k], x[4 * i + 1] - x[4 * k + 1]
    norm = math.sqrt(rx * rx + ry * ry)
    phi, dphi = radial_profile(kind, eps + norm, d_flock)
    gx, gy = phi * wx, phi * wy
    if norm > 0.0:  # d|r|/dr = r/|r|; at r = 0 the radial term vanishes with r
        radial = dphi * (rx * wx + ry * wy) / norm
        gx += radial * rx
        gy += radial * ry
    dx[4 * i] += gx
    dx[4 * i + 1] += gy
    dx[4 * k] -= gx
    dx[4 * k + 1] -= gy


@sample_kernel
def _accelerations(p, x, c, acc):
    """Accelerations of all agents of one sample into ``acc`` (2 per agent)."""
    n_dr = int(p[_N_DRIVERS])
    n_agents = x.shape[0] // 4
    eps, d_flock = p[_EPS], p[_D_FLOCK]
    cx, cy = 0.0, 0.0
    for k in range(n_dr, n_agents):
        cx += x[4 * k]
        cy += x[4 * k + 1]
    for j in range(n_dr):
        vx, vy = x[4 * j] - cx, x[4 * j + 1] - cy
        c0, c1 = c[2 * j], c[2 * j + 1]
        ax = c0 * vx - c1 * vy - p[_C_FRIC_DR] * x[4 * j + 2]
        ay = c0 * vy + c1 * vx - p[_C_FRIC_DR] * x[4 * j + 3]
        for i in range(n_dr):
            if i != j:
                fx, fy = _pair_force(SPREAD, x[4 * j] - x[4 * i], x[4 * j + 1] - x[4 * i + 1], eps,
                                     d_flock)
                ax += p[_C_SPREAD] * fx
                ay += p[_C_SPREAD] * fy
        acc[2 * j], acc[2 * j + 1] = ax, ay
    for k in range(n_dr, n_agents):
        ax = -p[_C_FRIC_EV] * x[4 * k + 2]
        ay = -p[_C_FRIC_EV] * x[4 * k + 3]
        for i in range(n_dr):
            fx, fy = _pair_force(EVADE, x[4 * i] - x[4 * k], x[4 * i + 1] - x[4 * k + 1], eps, d_flock)
            ax += p[_C_EVADE] * fx
            ay += p[_C_EVADE] * fy
        for i in range(n_dr, n_agents):
            if i != k:
                fx, fy = _pair_force(FLOCK, x[4 * i] - x[4 * k], x[4 * i + 1] - x[4 * k + 1], eps,
                                     d_flock)
                ax += p[_C_FLOCK] * fx
                ay += p[_C_FLOCK] * fy
        acc[2 * k], acc[2 * k + 1] = ax, ay


# ---- the physics of one sample (run by the CPU batch loops below and by the GPU threads) ----


@sample_kernel
def guidance_step_one(p, x, c, x_next, work):
    """``work`` holds the agents' accelerations (2 per agent)."""
    dt = p[_DT]
    _accelerations(p, x, c, work)
    for a in range(x.shape[0] // 4):
        x_next[4 * a] = x[4 * a] + dt * x[4 * a + 2]
        x_next[4 * a + 1] = x[4 * a + 1] + dt * x[4 * a + 3]
        x_next[4 * a + 2] = x[4 * a + 2] + dt * work[2 * a]
        x_next[4 * a + 3] = x[4 * a + 3] + dt * work[2 * a + 1]


@sample_kernel
def guidance_step_vjp_one(p, x, c, lam_next, dx_out, dc, work):
    """``work`` accumulates the state cotangent in float64 (a float32 ``dx_out`` would be
    converted and rounded at each of the pair forces' additions), copied out at the end."""
    dx = work[:x.shape[0]]
    dt = p[_DT]
    n_dr = int(p[_N_DRIVERS])
    n_agents = x.shape[0] // 4
    eps, d_flock = p[_EPS], p[_D_FLOCK]
    # x' = x + dt v (old v), v' = v + dt a(x, v, c)
    for a in range(n_agents):
        dx[4 * a] = lam_next[4 * a]
        dx[4 * a + 1] = lam_next[4 * a + 1]
        dx[4 * a + 2] = lam_next[4 * a + 2] + dt * lam_next[4 * a]
        dx[4 * a + 3] = lam_next[4 * a + 3] + dt * lam_next[4 * a + 1]
    cx, cy = 0.0, 0.0
    for k in range(n_dr, n_agents):
        cx += x[4 * k]
        cy += x[4 * k + 1]
    g_cx, g_cy = 0.0, 0.0  # cotangent of the evaders' position sum
    for j in range(n_dr):
        gax, gay = dt * lam_next[4 * j + 2], dt * lam_next[4 * j + 3]
        dx[4 * j + 2] -= p[_C_FRIC_DR] * gax
        dx[4 * j + 3] -= p[_C_FRIC_DR] * gay
        # control force c0 v + c1 rot90(v), v = x_j - sum of evaders
        vx, vy = x[4 * j] - cx, x[4 * j + 1] - cy
        c0, c1 = c[2 * j], c[2 * j + 1]
        dc[2 * j] = gax * vx + gay * vy
        dc[2 * j + 1] = -gax * vy + gay * vx
        gvx = c0 * gax + c1 * gay
        gvy = c0 * gay - c1 * gax
        dx[4 * j] += gvx
        dx[4 * j + 1] += gvy
        g_cx -= gvx
        g_cy -= gvy
        for i in range(n_dr):
            if i != j:
                _pair_force_vjp_scatter(SPREAD, x, dx, j, i, p[_C_SPREAD] * gax,
                                        p[_C_SPREAD] * gay, eps, d_flock)
    for k in range(n_dr, n_agents):
        gax, gay = dt * lam_next[4 * k + 2], dt * lam_next[4 * k + 3]
        dx[4 * k] += g_cx
        dx[4 * k + 1] += g_cy
        dx[4 * k + 2] -= p[_C_FRIC_EV] * gax
        dx[4 * k + 3] -= p[_C_FRIC_EV] * gay
        for i in range(n_dr):
            _pair_force_vjp_scatter(EVADE, x, dx, i, k, p[_C_EVADE] * gax, p[_C_EVADE] * gay,
                                    eps, d_flock)
        for i in range(n_dr, n_agents):
            if i != k:
                _pair_force_vjp_scatter(FLOCK, x, dx, i, k, p[_C_FLOCK] * gax,
                                        p[_C_FLOCK] * gay, eps, d_flock)
    for s in range(x.shape[0]):
        dx_out[s] = dx[s]


@sample_kernel
def guidance_loss_one(p, x):
    """Mean squared distance of the evaders to the target (mean over evaders and axes)."""
    n_dr = int(p[_N_DRIVERS])
    n_agents = x.shape[0] // 4
    total = 0.0
    for k in range(n_dr, n_agents):
        total += (x[4 * k] - p[_TARGET_X]) ** 2 + (x[4 * k + 1] - p[_TARGET_Y]) ** 2
    return total / ((n_agents - n_dr) * 2)


@sample_kernel
def guidance_loss_grad_one(p, x, scale, gx):
    n_dr = int(p[_N_DRIVERS])
    n_agents = x.shape[0] // 4
    w = 2.0 * scale / ((n_agents - n_dr) * 2)
    for k in range(n_dr, n_agents):
        gx[4 * k] += w * (x[4 * k] - p[_TARGET_X])
        gx[4 * k + 1] += w * (x[4 * k + 1] - p[_TARGET_Y])


# ---- the CPU batch kernels: the per-sample physics once per sample ----


@kernel(step_sig)
def guidance_step(p, x, c, x_next):
    work = np.empty(x.shape[1] // 2)
    for b in range(x.shape[0]):
        guidance_step_one(p, x[b], c[b], x_next[b], work)


@kernel(step_vjp_sig)
def guidance_step_vjp(p, x, c, lam_next, dx, dc):
    work = np.empty(x.shape[1])
    for b in range(x.shape[0]):
        guidance_step_vjp_one(p, x[b], c[b], lam_next[b], dx[b], dc[b], work)


@kernel(loss_sig)
def guidance_loss(p, x):
    """The batch mean of :func:`guidance_loss_one`."""
    total = 0.0
    for b in range(x.shape[0]):
        total += guidance_loss_one(p, x[b])
    return total / x.shape[0]


@kernel(loss_grad_sig)
def guidance_loss_grad(p, x, scale, gx):
    for b in range(x.shape[0]):
        guidance_loss_grad_one(p, x[b], scale / x.shape[0], gx[b])


@dataclass(frozen=True)
class Guidance:
    """Driver-evader system; defaults are the reference's constants (T = 4 over 60 steps)."""

    drivers: int = 2
    evaders: int = 4
    dt: float = 4.0 / 60
    epsilon: float = 0.1
    c_evade: float = 15.0
    c_friction_evader: float = 4.0
    c_flock: float = 0.2
    d_flock: float = 0.5
    c_spread: float = 0.2
    c_friction_driver: float = 1.0
    target: tuple = (0.0, 0.0)

    name = "guidance"
    # the reference's CONTINUOUS loss is a mean over time too
    continuous_reduction = "mean"

    step = staticmethod(guidance_step)
    step_vjp = staticmethod(guidance_step_vjp)
    loss = staticmethod(guidance_loss)
    loss_grad = staticmethod(guidance_loss_grad)
    step_one = staticmethod(guidance_step_one)
    step_vjp_one = staticmethod(guidance_step_vjp_one)
    loss_one = staticmethod(guidance_loss_one)
    loss_grad_one = staticmethod(guidance_loss_grad_one)

    def __post_init__(self):
        if self.drivers < 1:
            raise ValueError(f"drivers must be >= 1, got {self.drivers}")
        if self.evaders < 1:
            raise ValueError(f"evaders must be >= 1, got {self.evaders}")
        if len(self.target) != 2:
            raise ValueError(f"target must be a point (x, y), got {self.target}")

    @property
    def state_dim(self):
        return 4 * (self.drivers + self.evaders)

    @property
    def control_dim(self):
        return 2 * self.drivers

    @property
    def work_size(self):
        """Per-sample scratch: the agents' accelerations (``step_one``), the state cotangent
        (``step_vjp_one``)."""
        return self.state_dim

    @property
    def params(self):
        return np.array([self.dt, self.drivers, self.epsilon, self.c_evade, self.c_friction_evader,
                         self.c_flock, self.d_flock, self.c_spread, self.c_friction_driver,
                         self.target[0], self.target[1]], dtype=np.float64)

    def sample(self, n, rng):
        """The reference sampler: drivers in the annulus 3-4, the evaders' centre in the annulus 1-2,
        each evader within +-0.5 of it, all at rest (float32, ``rng`` a legacy RandomState)."""
        def rand():
            return rng.rand(n).astype(np.float32)

        def annulus(r_min, r_max):
            phi = 2 * np.pi * rand()
            r = (r_max - r_min) * rand() + r_min
            return np.stack([r * np.cos(phi), r * np.sin(phi)], axis=-1)

        def square(half):
            return np.stack([2 * half * rand() - half, 2 * half * rand() - half], axis=-1)

        states = np.zeros((n, self.drivers + self.evaders, 2, 2), dtype=np.float32)
        for k in range(self.drivers):
            states[:, k, 0, :] = annulus(3, 4)
        centre = annulus(1, 2)
        for k in range(self.evaders):
            states[:, self.drivers + k, 0, :] = centre + square(0.5)
        return states.reshape(n, self.state_dim)

    def datasets(self, n, rng):
        """Train and test sets as the reference draws them: 2n states at once, split in halves."""
        states = self.sample(2 * n, rng)
        return states[:n], states[n:]

    def positions(self, states):
        """``(..., agents, 2)`` positions of flat states ``(..., S)``."""
        return states.reshape(states.shape[:-1] + (self.drivers + self.evaders, 2, 2))[..., 0, :]
