"""An outside task, written only against stablebptt's public extension path: a torque-driven
pendulum swinging up from hanging.

State ``(B, 2)``: angle ``theta`` (0 hangs down, pi stands up) and angular velocity ``omega``.
Control ``(B, 1)``: a torque. Semi-implicit Euler (velocity first)::

    omega' = omega + dt * (-(g / l) sin(theta) - damping * omega + torque)
    theta' = theta + dt * omega'

Stage loss: ``(1 + cos theta) / 2``, a mean over the batch: 0 upright, 1 hanging.

The physics is written once per sample (``*_one``) and looped over the batch for the CPU; the
same per-sample functions run on the GPU with ``--device cuda``.

Use it from the command line by its module path (run from the folder that holds ``examples/``)::

    stablebptt run examples.pendulum:Pendulum --epochs 50
    stablebptt gradcheck examples.pendulum:Pendulum
    stablebptt sweep examples.pendulum:Pendulum --seeds 0,1 --epochs 50
    stablebptt plot sweeps/pendulum

or register it from Python: ``stablebptt.tasks.register(Pendulum)``.
"""

import math
from dataclasses import dataclass

import numpy as np

from stablebptt.contract import (kernel, loss_grad_sig, loss_sig, sample_kernel, step_sig,
                                 step_vjp_sig)
from stablebptt.tasks import Option, Task, at_least

# the simulator's parameter vector ``p``, named once
GRAVITY_OVER_LENGTH, DAMPING, DT = range(3)


# ---- the physics of one sample: 1-D arrays, ``math`` functions, no allocation ----
# (compiled for the CPU batch kernels below and, with --device cuda, for the GPU's threads)


@sample_kernel
def pendulum_step_one(p, x, c, x_next, work):
    omega = x[1] + p[DT] * (-p[GRAVITY_OVER_LENGTH] * math.sin(x[0]) - p[DAMPING] * x[1] + c[0])
    x_next[1] = omega
    x_next[0] = x[0] + p[DT] * omega


@sample_kernel
def pendulum_step_vjp_one(p, x, c, lam_next, dx, dc, work):
    """The adjoint of ``pendulum_step_one``, line by line backwards."""
    # theta' = theta + dt * omega'
    g_omega_new = lam_next[1] + p[DT] * lam_next[0]
    # omega' = omega + dt * (-(g/l) sin theta - damping * omega + torque)
    dx[0] = lam_next[0] - p[DT] * p[GRAVITY_OVER_LENGTH] * math.cos(x[0]) * g_omega_new
    dx[1] = (1.0 - p[DT] * p[DAMPING]) * g_omega_new
    dc[0] = p[DT] * g_omega_new


@sample_kernel
def pendulum_loss_one(p, x):
    return 0.5 * (1.0 + math.cos(x[0]))


@sample_kernel
def pendulum_loss_grad_one(p, x, scale, gx):
    gx[0] -= scale * 0.5 * math.sin(x[0])


# ---- the batch kernels the CPU engine calls: the per-sample physics once per sample ----


@kernel(step_sig)
def pendulum_step(p, x, c, x_next):
    work = np.empty(0)
    for b in range(x.shape[0]):
        pendulum_step_one(p, x[b], c[b], x_next[b], work)


@kernel(step_vjp_sig)
def pendulum_step_vjp(p, x, c, lam_next, dx, dc):
    work = np.empty(0)
    for b in range(x.shape[0]):
        pendulum_step_vjp_one(p, x[b], c[b], lam_next[b], dx[b], dc[b], work)


@kernel(loss_sig)
def pendulum_loss(p, x):
    """The stage loss is a mean over the batch."""
    total = 0.0
    for b in range(x.shape[0]):
        total += pendulum_loss_one(p, x[b])
    return total / x.shape[0]


@kernel(loss_grad_sig)
def pendulum_loss_grad(p, x, scale, gx):
    for b in range(x.shape[0]):
        pendulum_loss_grad_one(p, x[b], scale / x.shape[0], gx[b])


@dataclass(frozen=True)
class PendulumSim:
    """The simulator: sizes, the parameter vector, the batch kernels (the CPU's) and per-sample
    kernels (the GPU's), and an initial-state sampler."""

    dt: float = 0.05
    gravity_over_length: float = 9.8
    damping: float = 0.1

    name = "pendulum"
    state_dim = 2
    control_dim = 1
    continuous_reduction = "mean"  # a CONTINUOUS loss averages the stage losses over time

    step = staticmethod(pendulum_step)
    step_vjp = staticmethod(pendulum_step_vjp)
    loss = staticmethod(pendulum_loss)
    loss_grad = staticmethod(pendulum_loss_grad)
    step_one = staticmethod(pendulum_step_one)
    step_vjp_one = staticmethod(pendulum_step_vjp_one)
    loss_one = staticmethod(pendulum_loss_one)
    loss_grad_one = staticmethod(pendulum_loss_grad_one)

    @property
    def params(self):
        values = np.zeros(3)
        values[[GRAVITY_OVER_LENGTH, DAMPING, DT]] = self.gravity_over_length, self.damping, self.dt
        return values

    def sample(self, n, rng):
        """Hanging within +-30 degrees, angular velocity in [-1, 1] (``rng`` a RandomState)."""
        states = rng.uniform(-1.0, 1.0, size=(n, 2))
        states[:, 0] *= math.pi / 6
        return states.astype(np.float32)


class Pendulum(Task):
    """The task: its settings, preset and sweep grid, and how a run is built and drawn."""

    name = "pendulum"
    description = "torque-driven pendulum swing-up (examples/pendulum.py), T=3 over 60 steps"
    options = (Option("damping", float, 0.1, "friction coefficient",
                      lambda value, settings: None if value >= 0 else "must be >= 0", short="damp"),
               Option("gravity", float, 9.8, "g / l of the pendulum", at_least(0.0)))
    preset = dict(time=3.0, n_steps=60, loss_mode="FINAL", width=32, n_data=64, epochs=100,
                  lr=3e-3)
    grid = {"mode": ["R", "M", "C", "S"], "clip": ["norm"]}
    gradcheck_steps = 20

    def simulator(self, config):
        return PendulumSim(dt=config.dt, gravity_over_length=config.gravity, damping=config.damping)

    def draw_trajectories(self, figure, sim, states, controls, dt):
        """The angle (pi = upright) and the torque over time, all test states in one panel."""
        figure.set_size_inches(5.0, 4.0)
        top, bottom = figure.subplots(2, 1, sharex=True)
        t = np.arange(states.shape[0]) * dt
        top.plot(t, states[:, :, 0], lw=1)
        top.axhline(math.pi, color="k", lw=0.5)
        top.set_ylabel("theta (pi = upright)", fontsize=8)
        bottom.plot(t[:-1], controls[:, :, 0], lw=1)
        bottom.set_ylabel("torque", fontsize=8)
        bottom.set_xlabel("t", fontsize=8)

    def animation(self, ax, sim, states):
        """The pendulum as a rod from the pivot."""
        ax.set_xlim(-1.2, 1.2)
        ax.set_ylim(-1.2, 1.2)
        ax.set_aspect("equal")
        rod, = ax.plot([], [], "-o", color="#ef476f", lw=3, ms=6)

        def draw(t):
            theta = states[t, 0]
            rod.set_data([0.0, math.sin(theta)], [0.0, -math.cos(theta)])
            return [rod]

        return draw
