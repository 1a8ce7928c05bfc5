"""The engine's compiled sweeps: one Numba call rolls a chunk of a batch out and sweeps it back.

The recursion is the one of :mod:`stablebptt.adjoint.engine`. The seven contract kernels are
passed as machine-code addresses and called as first-class Numba function values with the fixed
signatures of :mod:`stablebptt.contract`, so one cached compilation serves every simulator and
controller. Importing this module loads Numba; :class:`~stablebptt.adjoint.engine.Problem` does
so when it first compiles.
"""

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

from .._numba_internals import address_holder, function_value_at
from ..contract import (CONTROLLER_KERNELS, SIMULATOR_KERNELS, compile_kernel, compile_variant,
                        function_type)

_LOSSES = types.UniTuple(types.float64, 2)

# The seven contract kernels travel into the engine as one int64 array of machine-code addresses,
# in this order: Numba unboxes a first-class function argument in Python (~4 us each, 25 us a
# call for seven, on every chunk of every batch), an array of integers in a fraction of that.
KERNEL_ORDER = ("step", "step_vjp", "loss", "loss_grad", "forward", "vjp", "param_grad")
_KERNEL_SIGS = {**SIMULATOR_KERNELS, **CONTROLLER_KERNELS}


def _kernel_at(make_sig):
    """An intrinsic ``kernel_at(address, like)``: the contract kernel of signature ``make_sig``,
    for the dtype of the array ``like``, as a first-class function value calling the C wrapper
    at ``address`` (a :func:`compiled_kernel`'s ``address``, which must outlive the call)."""

    @intrinsic
    def kernel_at(typingctx, address, like):
        if not isinstance(address, types.Integer) or not isinstance(like, types.Array):
            return None
        ftype = function_type(make_sig, like.dtype)

        def codegen(context, builder, signature, args):
            return function_value_at(context, builder, ftype, args[0])

        return ftype(address, like), codegen

    return kernel_at


_STEP, _STEP_VJP, _LOSS, _LOSS_GRAD, _FORWARD, _VJP, _PARAM_GRAD = (
    _kernel_at(_KERNEL_SIGS[name]) for name in KERNEL_ORDER)


def _rollout_sig(T):
    return _LOSSES(
        types.int64[::1], types.float64[::1], T[::1], types.int64[::1], types.float64[::1],
        types.float64, T[:, :, ::1], T[:, :, ::1], T[::1], types.int64)


def _bptt_sig(T):
    return _LOSSES(
        types.int64[::1], types.float64[::1], T[::1], types.int64[::1], types.float64[::1],
        types.float64, types.float64, types.float64, types.boolean, types.boolean,
        types.int64[::1], types.int64, T[:, :, ::1], T[:, :, ::1], T[::1], T[::1], T[::1], T[::1],
        T[::1], T[:, :, ::1], T[:, :, ::1])


@njit(cache=True, nogil=True, error_model="numpy")
def _rollout(step, loss, forward, p, theta, spec, weights, rho, xs, cs, acts, acts_nsteps):
    """Forward pass from ``xs[0]``: fills ``xs`` (N+1, B, S), ``cs`` (N, B, C) and returns the
    loss as ``(physics part, regularisation part)``.

    Activations go to step ``n % acts_nsteps`` of ``acts``: ``acts_nsteps = N`` keeps all of them for
    a backward sweep, ``1`` reuses one slot for a loss-only evaluation.
    """
    n_steps = cs.shape[0]
    total = weights[0] * loss(p, xs[0]) if weights[0] != 0.0 else 0.0
    reg = 0.0
    for n in range(n_steps):
        forward(theta, spec, xs[n], acts, n % acts_nsteps, acts_nsteps, cs[n])
        step(p, xs[n], cs[n], xs[n + 1])
        if weights[n + 1] != 0.0:
            total += weights[n + 1] * loss(p, xs[n + 1])
        if rho != 0.0:
            for v in cs[n].ravel():
                reg += np.float64(v) * np.float64(v)  # (Numba's float() keeps float32)
    return total, rho * reg / cs.size


