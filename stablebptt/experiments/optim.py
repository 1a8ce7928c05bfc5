"""Optimisers and gradient clipping as small transforms with explicit state (init / update pairs).

Semantics are Keras 2.9's (``optimizer_v2``), which the reference ran:

- Adam: ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``,
  ``theta -= lr sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)`` with ``eps = 1e-7``.
- SGD: ``u = momentum u - lr g``, ``theta += u`` (plain ``theta -= lr g`` without momentum).
- Clipping by value: each component to ``[-c, c]``; by norm: Keras ``global_clipnorm``,
  ``g * c / max(|g|_2, c)`` over the whole flat gradient.

States are plain dataclasses of arrays and counters: exactly what a checkpoint saves. Updates
work in place on the parameter array.
"""

from dataclasses import dataclass, field

import numpy as np

CLIP_MODES = ("none", "value", "norm")


def clip_gradient(grad, mode, threshold=1.0):
    """Clip a flat gradient: ``none``, ``value`` (component-wise) or ``norm`` (global L2 norm)."""
    mode = str(mode).lower()
    if mode == "none":
        return grad
    if not threshold > 0:
        raise ValueError(f"clipping threshold must be > 0, got {threshold}")
    if mode == "value":
        return np.clip(grad, -threshold, threshold)
    if mode == "norm":
        norm = float(np.sqrt(np.sum(np.square(grad, dtype=np.float64))))
        return (grad * (threshold / max(norm, threshold))).astype(grad.dtype)
    raise ValueError(f"unknown clipping mode {mode!r}: use none, value or norm")


@dataclass
class AdamState:
    step: int
    m: np.ndarray
    v: np.ndarray


@dataclass
class Adam:
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-7

    def init(self, theta):
        return AdamState(0, np.zeros_like(theta), np.zeros_like(theta))

    def update(self, theta, grad, state):
        state.step += 1
        t = state.step
        dtype = theta.dtype.type
        lr_t = dtype(self.lr * np.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t))
        state.m *= dtype(self.beta1)
        state.m += dtype(1.0 - self.beta1) * grad
        state.v *= dtype(self.beta2)
        state.v += dtype(1.0 - self.beta2) * grad * grad
        theta -= lr_t * state.m / (np.sqrt(state.v) + dtype(self.epsilon))
        return state


@dataclass
class SGDState:
    step: int
    velocity: np.ndarray = field(default=None)


@dataclass
class SGD:
    lr: float = 1e-2
    momentum: float = 0.0

    def init(self, theta):
        return SGDState(0, np.zeros_like(theta))

    def update(self, theta, grad, state):
        state.step += 1
        dtype = theta.dtype.type
        if self.momentum:
            state.velocity *= dtype(self.momentum)
            state.velocity -= dtype(self.lr) * grad
            theta += state.velocity
        else:
            theta -= dtype(self.lr) * grad
        return state


OPTIMIZERS = {"adam": Adam, "sgd": SGD}


def make_optimizer(name, lr, momentum=0.0):
    name = str(name).lower()
    if not lr > 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    if name == "adam":
        return Adam(lr=lr)
    if name == "sgd":
        return SGD(lr=lr, momentum=momentum)
    raise ValueError(f"unknown optimizer {name!r}: use adam or sgd")


def state_arrays(state):
    """The arrays of an optimiser state by name (for checkpoints)."""
    return {k: v for k, v in vars(state).items() if isinstance(v, np.ndarray)}
