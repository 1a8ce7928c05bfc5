"""Controllers: networks with forward and adjoint kernels over a flat Keras-layout parameter vector."""

from .mlp import MLP
from .quadratic import Quadratic

__all__ = ["MLP", "Quadratic"]
