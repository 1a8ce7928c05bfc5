"""The reference's quantum-control CNN: Conv2D(W, (3, 2), stride 2, tanh) on the ``(Nx, 2)`` state,
Conv1D(W, 3, stride 2, tanh), Dense(1), in Keras layout.

The state is ``(Nx, 2)`` (real, imaginary) per point. The Conv2D's (3, 2) kernel spans both
columns, so it is a 1-D convolution over positions with 6 inputs per window; its window for output
``p`` is the 6 contiguous values ``x[4p : 4p+6]`` of the flat state. The Conv1D's window for output
``q`` is positions ``2q .. 2q+2`` of the first layer: ``3W`` contiguous activations. Both layers are
one matrix product over the windows, in the register-blocked products of ``_dense``: the forward
pass reads the overlapping windows in place (a strided view), the adjoint and the parameter
gradient over copied ones (im2col; the adjoint's ``d2 @ W2^T`` with the transposed kernel of
:meth:`CNN.prepare`; ``d1 @ W1^T``, six outputs a row, as dot products; the parameter gradients
in slices of rows).
Only the adjoint called with plain parameters uses BLAS.
Convolutions always carry biases, as in the reference; ``bias`` switches only the dense layer's.

``spec`` (int64): ``[nx, width, dense_bias, p1, p2]`` with ``p1, p2`` the two layers' output lengths.
Work buffers are layer-major over all steps: ``H1 (rows*p1, W)``, ``H2 (rows*p2, W)``, then a
scratch region for the copied windows (reused by every call, so no kernel allocates); the
cotangents are ``d1, d2`` of the shapes of ``H1, H2`` plus ``d3 (rows, 1)``.
"""

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from ..contract import forward_sig, kernel, param_grad_sig, sample_kernel, vjp_sig
from ._fma_tile import fma_affine
from ._dense import (add_column_sums, add_matmul_at, affine, copy_matrix, matmul, matmul_bt_rows,
                     mul_tanh_derivative, tanh_in_place)
from ._params import FlatParameters, glorot_uniform
from ._views import as_matrix


@sample_kernel
def cnn_layout(spec):
    """``(nx, width, dense_bias, p1, p2)`` and the parameter offsets of each array."""
    nx, w, bias, p1, p2 = spec[0], spec[1], spec[2], spec[3], spec[4]
    k1 = 0
    b1 = k1 + 6 * w
    k2 = b1 + w
    b2 = k2 + 3 * w * w
    k3 = b2 + w
    b3 = k3 + p2 * w
    return nx, w, bias, p1, p2, k1, b1, k2, b2, k3, b3



@njit(cache=True, error_model="numpy")
def _windows(source, n_out, width, stride, out):
    """im2col for stride-``stride`` windows of ``width`` contiguous values, ``n_out`` per row."""
    for r in range(source.shape[0]):
        row = source[r]
        for q in range(n_out):
            # copying between 1-D contiguous views lets LLVM vectorise (no index wraparound)
            dst = out[r * n_out + q]
            src = row[q * stride:q * stride + width]
            for i in range(width):
                dst[i] = src[i]


@njit(cache=True, error_model="numpy")
def _windows_add_back(windows, n_out, width, stride, out):
    """Adjoint of ``_windows``: add each window's cotangent back where it was read from."""
    for r in range(out.shape[0]):
        row = out[r]
        for q in range(n_out):
            src = windows[r * n_out + q]
            dst = row[q * stride:q * stride + width]
            for i in range(width):
                dst[i] += src[i]


@njit(cache=True, inline="always", error_model="numpy")
def _windows_view(source, n_out, width, stride):
    """What ``_windows`` copies, as a ``(rows, n_out, width)`` view of ``source`` (the windows
    overlap): the forward pass's register blocks read the windows in place."""
    size = source.itemsize
    return np.lib.stride_tricks.as_strided(source, shape=(source.shape[0], n_out, width),
                                           strides=(source.strides[0], stride * size, size))


