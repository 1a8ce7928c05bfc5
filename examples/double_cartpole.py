"""A chaotic outside task: a double pendulum on a cart (two *chained* poles) to be kept upright.

Written only against stablebptt's public extension path, like ``examples/pendulum.py``.

State ``(B, 6)``: cart position ``x``, pole angles ``th1``, ``th2`` (absolute, from the upright,
so 0 is up), then their velocities. Control ``(B, 1)``: a horizontal force on the cart. The
poles are massless rods of lengths ``l1``, ``l2`` carrying point masses ``m1``, ``m2``, the
second hung from the tip of the first; the cart has mass ``m0``. Lagrange's equations give
``M(q) q'' = f(q, q', F)`` with ``q = (x, th1, th2)``, ``m12 = m1 + m2``::

    M = [[m0 + m12,          m12 l1 cos th1,         m2 l2 cos th2        ],
         [m12 l1 cos th1,    m12 l1^2,               m2 l1 l2 cos(th1-th2)],
         [m2 l2 cos th2,     m2 l1 l2 cos(th1-th2),  m2 l2^2              ]]
    f = [F + m12 l1 sin th1 th1'^2 + m2 l2 sin th2 th2'^2,
         m12 g l1 sin th1 - m2 l1 l2 sin(th1-th2) th2'^2,
         m2 g l2 sin th2 + m2 l1 l2 sin(th1-th2) th1'^2]

integrated with semi-implicit Euler (velocities first), as the paper's cart-pole. Released near
the upright, the uncontrolled system falls into chaotic swinging: its maximal Lyapunov exponent
is positive (``main`` below, with ``stablebptt.adjoint.flow.lyapunov_exponent``; README: "A
chaotic task"). The controller must catch
the poles and hold them up; stage loss ``(2 - cos th1 - cos th2) / 2``, a mean over the batch.

The adjoint of the step follows from differentiating ``M a = f`` with ``a = M^-1 f``: for a
cotangent ``abar`` on the accelerations, ``w = M^-1 abar`` (M is symmetric) and every input
``z`` receives ``w . (df/dz - dM/dz a)``; the force receives ``w[0]``.

    stablebptt run examples.double_cartpole:DoubleCartPole --epochs 50
    stablebptt gradcheck examples.double_cartpole:DoubleCartPole
    python -m examples.double_cartpole      # the Lyapunov exponent of the uncontrolled system
"""

import math
from dataclasses import dataclass

import numpy as np

from stablebptt.adjoint.flow import lyapunov_exponent, separation_exponent
from stablebptt.contract import (kernel, loss_grad_sig, loss_sig, sample_kernel, step_sig,
                                 step_vjp_sig)
from stablebptt.tasks import Option, Task, at_least

# the simulator's parameter vector ``p``, named once
M0, M1, M2, L1, L2, GRAVITY, DT = range(7)
# the state's layout
X, TH1, TH2, V, W1, W2 = range(6)


# ---- the physics of one sample: 1-D arrays, ``math`` functions, no allocation ----


@sample_kernel
def _mass_matrix(p, th1, th2):
    """The six distinct entries of the symmetric mass matrix."""
    m12 = p[M1] + p[M2]
    a00 = p[M0] + m12
    a01 = m12 * p[L1] * math.cos(th1)
    a02 = p[M2] * p[L2] * math.cos(th2)
    a11 = m12 * p[L1] * p[L1]
    a12 = p[M2] * p[L1] * p[L2] * math.cos(th1 - th2)
    a22 = p[M2] * p[L2] * p[L2]
    return a00, a01, a02, a11, a12, a22


@sample_kernel
def _solve(p, th1, th2, r0, r1, r2):
    """``M(th1, th2)^-1 r`` by the adjugate (M is symmetric positive definite)."""
    a00, a01, a02, a11, a12, a22 = _mass_matrix(p, th1, th2)
    c00 = a11 * a22 - a12 * a12
    c01 = a02 * a12 - a01 * a22
    c02 = a01 * a12 - a02 * a11
    c11 = a00 * a22 - a02 * a02
    c12 = a01 * a02 - a00 * a12
    c22 = a00 * a11 - a01 * a01
    det = a00 * c00 + a01 * c01 + a02 * c02
    return ((c00 * r0 + c01 * r1 + c02 * r2) / det,
            (c01 * r0 + c11 * r1 + c12 * r2) / det,
            (c02 * r0 + c12 * r1 + c22 * r2) / det)


