"""stablebptt: training neural controllers through differentiable simulators with stable BPTT.

The public API is re-exported here; see ``stablebptt.adjoint`` (engine and checks),
``stablebptt.sims``, ``stablebptt.controllers`` and ``stablebptt.experiments``.
"""

__version__ = "0.1.0"

from .adjoint import (Gradient, Mode, Problem, check_controller, check_modes, check_simulator,
                      combine_gradients, parse_mode)
from .controllers import MLP, Quadratic
from .experiments import RunConfig, Trainer, preset, read_run
from .sims import CartPole, Shift

__all__ = [
    "CartPole", "Gradient", "MLP", "Mode", "Problem", "Quadratic", "RunConfig", "Shift", "Trainer",
    "__version__", "check_controller", "check_modes", "check_simulator", "combine_gradients",
    "parse_mode", "preset", "read_run",
]