@njit(cache=True, error_model="numpy")
def _sweep(step_vjp, loss_grad, vjp, p, theta, spec, weights, rho, a, b, xs, cs, acts, deltas, mus,
           unit_dx):
    """One backward sweep over a stored trajectory with path weights ``(a, b)``.

    The controller's feedback ``(df/dx)^T mu_n`` comes one of three ways:

    - ``mus`` of 0 steps: the controller's adjoint runs at each step and fills ``deltas``;
    - ``mus`` of N steps (N, B, C) receive every step's control cotangent, for one controller
      call on all steps afterwards (``_adjoint``); without ``unit_dx`` (0 steps) there is no
      feedback (``b = 0``: the state adjoints need the simulator alone);
    - with ``unit_dx`` of N steps as well (a scalar control), the feedback is ``mu_n`` times
      ``unit_dx[n]``, the controller's input cotangents for a unit control cotangent: exact, as
      the controller's adjoint is linear in ``mu_n``.
    """
    n_steps, batch, _ = cs.shape
    per_step = mus.shape[0] == 0
    unit_feedback = unit_dx.shape[0] > 0
    lam = np.zeros_like(xs[0])
    dx_sim = np.zeros_like(xs[0])
    dx_ctrl = np.zeros_like(xs[0] if per_step else xs[0, :0])
    mu_step = np.zeros_like(cs[0] if per_step else cs[0, :0])
    reg_scale = 2.0 * rho / cs.size
    if weights[n_steps] != 0.0:
        loss_grad(p, xs[n_steps], weights[n_steps], lam)
    # explicit loops rather than array expressions: no temporaries per step, and no slice-
    # assignment error formatting for Numba to compile on a cold start
    for n in range(n_steps - 1, -1, -1):
        mu = mu_step if per_step else mus[n]
        step_vjp(p, xs[n], cs[n], lam, dx_sim, mu)
        if rho != 0.0:
            for i in range(batch):
                for j in range(mu.shape[1]):
                    mu[i, j] = mu[i, j] + reg_scale * cs[n, i, j]
        if per_step:
            vjp(theta, spec, xs[n], acts, n, n_steps, mu, dx_ctrl, deltas)
        if n == 0:
            break
        for i in range(batch):
            if per_step:
                for j in range(lam.shape[1]):
                    lam[i, j] = a * dx_sim[i, j] + b * dx_ctrl[i, j]
            elif unit_feedback:
                m = mu[i, 0]
                for j in range(lam.shape[1]):
                    lam[i, j] = a * dx_sim[i, j] + b * (m * unit_dx[n, i, j])
            else:
                for j in range(lam.shape[1]):
                    lam[i, j] = a * dx_sim[i, j]
        if weights[n] != 0.0:
            loss_grad(p, xs[n], weights[n], lam)


@njit(cache=True, error_model="numpy")
def _vjp_all_steps(vjp, theta, spec, xs, acts, mus, dxs, deltas, block_steps):
    """The controller's adjoint of every step (a controller with ``steps_as_rows``), in calls on
    ``block_steps`` steps' rows at a time (a divisor of N): as one call on all N x B rows, the
    same values, with work arrays (the CNN's copied windows) that stay in cache."""
    n_steps, batch, _ = mus.shape
    rows = block_steps * batch
    inputs = xs[:n_steps].reshape(n_steps * batch, xs.shape[2])
    flat_mus = mus.reshape(n_steps * batch, mus.shape[2])
    flat_dxs = dxs.reshape(n_steps * batch, dxs.shape[2])
    n_blocks = n_steps // block_steps
    for k in range(n_blocks):
        vjp(theta, spec, inputs[k * rows:(k + 1) * rows], acts, k, n_blocks,
            flat_mus[k * rows:(k + 1) * rows], flat_dxs[k * rows:(k + 1) * rows], deltas)


@njit(cache=True, error_model="numpy")
def _scale_rows(unit, mus, widths, out):
    """``out`` = ``unit`` with every row scaled by its control cotangent: a controller's
    cotangents of all steps (blocks of ``rows x widths[l]``, steps as rows) for unit control
    cotangents, turned into those for ``mus`` (a scalar control; the adjoint is linear in it)."""
    mu = mus.ravel()
    rows = mu.size
    # in place as its own loop: LLVM's vector loop checks two arrays for overlap at run time
    # and would take its scalar fallback
    in_place = unit.ctypes.data == out.ctypes.data
    start = 0
    for width in widths:
        block_in = unit[start:start + rows * width].reshape(rows, width)
        block_out = out[start:start + rows * width].reshape(rows, width)
        for r in range(rows):
            m = mu[r]
            row_in, row_out = block_in[r], block_out[r]  # 1-D views: the loops vectorise
            if in_place:
                for j in range(width):
                    row_out[j] *= m
            else:
                for j in range(width):
                    row_out[j] = m * row_in[j]
        start += rows * width


