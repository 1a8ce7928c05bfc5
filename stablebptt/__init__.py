"""stablebptt: training neural controllers through differentiable simulators with stable BPTT.

The public API is re-exported here (imported on first use); see ``stablebptt.adjoint`` (engine
and checks), ``stablebptt.sims``, ``stablebptt.controllers`` and ``stablebptt.experiments``.
"""

from ._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    **dict.fromkeys(["Gradient", "Mode", "Problem", "check_controller", "check_modes",
                     "check_simulator", "combine_gradients", "parse_mode"], ".adjoint"),
    **dict.fromkeys(["MLP", "Quadratic"], ".controllers"),
    **dict.fromkeys(["RunConfig", "Trainer", "preset", "read_run"], ".experiments"),
    **dict.fromkeys(["CartPole", "Shift"], ".sims"),
}
__all__ = sorted(_EXPORTS) + ["__version__"]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
