"""CUDA mirror of the BPTT engine: any simulator and controller with per-sample kernels, all
gradient modes.

Each GPU thread rolls one trajectory out and sweeps it back with the same recursions as
:mod:`stablebptt.adjoint.engine`; the per-thread parameter gradients are summed by a second kernel
in a fixed order (one thread per parameter), so results do not depend on scheduling. The
trajectory stays on the device for the whole update; only the parameters go in and the gradient
comes out (about 40 kB for the paper's MLP), and Adam runs on the host so that one optimiser
implementation, and one checkpoint format, serves both devices.

The physics is not written here: each thread calls the simulator's and controller's per-sample
kernels (``step_one``, ``forward_one``, ... of :mod:`stablebptt.contract`), the same functions the
CPU batch kernels loop over, compiled for the GPU by Numba's CUDA target. This module imports no
simulator or controller; any object with those kernels runs here.
"""

import numpy as np
from numba import config, cuda

from ..adjoint.engine import Gradient
from ..adjoint.modes import Mode, parse_mode
from ..contract import SAMPLE_CONTROLLER_KERNELS, SAMPLE_SIMULATOR_KERNELS, sample_kernels


def make_kernels(step, step_vjp, loss, loss_grad, forward, backward):
    """The rollout/sweep kernel for one simulator and controller (per-sample device functions)."""

    @cuda.jit(device=True)
    def sweep(p, theta, spec, weights, reg_scale, a, b, xs, cs, acts, lam, dxs, dxc, mu, scratch, g,
              inv_batch):
        n_steps = cs.shape[0]
        for i in range(lam.shape[0]):
            lam[i] = 0.0
        if weights[n_steps] != 0.0:
            loss_grad(p, xs[n_steps], weights[n_steps] * inv_batch, lam)
        for n in range(n_steps - 1, -1, -1):
            step_vjp(p, xs[n], cs[n], lam, dxs, mu, scratch)
            for j in range(mu.shape[0]):
                mu[j] += reg_scale * cs[n, j]
            backward(theta, spec, xs[n], acts[n], mu, dxc, g, scratch)
            if n == 0:
                break
            for i in range(lam.shape[0]):
                lam[i] = a * dxs[i] + b * dxc[i]
            if weights[n] != 0.0:
                loss_grad(p, xs[n], weights[n] * inv_batch, lam)

    @cuda.jit
    def bptt(p, theta, spec, weights, rho, a, b, sweeps, with_modified, xs, cs, acts, lam, dxs, dxc,
             mu, scratch, g_r, g_m, losses):
        """Thread t: trajectory t forward (its loss and sum of c^2), then its sweep(s)."""
        t = cuda.grid(1)
        if t >= xs.shape[0]:
            return
        n_steps = cs.shape[1]
        total = weights[0] * loss(p, xs[t, 0]) if weights[0] != 0.0 else 0.0
        squares = 0.0
        for n in range(n_steps):
            forward(theta, spec, xs[t, n], acts[t, n], cs[t, n], scratch[t])
            step(p, xs[t, n], cs[t, n], xs[t, n + 1], scratch[t])
            if weights[n + 1] != 0.0:
                total += weights[n + 1] * loss(p, xs[t, n + 1])
            for j in range(cs.shape[2]):
                squares += cs[t, n, j] * cs[t, n, j]
        losses[t, 0] = total
        losses[t, 1] = squares
        if not sweeps:
            return
        inv_batch = 1.0 / xs.shape[0]
        reg_scale = 2.0 * rho / (n_steps * xs.shape[0] * cs.shape[2])
        sweep(p, theta, spec, weights, reg_scale, a, b, xs[t], cs[t], acts[t], lam[t], dxs[t],
              dxc[t], mu[t], scratch[t], g_r[t], inv_batch)
        if with_modified:
            sweep(p, theta, spec, weights, reg_scale, 1.0, 0.0, xs[t], cs[t], acts[t], lam[t],
                  dxs[t], dxc[t], mu[t], scratch[t], g_m[t], inv_batch)

    return bptt


@cuda.jit
def _sum_rows(per_thread, out):
    """out[j] = sum over threads of per_thread[t, j], always in the same order."""
    j = cuda.grid(1)
    if j < out.shape[0]:
        total = 0.0
        for t in range(per_thread.shape[0]):
            total += per_thread[t, j]
        out[j] = total


_DEVICE_FUNCTIONS = {}
_KERNELS = {}


def device_function(func):
    """``func`` (a per-sample kernel: a plain function or its CPU dispatcher) as a CUDA device
    function, compiled once per function. The helpers it calls are CPU dispatchers too, which
    Numba's CUDA target compiles as device functions of their own."""
    source = getattr(func, "py_func", func)
    if source not in _DEVICE_FUNCTIONS:
        if config.ENABLE_CUDASIM:
            _DEVICE_FUNCTIONS[source] = _on_simulated_device(source)
        else:
            _DEVICE_FUNCTIONS[source] = cuda.jit(device=True)(source)
    return _DEVICE_FUNCTIONS[source]


def _on_simulated_device(source):
    """Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, for tests without a GPU) kernels
    run as Python and hand device functions the simulator's array wrappers, which the compiled
    helpers a per-sample kernel calls cannot take: the kernel runs as Python on the NumPy arrays
    inside."""
    def call(*args):
        return source(*(_simulated_array(a) for a in args))

    return call


