"""Gradient flow along the paths of the backward sweep: the numbers behind ``stablebptt diagnose``.

The engine (:mod:`.engine`) returns only a mode's gradient. Here the same recursion (the
recursion of :mod:`stablebptt.adjoint.engine`)

    lam_n = w_n dl/dx_n + a (ds/dx)^T lam_{n+1} + b (df/dx)^T mu_n

runs step by step in Python over a stored trajectory, calling the task's batch kernels, so that
every adjoint ``lam_n`` can be looked at: along the regular path ``(a, b) = (1, 1)``, the physics
path ``(1, 0)`` and the network path ``(0, 1)``. All of it runs in float64; a diagnosis is a few
hundred kernel calls, so Python's loop costs nothing worth compiling away.

Also here: the gradient norm as a function of the horizon (one forward pass, one sweep per
horizon), and the per-step Jacobians of the physics ``ds/dx``, of the network path
``ds/dc df/dx`` and of the closed loop (their sum), built densely from vector-Jacobian products
(one product per state component) so that their spectral norms are exact (the state of every
task here has at most a few hundred components); and, for any simulator, the maximal Lyapunov
exponent of its uncontrolled dynamics, from the same Jacobians and from nearby trajectories.
"""

from dataclasses import dataclass

import numpy as np

from ..contract import capability
from .engine import stage_weights
from .modes import parse_mode

PATHS = {"regular": (1.0, 1.0), "physics": (1.0, 0.0), "network": (0.0, 1.0)}
JACOBIANS = ("physics", "network", "closed_loop")


@dataclass
class Sweep:
    """One backward sweep: ``adjoint_norms[n]`` is the batch mean of the per-sample ``|lam_n|``
    (the adjoint of each sample's own loss: the batch-mean loss's adjoint times the batch size),
    ``grad`` the parameter gradient of the batch-mean loss that the sweep accumulates."""

    adjoint_norms: np.ndarray
    grad: np.ndarray


class GradientFlow:
    """The trajectory of a :class:`~stablebptt.adjoint.engine.Problem` from states ``x0`` under
    parameters ``theta`` (both taken in float64), and the sweeps and Jacobians along it."""

    def __init__(self, problem, theta, x0):
        self.problem = problem
        self.theta = np.ascontiguousarray(theta, dtype=np.float64)
        self.x0 = np.ascontiguousarray(x0, dtype=np.float64)
        with np.errstate(all="ignore"):
            _, self.states, self.controls = problem.rollout(self.theta, self.x0)
        self.batch = len(self.x0)
        ctrl = problem.controller
        self._acts = np.zeros(ctrl.acts_size(self.batch))
        self._deltas = np.zeros(ctrl.deltas_size(self.batch))

    @property
    def n_steps(self):
        return self.problem.n_steps

    def sweep(self, path=(1.0, 1.0), horizon=None):
        """The backward sweep with path weights ``path = (a, b)`` (or a name of :data:`PATHS`) for
        the loss of the first ``horizon`` steps (default all): what ``Problem(..., horizon)``
        differentiates, taken over the first ``horizon`` steps of this trajectory."""
        a, b = PATHS[path] if isinstance(path, str) else path
        n_top = self.n_steps if horizon is None else int(horizon)
        if not 1 <= n_top <= self.n_steps:
            raise ValueError(f"horizon must be in 1..{self.n_steps}, got {horizon}")
        pb, sim, ctrl = self.problem, self.problem.sim, self.problem.controller
        weights = stage_weights(n_top, pb.loss_mode, capability(sim, "continuous_reduction"))
        xs, cs = self.states, self.controls
        lam, dx_sim, dx_ctrl = (np.zeros_like(xs[0]) for _ in range(3))
        mu, c = np.zeros_like(cs[0]), np.zeros_like(cs[0])
        reg_scale = 2.0 * pb.rho / (n_top * cs[0].size)
        grad = np.zeros_like(self.theta)
        norms = np.zeros(n_top + 1)
        if weights[n_top] != 0.0:
            sim.loss_grad(pb.params, xs[n_top], weights[n_top], lam)
        norms[n_top] = self._mean_norm(lam)
        for n in range(n_top - 1, -1, -1):
            sim.step_vjp(pb.params, xs[n], cs[n], lam, dx_sim, mu)
            if pb.rho != 0.0:
                mu += reg_scale * cs[n]
            ctrl.forward(self.theta, pb.spec, xs[n], self._acts, 0, 1, c)
            ctrl.vjp(self.theta, pb.spec, xs[n], self._acts, 0, 1, mu, dx_ctrl, self._deltas)
            ctrl.param_grad(self.theta, pb.spec, xs[n], self._acts, self._deltas, 1, grad)
            lam = a * dx_sim + b * dx_ctrl
            if weights[n] != 0.0:
                sim.loss_grad(pb.params, xs[n], weights[n], lam)
            norms[n] = self._mean_norm(lam)
        return Sweep(norms, grad)

    def _mean_norm(self, lam):
        return float(np.mean(np.linalg.norm(lam, axis=1))) * self.batch

    def horizon_gradients(self, horizons, modes=("R", "M", "S")):
        """``{mode letter: (H,) |g|}``: the gradient norm of each mode for the loss of the first
        ``h`` steps, for every ``h`` of ``horizons``."""
        result = {}
        for mode in modes:
            path = parse_mode(mode).path_weights
            result[parse_mode(mode).letter] = np.array(
                [np.linalg.norm(self.sweep(path, h).grad) for h in horizons])
        return result

    def step_jacobians(self, n):
        """The dense Jacobians at step ``n`` (0 <= n < N) for every sample: a dict of
        ``(B, S, S)`` arrays ``physics`` (ds/dx), ``network`` (ds/dc df/dx) and ``closed_loop``
        (their sum, the Jacobian of x_n -> x_{n+1} with the controller in the loop)."""
        pb, ctrl = self.problem, self.problem.controller
        physics, control = step_jacobians(pb.sim, self.states[n], self.controls[n])
        # rows of ds/dc df/dx: the controller's VJP of each row of ds/dc
        size, rows = pb.sim.state_dim, self.batch * pb.sim.state_dim
        x = np.repeat(self.states[n], size, axis=0)
        acts, deltas = np.zeros(ctrl.acts_size(rows)), np.zeros(ctrl.deltas_size(rows))
        dx = np.zeros_like(x)
        ctrl.forward(self.theta, pb.spec, x, acts, 0, 1, np.zeros((rows, pb.sim.control_dim)))
        ctrl.vjp(self.theta, pb.spec, x, acts, 0, 1, control.reshape(rows, -1), dx, deltas)
        network = dx.reshape(physics.shape)
        return {"physics": physics, "network": network, "closed_loop": physics + network}

    def jacobian_norms(self):
        """``{name: (N, B) spectral norms}`` of the three step Jacobians along the trajectory."""
        norms = {name: np.full((self.n_steps, self.batch), np.nan) for name in JACOBIANS}
        with np.errstate(all="ignore"):  # a trajectory that leaves the float range: NaN there
            for n in range(self.n_steps):
                for name, jac in self.step_jacobians(n).items():
                    finite = np.all(np.isfinite(jac), axis=(1, 2))
                    norms[name][n, finite] = np.linalg.norm(jac[finite], ord=2, axis=(1, 2))
        return norms


