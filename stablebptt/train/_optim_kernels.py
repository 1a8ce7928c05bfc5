"""Compiled loops of the optimisers and of gradient clipping (see :mod:`.optim` for the math).

An update in numpy passes over the parameters once per operation (Adam: ten passes and five
temporaries, ~50 us for 10^4 parameters); here each is one pass. Every operation is the one the
numpy form did, in the same order and precision, without contraction to FMA (no ``fastmath``),
so the updates are the same bits; scalars arrive in the parameters' dtype, since a Python float
would make a float32 loop compute in float64. Clipping's float64 sums of squares have an order of
their own (:func:`sum_of_products`). Imported on first use: the command line reads
:mod:`.optim` and must start without loading Numba.
"""

import numpy as np
from numba import njit

CLIP_NONE, CLIP_VALUE, CLIP_NORM = 0, 1, 2


@njit(cache=True, error_model="numpy")
def sum_of_products(a, b):
    """``sum(a[i] * b[i])`` in float64: element ``i`` goes to partial sum ``i % 8``, each partial
    sum in order, the eight added pairwise, ``((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7))``. The order is
    the code's, so the bits are the same on any machine; eight independent chains run ~3x faster
    than one (10.3 against 3.8 us for a cart-pole gradient's 10^4 components: a single float64
    chain waits for each addition)."""
    partial = np.zeros(8)
    n = a.size
    whole = n - n % 8
    for i in range(0, whole, 8):
        for k in range(8):
            partial[k] += np.float64(a[i + k]) * np.float64(b[i + k])  # (float() keeps float32)
    for k in range(n - whole):
        partial[k] += np.float64(a[whole + k]) * np.float64(b[whole + k])
    return (((partial[0] + partial[1]) + (partial[2] + partial[3]))
            + ((partial[4] + partial[5]) + (partial[6] + partial[7])))


@njit(cache=True, error_model="numpy")
def clip_with_norms(grad, mode, threshold, out):
    """Clip ``grad`` into ``out`` (``mode``: ``CLIP_NONE``/``VALUE``/``NORM``); returns
    ``(sum of squares of grad, L2 norm of out, whether out differs from grad)``, sums in float64
    (:func:`sum_of_products`: a fixed order, eight chains).

    By value each component goes to ``[-threshold, threshold]`` (NaN stays NaN); by norm ``grad``
    is scaled by ``threshold / max(norm, threshold)`` (a NaN norm makes every component NaN).
    """
    size = sum_of_products(grad, grad)
    if mode == CLIP_NORM:
        norm = np.sqrt(size)
        scale = out.dtype.type(threshold / (threshold if threshold > norm else norm))
        for i in range(grad.size):
            out[i] = grad[i] * scale
    elif mode == CLIP_VALUE:
        high = out.dtype.type(threshold)
        for i in range(grad.size):
            g = grad[i]
            out[i] = high if g > high else (-high if g < -high else g)
    else:
        for i in range(grad.size):
            out[i] = grad[i]
    changed = False
    for i in range(grad.size):
        changed |= out[i] != grad[i]  # NaN counts as changed, as np.array_equal has it
    return size, np.sqrt(sum_of_products(out, out)), changed


@njit(cache=True, error_model="numpy")
def adam_update(theta, grad, m, v, lr_t, beta1, one_minus_beta1, beta2, one_minus_beta2, epsilon):
    for i in range(theta.size):
        m[i] = m[i] * beta1 + one_minus_beta1 * grad[i]
        v[i] = v[i] * beta2 + one_minus_beta2 * grad[i] * grad[i]
        theta[i] -= lr_t * m[i] / (np.sqrt(v[i]) + epsilon)


@njit(cache=True, error_model="numpy")
def sgd_update(theta, grad, velocity, lr, momentum, use_momentum):
    if use_momentum:
        for i in range(theta.size):
            velocity[i] = velocity[i] * momentum - lr * grad[i]
            theta[i] += velocity[i]
    else:
        for i in range(theta.size):
            theta[i] -= lr * grad[i]


@njit(cache=True, error_model="numpy")
def adagrad_update(theta, grad, accumulator, lr, epsilon):
    for i in range(theta.size):
        accumulator[i] += grad[i] * grad[i]
        theta[i] -= lr * grad[i] / (np.sqrt(accumulator[i]) + epsilon)


@njit(cache=True, error_model="numpy")
def adadelta_update(theta, grad, accumulator, update_accumulator, lr, rho, one_minus_rho, epsilon):
    for i in range(theta.size):
        accumulator[i] = accumulator[i] * rho + one_minus_rho * grad[i] * grad[i]
        step = np.sqrt(update_accumulator[i] + epsilon) / np.sqrt(accumulator[i] + epsilon) * grad[i]
        update_accumulator[i] = update_accumulator[i] * rho + one_minus_rho * step * step
        theta[i] -= lr * step


@njit(cache=True, error_model="numpy")
def rmsprop_update(theta, grad, rms, lr, rho, one_minus_rho, epsilon):
    for i in range(theta.size):
        rms[i] = rms[i] * rho + one_minus_rho * grad[i] * grad[i]
        theta[i] -= lr * grad[i] / (np.sqrt(rms[i]) + epsilon)
