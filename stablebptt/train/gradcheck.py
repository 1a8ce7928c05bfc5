"""``stablebptt gradcheck``: every kernel and gradient mode of a task against finite differences.

Generic over the task registry: for each of a task's ``gradcheck_settings`` (small runs), the
simulator's kernels at the task's ``gradcheck_inputs``, the controller's adjoint, the per-sample
kernels (the GPU path's) against the batch kernels, and every gradient mode for the FINAL and the
CONTINUOUS loss, all in float64; then the task's own ``extra_checks``. A failing row names the
kernel, the input component and the size of the error.
"""

import numpy as np

from ..adjoint.check import (CheckResult, check_controller, check_modes, check_per_sample,
                             check_simulator)
from ..adjoint.engine import Problem
from ..contract import has_sample_kernels
from .build import build_controller, build_simulator, preset, preset_config

GRADCHECK_BATCH = 3


def small_runs(task, batch=GRADCHECK_BATCH, width=16):
    """``(label, config, simulator, controller)`` of each of a task's ``gradcheck_settings``: small
    float64 runs at the preset's time step, labelled by their settings."""
    for settings in task.gradcheck_settings:
        overrides = dict(dtype="float64", n_data=batch, batch_size=batch,
                         n_steps=task.gradcheck_steps)
        if "width" not in task.ignores:
            overrides["width"] = width
        overrides.update(settings)
        overrides.setdefault("time", preset_config(task).dt * overrides["n_steps"])  # preset's dt
        config = preset(task, **overrides)
        sim = build_simulator(config)
        yield " ".join(f"{k}={v}" for k, v in settings.items()), config, sim, build_controller(config, sim)


def gradcheck_task(task, rng, batch=GRADCHECK_BATCH):
    """The check results of one registered task, labelled by the settings they ran at."""
    results = []
    for label, config, sim, ctrl in small_runs(task, batch):
        inputs = task.gradcheck_inputs(sim, config.batch_size, rng)
        for input_label, x, c in inputs:
            results += _prefixed(_join(label, input_label), check_simulator(sim, x, c, rng))
        x = inputs[0][1]
        theta = ctrl.init(rng, np.float64) + 0.1 * rng.standard_normal(ctrl.n_params)
        results += _prefixed(label, check_controller(ctrl, theta, x, rng))
        if has_sample_kernels(sim, ctrl):
            results += _prefixed(label, check_per_sample(sim, ctrl, theta, x, inputs[0][2], rng))
        for loss_mode in ("FINAL", "CONTINUOUS"):
            problem = Problem(sim, ctrl, config.n_steps, loss_mode, rho=config.rho)
            results += _prefixed(_join(label, loss_mode),
                                 check_modes(problem, theta, x, rng, n_directions=6))
    return results + task.extra_checks(rng)


def run_gradcheck(tasks, seed=0):
    """Check results of ``tasks`` (registered :class:`~stablebptt.tasks.Task` objects)."""
    rng = np.random.default_rng(seed)
    results = []
    for task in tasks:
        results += _prefixed(task.name, gradcheck_task(task, rng))
    return results


def format_table(results):
    """The results as a table; a failed row is followed by where its error is largest."""
    width = max(len(r.name) for r in results)
    lines = [f"{'check'.ljust(width)}  {'max rel error':>13}  {'tolerance':>9}  result"]
    for r in results:
        verdict = "ok" if r.ok else "FAIL"
        lines.append(f"{r.name.ljust(width)}  {r.error:13.2e}  {r.tolerance:9.0e}  {verdict}")
        if not r.ok and r.detail:
            lines.append(f"    {r.detail}")
    failed = sum(not r.ok for r in results)
    lines.append(f"{len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)


def _join(*parts):
    return " ".join(p for p in parts if p)


def _prefixed(prefix, results):
    return [CheckResult(f"{prefix}: {r.name}" if prefix else r.name, r.error, r.tolerance,
                        r.detail) for r in results]