@njit(cache=True, error_model="numpy")
def _adjoint(step_vjp, loss_grad, vjp, param_grad, p, theta, spec, weights, rho, a, b, steps_as_rows,
             widths, block_steps, xs, cs, acts, deltas, unit_deltas, g, mus, dxs):
    """The backward sweep with path weights ``(a, b)`` and the parameter gradient it gives, added
    to ``g``.

    With ``widths`` (a scalar control, see ``_bptt``) ``unit_deltas`` and ``dxs`` hold the
    controller's cotangents of every step for a unit control cotangent: the sweep needs the
    simulator alone, and the parameter gradient takes those cotangents scaled row by row into
    ``deltas`` (which may be ``unit_deltas`` itself: the last use scales in place).
    Without, and without controller feedback (``b = 0``) for a controller whose buffers take all
    steps as rows (``steps_as_rows``), the controller's cotangents of every step come from calls
    on ``block_steps`` steps at a time (``_vjp_all_steps``): the same values, at ~1.5x the speed of
    N calls on B rows (cart-pole's MLP)."""
    n_steps, batch, _ = cs.shape
    inputs = xs[:n_steps].reshape(n_steps * batch, xs.shape[2])
    if widths.size > 0:
        _sweep(step_vjp, loss_grad, vjp, p, theta, spec, weights, rho, a, b, xs, cs, acts, deltas,
               mus, dxs if b != 0.0 else dxs[:0])
        _scale_rows(unit_deltas, mus, widths, deltas)
    else:
        all_steps = b == 0.0 and steps_as_rows
        _sweep(step_vjp, loss_grad, vjp, p, theta, spec, weights, rho, a, b, xs, cs, acts, deltas,
               mus if all_steps else mus[:0], dxs[:0])
        if all_steps:
            _vjp_all_steps(vjp, theta, spec, xs, acts, mus, dxs, deltas, block_steps)
    param_grad(theta, spec, inputs, acts, deltas, n_steps, g)


@njit(cache=True, error_model="numpy")
def _bptt(step, step_vjp, loss, loss_grad, forward, vjp, param_grad, p, theta, spec, weights, rho,
          a, b, with_modified, steps_as_rows, widths, block_steps, xs, cs, acts, deltas, deltas_m, g,
          g_m, mus, dxs):
    """Rollout + backward sweep(s) of one batch; gradients are *added* to ``g`` (and ``g_m``).

    With ``with_modified`` a second sweep with ``(a, b) = (1, 0)`` over the same trajectory gives the
    modified gradient in ``g_m``: the combined mode's two gradients from one forward pass.

    A scalar control (``widths``: the widths of the controller's cotangent blocks, see
    ``Problem.unit_widths``) has the controller's adjoint run once per batch, before any sweep,
    for unit control cotangents (into ``deltas``): every sweep (R's with feedback, C's second
    one) then scales those instead of calling the controller again, the last one in place (the
    fewer buffers, the more stay in cache). C costs one parameter gradient more than R instead
    of a controller adjoint and a parameter gradient.
    """
    n_steps, batch, _ = cs.shape
    losses = _rollout(step, loss, forward, p, theta, spec, weights, rho, xs, cs, acts, n_steps)
    unit = widths.size > 0
    if unit:
        ones = mus.ravel()
        for i in range(ones.size):
            ones[i] = 1.0
        _vjp_all_steps(vjp, theta, spec, xs, acts, mus, dxs, deltas, block_steps)
    first = deltas_m if unit and with_modified else deltas
    _adjoint(step_vjp, loss_grad, vjp, param_grad, p, theta, spec, weights, rho, a, b, steps_as_rows,
             widths, block_steps, xs, cs, acts, first, deltas, g, mus, dxs)
    if with_modified:
        _adjoint(step_vjp, loss_grad, vjp, param_grad, p, theta, spec, weights, rho, 1.0, 0.0,
                 steps_as_rows, widths, block_steps, xs, cs, acts, deltas if unit else deltas_m,
                 deltas, g_m, mus, dxs)
    return losses


