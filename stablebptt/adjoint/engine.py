"""The BPTT engine: one compiled call rolls a batch out and sweeps it back for a gradient mode.

Math (DESIGN.md §1), with adjoints ``lam_n = dL/dx_n`` and control cotangents ``mu_n``::

    lam_N = w_N dl/dx_N
    mu_n  = (ds/dc)^T lam_{n+1} + d(rho mean c^2)/dc_n
    g    += (df/dtheta)^T mu_n
    lam_n = w_n dl/dx_n + a (ds/dx)^T lam_{n+1} + b (df/dx)^T mu_n

The kernels are passed as first-class Numba function values with the fixed signatures of
:mod:`stablebptt.contract`, so one cached compilation serves every simulator and controller.
"""

import functools
import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.types.function_type import CompileResultWAP
from numba.extending import intrinsic

from ..contract import (CONTROLLER_KERNELS, SIMULATOR_KERNELS, check_controller_interface,
                        check_simulator_interface, compile_kernel, compile_variant, function_type,
                        prepared_parameters)
from .modes import Mode, parse_mode

log = logging.getLogger("stablebptt")


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
            func = cgutils.create_struct_proxy(ftype)(context, builder)
            null = ir.Constant(ir.IntType(8).as_pointer(), None)
            func.c_addr = builder.inttoptr(args[0], null.type)
            func.py_addr = null  # no Python object: the value is never boxed
            func.jit_addr = null  # calls go through the C wrapper, as for an unboxed kernel
            return func._getvalue()

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
    every call into the engine (~35 us per kernel); this wrapper holds the address once. Numba
    has no public API for that handle, hence the one import from ``numba.core``.
    """
    T = _NUMBA_FLOAT[np.dtype(dtype)]
    return CompileResultWAP(compile_kernel(getattr(owner, name), make_sig, T,
                                           type(owner).__name__, name))


@contextmanager
def announce_if_slow(message, after=1.0):
    """Log ``message`` (logger ``stablebptt``, level INFO) if the block is still running after
    ``after`` seconds, and how long it took: a cold Numba cache compiles for about a minute, a
    warm one loads in about a second, and only the first deserves a word."""
    start = time.perf_counter()
    timer = threading.Timer(after, log.info, (message,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        elapsed = time.perf_counter() - start
        if elapsed > after:
            log.info("%s: done in %.0f s (cached for later runs)", message, elapsed)


_blas_libraries = None
_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved = ()


@contextmanager
def one_blas_thread():
    """Run the block with every loaded BLAS library on one thread, then restore the caller's setting.

    The engine's matrix products go through this, so its numbers never depend on the caller's BLAS
    thread setting: OpenBLAS picks other kernels and summation orders for other thread counts
    (on AVX2 machines about one gradient entry in seven differs in the last bits). For products of
    this size one thread is also the fastest. The engine releases the GIL, so blocks of several
    Python threads may overlap: the setting is made by the first to enter and restored by the
    last to leave. The libraries are found once and set directly (a ``threadpool_limits`` on every
    call took ~35 us of a cart-pole gradient's ~1 ms).
    """
    global _blas_libraries, _blas_users, _blas_saved
    with _blas_lock:
        if _blas_libraries is None:
            import scipy.linalg.cython_blas  # noqa: F401  (the BLAS that Numba's np.dot calls)
            from threadpoolctl import ThreadpoolController

            _blas_libraries = [library for library in ThreadpoolController().lib_controllers
                               if library.user_api == "blas"]
        if _blas_users == 0:
            _blas_saved = [(library, library.get_num_threads()) for library in _blas_libraries]
            for library, threads in _blas_saved:
                if threads != 1:
                    library.set_num_threads(1)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                for library, threads in _blas_saved:
                    if threads != 1:
                        library.set_num_threads(threads)
                _blas_saved = ()


# Samples per chunk of a batch. A batch is cut into chunks of these sizes whatever the number
# of threads, each chunk is computed alone (by whichever thread), and the chunks' losses and
# gradients are summed in chunk order: results are the same bits for any thread count. Four
# samples keep the per-step products small and fast (controllers/_dense.py); a loss-only
# evaluation of many states takes larger chunks, whose products go to BLAS.
GRADIENT_CHUNK = 4
LOSS_CHUNK = 64
# a controller adjoint called on several steps (_vjp_all_steps) covers steps whose rows of its
# buffers take about this many bytes: the CNN's copied windows then stay in the core's L2 cache
VJP_BLOCK_BYTES = 1 << 20


def batch_chunks(batch, size):
    """Consecutive slices of ``size`` samples covering a batch (the last one may be smaller)."""
    return [slice(start, min(start + size, batch)) for start in range(0, batch, size)]


def block_steps(n_steps, batch, row_bytes):
    """The most steps, a divisor of ``n_steps``, whose ``batch`` rows of ``row_bytes`` each take
    at most :data:`VJP_BLOCK_BYTES` (at least one step): a step-major buffer of N steps is one
    of N / k blocks of k steps, so a block is what one controller call may cover."""
    fits = max(1, VJP_BLOCK_BYTES // max(1, batch * row_bytes))
    return max(k for k in range(1, min(fits, n_steps) + 1) if n_steps % k == 0)


class _Worker:
    """A thread that runs one function at a time for another thread. The hand-over is two locks,
    each released by one thread and acquired by the other: the cheapest wake-up Python has (a
    thread pool's futures, queue and conditions cost ~35 us more per cart-pole gradient, whose
    two chunks take ~0.6 ms each)."""

    def __init__(self):
        self._start, self._done = threading.Lock(), threading.Lock()
        self._start.acquire()
        self._done.acquire()
        self._task = self._outcome = None
        threading.Thread(target=self._serve, name="stablebptt", daemon=True).start()

    def _serve(self):
        while True:
            self._start.acquire()
            try:
                self._outcome = (self._task(), None)
            except BaseException as error:  # handed to the caller, who raises it
                self._outcome = (None, error)
            self._task = None
            self._done.release()

    def start(self, task):
        self._task = task
        self._start.release()

    def wait(self):
        """``(result, error)`` of the task, once it has ended: an interrupt of this wait is
        raised only after the task ended, so that no task outlives its call."""
        interrupt = None
        while True:
            try:
                self._done.acquire()
                break
            except BaseException as error:  # e.g. KeyboardInterrupt during the wait
                interrupt = error
        if interrupt is not None:
            raise interrupt
        return self._outcome


class _Crew:
    """``size`` workers that, with the calling thread, run one call's shares at the same time.
    One call at a time: ``busy`` is held for the call (a concurrent caller computes alone)."""

    def __init__(self, size):
        self.busy = threading.Lock()
        self.workers = [_Worker() for _ in range(size)]

    def run(self, tasks):
        """``[task() for task in tasks]``: the first in this thread, the others in the workers."""
        workers = self.workers[:len(tasks) - 1]
        for worker, task in zip(workers, tasks[1:]):
            worker.start(task)
        try:
            mine = tasks[0]()
        finally:  # every worker's share ends inside the caller's call, whatever happens
            outcomes = [worker.wait() for worker in workers]
        for _, error in outcomes:
            if error is not None:
                raise error
        return [mine] + [result for result, _ in outcomes]


_crews = {}
_crews_lock = threading.Lock()


def _crew(size):
    """The process-wide crew of ``size`` workers, made on first use."""
    with _crews_lock:
        if size not in _crews:
            _crews[size] = _Crew(size)
        return _crews[size]


def _forget_crews():
    """In a forked child: the parent's workers did not come along, so make new ones on use."""
    global _crews_lock
    _crews.clear()
    _crews_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_crews)