@sample_kernel
def accelerations(p, x, force):
    """``(x'', th1'', th2'')`` of one state under ``force``."""
    m12, l1, l2, m2 = p[M1] + p[M2], p[L1], p[L2], p[M2]
    th1, th2, w1, w2 = x[TH1], x[TH2], x[W1], x[W2]
    s12 = math.sin(th1 - th2)
    f0 = force + m12 * l1 * math.sin(th1) * w1 * w1 + m2 * l2 * math.sin(th2) * w2 * w2
    f1 = m12 * p[GRAVITY] * l1 * math.sin(th1) - m2 * l1 * l2 * s12 * w2 * w2
    f2 = m2 * p[GRAVITY] * l2 * math.sin(th2) + m2 * l1 * l2 * s12 * w1 * w1
    return _solve(p, th1, th2, f0, f1, f2)


@sample_kernel
def double_cartpole_step_one(p, x, c, x_next, work):
    ax, a1, a2 = accelerations(p, x, c[0])
    dt = p[DT]
    x_next[V] = x[V] + dt * ax
    x_next[W1] = x[W1] + dt * a1
    x_next[W2] = x[W2] + dt * a2
    x_next[X] = x[X] + dt * x_next[V]
    x_next[TH1] = x[TH1] + dt * x_next[W1]
    x_next[TH2] = x[TH2] + dt * x_next[W2]


@sample_kernel
def double_cartpole_step_vjp_one(p, x, c, lam_next, dx, dc, work):
    """The adjoint of ``double_cartpole_step_one``, backwards through its lines."""
    dt = p[DT]
    m12, l1, l2, m2, g = p[M1] + p[M2], p[L1], p[L2], p[M2], p[GRAVITY]
    th1, th2, w1, w2 = x[TH1], x[TH2], x[W1], x[W2]
    # positions: q' = q + dt v'; the new velocities collect both cotangents
    gv, gw1, gw2 = (lam_next[V] + dt * lam_next[X], lam_next[W1] + dt * lam_next[TH1],
                    lam_next[W2] + dt * lam_next[TH2])
    # velocities: v' = v + dt a(q, v, F); w = M^-1 (dt * cotangent of v')
    ax, a1, a2 = accelerations(p, x, c[0])
    u0, u1, u2 = _solve(p, th1, th2, dt * gv, dt * gw1, dt * gw2)
    s1, c1, s2, c2 = math.sin(th1), math.cos(th1), math.sin(th2), math.cos(th2)
    s12, c12 = math.sin(th1 - th2), math.cos(th1 - th2)
    k = m2 * l1 * l2
    # w . (df/dth1 - dM/dth1 a)
    d_th1 = (u0 * m12 * l1 * c1 * w1 * w1 + u1 * (m12 * g * l1 * c1 - k * c12 * w2 * w2)
             + u2 * k * c12 * w1 * w1
             + u0 * m12 * l1 * s1 * a1 + u1 * (m12 * l1 * s1 * ax + k * s12 * a2)
             + u2 * k * s12 * a1)
    # w . (df/dth2 - dM/dth2 a)
    d_th2 = (u0 * m2 * l2 * c2 * w2 * w2 + u1 * k * c12 * w2 * w2
             + u2 * (m2 * g * l2 * c2 - k * c12 * w1 * w1)
             + u0 * m2 * l2 * s2 * a2 - u1 * k * s12 * a2
             + u2 * (m2 * l2 * s2 * ax - k * s12 * a1))
    dx[X] = lam_next[X]
    dx[TH1] = lam_next[TH1] + d_th1
    dx[TH2] = lam_next[TH2] + d_th2
    dx[V] = gv
    dx[W1] = gw1 + 2.0 * w1 * (u0 * m12 * l1 * s1 + u2 * k * s12)
    dx[W2] = gw2 + 2.0 * w2 * (u0 * m2 * l2 * s2 - u1 * k * s12)
    dc[0] = u0


@sample_kernel
def double_cartpole_loss_one(p, x):
    return 0.5 * (2.0 - math.cos(x[TH1]) - math.cos(x[TH2]))


@sample_kernel
def double_cartpole_loss_grad_one(p, x, scale, gx):
    gx[TH1] += scale * 0.5 * math.sin(x[TH1])
    gx[TH2] += scale * 0.5 * math.sin(x[TH2])