@njit(cache=True, nogil=True, error_model="numpy")
def _rollout_at(kernels, p, theta, spec, weights, rho, xs, cs, acts, acts_nsteps):
    """:func:`_rollout` with the kernels given by address (``KERNEL_ORDER``)."""
    return _rollout(_STEP(kernels[0], xs), _LOSS(kernels[2], xs), _FORWARD(kernels[4], xs), p, theta,
                    spec, weights, rho, xs, cs, acts, acts_nsteps)


@njit(cache=True, nogil=True, error_model="numpy")
def _bptt_at(kernels, p, theta, spec, weights, rho, a, b, with_modified, steps_as_rows, widths,
             block_steps, xs, cs, acts, deltas, deltas_m, g, g_m, mus, dxs):
    """:func:`_bptt` with the kernels given by address (``KERNEL_ORDER``)."""
    return _bptt(_STEP(kernels[0], xs), _STEP_VJP(kernels[1], xs), _LOSS(kernels[2], xs),
                 _LOSS_GRAD(kernels[3], xs), _FORWARD(kernels[4], xs), _VJP(kernels[5], xs),
                 _PARAM_GRAD(kernels[6], xs), p, theta, spec, weights, rho, a, b, with_modified,
                 steps_as_rows, widths, block_steps, xs, cs, acts, deltas, deltas_m, g, g_m, mus,
                 dxs)


_NUMBA_FLOAT = {np.dtype(np.float32): types.float32, np.dtype(np.float64): types.float64}


def compiled_kernel(owner, name, make_sig, dtype):
    """The ``dtype`` variant of the kernel ``owner.name`` as a first-class function value,
    compiled (or loaded from Numba's cache) on first use; a kernel that does not compile with its
    contract signature is a :class:`~stablebptt.contract.ContractError` naming it.

    Handing Numba the dispatcher itself would make it look the machine-code address up again on
    every call into the engine (~35 us per kernel); this wrapper holds the address once (Numba
    has no public API for that handle: :mod:`stablebptt._numba_internals`).
    """
    T = _NUMBA_FLOAT[np.dtype(dtype)]
    return address_holder(compile_kernel(getattr(owner, name), make_sig, T,
                                           type(owner).__name__, name))




def entry_points(sim, controller, dtype):
    """The engine's compiled entry points for ``dtype`` and the seven contract kernels they call:
    ``kernels`` their addresses in :data:`KERNEL_ORDER`, ``wrappers`` the objects that keep their
    code alive, ``rollout`` and ``bptt`` the compiled sweeps (called directly: the dispatcher
    would type the arguments again on every call)."""
    wrappers = [compiled_kernel(sim if name in SIMULATOR_KERNELS else controller, name,
                                _KERNEL_SIGS[name], dtype) for name in KERNEL_ORDER]
    T = _NUMBA_FLOAT[np.dtype(dtype)]
    return dict(wrappers=wrappers,
                kernels=np.array([w.__wrapper_address__() for w in wrappers], np.int64),
                rollout=compile_variant(_rollout_at, _rollout_sig, T).entry_point,
                bptt=compile_variant(_bptt_at, _bptt_sig, T).entry_point)


@njit(cache=True, nogil=True, error_model="numpy")
def combine_with_metrics(g_modified, g_regular):
    """``(combined update, cosine similarity, kept fraction)`` of g_M and g_R in one pass: what
    :func:`~stablebptt.adjoint.modes.combine_gradients`, ``cosine_similarity`` and ``kept_fraction``
    give (the cosine's float64 sums in index order), at a tenth of their time, which every
    combined update pays."""
    out = np.empty_like(g_modified)
    uu = vv = uv = 0.0
    kept = 0
    for i in range(g_modified.size):
        if np.sign(g_modified[i]) == np.sign(g_regular[i]):
            out[i] = g_modified[i]
            kept += 1
        else:
            out[i] = 0
        u, v = np.float64(g_modified[i]), np.float64(g_regular[i])  # (Numba's float() keeps float32)
        uu += u * u
        vv += v * v
        uv += u * v
    denom = np.sqrt(uu * vv)
    cosine = uv / denom if denom > 0 else 0.0
    return out, cosine, kept / g_modified.size if g_modified.size else 1.0