def stage_weights(n_steps, loss_mode, reduction="sum"):
    """Weights ``w_n`` (n = 0..N) of the stage losses: FINAL = {N}, CONTINUOUS = {1..N}.

    ``reduction="mean"`` divides the CONTINUOUS weights by N (a time average, as the reference's
    cart-pole loss); ``"sum"`` keeps them at 1 (as its quantum loss).
    """
    mode = str(loss_mode).upper()
    w = np.zeros(n_steps + 1)
    if mode == "FINAL":
        w[n_steps] = 1.0
    elif mode == "CONTINUOUS":
        w[1:] = 1.0 / n_steps if reduction == "mean" else 1.0
    else:
        raise ValueError(f"unknown loss mode {loss_mode!r}: use FINAL or CONTINUOUS")
    return w


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


@dataclass
class Gradient:
    """Result of one batch: the loss (and its physics part, without the control regulariser), the
    gradient handed to the optimiser, and for C (:meth:`combined`) its two parts, their cosine
    similarity and the fraction of g_M's components the sign rule kept. Other modes: cosine 0
    (as the reference logs) and kept fraction NaN."""

    loss: float
    physics_loss: float
    grad: np.ndarray
    grad_regular: np.ndarray = None
    grad_modified: np.ndarray = None
    cosine: float = 0.0
    kept_fraction: float = float("nan")

    @classmethod
    def combined(cls, loss, physics_loss, grad_regular, grad_modified):
        """The C result of g_R and g_M (every engine's): the sign rule and both metrics in one pass."""
        update, cosine, kept = combine_with_metrics(grad_modified, grad_regular)
        return cls(loss, physics_loss, update, grad_regular, grad_modified, cosine, kept)


