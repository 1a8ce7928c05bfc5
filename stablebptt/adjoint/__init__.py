"""The BPTT engine (rollout and backward sweeps for every gradient mode) and gradient checks.

Names are imported on first use, so that reading the gradient modes does not load Numba.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["CheckResult", "check_controller", "check_modes", "check_simulator",
                     "check_vjp", "frozen_loss", "relative_error", "toy_problem_gradients"],
                    ".check"),
    **dict.fromkeys(["Gradient", "Problem", "stage_weights"], ".engine"),
    **dict.fromkeys(["Mode", "combine_gradients", "cosine_similarity", "parse_mode"], ".modes"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
