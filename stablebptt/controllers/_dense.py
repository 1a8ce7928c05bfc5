"""The layers' kernels: a tanh that LLVM can vectorise and its derivative, bias gradients, and
the per-step matrix products (see the section on them below).

libm's ``tanh`` is scalar; in float32 a rational approximation that vectorises is ~8x faster and
as accurate as float32 allows, and in float64 a branch-free tanh built on a hand-written exp
(within 2 ulp of libm's). ``nnan``/``ninf`` stay off so NaN checks downstream still see NaNs.
"""

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from .._numba_internals import bitcast
from ._fma_tile import fma_affine, fma_matmul
from ._views import as_matrix

FASTMATH = {"contract", "reassoc", "nsz", "arcp"}


_F = np.float32
_CLAMP = _F(7.90531110763549805)
_P = tuple(_F(v) for v in (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
                           5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
                           4.89352455891786e-03))
_Q = tuple(_F(v) for v in (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
                           4.89352518554385e-03))


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _tanh32(x):
    # Rational minimax approximation (as in Eigen's float tanh), accurate to a few float32 ulp;
    # unlike libm's tanh it vectorises. Clamped where float32 tanh rounds to +-1. All constants
    # are float32 so that the arithmetic stays in single precision.
    x = min(max(x, -_CLAMP), _CLAMP)
    x2 = x * x
    p = _P[0]
    for c in _P[1:]:
        p = x2 * p + c
    q = _Q[0]
    for c in _Q[1:]:
        q = x2 * q + c
    return x * p / q


_bits_of = bitcast(types.float64, types.int64)
_float_from_bits = bitcast(types.int64, types.float64)

_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10  # fdlibm's split
_INV_LN2 = 1.44269504088896338700e+00
# Adding 1.5 * 2^52 puts a float's integer part in the low bits of its mantissa: a float ->
# integer conversion that AVX2 can vectorise (it has no packed float64 -> int64 instruction).
_ROUNDER = 6755399441055744.0
# Taylor coefficients 1/k! of exp on |r| <= ln2/2, k = 13 down to 2 (remainder < 1e-18 relative)
_EXP_TAYLOR = tuple(1.0 / float(np.prod(np.arange(1, k + 1))) for k in range(13, 1, -1))
# Cephes' tanh for |x| < 0.625: x + x^3 P(x^2) / Q(x^2), relative error < 2.2e-16
_TANH_P = (-9.64399179425052238628e-01, -9.92877231001918586564e+01, -1.61468768441708447952e+03)
_TANH_Q = (1.12811678491632931402e+02, 2.23548839060100448583e+03, 4.84406305325125486048e+03)


# Contraction to FMA only, explicitly: a callee that leaves fastmath unset inherits its caller's
# flags (the fastmath loops below), and reassociation would cancel the rounding (x + R) - R. FMA
# keeps that rounding (one rounding instead of two) and halves the polynomials' instructions.
@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _exp_reduced(x):
    """exp(x) for 0 <= x <= 45: x = k ln2 + r, exp(r) by its Taylor series, times 2^k built
    from its bit pattern. No libm call, no branch and no conversion, so loops over it vectorise."""
    shifted = x * _INV_LN2 + _ROUNDER  # k = round(x / ln2) sits in the low mantissa bits
    k = shifted - _ROUNDER
    r = (x - k * _LN2_HI) - k * _LN2_LO
    p = _EXP_TAYLOR[0]
    for c in _EXP_TAYLOR[1:]:
        p = p * r + c
    p = 1.0 + r + r * r * p
    two_to_k = _float_from_bits((_bits_of(shifted) - _bits_of(_ROUNDER) + 1023) << 52)
    return p * two_to_k


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _tanh64(x):
    # On a = |x|: below 0.625 Cephes' rational form, beyond 1 - 2 / (exp(2a) + 1), clamped at
    # 22 where tanh rounds to 1; the sign of x last. Both branches are computed and one is
    # selected, so that LLVM vectorises the loop (libm's scalar tanh does not).
    a = min(abs(x), 22.0)
    z = a * a
    p = (_TANH_P[0] * z + _TANH_P[1]) * z + _TANH_P[2]
    q = ((z + _TANH_Q[0]) * z + _TANH_Q[1]) * z + _TANH_Q[2]
    small = a + a * z * (p / q)
    large = 1.0 - 2.0 / (_exp_reduced(2.0 * a) + 1.0)
    value = math.copysign(small if a < 0.625 else large, x)
    return value if x == x else x  # NaN in, NaN out


