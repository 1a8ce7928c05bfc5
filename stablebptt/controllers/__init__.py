"""Controllers: networks with forward and adjoint kernels over a flat Keras-layout parameter vector."""

from .cnn import CNN
from .mlp import MLP
from .quadratic import Constant, Quadratic

__all__ = ["CNN", "Constant", "MLP", "Quadratic"]
