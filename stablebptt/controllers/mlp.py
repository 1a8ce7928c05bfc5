"""Fully connected controller: tanh hidden layers, linear output, Keras parameter layout.

Parameters live in one flat array; layer ``k`` holds its kernel ``(n_in, n_out)`` (row-major)
followed by its bias ``(n_out,)`` when biases are on, exactly the order of Keras' ``get_weights()``.

``spec`` (int64): ``[n_layers, use_bias, size_0, size_1, ..., size_L]`` with ``size_0`` the input and
``size_L`` the output width. Work buffers are layer-major so that the parameter gradient over all
time steps is one matrix product per layer: hidden activations of layer ``k`` for step ``n`` sit at
rows ``n*B .. (n+1)*B`` of a contiguous ``(nsteps*B, size_k)`` block.
"""

import functools
import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from ..contract import forward_sig, kernel, param_grad_sig, sample_kernel, vjp_sig
from ._dense import (add_column_sums, add_matmul_at, affine, copy_matrix, matmul, matmul_bt,
                     mul_tanh_derivative, tanh_in_place)
from ._params import FlatParameters, glorot_uniform
from ._views import as_matrix


@sample_kernel
def _param_offset(spec, layer):
    use_bias = spec[1]
    off = 0
    for k in range(1, layer):
        off += spec[1 + k] * spec[2 + k] + use_bias * spec[2 + k]
    return off


@njit(cache=True, inline="always", error_model="numpy")
def _work_offset(spec, layer, rows):
    """Offset of layer ``layer``'s block (layers 1..L) in a layer-major work buffer."""
    off = 0
    for k in range(1, layer):
        off += rows * spec[2 + k]
    return off


@njit(cache=True, inline="always", error_model="numpy")
def _transposed_offset(spec, layer):
    """Offset of layer ``layer``'s transposed kernel in prepared parameters (:meth:`MLP.prepare`),
    or the prepared length for ``layer = n_layers + 1``."""
    off = _param_offset(spec, spec[0] + 1)
    for k in range(1, layer):
        off += spec[1 + k] * spec[2 + k]
    return off


@njit(cache=True, inline="always", error_model="numpy")
def _times_kernel_t(theta, spec, layer, delta, out):
    """``out = delta @ W^T`` for layer ``layer``: with the transposed kernel of prepared parameters
    the register-blocked product (in-order FMA chains, as the forward pass), with plain ones dot
    products against the rows of W."""
    n_in = spec[1 + layer]
    n_out = spec[2 + layer]
    if theta.size > _param_offset(spec, spec[0] + 1):
        t0 = _transposed_offset(spec, layer)
        matmul(delta, as_matrix(theta[t0:t0 + n_out * n_in], n_out, n_in), out)
    else:
        p0 = _param_offset(spec, layer)
        matmul_bt(delta, as_matrix(theta[p0:p0 + n_in * n_out], n_in, n_out), out)


@kernel(forward_sig)
def mlp_forward(theta, spec, x, acts, n, nsteps, c):
    n_layers = spec[0]
    use_bias = spec[1]
    batch = x.shape[0]
    rows = nsteps * batch
    h_prev = x
    for k in range(1, n_layers + 1):
        n_in = spec[1 + k]
        n_out = spec[2 + k]
        p0 = _param_offset(spec, k)
        kernel = as_matrix(theta[p0:p0 + n_in * n_out], n_in, n_out)
        if k < n_layers:
            a0 = _work_offset(spec, k, rows) + n * batch * n_out
            out = as_matrix(acts[a0:a0 + batch * n_out], batch, n_out)
        else:
            out = c
        bias = theta[p0 + n_in * n_out:p0 + n_in * n_out + use_bias * n_out]  # empty: none
        affine(h_prev, kernel, bias, out)
        if k < n_layers:
            tanh_in_place(out)
        h_prev = out


