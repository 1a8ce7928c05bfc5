"""Simulators: parameters, step / step_vjp kernels, stage loss / loss_grad, initial-state samplers."""

from .cartpole import CartPole
from .guidance import Guidance
from .quantum import Quantum
from .toy import Shift

__all__ = ["CartPole", "Guidance", "Quantum", "Shift"]