@njit(cache=True, inline="always", error_model="numpy")
def _scratch(acts, rows, p1, p2, w, n_rows, n_cols):
    """An ``(n_rows, n_cols)`` view of the scratch region that follows H1 and H2 in ``acts``."""
    start = rows * (p1 + p2) * w
    return as_matrix(acts[start:start + n_rows * n_cols], n_rows, n_cols)


@kernel(forward_sig)
def cnn_forward(theta, spec, x, acts, n, nsteps, c):
    nx, w, bias, p1, p2, k1, b1, k2, b2, k3, b3 = cnn_layout(spec)
    batch = x.shape[0]
    rows = nsteps * batch
    h1 = as_matrix(acts[n * batch * p1 * w:(n + 1) * batch * p1 * w], batch * p1, w)
    fma_affine(_windows_view(x, p1, 6, 4), as_matrix(theta[k1:b1], 6, w), theta[b1:k2], h1)
    tanh_in_place(h1)
    off2 = rows * p1 * w
    h2 = as_matrix(acts[off2 + n * batch * p2 * w:off2 + (n + 1) * batch * p2 * w], batch * p2, w)
    fma_affine(_windows_view(as_matrix(h1, batch, p1 * w), p2, 3 * w, 2 * w),
               as_matrix(theta[k2:b2], 3 * w, w), theta[b2:k3], h2)
    tanh_in_place(h2)
    affine(as_matrix(h2, batch, p2 * w), as_matrix(theta[k3:b3], p2 * w, 1), theta[b3:b3 + bias], c)


@kernel(vjp_sig)
def cnn_vjp(theta, spec, x, acts, n, nsteps, mu, dx, deltas):
    nx, w, bias, p1, p2, k1, b1, k2, b2, k3, b3 = cnn_layout(spec)
    batch = x.shape[0]
    rows = nsteps * batch
    off2 = rows * p1 * w
    off3 = off2 + rows * p2 * w
    h1 = as_matrix(acts[n * batch * p1 * w:(n + 1) * batch * p1 * w], batch * p1, w)
    h2 = as_matrix(acts[off2 + n * batch * p2 * w:off2 + (n + 1) * batch * p2 * w], batch * p2, w)
    d1 = as_matrix(deltas[n * batch * p1 * w:(n + 1) * batch * p1 * w], batch * p1, w)
    d2 = as_matrix(deltas[off2 + n * batch * p2 * w:off2 + (n + 1) * batch * p2 * w], batch * p2, w)
    d3 = as_matrix(deltas[off3 + n * batch:off3 + (n + 1) * batch], batch, 1)
    copy_matrix(mu, d3)
    # dense -> second layer: d2 = (mu W3^T) * (1 - h2^2); W3 (p2 w, 1) has the memory of W3^T
    matmul(mu, as_matrix(theta[k3:b3], 1, p2 * w), as_matrix(d2, batch, p2 * w))
    mul_tanh_derivative(d2, h2)
    # second layer -> first: windows' cotangents added back, then * (1 - h1^2)
    g_win2 = _scratch(acts, rows, p1, p2, w, batch * p2, 3 * w)
    if theta.size > b3 + bias:  # prepared parameters: W2^T follows them (CNN.prepare)
        t2 = b3 + bias
        matmul(d2, as_matrix(theta[t2:t2 + 3 * w * w], w, 3 * w), g_win2)
    else:
        np.dot(d2, as_matrix(theta[k2:b2], 3 * w, w).T, g_win2)
    d1[:, :] = 0.0
    _windows_add_back(g_win2, p2, 3 * w, 2 * w, as_matrix(d1, batch, p1 * w))
    mul_tanh_derivative(d1, h1)
    # first layer -> input, unless the caller needs no input cotangent (dx without columns)
    if dx.shape[1] > 0:
        g_win1 = _scratch(acts, rows, p1, p2, w, batch * p1, 6)
        matmul_bt_rows(d1, as_matrix(theta[k1:b1], 6, w), g_win1)  # 6 outputs a row: faster than BLAS
        dx[:, :] = 0.0
        _windows_add_back(g_win1, p1, 6, 4, dx)


