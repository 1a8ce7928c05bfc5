"""stablebptt: training neural controllers through differentiable simulators with stable BPTT.

Every public name is re-exported here and imported on first use (``import stablebptt`` loads
neither Numba nor h5py nor matplotlib)::

    import stablebptt as sb
    run = sb.fit("cartpole", mode="C", epochs=20)      # trains in memory
    run.metrics["test_loss"][-1]
    fig = sb.plots.learning_curves([run])                # a matplotlib Figure
    run.save("runs/")                                    # a run file, resumable exactly

Subpackages: :mod:`stablebptt.train` (configs, training, run files, sweeps), :mod:`stablebptt.plots`
(figures), :mod:`stablebptt.adjoint` (the engine and gradient checks), :mod:`stablebptt.sims`,
:mod:`stablebptt.controllers`, :mod:`stablebptt.tasks` (the task registry) and
:mod:`stablebptt.cli` (the command line).
"""

import importlib

from ._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    # training
    **dict.fromkeys(["Run", "fit"], ".train.loop"),
    **dict.fromkeys(["Diverged", "Interrupted", "Trainer", "resume"], ".train.trainer"),
    **dict.fromkeys(["ConfigError", "RunConfig", "preset_config"], ".train.config"),
    **dict.fromkeys(["BuiltTask", "build_task", "preset"], ".train.build"),
    **dict.fromkeys(["METRICS", "RunFileError", "RunRecord", "read_run", "write_run"],
                    ".train.runfile"),
    **dict.fromkeys(["SGD", "Adam", "clip_gradient", "make_optimizer"], ".train.optim"),
    **dict.fromkeys(["expand_grid", "run_sweep"], ".train.sweep"),
    **dict.fromkeys(["diagnose", "read_diagnosis"], ".train.diagnose"),
    # the engine and its checks
    **dict.fromkeys(["Gradient", "Mode", "Problem", "check_controller", "check_modes",
                     "check_simulator", "combine_gradients", "parse_mode"], ".adjoint"),
    **dict.fromkeys(["GradientFlow"], ".adjoint.flow"),
    # building blocks and tasks
    **dict.fromkeys(["CNN", "Constant", "MLP", "Quadratic"], ".controllers"),
    **dict.fromkeys(["CartPole", "Guidance", "Quantum", "Shift"], ".sims"),
    **dict.fromkeys(["Option", "Task", "TaskError", "get_task", "load_task", "register"], ".tasks"),
}
_SUBPACKAGES = ("plots", "train", "adjoint", "sims", "controllers", "tasks", "cli")
__all__ = sorted(_EXPORTS) + ["__version__", "plots"]
_getattr, _dir = lazy_exports(__name__, _EXPORTS)


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    return _getattr(name)


def __dir__():
    return sorted(set(_dir()) | set(_SUBPACKAGES) | {"__version__"})
