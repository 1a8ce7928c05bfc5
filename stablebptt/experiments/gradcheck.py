"""``stablebptt gradcheck``: every kernel and gradient mode of a task against finite differences."""

import numpy as np

from ..adjoint.check import (CheckResult, check_controller, check_modes, check_simulator,
                             relative_error, toy_problem_gradients)
from ..adjoint.engine import Problem
from ..controllers import CNN, MLP, Quadratic
from ..sims import CartPole, Guidance, Quantum, Shift

GRADCHECK_TASKS = ("cartpole", "guidance", "quantum", "toy")


def gradcheck_cartpole(rng, poles=(1, 3), n_steps=20, batch=3, width=16, depth=2):
    """Step, loss and MLP adjoints, then all modes for FINAL and CONTINUOUS losses, per pole count."""
    results = []
    for n_poles in poles:
        sim = CartPole(poles=n_poles)
        x = sim.sample(batch, np.random.RandomState(int(rng.integers(2**31)))).astype(np.float64)
        c = rng.standard_normal((batch, 1))
        results += _prefixed(f"{n_poles} pole(s)", check_simulator(sim, x, c, rng))
        ctrl = MLP(sim.state_dim, sim.control_dim, width, depth)
        theta = ctrl.init(rng, np.float64)
        theta += 0.1 * rng.standard_normal(theta.size)  # non-zero biases too
        results += _prefixed(f"{n_poles} pole(s)", check_controller(ctrl, theta, x, rng))
        for loss_mode in ("FINAL", "CONTINUOUS"):
            problem = Problem(sim, ctrl, n_steps, loss_mode)
            results += _prefixed(f"{n_poles} pole(s) {loss_mode}",
                                 check_modes(problem, theta, x, rng, n_directions=6))
    return results


def gradcheck_guidance(rng, counts=((2, 4), (1, 1), (3, 2)), n_steps=15, batch=3, width=16, depth=2):
    """Step, loss and MLP adjoints for several driver/evader counts (one batch with two agents
    nearly on top of each other), then all modes with the regulariser on."""
    results = []
    for drivers, evaders in counts:
        sim = Guidance(drivers=drivers, evaders=evaders)
        label = f"{drivers} driver(s) {evaders} evader(s)"
        x = sim.sample(batch, np.random.RandomState(int(rng.integers(2**31)))).astype(np.float64)
        x += 0.1 * rng.standard_normal(x.shape)  # moving agents, not only the sampler's rest state
        close = x.copy()
        close[:, 4:6] = close[:, 0:2] + 0.02 * rng.standard_normal((batch, 2))  # agent 1 on agent 0
        c = rng.standard_normal((batch, sim.control_dim))
        results += _prefixed(label, check_simulator(sim, x, c, rng))
        if drivers + evaders > 1:
            results += _prefixed(label + " close pair", check_simulator(sim, close, c, rng))
        ctrl = MLP(sim.state_dim, sim.control_dim, width, depth)
        theta = ctrl.init(rng, np.float64) + 0.1 * rng.standard_normal(ctrl.n_params)
        results += _prefixed(label, check_controller(ctrl, theta, x, rng))
        for loss_mode, rho in (("CONTINUOUS", 0.1), ("FINAL", 0.0)):
            problem = Problem(sim, ctrl, n_steps, loss_mode, rho=rho)
            results += _prefixed(f"{label} {loss_mode} rho={rho:g}",
                                 check_modes(problem, theta, x, rng, n_directions=6))
    return results


def gradcheck_quantum(rng, sizes=(32, 9), n_steps=12, batch=3, width=6):
    """Crank-Nicolson step (w.r.t. real and imaginary parts and the control), loss and CNN
    adjoints, then all modes for CONTINUOUS and FINAL losses."""
    results = []
    for nx in sizes:
        sim = Quantum(nx=nx, target_state=3)
        label = f"Nx={nx}"
        x = sim.sample(batch, np.random.RandomState(int(rng.integers(2**31)))).astype(np.float64)
        # off the data manifold too: the data are orthogonal to the target (a flat point of the loss)
        x += 0.1 * rng.standard_normal(x.shape)
        c = 3.0 * rng.standard_normal((batch, 1))
        results += _prefixed(label, check_simulator(sim, x, c, rng))
        ctrl = CNN(nx, width)
        theta = ctrl.init(rng, np.float64) + 0.1 * rng.standard_normal(ctrl.n_params)
        results += _prefixed(label, check_controller(ctrl, theta, x, rng))
        for loss_mode in ("CONTINUOUS", "FINAL"):
            problem = Problem(sim, ctrl, n_steps, loss_mode)
            results += _prefixed(f"{label} {loss_mode}", check_modes(problem, theta, x, rng, n_directions=6))
    return results


def gradcheck_toy(rng, theta=(0.3, -0.5)):
    """The closed-form unrolled toy: engine R and M against the hand-derived gradients."""
    theta = np.array(theta, dtype=np.float64)
    problem = Problem(Shift(target=2.0), Quadratic(), 4)
    x0 = np.array([[-0.3]])
    loss, expected = toy_problem_gradients(theta)
    results = [CheckResult("toy loss vs closed form", relative_error(problem.loss(theta, x0), loss), 1e-12)]
    for mode in ("R", "M"):
        got = problem.gradient(theta, x0, mode).grad
        results.append(CheckResult(f"toy mode {mode} vs closed form", relative_error(got, expected[mode]), 1e-12))
    results += check_modes(problem, theta, x0, rng)
    return results


def run_gradcheck(tasks, seed=0):
    rng = np.random.default_rng(seed)
    results = []
    for task in tasks:
        checks = {"cartpole": gradcheck_cartpole, "guidance": gradcheck_guidance,
                  "quantum": gradcheck_quantum, "toy": gradcheck_toy}
        results += _prefixed(task, checks[task](rng))
    return results


def format_table(results):
    width = max(len(r.name) for r in results)
    lines = [f"{'check'.ljust(width)}  {'max rel error':>13}  {'tolerance':>9}  result"]
    for r in results:
        lines.append(f"{r.name.ljust(width)}  {r.error:13.2e}  {r.tolerance:9.0e}  {'ok' if r.ok else 'FAIL'}")
    failed = sum(not r.ok for r in results)
    lines.append(f"{len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)


def _prefixed(prefix, results):
    return [CheckResult(f"{prefix}: {r.name}", r.error, r.tolerance) for r in results]