@kernel(vjp_sig)
def mlp_vjp(theta, spec, x, acts, n, nsteps, mu, dx, deltas):
    n_layers = spec[0]
    batch = x.shape[0]
    rows = nsteps * batch
    # output layer is linear: its pre-activation cotangent is mu itself
    n_out = spec[2 + n_layers]
    d0 = _work_offset(spec, n_layers, rows) + n * batch * n_out
    delta = as_matrix(deltas[d0:d0 + batch * n_out], batch, n_out)
    copy_matrix(mu, delta)
    for k in range(n_layers, 0, -1):
        if k == 1:
            if dx.shape[1] > 0:  # no columns: the caller needs no input cotangent
                _times_kernel_t(theta, spec, k, delta, dx)
            break
        # cotangent of the previous layer's pre-activation: (delta W^T) * (1 - h^2)
        n_in = spec[1 + k]
        a0 = _work_offset(spec, k - 1, rows) + n * batch * n_in
        h = as_matrix(acts[a0:a0 + batch * n_in], batch, n_in)
        prev = as_matrix(deltas[a0:a0 + batch * n_in], batch, n_in)
        _times_kernel_t(theta, spec, k, delta, prev)
        mul_tanh_derivative(prev, h)
        delta = prev


@kernel(param_grad_sig)
def mlp_param_grad(theta, spec, xs, acts, deltas, nsteps, g):
    n_layers = spec[0]
    use_bias = spec[1]
    rows = xs.shape[0]
    h_prev = xs
    for k in range(1, n_layers + 1):
        n_in = spec[1 + k]
        n_out = spec[2 + k]
        p0 = _param_offset(spec, k)
        d0 = _work_offset(spec, k, rows)
        delta = as_matrix(deltas[d0:d0 + rows * n_out], rows, n_out)
        add_matmul_at(h_prev, delta, g[p0:p0 + n_in * n_out])
        if use_bias:
            add_column_sums(delta, g[p0 + n_in * n_out:p0 + n_in * n_out + n_out])
        if k < n_layers:
            h_prev = as_matrix(acts[d0:d0 + rows * n_out], rows, n_out)


# ---- the per-sample twins of the batch (BLAS) kernels above, for the GPU path ----


@sample_kernel
def mlp_forward_one(theta, spec, x, acts, c, work):
    """One sample through the MLP; hidden activations to ``acts`` (the layers one after another)."""
    n_layers = spec[0]
    use_bias = spec[1]
    p0 = 0
    a_in = -1  # offset of the layer input in acts (-1: the state x)
    a_out = 0
    for k in range(1, n_layers + 1):
        n_in, n_out = spec[1 + k], spec[2 + k]
        for j in range(n_out):
            z = theta[p0 + n_in * n_out + j] if use_bias else 0.0
            for i in range(n_in):
                h = x[i] if a_in < 0 else acts[a_in + i]
                z += h * theta[p0 + i * n_out + j]
            if k < n_layers:
                acts[a_out + j] = math.tanh(z)
            else:
                c[j] = z
        p0 += n_in * n_out + use_bias * n_out
        a_in = a_out
        a_out += n_out


@sample_kernel
def mlp_backward_one(theta, spec, x, acts, mu, dx, g, work):
    """``work`` holds two layers' cotangents (2 x the widest layer)."""
    n_layers = spec[0]
    use_bias = spec[1]
    widest = 0
    for k in range(n_layers + 1):
        widest = max(widest, spec[2 + k])
    delta = work[:widest]
    delta_prev = work[widest:2 * widest]
    for j in range(spec[2 + n_layers]):
        delta[j] = mu[j]
    p0 = _param_offset(spec, n_layers)
    a_out = 0  # end of this layer's input activations
    for k in range(1, n_layers):
        a_out += spec[2 + k]
    for k in range(n_layers, 0, -1):
        n_in, n_out = spec[1 + k], spec[2 + k]
        a_in = a_out - n_in  # this layer's input activations (k > 1)
        if use_bias:
            for j in range(n_out):
                g[p0 + n_in * n_out + j] += delta[j]
        for i in range(n_in):
            h = x[i] if k == 1 else acts[a_in + i]
            s = 0.0
            for j in range(n_out):
                g[p0 + i * n_out + j] += h * delta[j]
                s += theta[p0 + i * n_out + j] * delta[j]
            if k == 1:
                dx[i] = s
            else:
                delta_prev[i] = s * (1.0 - h * h)
        if k > 1:
            for i in range(n_in):
                delta[i] = delta_prev[i]
            a_out = a_in
            p0 = _param_offset(spec, k - 1)


