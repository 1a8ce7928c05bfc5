"""Optimisers and gradient clipping as small transforms with explicit state (init / update pairs).

Semantics are Keras 2.9's (``optimizer_v2``), which the reference ran:

- Adam: ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``,
  ``theta -= lr sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)`` with ``eps = 1e-7``.
- SGD: ``u = momentum u - lr g``, ``theta += u`` (plain ``theta -= lr g`` without momentum).
- Adagrad: ``a += g^2`` from ``a = 0.1``, ``theta -= lr g / (sqrt(a) + eps)``.
- Adadelta: ``a = rho a + (1-rho) g^2``, ``u = sqrt(d + eps) / sqrt(a + eps) g``,
  ``d = rho d + (1-rho) u^2``, ``theta -= lr u`` (``rho = 0.95``).
- RMSprop: ``r = rho r + (1-rho) g^2``, ``theta -= lr g / (sqrt(r) + eps)`` (``rho = 0.9``, no
  momentum, not centred: the Keras defaults the reference ran).

Every optimiser takes the learning rate it is given (the reference passed its ``--lr``, default
1e-3, to each of them; 1e-3 is also each one's Keras default) and ``eps = 1e-7``.
- Clipping by value: each component to ``[-c, c]``; by norm: Keras ``global_clipnorm``,
  ``g * c / max(|g|_2, c)`` over the whole flat gradient.

States are plain dataclasses of arrays and counters: exactly what a checkpoint saves. Updates
work in place on the parameter array, in one compiled pass each (``_optim_kernels``: the
operations as written above, in the parameters' precision).
"""

from dataclasses import dataclass, field

import numpy as np

CLIP_MODES = ("none", "value", "norm")


def clip_with_norms(grad, mode, threshold=1.0):
    """``(clipped, |grad|^2, |clipped|, clipping changed grad)`` of a flat gradient in one pass
    (what a training step logs): ``none``, ``value`` (component-wise) or ``norm`` (global L2
    norm). Sums are float64; ``clipped`` is a new array of ``grad``'s dtype and shape."""
    from ._optim_kernels import clip_with_norms as compiled

    mode = str(mode).lower()
    if mode not in CLIP_MODES:
        raise ValueError(f"unknown clipping mode {mode!r}: use none, value or norm")
    if mode != "none" and not threshold > 0:
        raise ValueError(f"clipping threshold must be > 0, got {threshold}")
    shape = np.shape(grad)
    grad = np.ascontiguousarray(grad).reshape(-1)
    clipped = np.empty_like(grad)
    size, clipped_norm, changed = compiled(grad, CLIP_MODES.index(mode), float(threshold), clipped)
    return clipped.reshape(shape), size, clipped_norm, changed


def clip_gradient(grad, mode, threshold=1.0):
    """Clip a flat gradient: ``none``, ``value`` (component-wise) or ``norm`` (global L2 norm)."""
    return clip_with_norms(grad, mode, threshold)[0]


def _like(grad, theta):
    """``grad`` as a contiguous vector of the parameters' dtype (what the compiled updates take)."""
    return np.ascontiguousarray(grad, dtype=theta.dtype).reshape(theta.shape)


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
        from ._optim_kernels import adam_update

        state.step += 1
        t = state.step
        dtype = theta.dtype.type
        lr_t = dtype(self.lr * np.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t))
        adam_update(theta, _like(grad, theta), state.m, state.v, lr_t, dtype(self.beta1),
                    dtype(1.0 - self.beta1), dtype(self.beta2), dtype(1.0 - self.beta2),
                    dtype(self.epsilon))
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
        from ._optim_kernels import sgd_update

        state.step += 1
        dtype = theta.dtype.type
        sgd_update(theta, _like(grad, theta), state.velocity, dtype(self.lr), dtype(self.momentum),
                   bool(self.momentum))
        return state


@dataclass
class AdagradState:
    step: int
    accumulator: np.ndarray


@dataclass
class Adagrad:
    lr: float = 1e-3
    initial_accumulator: float = 0.1
    epsilon: float = 1e-7

    def init(self, theta):
        return AdagradState(0, np.full_like(theta, self.initial_accumulator))

    def update(self, theta, grad, state):
        from ._optim_kernels import adagrad_update

        state.step += 1
        dtype = theta.dtype.type
        adagrad_update(theta, _like(grad, theta), state.accumulator, dtype(self.lr),
                       dtype(self.epsilon))
        return state


@dataclass
class AdadeltaState:
    step: int
    accumulator: np.ndarray
    update_accumulator: np.ndarray


@dataclass
class Adadelta:
    lr: float = 1e-3
    rho: float = 0.95
    epsilon: float = 1e-7

    def init(self, theta):
        return AdadeltaState(0, np.zeros_like(theta), np.zeros_like(theta))

    def update(self, theta, grad, state):
        from ._optim_kernels import adadelta_update

        state.step += 1
        dtype = theta.dtype.type
        adadelta_update(theta, _like(grad, theta), state.accumulator, state.update_accumulator,
                        dtype(self.lr), dtype(self.rho), dtype(1.0 - self.rho), dtype(self.epsilon))
        return state


@dataclass
class RMSpropState:
    step: int
    rms: np.ndarray


@dataclass
class RMSprop:
    lr: float = 1e-3
    rho: float = 0.9
    epsilon: float = 1e-7

    def init(self, theta):
        return RMSpropState(0, np.zeros_like(theta))

    def update(self, theta, grad, state):
        from ._optim_kernels import rmsprop_update

        state.step += 1
        dtype = theta.dtype.type
        rmsprop_update(theta, _like(grad, theta), state.rms, dtype(self.lr), dtype(self.rho),
                       dtype(1.0 - self.rho), dtype(self.epsilon))
        return state


OPTIMIZERS = {"adam": Adam, "sgd": SGD, "adagrad": Adagrad, "adadelta": Adadelta,
              "rmsprop": RMSprop}


def make_optimizer(name, lr, momentum=0.0):
    """An optimiser by name (``adam``, ``sgd``, ``adagrad``, ``adadelta``, ``rmsprop``);
    ``momentum`` is SGD's (the reference's SGDMOM080/090/095 are ``sgd`` with 0.8/0.9/0.95)."""
    name = str(name).lower()
    if not lr > 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: use {', '.join(OPTIMIZERS)}")
    if name == "sgd":
        return SGD(lr=lr, momentum=momentum)
    if momentum:
        raise ValueError(f"momentum={momentum} applies to sgd only, not {name}")
    return OPTIMIZERS[name](lr=lr)


def state_arrays(state):
    """The arrays of an optimiser state by name (for checkpoints)."""
    return {k: v for k, v in vars(state).items() if isinstance(v, np.ndarray)}
