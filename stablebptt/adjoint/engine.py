"""The BPTT engine: one compiled call rolls a batch out and sweeps it back for a gradient mode.

The recursion (the docs' *gradient modes* page), with adjoints ``lam_n = dL/dx_n`` and control
cotangents ``mu_n``::

    lam_N = w_N dl/dx_N
    mu_n  = (ds/dc)^T lam_{n+1} + d(rho mean c^2)/dc_n
    g    += (df/dtheta)^T mu_n
    lam_n = w_n dl/dx_n + a (ds/dx)^T lam_{n+1} + b (df/dx)^T mu_n

This module holds the problem and its result and imports no Numba: the compiled sweeps are in
:mod:`stablebptt.adjoint.sweeps` (loaded on the first compilation), the threads that compute a
batch's chunks in :mod:`stablebptt.adjoint.threads`.
"""

import functools
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ..contract import (capability, check_controller_interface, check_simulator_interface,
                        prepared_parameters)
from .modes import Mode, parse_mode
from .threads import crew as threads_crew
from .threads import one_blas_thread

log = logging.getLogger("stablebptt")


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
        from .sweeps import combine_with_metrics

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
        self.weights = stage_weights(n_steps, loss_mode, capability(sim, "continuous_reduction"))
        self.params = np.ascontiguousarray(sim.params, dtype=np.float64)
        self.spec = controller.spec
        self.unit_widths = self._unit_widths(sim, controller)
        # the controller's optional capabilities, read once (contract.OPTIONAL_CAPABILITIES)
        self.steps_as_rows = bool(capability(controller, "steps_as_rows"))
        self.input_cotangent_optional = bool(capability(controller, "input_cotangent_optional"))
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
        widths = capability(controller, "delta_widths")
        if sim.control_dim != 1 or not capability(controller, "steps_as_rows") or widths is None:
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
            from .sweeps import entry_points  # loads Numba

            sim, ctrl = self.sim, self.controller
            what = (f"compiling kernels for {getattr(sim, 'name', type(sim).__name__)}"
                    f"/{type(ctrl).__name__}/{np.dtype(dtype).name} (once)")
            with announce_if_slow(what):
                self._kernels[key] = entry_points(sim, ctrl, dtype)
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

        crew = threads_crew(threads - 1) if threads > 1 else None
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
        steps_as_rows = self.steps_as_rows
        # dxs receive the controller's input cotangents of calls on all steps' rows: used only
        # as the feedback of a scalar control's unit cotangents (R, C), else skipped if allowed
        needs_dxs = (self.unit_widths.size > 0 and b != 0.0
                     or not self.input_cotangent_optional)
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