class Problem:
    """A simulator, a controller, a horizon and a loss: the object every gradient is taken of.

    ``rho`` weights the control regulariser ``rho * mean(c^2)`` (mean over steps, batch, controls).
    A batch is computed in fixed chunks (:data:`GRADIENT_CHUNK`, :data:`LOSS_CHUNK` samples) on
    ``threads`` threads; the result is the same for any number of threads. Buffers are allocated
    per chunk and dtype on first use and reused afterwards.
    """

    def __init__(self, sim, controller, n_steps, loss_mode="FINAL", rho=0.0, threads=1):
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        check_simulator_interface(sim)
        check_controller_interface(controller, sim)
        self.sim = sim
        self.controller = controller
        self.n_steps = int(n_steps)
        self.loss_mode = str(loss_mode).upper()
        self.rho = float(rho)
        self.weights = stage_weights(n_steps, loss_mode, getattr(sim, "continuous_reduction", "sum"))
        self.params = np.ascontiguousarray(sim.params, dtype=np.float64)
        self.spec = controller.spec
        self.unit_widths = self._unit_widths(sim, controller)
        self.threads = threads
        self._buffers = {}
        self._plans = {}
        self._kernels = {}

    @staticmethod
    def _unit_widths(sim, controller):
        """The widths of the controller's cotangent blocks (``delta_widths``, int64) where the
        engine may run the controller's adjoint once for unit control cotangents and scale it per
        sweep (``_bptt``): a scalar control and a controller that says ``steps_as_rows`` and
        ``delta_widths``. Empty otherwise (the adjoint runs with each sweep's cotangents)."""
        widths = getattr(controller, "delta_widths", None)
        if sim.control_dim != 1 or not getattr(controller, "steps_as_rows", False) or widths is None:
            return np.zeros(0, np.int64)
        widths = np.array(widths, dtype=np.int64)
        if widths.sum() != controller.deltas_size(1):
            raise ValueError(f"{type(controller).__name__}.delta_widths {tuple(widths)} do not add "
                             f"up to deltas_size(1) = {controller.deltas_size(1)}")
        return widths

    @property
    def threads(self):
        """Threads that compute a batch's chunks (1: the calling thread alone)."""
        return self._threads

    @threads.setter
    def threads(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"threads must be an integer >= 1, got {value!r}")
        self._threads = int(value)

    def compile(self, dtype):
        """Compile (or load from Numba's cache) every kernel ``dtype`` needs, now rather than on
        the first gradient; a long first compilation is announced on the ``stablebptt`` log."""
        self._kernels_for(dtype)
        return self

    def _kernels_for(self, dtype):
        """The engine's entry points for ``dtype`` and the seven contract kernels they call.

        Compiled (or loaded from Numba's on-disk cache) the first time a dtype is used; a slow
        first compilation is announced on the log. ``"kernels"`` holds the kernels' addresses in
        ``KERNEL_ORDER``, ``"wrappers"`` the objects that keep their code alive.
        """
        key = np.dtype(dtype).str
        if key not in self._kernels:
            sim, ctrl = self.sim, self.controller
            what = (f"compiling kernels for {getattr(sim, 'name', type(sim).__name__)}"
                    f"/{type(ctrl).__name__}/{np.dtype(dtype).name} (once)")
            with announce_if_slow(what):
                wrappers = [compiled_kernel(sim if name in SIMULATOR_KERNELS else ctrl, name,
                                            _KERNEL_SIGS[name], dtype) for name in KERNEL_ORDER]
                T = _NUMBA_FLOAT[np.dtype(dtype)]
                self._kernels[key] = dict(
                    wrappers=wrappers,
                    kernels=np.array([w.__wrapper_address__() for w in wrappers], np.int64),
                    # the compiled entry points, called directly: the dispatcher would type the
                    # arguments again on every call
                    rollout=compile_variant(_rollout_at, _rollout_sig, T).entry_point,
                    bptt=compile_variant(_bptt_at, _bptt_sig, T).entry_point)
        return self._kernels[key]

    def _buffers_for(self, chunk, batch, dtype, keep_acts, n_theta):
        """Work arrays of chunk number ``chunk`` (``batch`` samples, parameters of ``n_theta``
        values: prepared ones for gradients): one set per chunk, so that threads never share one."""
        key = (chunk, batch, np.dtype(dtype).str, keep_acts, n_theta)
        if key not in self._buffers:
            n, ctrl = self.n_steps, self.controller
            rows = (n if keep_acts else 1) * batch
            n_params = ctrl.n_params if keep_acts else 0
            self._buffers[key] = dict(
                xs=np.zeros((n + 1, batch, self.sim.state_dim), dtype),
                cs=np.zeros((n, batch, self.sim.control_dim), dtype),
                acts=np.zeros(ctrl.acts_size(rows), dtype),
                deltas=np.zeros(ctrl.deltas_size(rows) if keep_acts else 0, dtype),
                deltas_m=np.zeros(ctrl.deltas_size(rows) if keep_acts else 0, dtype),
                # every step's control cotangents and the controller's input cotangents, for its
                # one call on all steps (_bptt, _adjoint)
                mus=np.zeros((n if keep_acts else 0, batch, self.sim.control_dim), dtype),
                dxs=np.zeros((n if keep_acts else 0, batch, self.sim.state_dim), dtype),
                # in place of dxs where the input cotangents go unused (gradient())
                no_dxs=np.zeros((n if keep_acts else 0, batch, 0), dtype),
                g=np.zeros(n_params, dtype),
                g_m=np.zeros(n_params, dtype),
                theta=np.zeros(n_theta, dtype),
                params=self.params.copy(),
                spec=self.spec.copy(),
                # the controller's rows per adjoint call on several steps (_vjp_all_steps)
                block_steps=block_steps(n, batch, np.dtype(dtype).itemsize
                                        * (ctrl.acts_size(1) + ctrl.deltas_size(1))),
            )
        return self._buffers[key]

    def _jobs(self, batch, chunk_size, dtype, keep_acts, n_theta):
        """``[(samples, buffers, weights, rho)]`` of every chunk of a batch of ``batch`` samples,
        made once per batch size, dtype and buffer kind: ``weights`` and ``rho`` are the
        problem's, scaled by the chunk's share of the batch, so that the chunks' losses and
        gradients add up to the batch mean's."""
        key = (batch, chunk_size, dtype, keep_acts, n_theta, self.rho)
        if key not in self._plans:
            jobs = []
            for index, part in enumerate(batch_chunks(batch, chunk_size)):
                size = part.stop - part.start
                jobs.append((part, self._buffers_for(index, size, dtype, keep_acts, n_theta),
                             self.weights * (size / batch), self.rho * (size / batch)))
            self._plans[key] = jobs
        return self._plans[key]

    def _chunked(self, theta, x0, chunk_size, keep_acts, work):
        """``[work(buffers, weights, rho)]`` of every chunk of the batch ``x0``, in chunk order
        (:meth:`_jobs`); each chunk's buffers hold its initial states. Chunks run on up to
        ``threads`` threads (this one and the workers of a :class:`_Crew`), the BLAS on one each.
        """
        jobs = self._jobs(len(x0), chunk_size, theta.dtype, keep_acts, theta.size)
        for part, buf, _, _ in jobs:
            buf["xs"][0] = x0[part]
            # each chunk reads its own copy of the parameters, so that threads share no array
            # (a kernel's views of an array count references in that array's header)
            buf["theta"][:] = theta
        threads = min(self.threads, len(jobs))

        def share(first):  # every threads-th chunk from ``first`` on
            return [work(buf, weights, rho) for _, buf, weights, rho in jobs[first::threads]]

        crew = _crew(threads - 1) if threads > 1 else None
        if crew is not None and not crew.busy.acquire(blocking=False):
            crew, threads = None, 1  # another thread's call has the workers: same results alone
        with one_blas_thread():
            if crew is None:
                return share(0)
            try:
                shares = crew.run([functools.partial(share, first) for first in range(threads)])
            finally:
                crew.busy.release()
        return [shares[index % threads][index // threads] for index in range(len(jobs))]

    def _check(self, theta, x0):
        theta = np.ascontiguousarray(theta)
        if theta.dtype not in (np.float32, np.float64):
            raise TypeError(f"parameters must be float32 or float64, got {theta.dtype}")
        if theta.shape != (self.controller.n_params,):
            raise ValueError(f"expected {self.controller.n_params} parameters, got shape {theta.shape}")
        x0 = np.ascontiguousarray(x0, dtype=theta.dtype).reshape(len(x0), -1)
        if x0.shape[1] != self.sim.state_dim:
            raise ValueError(f"states must have {self.sim.state_dim} entries, got {x0.shape[1]}")
        return theta, x0

    def _forward(self, theta, x0):
        """Per chunk ``(physics loss, regulariser, buffers)`` of a forward pass from ``x0``."""
        theta, x0 = self._check(theta, x0)
        k = self._kernels_for(theta.dtype)

        def work(buf, weights, rho):
            physics, reg = k["rollout"](k["kernels"], buf["params"], buf["theta"], buf["spec"],
                                        weights, rho, buf["xs"], buf["cs"], buf["acts"], 1)
            return physics, reg, buf

        return self._chunked(theta, x0, LOSS_CHUNK, False, work)

    def rollout(self, theta, x0):
        """Loss and the stored trajectory ``(loss, states (N+1, B, S), controls (N, B, C))`` (copies)."""
        chunks = self._forward(theta, x0)
        loss = sum(physics + reg for physics, reg, _ in chunks)
        return (loss, np.concatenate([buf["xs"] for _, _, buf in chunks], axis=1),
                np.concatenate([buf["cs"] for _, _, buf in chunks], axis=1))

    def losses(self, theta, x0):
        """``(loss, physics part without the control regulariser)`` of a batch, forward only."""
        chunks = self._forward(theta, x0)
        physics = sum(part for part, _, _ in chunks)
        return physics + sum(reg for _, reg, _ in chunks), physics

    def loss(self, theta, x0):
        """The loss of a batch of initial states, forward only."""
        return self.losses(theta, x0)[0]

    def gradient(self, theta, x0, mode):
        """The loss and the parameter gradient of ``mode`` (R, M, N, S or C) for a batch."""
        mode = parse_mode(mode)
        theta, x0 = self._check(theta, x0)
        a, b = mode.path_weights
        combined = mode is Mode.COMBINED
        k = self._kernels_for(theta.dtype)

        prepared = prepared_parameters(self.controller, theta)
        steps_as_rows = bool(getattr(self.controller, "steps_as_rows", False))
        # dxs receive the controller's input cotangents of calls on all steps' rows: used only
        # as the feedback of a scalar control's unit cotangents (R, C), else skipped if allowed
        needs_dxs = (self.unit_widths.size > 0 and b != 0.0
                     or not getattr(self.controller, "input_cotangent_optional", False))
        dxs_key = "dxs" if needs_dxs else "no_dxs"

        def work(buf, weights, rho):
            g, g_m = buf["g"], buf["g_m"] if combined else buf["g_m"][:0]
            g[:] = 0
            g_m[:] = 0
            return k["bptt"](k["kernels"], buf["params"], buf["theta"], buf["spec"], weights, rho,
                             a, b, combined, steps_as_rows, self.unit_widths, buf["block_steps"],
                             buf["xs"], buf["cs"], buf["acts"], buf["deltas"], buf["deltas_m"], g,
                             g_m, buf["mus"], buf[dxs_key]), g, g_m

        chunks = self._chunked(prepared, x0, GRADIENT_CHUNK, True, work)
        physics = sum(losses[0] for losses, _, _ in chunks)
        loss = physics + sum(losses[1] for losses, _, _ in chunks)
        g = chunks[0][1].copy()
        g_m = chunks[0][2].copy()
        for _, g_chunk, g_m_chunk in chunks[1:]:  # in chunk order, whichever thread finished first
            g += g_chunk
            g_m += g_m_chunk
        if combined:
            return Gradient.combined(loss, physics, g, g_m)
        return Gradient(loss, physics, g)
