"""The BPTT engine: one compiled call rolls a batch out and sweeps it back for a gradient mode.

Math (DESIGN.md §1), with adjoints ``lam_n = dL/dx_n`` and control cotangents ``mu_n``::

    lam_N = w_N dl/dx_N
    mu_n  = (ds/dc)^T lam_{n+1} + d(rho mean c^2)/dc_n
    g    += (df/dtheta)^T mu_n
    lam_n = w_n dl/dx_n + a (ds/dx)^T lam_{n+1} + b (df/dx)^T mu_n

The kernels are passed as first-class Numba function values with the fixed signatures of
:mod:`stablebptt.contract`, so one cached compilation serves every simulator and controller.
"""

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from numba import njit, types
from numba.core.types.function_type import CompileResultWAP

from ..contract import (CONTROLLER_KERNELS, SIMULATOR_KERNELS, check_controller_interface,
                        check_simulator_interface, compile_kernel, compile_variant, forward_sig,
                        function_type, loss_grad_sig, loss_sig, param_grad_sig, step_sig,
                        step_vjp_sig, vjp_sig)
from .modes import Mode, combine_gradients, cosine_similarity, kept_fraction, parse_mode

log = logging.getLogger("stablebptt")


_LOSSES = types.UniTuple(types.float64, 2)


def _rollout_sig(T):
    return _LOSSES(
        function_type(step_sig, T), function_type(loss_sig, T), function_type(forward_sig, T),
        types.float64[::1], T[::1], types.int64[::1], types.float64[::1], types.float64,
        T[:, :, ::1], T[:, :, ::1], T[::1], types.int64)


def _bptt_sig(T):
    return _LOSSES(
        function_type(step_sig, T), function_type(step_vjp_sig, T), function_type(loss_sig, T),
        function_type(loss_grad_sig, T), function_type(forward_sig, T), function_type(vjp_sig, T),
        function_type(param_grad_sig, T),
        types.float64[::1], T[::1], types.int64[::1], types.float64[::1], types.float64,
        types.float64, types.float64, types.boolean,
        T[:, :, ::1], T[:, :, ::1], T[::1], T[::1], T[::1], T[::1], T[::1])


@njit(cache=True, error_model="numpy")
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
                reg += float(v) * float(v)
    return total, rho * reg / cs.size


@njit(cache=True, error_model="numpy")
def _sweep(step_vjp, loss_grad, vjp, p, theta, spec, weights, rho, a, b, xs, cs, acts, deltas):
    """One backward sweep over a stored trajectory with path weights ``(a, b)``; fills ``deltas``."""
    n_steps, batch, _ = cs.shape
    lam = np.zeros_like(xs[0])
    dx_sim = np.zeros_like(xs[0])
    dx_ctrl = np.zeros_like(xs[0])
    mu = np.zeros_like(cs[0])
    reg_scale = 2.0 * rho / cs.size
    if weights[n_steps] != 0.0:
        loss_grad(p, xs[n_steps], weights[n_steps], lam)
    for n in range(n_steps - 1, -1, -1):
        step_vjp(p, xs[n], cs[n], lam, dx_sim, mu)
        if rho != 0.0:
            mu += reg_scale * cs[n]
        vjp(theta, spec, xs[n], acts, n, n_steps, mu, dx_ctrl, deltas)
        if n == 0:
            break
        lam[:, :] = a * dx_sim + b * dx_ctrl
        if weights[n] != 0.0:
            loss_grad(p, xs[n], weights[n], lam)


@njit(cache=True, error_model="numpy")
def _bptt(step, step_vjp, loss, loss_grad, forward, vjp, param_grad, p, theta, spec, weights, rho,
          a, b, with_modified, xs, cs, acts, deltas, deltas_m, g, g_m):
    """Rollout + backward sweep(s) of one batch; gradients are *added* to ``g`` (and ``g_m``).

    With ``with_modified`` a second sweep with ``(a, b) = (1, 0)`` over the same trajectory gives the
    modified gradient in ``g_m``: the combined mode's two gradients from one forward pass.
    """
    n_steps, batch, _ = cs.shape
    losses = _rollout(step, loss, forward, p, theta, spec, weights, rho, xs, cs, acts, n_steps)
    inputs = xs[:n_steps].reshape(n_steps * batch, xs.shape[2])
    _sweep(step_vjp, loss_grad, vjp, p, theta, spec, weights, rho, a, b, xs, cs, acts, deltas)
    param_grad(theta, spec, inputs, acts, deltas, n_steps, g)
    if with_modified:
        _sweep(step_vjp, loss_grad, vjp, p, theta, spec, weights, rho, 1.0, 0.0, xs, cs, acts, deltas_m)
        param_grad(theta, spec, inputs, acts, deltas_m, n_steps, g_m)
    return losses


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


_blas_controller = None


@contextmanager
def one_blas_thread():
    """Run the block with every loaded BLAS library on one thread, then restore the caller's setting.

    The engine's matrix products go through this, so its numbers never depend on the caller's BLAS
    thread setting: OpenBLAS picks other kernels and summation orders for other thread counts
    (on AVX2 machines about one gradient entry in seven differs in the last bits). For products of
    this size one thread is also the fastest. Compiled kernels hold the GIL, so two Python threads
    never run the engine under each other's setting.
    """
    global _blas_controller
    if _blas_controller is None:
        import scipy.linalg.cython_blas  # noqa: F401  (the BLAS that Numba's np.dot calls)
        from threadpoolctl import ThreadpoolController

        _blas_controller = ThreadpoolController()
    with _blas_controller.limit(limits=1, user_api="blas"):
        yield


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