def tanh(x):
    """tanh with a per-precision implementation inside Numba kernels (see ``tanh_in_place``)."""
    return np.tanh(x)


@overload(tanh)
def _tanh_overload(x):
    if x == types.float32:
        return lambda x: _tanh32(x)
    return lambda x: _tanh64(x)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def tanh_in_place(out):
    """``out = tanh(out)`` (C-contiguous ``out``) with a tanh that vectorises: float32 a rational
    approximation, float64 Cephes' rational form and an exp built from its bit pattern (within
    2 ulp of libm's)."""
    flat = out.ravel()
    for i in range(flat.size):
        flat[i] = tanh(flat[i])


@njit(cache=True, error_model="numpy")
def copy_matrix(source, out):
    """``out[:, :] = source`` as a loop (a slice assignment makes Numba compile its error
    formatting, ~1 s of a cold start)."""
    for i in range(source.shape[0]):
        for j in range(source.shape[1]):
            out[i, j] = source[i, j]


@njit(cache=True, error_model="numpy")
def add_column_sums(delta, out):
    """``out += delta.sum(axis=0)``: the gradient of a bias from its layer's cotangents, each
    column summed in order over the rows. (No ``reassoc``: the loop over columns vectorises
    without it, and with it a single column whose stride LLVM can see became a reordered
    vector reduction, its bits depending on how the caller made the view.)"""
    for i in range(delta.shape[0]):
        for j in range(delta.shape[1]):
            out[j] += delta[i, j]


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def mul_tanh_derivative(delta, h):
    """``delta *= 1 - h^2`` in place: back through ``h = tanh(z)`` without a temporary array."""
    d = delta.ravel()
    hh = h.ravel()
    one = d.dtype.type(1)  # a float literal would make float32 loops float64 (half the lanes)
    for i in range(d.size):
        d[i] *= one - hh[i] * hh[i]


# ---- matrix products of the per-step layers ----
#
# A step's products are tiny (a few samples x 100 x 100): a BLAS call spends more time deciding
# and packing than multiplying. ``a @ b`` runs in register blocks (``_fma_tile``) at any size:
# each output element is the in-order FMA chain over its inputs, so its bits depend on neither
# the number of rows (a batch split into chunks gives every sample the same bits as a whole one)
# nor the machine's BLAS. The engine's vector-Jacobian products run as ``a @ b`` too, on the
# transposed kernels of prepared parameters (a controller's ``prepare``, see contract.py);
# ``a @ b.T`` serves the adjoints called with plain parameters: vectorised dot products up to
# SMALL_ROWS rows and BLAS beyond, where BLAS is faster. Parameter gradients ``a.T @ b`` sum in
# slices of rows. The helpers that reach the register blocks are inlined into the kernels that
# call them (``inline="always"``), so that no wrapper adds a level at which the blocks' code is
# optimised again (see ``_fma_tile.fma_matmul``).

SMALL_ROWS = 16


@njit(cache=True, error_model="numpy", inline="always")
def matmul(a, b, out):
    """``out = a @ b``: :func:`affine` without a bias."""
    affine(a, b, out.ravel()[:0], out)


