"""Run under NUMBA_ENABLE_CUDASIM=1 (or on a GPU): the CUDA path against the CPU path for every
registered task (and the outside example ``examples.pendulum``) at its first gradcheck setting,
kernel by kernel and then whole gradients in every mode, float64 and float32.

Arguments: task names to restrict the run to. Prints ``<task>: CUDA agrees with CPU`` per task.
"""

import sys
from pathlib import Path

import numpy as np
from numba import cuda

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for examples/

from stablebptt.adjoint import Problem  # noqa: E402
from stablebptt.adjoint.check import kernel_outputs, named_outputs, relative_error  # noqa: E402
from stablebptt.contract import SAMPLE_CONTROLLER_KERNELS, SAMPLE_SIMULATOR_KERNELS  # noqa: E402
from stablebptt.cuda.engine import CudaProblem, device_function  # noqa: E402
from stablebptt.train.gradcheck import small_runs  # noqa: E402
from stablebptt.tasks import all_tasks, load_task  # noqa: E402

BATCH = 3
SCALE = 0.7


def make_probe(sim, ctrl):
    """A kernel running each per-sample device function once per thread (thread t: sample t)."""
    step, step_vjp, loss, loss_grad = (device_function(getattr(sim, n)) for n in SAMPLE_SIMULATOR_KERNELS)
    forward, backward = (device_function(getattr(ctrl, n)) for n in SAMPLE_CONTROLLER_KERNELS)

    @cuda.jit
    def probe(p, theta, spec, x, c, lam, mu, scale, x_next, dx, dc, losses, gx, c_out, acts, dx_ctrl,
              g, work):
        t = cuda.grid(1)
        if t < x.shape[0]:
            step(p, x[t], c[t], x_next[t], work[t])
            step_vjp(p, x[t], c[t], lam[t], dx[t], dc[t], work[t])
            losses[t] = loss(p, x[t])
            loss_grad(p, x[t], scale, gx[t])
            forward(theta, spec, x[t], acts[t], c_out[t], work[t])
            backward(theta, spec, x[t], acts[t], mu[t], dx_ctrl[t], g[t], work[t])

    return probe


def device_outputs(sim, ctrl, theta, x, c, lam, mu):
    """:func:`kernel_outputs`' quantities from the device functions (per-thread sums on the host)."""
    batch = len(x)
    zeros = {name: np.zeros(shape, x.dtype) for name, shape in (
        ("x_next", x.shape), ("dx", x.shape), ("dc", c.shape), ("gx", x.shape), ("c_out", c.shape),
        ("dx_ctrl", x.shape), ("g", (batch, theta.size)),
        ("acts", (batch, max(1, ctrl.acts_size(1)))))}
    zeros["losses"] = np.zeros(batch)
    work = np.zeros((batch, max(1, getattr(sim, "work_size", 0), getattr(ctrl, "work_size", 0))))
    out = {name: cuda.to_device(value) for name, value in zeros.items()}
    make_probe(sim, ctrl)[1, batch](
        sim.params, theta, ctrl.spec, x, c, lam, mu, SCALE / batch, out["x_next"], out["dx"],
        out["dc"], out["losses"], out["gx"], out["c_out"], out["acts"], out["dx_ctrl"], out["g"],
        cuda.to_device(work))
    host = {name: value.copy_to_host() for name, value in out.items()}
    return named_outputs(host["x_next"], host["dx"], host["dc"], host["losses"].mean(), host["gx"],
                         host["c_out"], host["dx_ctrl"], host["g"].sum(axis=0))


def check_kernels(label, sim, ctrl, rng):
    x = sim.sample(BATCH, np.random.RandomState(1)).astype(np.float64)
    x += 0.1 * rng.standard_normal(x.shape)
    c = rng.standard_normal((BATCH, sim.control_dim))
    theta = ctrl.init(rng, np.float64) + 0.1 * rng.standard_normal(ctrl.n_params)
    lam, mu = rng.standard_normal(x.shape), rng.standard_normal(c.shape)
    cpu = kernel_outputs(sim, ctrl, theta, x, c, lam, mu, SCALE)
    gpu = device_outputs(sim, ctrl, theta, x, c, lam, mu)
    for name in cpu:
        error = relative_error(cpu[name], gpu[name])
        assert error <= 1e-12, (label, name, error)


def check_gradients(label, sim, ctrl, rng):
    states = sim.sample(BATCH, np.random.RandomState(2)).astype(np.float64)
    states += 0.05 * rng.standard_normal(states.shape)
    for dtype, tol in ((np.float64, 1e-11), (np.float32, 3e-5)):
        theta = (ctrl.init(rng, np.float64) + 0.1 * rng.standard_normal(ctrl.n_params)).astype(dtype)
        x0 = states.astype(dtype)
        for loss_mode, rho in (("FINAL", 0.0), ("CONTINUOUS", 0.3)):
            cpu = Problem(sim, ctrl, 4, loss_mode, rho=rho)
            gpu = CudaProblem(cpu)
            for mode in "RMNSC":
                a, b = cpu.gradient(theta, x0, mode), gpu.gradient(theta, x0, mode)
                scale = max(np.max(np.abs(a.grad)), 1e-30)
                error = max(np.max(np.abs(a.grad - b.grad)) / scale, abs(a.loss - b.loss) / abs(a.loss))
                if mode == "C":
                    error = max(error, np.max(np.abs(a.grad_regular - b.grad_regular)) / scale)
                assert b.grad.dtype == dtype, b.grad.dtype
                assert error <= tol, (label, dtype, loss_mode, mode, error)
            assert np.allclose(cpu.losses(theta, x0), gpu.losses(theta, x0), rtol=tol)


def main(only=None):
    rng = np.random.default_rng(0)
    tasks = list(all_tasks()) + [load_task("examples.pendulum:Pendulum")]
    for task in tasks:
        if only and task.name not in only:
            continue
        # the first of the task's gradcheck settings: the CPU's gradcheck compares the per-sample
        # and batch kernels at all of them, so this checks the device path, not every size again
        label, _, sim, ctrl = next(small_runs(task, BATCH, width=4))
        check_kernels(f"{task.name} {label}", sim, ctrl, rng)
        check_gradients(f"{task.name} {label}", sim, ctrl, rng)
        print(f"{task.name}: CUDA agrees with CPU", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