def log_spaced_horizons(n_steps, count=12):
    """About ``count`` distinct horizons from 1 to ``n_steps``, log-spaced (both ends included)."""
    return np.unique(np.round(np.geomspace(1, n_steps, max(int(count), 2))).astype(int))


def step_jacobians(sim, x, c):
    """Dense ``(B, S, S)`` Jacobians ds/dx and ``(B, S, C)`` ds/dc of a simulator's step at
    states ``x (B, S)`` and controls ``c (B, C)`` (float64).

    Row ``i`` of each is the vector-Jacobian product with the unit vector ``e_i``: every state is
    repeated once per component and the batch adjoint kernel does all products in one call.
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    c = np.ascontiguousarray(c, dtype=np.float64)
    batch, size = x.shape
    unit = np.tile(np.eye(size), (batch, 1))
    dx = np.zeros((batch * size, size))
    dc = np.zeros((batch * size, c.shape[1]))
    sim.step_vjp(sim.params, np.repeat(x, size, axis=0), np.repeat(c, size, axis=0), unit, dx, dc)
    return dx.reshape(batch, size, size), dc.reshape(batch, size, c.shape[1])


def lyapunov_exponent(sim, x0, n_steps, dt):
    """Maximal Lyapunov exponent (per unit time) of the uncontrolled simulator (c = 0) from each
    state of ``x0 (B, S)``: a tangent vector carried along by the step's Jacobian (from the
    adjoint kernel, :func:`step_jacobians`), renormalised every step; the mean growth rate of its
    log-norm over ``n_steps`` steps of length ``dt`` (Benettin et al. 1980). Returns ``(B,)``;
    a positive value means nearby trajectories separate exponentially (chaos)."""
    x = np.array(x0, dtype=np.float64)
    batch, size = x.shape
    zero = np.zeros((batch, sim.control_dim))
    tangent = np.ones((batch, size)) / np.sqrt(size)
    log_growth = np.zeros(batch)
    x_next = np.zeros_like(x)
    for _ in range(n_steps):
        jx, _ = step_jacobians(sim, x, zero)
        tangent = np.einsum("bij,bj->bi", jx, tangent)
        norm = np.linalg.norm(tangent, axis=1)
        log_growth += np.log(norm)
        tangent /= norm[:, None]
        sim.step(sim.params, x, zero, x_next)
        x, x_next = x_next, x
    return log_growth / (n_steps * dt)


def separation_exponent(sim, x0, n_steps, dt, delta=1e-8):
    """The same exponent from two nearby trajectories without the adjoint: the second is moved
    back to distance ``delta`` from the first after every step (an independent check of
    :func:`lyapunov_exponent`)."""
    x = np.array(x0, dtype=np.float64)
    batch, size = x.shape
    zero = np.zeros((batch, sim.control_dim))
    y = x + delta * np.ones((batch, size)) / np.sqrt(size)
    log_growth = np.zeros(batch)
    x_next, y_next = np.zeros_like(x), np.zeros_like(x)
    for _ in range(n_steps):
        sim.step(sim.params, x, zero, x_next)
        sim.step(sim.params, y, zero, y_next)
        distance = np.linalg.norm(y_next - x_next, axis=1)
        log_growth += np.log(distance / delta)
        x, y = x_next.copy(), x_next + (y_next - x_next) * (delta / distance)[:, None]
    return log_growth / (n_steps * dt)
