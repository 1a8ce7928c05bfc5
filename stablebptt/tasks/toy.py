"""The paper's unrolled toy (Figure 1) as a task: ``f(x) = t1 x^2 + t2 x``, ``s(x, c) = x + c``,
``x0 = -0.3``, target ``y = 2``, 4 steps, loss ``(x_N - y)^2 / 2``, trained from ``theta = 0``.

Small enough to train in a second; ``gradcheck toy`` also compares the engine's R and M
gradients with the ones derived by hand.
"""

import numpy as np

from .base import Option, Task


class ToyTask(Task):
    name = "toy"
    description = ("the paper's unrolled toy (Figure 1): f(x) = t1 x^2 + t2 x, s(x, c) = x + c, "
                   "x0 = -0.3, target y = 2, 4 steps, FINAL loss (x_N - y)^2 / 2, Adam lr 0.01")
    options = (Option("x0", float, -0.3, "the initial state"),
               Option("target", float, 2.0, "the target y of the final state"))
    preset = dict(time=4.0, n_steps=4, loss_mode="FINAL", lr=0.01, n_data=8, batch_size=8,
                  epochs=200)
    ignores = ("width", "depth", "bias", "zero_last")  # the controller is the fixed quadratic
    grid = {"mode": ["R", "M", "C", "S"], "clip": ["none"]}
    gradcheck_steps = 4

    def simulator(self, config):
        from ..sims import Shift

        return Shift(target=config.target)

    def controller(self, config, sim):
        from ..controllers import Quadratic

        return Quadratic()

    def datasets(self, config, sim, rng):
        states = np.full((config.n_data, 1), config.x0, dtype=np.float32)
        return states, states.copy()

    def gradcheck_inputs(self, sim, batch, rng):
        x = np.full((batch, 1), -0.3) + 0.1 * rng.standard_normal((batch, 1))
        return [("", x, rng.standard_normal((batch, 1)))]

    def extra_checks(self, rng, theta=(0.3, -0.5)):
        """The engine's loss, R and M gradients against the closed forms derived by hand."""
        from ..adjoint.check import CheckResult, relative_error, toy_problem_gradients
        from ..adjoint.engine import Problem
        from ..controllers import Quadratic
        from ..sims import Shift

        theta = np.array(theta, dtype=np.float64)
        problem = Problem(Shift(target=2.0), Quadratic(), 4)
        x0 = np.array([[-0.3]])
        loss, expected = toy_problem_gradients(theta)
        results = [CheckResult("loss vs closed form", relative_error(problem.loss(theta, x0), loss),
                               1e-12)]
        for mode in ("R", "M"):
            got = problem.gradient(theta, x0, mode).grad
            results.append(CheckResult(f"mode {mode} vs closed form",
                                       relative_error(got, expected[mode]), 1e-12))
        return results