# ---- the batch kernels the CPU engine calls: the per-sample physics once per sample ----


@kernel(step_sig)
def double_cartpole_step(p, x, c, x_next):
    work = np.empty(0)
    for b in range(x.shape[0]):
        double_cartpole_step_one(p, x[b], c[b], x_next[b], work)


@kernel(step_vjp_sig)
def double_cartpole_step_vjp(p, x, c, lam_next, dx, dc):
    work = np.empty(0)
    for b in range(x.shape[0]):
        double_cartpole_step_vjp_one(p, x[b], c[b], lam_next[b], dx[b], dc[b], work)


@kernel(loss_sig)
def double_cartpole_loss(p, x):
    """The stage loss is a mean over the batch."""
    total = 0.0
    for b in range(x.shape[0]):
        total += double_cartpole_loss_one(p, x[b])
    return total / x.shape[0]


@kernel(loss_grad_sig)
def double_cartpole_loss_grad(p, x, scale, gx):
    for b in range(x.shape[0]):
        double_cartpole_loss_grad_one(p, x[b], scale / x.shape[0], gx[b])


@dataclass(frozen=True)
class DoubleCartPoleSim:
    """Cart with two chained poles; ``spread`` is how far from the upright the poles start."""

    dt: float = 0.01
    cart_mass: float = 1.0
    masses: tuple = (0.1, 0.1)
    lengths: tuple = (0.5, 0.5)
    gravity: float = 9.8
    spread: float = 0.25

    name = "double_cartpole"
    state_dim = 6
    control_dim = 1
    continuous_reduction = "mean"

    step = staticmethod(double_cartpole_step)
    step_vjp = staticmethod(double_cartpole_step_vjp)
    loss = staticmethod(double_cartpole_loss)
    loss_grad = staticmethod(double_cartpole_loss_grad)
    step_one = staticmethod(double_cartpole_step_one)
    step_vjp_one = staticmethod(double_cartpole_step_vjp_one)
    loss_one = staticmethod(double_cartpole_loss_one)
    loss_grad_one = staticmethod(double_cartpole_loss_grad_one)

    @property
    def params(self):
        values = np.zeros(7)
        values[[M0, M1, M2, L1, L2, GRAVITY, DT]] = (self.cart_mass, *self.masses, *self.lengths,
                                                     self.gravity, self.dt)
        return values

    def sample(self, n, rng):
        """Cart at rest near the origin, pole angles uniform within ``spread`` of the upright,
        angular velocities uniform in [-spread, spread] (``rng`` a RandomState)."""
        states = np.zeros((n, 6))
        states[:, X] = rng.uniform(-0.5, 0.5, n)
        states[:, [TH1, TH2, W1, W2]] = rng.uniform(-self.spread, self.spread, (n, 4))
        return states.astype(np.float32)

    def energy(self, x):
        """Total mechanical energy of states ``(B, 6)`` (a check on the integrator)."""
        p = self.params
        th1, th2, v, w1, w2 = x[:, TH1], x[:, TH2], x[:, V], x[:, W1], x[:, W2]
        vx1, vy1 = v + p[L1] * np.cos(th1) * w1, -p[L1] * np.sin(th1) * w1
        vx2, vy2 = vx1 + p[L2] * np.cos(th2) * w2, vy1 - p[L2] * np.sin(th2) * w2
        kinetic = 0.5 * (p[M0] * v**2 + p[M1] * (vx1**2 + vy1**2) + p[M2] * (vx2**2 + vy2**2))
        height1 = p[L1] * np.cos(th1)
        potential = p[GRAVITY] * (p[M1] * height1 + p[M2] * (height1 + p[L2] * np.cos(th2)))
        return kinetic + potential


def rollout(sim, x0, n_steps, force=0.0):
    """States ``(n_steps + 1, B, 6)`` under a constant force (default: uncontrolled)."""
    states = np.zeros((n_steps + 1,) + np.shape(x0))
    states[0] = x0
    c = np.full((len(x0), 1), float(force))
    for n in range(n_steps):
        sim.step(sim.params, states[n], c, states[n + 1])
    return states