@kernel(param_grad_sig)
def cnn_param_grad(theta, spec, xs, acts, deltas, nsteps, g):
    nx, w, bias, p1, p2, k1, b1, k2, b2, k3, b3 = cnn_layout(spec)
    rows = xs.shape[0]
    off2 = rows * p1 * w
    off3 = off2 + rows * p2 * w
    h1 = as_matrix(acts[:off2], rows, p1 * w)
    h2 = as_matrix(acts[off2:off3], rows, p2 * w)
    d1 = as_matrix(deltas[:off2], rows * p1, w)
    d2 = as_matrix(deltas[off2:off3], rows * p2, w)
    d3 = as_matrix(deltas[off3:off3 + rows], rows, 1)
    win1 = _scratch(acts, rows, p1, p2, w, rows * p1, 6)
    _windows(xs, p1, 6, 4, win1)
    add_matmul_at(win1, d1, g[k1:b1])
    add_column_sums(d1, g[b1:k2])
    win2 = _scratch(acts, rows, p1, p2, w, rows * p2, 3 * w)
    _windows(h1, p2, 3 * w, 2 * w, win2)
    add_matmul_at(win2, d2, g[k2:b2])
    add_column_sums(d2, g[b2:k3])
    add_matmul_at(h2, d3, g[k3:b3])
    if bias:
        add_column_sums(d3, g[b3:b3 + 1])


# ---- the per-sample twins of the batch (im2col + BLAS) kernels above, for the GPU path ----


@sample_kernel
def cnn_forward_one(theta, spec, x, acts, c, work):
    """One state through the CNN; ``acts`` holds H1 (p1*W) then H2 (p2*W)."""
    _, w, bias, p1, p2, k1, b1, k2, b2, k3, b3 = cnn_layout(spec)
    for q in range(p1):
        for o in range(w):
            z = theta[b1 + o]
            for i in range(6):
                z += x[4 * q + i] * theta[k1 + i * w + o]
            acts[q * w + o] = math.tanh(z)
    h2 = p1 * w
    for q in range(p2):
        for o in range(w):
            z = theta[b2 + o]
            for i in range(3 * w):
                z += acts[2 * q * w + i] * theta[k2 + i * w + o]
            acts[h2 + q * w + o] = math.tanh(z)
    z = theta[b3] if bias else 0.0
    for i in range(p2 * w):
        z += acts[h2 + i] * theta[k3 + i]
    c[0] = z


@sample_kernel
def cnn_backward_one(theta, spec, x, acts, mu, dx, g, work):
    """``work`` holds the layers' cotangents d1 (p1*W) and d2 (p2*W)."""
    _, w, bias, p1, p2, k1, b1, k2, b2, k3, b3 = cnn_layout(spec)
    h2 = p1 * w
    d1 = work[0:p1 * w]
    d2 = work[p1 * w:(p1 + p2) * w]
    m = mu[0]
    if bias:
        g[b3] += m
    for i in range(p2 * w):
        h = acts[h2 + i]
        g[k3 + i] += h * m
        d2[i] = theta[k3 + i] * m * (1.0 - h * h)
    for i in range(p1 * w):
        d1[i] = 0.0
    for q in range(p2):
        for o in range(w):
            d = d2[q * w + o]
            g[b2 + o] += d
            for i in range(3 * w):
                g[k2 + i * w + o] += acts[2 * q * w + i] * d
                d1[2 * q * w + i] += theta[k2 + i * w + o] * d
    for i in range(p1 * w):
        d1[i] *= 1.0 - acts[i] * acts[i]
    for i in range(x.shape[0]):
        dx[i] = 0.0
    for q in range(p1):
        for o in range(w):
            d = d1[q * w + o]
            g[b1 + o] += d
            for i in range(6):
                g[k1 + i * w + o] += x[4 * q + i] * d
                dx[4 * q + i] += theta[k1 + i * w + o] * d