@dataclass
class Gradient:
    """Result of one batch: the loss (and its physics part, without the control regulariser), the
    gradient handed to the optimiser, and for C its two parts."""

    loss: float
    physics_loss: float
    grad: np.ndarray
    grad_regular: np.ndarray = None
    grad_modified: np.ndarray = None

    @property
    def cosine(self):
        """Cosine similarity of g_M and g_R (combined mode), else 0 as the reference logs."""
        if self.grad_regular is None:
            return 0.0
        return cosine_similarity(self.grad_modified, self.grad_regular)

    @property
    def kept_fraction(self):
        """The fraction of g_M's components the sign rule kept (combined mode), else NaN."""
        if self.grad_regular is None:
            return float("nan")
        return kept_fraction(self.grad_modified, self.grad_regular)


class Problem:
    """A simulator, a controller, a horizon and a loss: the object every gradient is taken of.

    ``rho`` weights the control regulariser ``rho * mean(c^2)`` (mean over steps, batch, controls).
    Buffers are allocated per batch size and dtype on first use and reused afterwards.
    """

    def __init__(self, sim, controller, n_steps, loss_mode="FINAL", rho=0.0):
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
        self._buffers = {}
        self._kernels = {}

    def compile(self, dtype):
        """Compile (or load from Numba's cache) every kernel ``dtype`` needs, now rather than on
        the first gradient; a long first compilation is announced on the ``stablebptt`` log."""
        self._kernels_for(dtype)
        return self

    def _kernels_for(self, dtype):
        """The seven contract kernels compiled for ``dtype``, as the engine's function arguments.

        Compiled (or loaded from Numba's on-disk cache) the first time a dtype is used, together
        with the engine's own functions; a slow first compilation is announced on the log.
        """
        key = np.dtype(dtype).str
        if key not in self._kernels:
            sim, ctrl = self.sim, self.controller
            what = (f"compiling kernels for {getattr(sim, 'name', type(sim).__name__)}"
                    f"/{type(ctrl).__name__}/{np.dtype(dtype).name} (once)")
            with announce_if_slow(what):
                kernels = {name: compiled_kernel(sim, name, sig, dtype)
                           for name, sig in SIMULATOR_KERNELS.items()}
                kernels.update({name: compiled_kernel(ctrl, name, sig, dtype)
                                for name, sig in CONTROLLER_KERNELS.items()})
                self._kernels[key] = kernels
                T = _NUMBA_FLOAT[np.dtype(dtype)]
                compile_variant(_rollout, _rollout_sig, T)
                compile_variant(_bptt, _bptt_sig, T)
        return self._kernels[key]

    def _buffers_for(self, batch, dtype, keep_acts):
        key = (batch, np.dtype(dtype).str, keep_acts)
        if key not in self._buffers:
            n, ctrl = self.n_steps, self.controller
            rows = (n if keep_acts else 1) * batch
            self._buffers[key] = dict(
                xs=np.zeros((n + 1, batch, self.sim.state_dim), dtype),
                cs=np.zeros((n, batch, self.sim.control_dim), dtype),
                acts=np.zeros(ctrl.acts_size(rows), dtype),
                deltas=np.zeros(ctrl.deltas_size(rows) if keep_acts else 0, dtype),
                deltas_m=np.zeros(ctrl.deltas_size(rows) if keep_acts else 0, dtype),
            )
        return self._buffers[key]

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
        theta, x0 = self._check(theta, x0)
        buf = self._buffers_for(len(x0), theta.dtype, keep_acts=False)
        buf["xs"][0] = x0
        k = self._kernels_for(theta.dtype)
        with one_blas_thread():
            physics, reg = _rollout(k["step"], k["loss"], k["forward"], self.params, theta,
                                    self.spec, self.weights, self.rho, buf["xs"], buf["cs"],
                                    buf["acts"], 1)
        return physics, reg, buf

    def rollout(self, theta, x0):
        """Loss and the stored trajectory ``(loss, states (N+1, B, S), controls (N, B, C))`` (copies)."""
        physics, reg, buf = self._forward(theta, x0)
        return physics + reg, buf["xs"].copy(), buf["cs"].copy()

    def losses(self, theta, x0):
        """``(loss, physics part without the control regulariser)`` of a batch, forward only."""
        physics, reg, _ = self._forward(theta, x0)
        return physics + reg, physics

    def loss(self, theta, x0):
        """The loss of a batch of initial states, forward only."""
        return self.losses(theta, x0)[0]

    def gradient(self, theta, x0, mode):
        """The loss and the parameter gradient of ``mode`` (R, M, N, S or C) for a batch."""
        mode = parse_mode(mode)
        theta, x0 = self._check(theta, x0)
        buf = self._buffers_for(len(x0), theta.dtype, keep_acts=True)
        buf["xs"][0] = x0
        a, b = mode.path_weights
        combined = mode is Mode.COMBINED
        g = np.zeros_like(theta)
        g_m = np.zeros_like(theta) if combined else np.zeros(0, theta.dtype)
        k = self._kernels_for(theta.dtype)
        with one_blas_thread():
            physics, reg = _bptt(k["step"], k["step_vjp"], k["loss"], k["loss_grad"],
                                 k["forward"], k["vjp"], k["param_grad"], self.params, theta,
                                 self.spec, self.weights, self.rho, a, b, combined, buf["xs"],
                                 buf["cs"], buf["acts"], buf["deltas"], buf["deltas_m"], g, g_m)
        if combined:
            return Gradient(physics + reg, physics, combine_gradients(g_m, g), grad_regular=g,
                            grad_modified=g_m)
        return Gradient(physics + reg, physics, g)
