"""The BPTT engine (rollout and backward sweeps for every gradient mode) and gradient checks."""

from .check import (CheckResult, check_controller, check_modes, check_simulator, check_vjp,
                    frozen_loss, relative_error, toy_problem_gradients)
from .engine import Gradient, Problem, stage_weights
from .modes import Mode, combine_gradients, cosine_similarity, parse_mode

__all__ = [
    "CheckResult", "Gradient", "Mode", "Problem", "check_controller", "check_modes",
    "check_simulator", "check_vjp", "combine_gradients", "cosine_similarity", "frozen_loss",
    "parse_mode", "relative_error", "stage_weights", "toy_problem_gradients",
]