class DoubleCartPole(Task):
    """Catch and balance a double pendulum on a cart, released near the upright."""

    name = "double_cartpole"
    description = ("double pendulum on a cart, chained poles, released within --spread rad of "
                   "the upright and held up (examples/double_cartpole.py); T=2 over 200 steps, "
                   "FINAL loss (2 - cos th1 - cos th2)/2, MLP 2x64, 300 epochs")
    options = (Option("spread", float, 0.25, "start angles and angular velocities within +-spread "
                      "of the upright", at_least(0.0)),)
    preset = dict(time=2.0, n_steps=200, loss_mode="FINAL", width=64, n_data=128, epochs=300,
                  zero_last=True)
    grid = {"mode": ["R", "M", "C", "S"], "clip": ["value", "norm", "none"]}
    panel, panel_title = "clip", "clipping: {}"  # one plot panel per clipping mode
    gradcheck_steps = 20

    def simulator(self, config):
        return DoubleCartPoleSim(dt=config.dt, spread=config.spread)

    def draw_trajectories(self, figure, sim, states, controls, dt):
        """Both pole angles (0 = upright) and the force over time, one column per test state."""
        k = states.shape[1]
        figure.set_size_inches(3.2 * k, 4.5)
        axes = figure.subplots(2, k, squeeze=False, sharex=True)
        t = np.arange(states.shape[0]) * dt
        for s in range(k):
            for i, name in ((TH1, "pole 1"), (TH2, "pole 2")):
                axes[0, s].plot(t, np.angle(np.exp(1j * states[:, s, i])), lw=1, label=name)
            axes[0, s].axhline(0, color="k", lw=0.5)
            axes[0, s].set_ylim(-math.pi, math.pi)
            axes[0, s].set_title(f"test state {s}: angles (0 = upright)", fontsize=7)
            axes[1, s].plot(t[:-1], controls[:, s, 0], color="k", lw=1)
            axes[1, s].set_title("force on the cart", fontsize=7)
            axes[1, s].set_xlabel("t", fontsize=7)
        axes[0, 0].legend(fontsize=6)

    def animation(self, ax, sim, states):
        """Cart and the two chained poles at true proportions."""
        l1, l2 = sim.lengths
        span = max(np.abs(states[:, X]).max() + l1 + l2, 2.0)
        ax.set_xlim(-span, span)
        ax.set_ylim(-(l1 + l2) - 0.2, l1 + l2 + 0.2)
        ax.set_aspect("equal", adjustable="datalim")
        ax.axhline(0, color="k", lw=0.5)
        cart, = ax.plot([], [], "s", color="#073b4c", ms=14)
        poles, = ax.plot([], [], "-o", color="#ef476f", lw=3, ms=4)

        def draw(t):
            x, th1, th2 = states[t, X], states[t, TH1], states[t, TH2]
            x1, y1 = x + l1 * math.sin(th1), l1 * math.cos(th1)
            cart.set_data([x], [0.0])
            poles.set_data([x, x1, x1 + l2 * math.sin(th2)], [0.0, y1, y1 + l2 * math.cos(th2)])
            return [cart, poles]

        return draw


def main():
    """Print the maximal Lyapunov exponent of the uncontrolled system from the task's start
    states: over 20 s at three small time steps (the exponent of the equations), and over the
    task's own horizon and time step (the growth its gradients meet)."""
    starts = DoubleCartPoleSim().sample(16, np.random.RandomState(0)).astype(np.float64)
    print(f"maximal Lyapunov exponent (1/s), {len(starts)} starts within "
          f"{DoubleCartPoleSim.spread} rad of the upright; median (min, max):")
    for dt, seconds in ((0.002, 20.0), (0.001, 20.0), (0.0005, 20.0), (0.01, 2.0)):
        sim = DoubleCartPoleSim(dt=dt)
        steps = int(round(seconds / dt))
        tangent = lyapunov_exponent(sim, starts, steps, dt)
        pairs = separation_exponent(sim, starts, steps, dt)
        drift = np.abs(sim.energy(rollout(sim, starts, steps)[-1]) / sim.energy(starts) - 1)
        print(f"  dt {dt:<6} over {seconds:>4g} s: tangent dynamics {np.median(tangent):.2f} "
              f"({tangent.min():.2f}, {tangent.max():.2f}); nearby trajectories "
              f"{np.median(pairs):.2f} ({pairs.min():.2f}, {pairs.max():.2f}); "
              f"energy drift {np.median(drift):.1%}")


if __name__ == "__main__":
    main()