@dataclass(frozen=True)
class MLP(FlatParameters):
    """A tanh multilayer perceptron ``n_inputs -> width x depth -> n_outputs``.

    ``zero_last`` zero-initialises the output kernel (the reference's ``--zero``); biases start at
    zero and kernels are Glorot-uniform, as Keras' ``Dense`` defaults.
    """

    n_inputs: int
    n_outputs: int = 1
    width: int = 100
    depth: int = 2
    bias: bool = True
    zero_last: bool = False

    def __post_init__(self):
        for name in ("n_inputs", "n_outputs", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"MLP {name} must be >= 1, got {getattr(self, name)}")
        if self.depth < 0:
            raise ValueError(f"MLP depth must be >= 0, got {self.depth}")

    steps_as_rows = True  # step n's samples are rows n*B..(n+1)*B of every buffer block
    input_cotangent_optional = True  # vjp computes no dx for a dx without columns
    forward = staticmethod(mlp_forward)
    vjp = staticmethod(mlp_vjp)
    param_grad = staticmethod(mlp_param_grad)
    forward_one = staticmethod(mlp_forward_one)
    backward_one = staticmethod(mlp_backward_one)

    @property
    def sizes(self):
        return [self.n_inputs] + [self.width] * self.depth + [self.n_outputs]

    @functools.cached_property
    def spec(self):  # made once: the engine reads it on every gradient
        return np.array([self.depth + 1, int(self.bias)] + self.sizes, dtype=np.int64)

    def layer_shapes(self):
        """``(name, shape)`` of each parameter array in Keras order."""
        shapes = []
        for k, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            shapes.append((f"dense_{k}/kernel", (n_in, n_out)))
            if self.bias:
                shapes.append((f"dense_{k}/bias", (n_out,)))
        return shapes

    def forward_products(self):
        """``(rows per sample, k, n)`` of each matrix product of one forward pass (FLOP counts)."""
        return [(1, k, n) for k, n in zip(self.sizes[:-1], self.sizes[1:])]

    def prepare(self, theta):
        """The parameters followed by every layer's kernel transposed ``(n_out, n_in)``, in layer
        order: what the engine hands the batch kernels, so that the adjoint's products
        ``delta @ W^T`` run in the same register blocks as the forward pass (on a 4 x 100 x 100
        product in float32 ~1.5x the speed of dot products against the rows of W)."""
        parts = [theta]
        for start, n_in, n_out in self._kernel_slices:
            parts.append(theta[start:start + n_in * n_out].reshape(n_in, n_out).T.ravel())
        return np.concatenate(parts)

    @functools.cached_property
    def _kernel_slices(self):
        """``(offset, n_in, n_out)`` of each layer's kernel in the flat parameters."""
        return [(offset, *shape) for name, offset, shape in self.param_layout if name.endswith("/kernel")]

    def acts_size(self, rows):
        """Length of the activation buffer for ``rows`` = steps x batch samples."""
        return rows * self.width * self.depth

    def deltas_size(self, rows):
        return rows * sum(self.delta_widths)

    @property
    def delta_widths(self):
        """Values per row of each block of the cotangent buffer, in order (contract.py)."""
        return (self.width,) * self.depth + (self.n_outputs,)

    @property
    def work_size(self):
        """Per-sample scratch of ``backward_one``: two layers' cotangents."""
        return 2 * max(self.sizes)

    def init(self, rng, dtype=np.float32):
        """Glorot-uniform kernels and zero biases, drawn from the numpy Generator ``rng``."""
        theta = np.zeros(self.n_params, dtype=dtype)
        views = self.views(theta)
        for k, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            views[f"dense_{k}/kernel"][...] = glorot_uniform(rng, (n_in, n_out), n_in, n_out)
        if self.zero_last:
            views[f"dense_{self.depth}/kernel"][...] = 0.0
        return theta