@njit(cache=True, error_model="numpy", inline="always")
def affine(a, b, bias, out):
    """``out = a @ b + bias`` (C-contiguous ``b``, ``bias`` and ``out``; an empty ``bias`` adds
    nothing): register-blocked FMA chains, in order over ``k``, the bias added as they are stored
    (``fma_affine``); a single output column (an output layer) as one vectorised dot product per
    row, then its bias."""
    if b.shape[1] == 1:
        matmul_bt_rows(a, as_matrix(b, 1, b.shape[0]), out)
        if bias.size > 0:
            for i in range(out.shape[0]):
                out[i, 0] += bias[0]
    else:
        fma_affine(a, b, bias, out)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def matmul_bt_rows(a, b, out):
    """``out = a @ b.T`` as dot products of contiguous rows, four rows of ``a`` by two of ``b``
    at a time (eight running sums that LLVM vectorises along ``k``)."""
    m, k = a.shape
    n = b.shape[0]
    zero = out.dtype.type(0)
    m4 = m - m % 4
    n2 = n - n % 2
    for i in range(0, m4, 4):
        a0, a1, a2, a3 = a[i], a[i + 1], a[i + 2], a[i + 3]
        for j in range(0, n2, 2):
            b0, b1 = b[j], b[j + 1]
            s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = zero
            for p in range(k):
                u, v = b0[p], b1[p]
                s00 += a0[p] * u
                s01 += a0[p] * v
                s10 += a1[p] * u
                s11 += a1[p] * v
                s20 += a2[p] * u
                s21 += a2[p] * v
                s30 += a3[p] * u
                s31 += a3[p] * v
            out[i, j], out[i, j + 1] = s00, s01
            out[i + 1, j], out[i + 1, j + 1] = s10, s11
            out[i + 2, j], out[i + 2, j + 1] = s20, s21
            out[i + 3, j], out[i + 3, j + 1] = s30, s31
    # the rows and the column that do not fill a block: one dot product each
    for i in range(m):
        for j in range(n2 if i < m4 else 0, n):
            s = zero
            for p in range(k):
                s += a[i, p] * b[j, p]
            out[i, j] = s


@njit(cache=True, error_model="numpy")
def matmul_bt(a, b, out):
    """``out = a @ b.T`` (C-contiguous ``a``, ``b``): Numba loops for few rows, BLAS beyond
    ``SMALL_ROWS``. The sums are vectorised, so their order is fixed by the compiled code, not by
    the number of rows or threads."""
    if a.shape[0] > SMALL_ROWS:
        np.dot(a, b.T, out)
    else:
        matmul_bt_rows(a, b, out)


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _at_times_column(a, b, product):
    """``product = a.T @ b`` for one column ``b``: one FMA per term in order over the rows, as
    the register blocks compute it, but vectorised along ``a``'s rows (~7x their speed: a
    single column would give one lane of eight)."""
    column = product.ravel()
    column[:] = 0
    for p in range(a.shape[0]):
        weight = b[p, 0]
        row = a[p]
        for i in range(column.size):
            column[i] += row[i] * weight


# Rows per slice of a parameter gradient's sum: a slice's panel of ``b`` and the cache lines of
# ``a`` it reads stay in L1 for all its blocks. Summed whole, the CNN's 180 x 60 kernel gradient
# over 3584 rows took 1.9 ms (BLAS 1.4-1.8), in slices of 64 rows 1.1 ms (float32).
GRADIENT_SLICE_ROWS = 64


@njit(cache=True, error_model="numpy", inline="always")
def add_matmul_at(a, b, out):
    """``out += (a.T @ b).ravel()`` (C-contiguous ``a``, ``b``): a layer's kernel gradient from its
    inputs ``a`` and cotangents ``b`` over many rows, added into its slice ``out`` of the flat
    gradient. The rows are summed in slices of ``GRADIENT_SLICE_ROWS``, each slice's product in
    the register blocks, added into ``out`` in order: a fixed order for a given number of rows."""
    product = np.empty((a.shape[1], b.shape[1]), out.dtype)
    flat = product.ravel()
    if b.shape[1] == 1:  # one column: streamed, no slices needed
        _at_times_column(a, b, product)
        for i in range(out.size):
            out[i] += flat[i]
        return
    for start in range(0, a.shape[0], GRADIENT_SLICE_ROWS):
        stop = min(start + GRADIENT_SLICE_ROWS, a.shape[0])
        fma_matmul(a[start:stop].T, b[start:stop], product)
        for i in range(out.size):
            out[i] += flat[i]