def _simulated_array(value):
    inner = getattr(value, "_item", value)  # a within-kernel wrapper holds a simulated array
    return getattr(inner, "_ary", value)


def bptt_kernel(sim, controller):
    """The rollout/sweep kernel of a simulator and controller, built from their per-sample
    kernels (a :class:`~stablebptt.contract.ContractError` names one that is missing), and the
    float64 scratch each thread needs: one vector that the simulator's and the controller's
    kernels use in turn, never at the same time."""
    sim_kernels, sim_work = sample_kernels(sim, SAMPLE_SIMULATOR_KERNELS)
    ctrl_kernels, ctrl_work = sample_kernels(controller, SAMPLE_CONTROLLER_KERNELS)
    functions = tuple(getattr(f, "py_func", f) for f in (*sim_kernels.values(), *ctrl_kernels.values()))
    if functions not in _KERNELS:
        _KERNELS[functions] = make_kernels(*(device_function(f) for f in functions))
    return _KERNELS[functions], max(sim_work, ctrl_work)


class CudaProblem:
    """The GPU counterpart of :class:`~stablebptt.adjoint.Problem` for a simulator and controller
    with per-sample kernels (every built-in one).

    ``gradient`` and ``losses`` have the CPU engine's meaning and return the same types.
    """

    THREADS = 64

    def __init__(self, problem):
        self._kernel, self._scratch_size = bptt_kernel(problem.sim, problem.controller)
        self.cpu = problem
        self.sim, self.controller = problem.sim, problem.controller
        self.n_steps, self.rho = problem.n_steps, problem.rho
        self._p = cuda.to_device(problem.params)
        self._spec = cuda.to_device(self.controller.spec)
        self._weights = cuda.to_device(problem.weights)
        self._buffers = {}

    def _buffers_for(self, batch, dtype):
        key = (batch, np.dtype(dtype).str)
        if key not in self._buffers:
            n, s = self.n_steps, self.sim.state_dim
            c = self.sim.control_dim
            self._buffers[key] = {
                "xs": cuda.device_array((batch, n + 1, s), dtype),
                "cs": cuda.device_array((batch, n, c), dtype),
                "acts": cuda.device_array((batch, n, max(1, self.controller.acts_size(1))), dtype),
                "lam": cuda.device_array((batch, s), dtype),
                "dxs": cuda.device_array((batch, s), dtype),
                "dxc": cuda.device_array((batch, s), dtype),
                "mu": cuda.device_array((batch, c), dtype),
                "scratch": cuda.device_array((batch, max(1, self._scratch_size)), np.float64),
                "losses": cuda.device_array((batch, 2), np.float64),
            }
        return self._buffers[key]

    def _launch(self, theta, x0, mode):
        theta = np.ascontiguousarray(theta)
        x0 = np.ascontiguousarray(x0, dtype=theta.dtype).reshape(len(x0), -1)
        batch = len(x0)
        buf = self._buffers_for(batch, theta.dtype)
        xs_host = np.zeros((batch, self.n_steps + 1, self.sim.state_dim), theta.dtype)
        xs_host[:, 0] = x0
        buf["xs"].copy_to_device(xs_host)
        a, b = mode.path_weights if mode is not None else (0.0, 0.0)
        combined = mode is Mode.COMBINED
        g_r = cuda.to_device(np.zeros((batch, theta.size), theta.dtype))
        g_m = cuda.to_device(np.zeros((batch if combined else 1, theta.size), theta.dtype))
        blocks = (batch + self.THREADS - 1) // self.THREADS
        self._kernel[blocks, self.THREADS](
            self._p, cuda.to_device(theta), self._spec, self._weights, self.rho, a, b,
            mode is not None, combined, buf["xs"], buf["cs"], buf["acts"], buf["lam"], buf["dxs"],
            buf["dxc"], buf["mu"], buf["scratch"], g_r, g_m, buf["losses"])
        per_thread = buf["losses"].copy_to_host()
        physics = float(np.mean(per_thread[:, 0]))
        reg = self.rho * float(np.sum(per_thread[:, 1])) / (self.n_steps * batch * self.sim.control_dim)
        grads = [self._reduce(g) for g in ((g_r, g_m) if combined else (g_r,))] if mode else []
        return physics, reg, grads

    def _reduce(self, per_thread):
        out = cuda.device_array(per_thread.shape[1], per_thread.dtype)
        blocks = (out.shape[0] + self.THREADS - 1) // self.THREADS
        _sum_rows[blocks, self.THREADS](per_thread, out)
        return out.copy_to_host()

    def compile(self, dtype):
        """Nothing to prepare: CUDA kernels compile at their first launch."""
        return self

    def losses(self, theta, x0):
        physics, reg, _ = self._launch(theta, x0, None)
        return physics + reg, physics

    def loss(self, theta, x0):
        return self.losses(theta, x0)[0]

    def gradient(self, theta, x0, mode):
        mode = parse_mode(mode)
        physics, reg, grads = self._launch(theta, x0, mode)
        if mode is Mode.COMBINED:
            g, g_m = grads
            return Gradient.combined(physics + reg, physics, g, g_m)
        return Gradient(physics + reg, physics, grads[0])

    def rollout(self, theta, x0):
        return self.cpu.rollout(theta, x0)