@dataclass(frozen=True)
class CNN(FlatParameters):
    """The reference's CNN for states of ``nx`` complex points; ``width`` filters per layer.

    ``zero_last`` zero-initialises the dense kernel. The reference's ``--zero`` quirk zeroed only
    the (already zero) dense bias, so its runs had a random dense kernel: ``zero_last=False``.
    """

    nx: int
    width: int = 60
    bias: bool = True
    zero_last: bool = False

    steps_as_rows = True  # step n's samples are rows n*B..(n+1)*B of every buffer block
    input_cotangent_optional = True  # vjp computes no dx for a dx without columns
    forward = staticmethod(cnn_forward)
    vjp = staticmethod(cnn_vjp)
    param_grad = staticmethod(cnn_param_grad)
    forward_one = staticmethod(cnn_forward_one)
    backward_one = staticmethod(cnn_backward_one)
    n_outputs = 1

    def __post_init__(self):
        if self.nx < 7:
            raise ValueError(f"the CNN needs nx >= 7 (two stride-2 convolutions), got {self.nx}")
        if self.width < 1:
            raise ValueError(f"CNN width must be >= 1, got {self.width}")

    @property
    def n_inputs(self):
        return 2 * self.nx

    @property
    def lengths(self):
        """Output lengths of the two convolutions (valid padding, stride 2)."""
        p1 = (self.nx - 3) // 2 + 1
        return p1, (p1 - 3) // 2 + 1

    @property
    def spec(self):
        return np.array([self.nx, self.width, int(self.bias), *self.lengths], dtype=np.int64)

    def layer_shapes(self):
        w, (_, p2) = self.width, self.lengths
        shapes = [("conv2d/kernel", (3, 2, 1, w)), ("conv2d/bias", (w,)),
                  ("conv1d/kernel", (3, w, w)), ("conv1d/bias", (w,)), ("dense/kernel", (p2 * w, 1))]
        return shapes + ([("dense/bias", (1,))] if self.bias else [])

    def forward_products(self):
        """``(rows per sample, k, n)`` of each matrix product of one forward pass (FLOP counts)."""
        (p1, p2), w = self.lengths, self.width
        return [(p1, 6, w), (p2, 3 * w, w), (1, p2 * w, 1)]

    def prepare(self, theta):
        """The parameters followed by the second convolution's kernel transposed ``(W, 3W)``: what
        the engine hands the batch kernels, so that the adjoint's ``d2 @ W2^T`` runs in the
        register blocks (~1.5x BLAS's speed at 28 x 60 x 180, float32) instead of BLAS."""
        w = self.width
        kernel = self.views(theta)["conv1d/kernel"].reshape(3 * w, w)
        return np.concatenate([theta, kernel.T.ravel()])

    def acts_size(self, rows):
        (p1, p2), w = self.lengths, self.width
        return rows * ((p1 + p2) * w + max(6 * p1, 3 * w * p2))

    def deltas_size(self, rows):
        return rows * sum(self.delta_widths)

    @property
    def delta_widths(self):
        """Values per row of each block of the cotangent buffer (d1, d2, d3; contract.py)."""
        (p1, p2), w = self.lengths, self.width
        return (p1 * w, p2 * w, 1)

    @property
    def work_size(self):
        """Per-sample scratch of ``backward_one``: the two layers' cotangents."""
        return sum(self.lengths) * self.width

    def init(self, rng, dtype=np.float32):
        """Glorot-uniform kernels (Keras fans: receptive field x channels), zero biases."""
        w, (_, p2) = self.width, self.lengths
        theta = np.zeros(self.n_params, dtype=dtype)
        views = self.views(theta)
        views["conv2d/kernel"][...] = glorot_uniform(rng, (3, 2, 1, w), 6, 6 * w)
        views["conv1d/kernel"][...] = glorot_uniform(rng, (3, w, w), 3 * w, 3 * w)
        if not self.zero_last:
            views["dense/kernel"][...] = glorot_uniform(rng, (p2 * w, 1), p2 * w, 1)
        return theta
