"""The CUDA path: agreement with the CPU path under Numba's CUDA simulator, CLI behaviour."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stablebptt.cuda import cuda_available
from stablebptt import read_run
from stablebptt.cli import main
from stablebptt.train.gradcheck import small_runs
from stablebptt.tasks import all_tasks, load_task, task_names

HERE = Path(__file__).parent
SIM = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
COMMON = ["--steps", "3", "--n-data", "8", "--batch-size", "4", "--epochs", "2", "--dtype", "float64",
          "--quiet", "--no-zero-last"]
TINY = {"cartpole": ["--poles", "1", "--width", "4"],
        "guidance": ["--drivers", "1", "--evaders", "2", "--width", "4"],
        "quantum": ["--nx", "9", "--width", "3"]}


def test_cuda_kernels_agree_with_cpu_in_the_simulator():
    """Every registered task and the outside example: each per-sample kernel run as a device
    function against the CPU batch kernel, then whole gradients in every mode."""
    done = subprocess.run([sys.executable, str(HERE / "cuda_agreement.py")], env=SIM,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    for task in (*task_names(), "pendulum"):
        assert f"{task}: CUDA agrees with CPU" in done.stdout


@pytest.mark.parametrize("task", ["cartpole", "guidance", "quantum"])
def test_training_on_the_simulated_device_matches_cpu(task, tmp_path):
    for device in ("cuda", "cpu"):
        done = subprocess.run([sys.executable, "-m", "stablebptt", "run", task, *TINY[task], *COMMON,
                               "--device", device, "--out", str(tmp_path / device), "--name", "r"],
                              env=SIM, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    a, b = read_run(tmp_path / "cuda" / "r.h5"), read_run(tmp_path / "cpu" / "r.h5")
    assert a.config.device == "cuda" and b.config.device == "cpu"
    np.testing.assert_allclose(a.checkpoint.theta, b.checkpoint.theta, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(a.metrics["test_loss"], b.metrics["test_loss"], rtol=1e-10)


@pytest.mark.skipif(cuda_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    assert main(["run", "cartpole", "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no usable GPU" in err and not (tmp_path / "o").exists()


def test_sweep_passes_the_device_on(tmp_path):
    done = subprocess.run([sys.executable, "-m", "stablebptt", "sweep", "cartpole", "--poles", "1",
                           "--modes", "C", "--clips", "norm", *TINY["cartpole"], *COMMON,
                           "--device", "cuda", "--workers", "1", "--out", str(tmp_path)],
                          env=SIM, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "1 finished" in done.stdout, done.stdout + done.stderr
    record = read_run(next(tmp_path.glob("*.h5")))
    assert record.config.device == "cuda" and record.status == "finished"


@pytest.mark.skipif(not cuda_available() or os.environ.get("NUMBA_ENABLE_CUDASIM") == "1",
                    reason="needs a real NVIDIA GPU")
def test_cuda_agreement_on_a_real_gpu():
    done = subprocess.run([sys.executable, str(HERE / "cuda_agreement.py")], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def _run_outside(task, tmp_path, device, name):
    root = HERE.parent
    env = {**SIM, "PYTHONPATH": os.pathsep.join([str(root), str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "stablebptt", "run", task, *COMMON, "--device", device,
                           "--out", str(tmp_path / "runs"), "--name", name], env=env,
                          capture_output=True, text=True, timeout=600, cwd=root)


def test_outside_task_trains_on_the_device(tmp_path):
    """The GPU path runs any task whose physics is written per sample: no table to edit."""
    for device in ("cuda", "cpu"):
        done = _run_outside("examples.pendulum:Pendulum", tmp_path, device, device)
        assert done.returncode == 0, done.stderr
    a, b = read_run(tmp_path / "runs" / "cuda.h5"), read_run(tmp_path / "runs" / "cpu.h5")
    np.testing.assert_allclose(a.checkpoint.theta, b.checkpoint.theta, rtol=1e-10, atol=1e-13)


BATCH_ONLY = """
from examples.pendulum import Pendulum, PendulumSim


class BatchOnlySim(PendulumSim):
    step_one = step_vjp_one = loss_one = loss_grad_one = None


class BatchOnly(Pendulum):
    name = "batch_only"

    def simulator(self, config):
        return BatchOnlySim(dt=config.dt)
"""


def test_task_without_per_sample_kernels_on_the_device_is_a_one_line_error(tmp_path):
    (tmp_path / "batch_only_task.py").write_text(BATCH_ONLY)
    done = _run_outside("batch_only_task:BatchOnly", tmp_path, "cuda", "r")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "BatchOnlySim has no per-sample kernel step_one" in done.stderr
    assert "--device cpu" in done.stderr and not list(tmp_path.glob("runs/*"))


def _ptx_compiler():
    """True where numba-cuda and its NVVM can compile kernels to PTX (no GPU needed)."""
    if importlib.util.find_spec("numba_cuda") is None or os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return False
    try:
        from numba import cuda, float64

        def kernel(a):
            a[0] = 1.0

        cuda.compile_ptx(kernel, (float64[::1],), cc=(8, 0))
        return True
    except Exception:  # no NVVM, no CUDA toolkit libraries
        return False


@pytest.mark.skipif(not _ptx_compiler(), reason="needs numba-cuda with its CUDA toolkit (pip "
                    "install 'numba-cuda[cu12]'); no GPU needed")
def test_every_task_compiles_for_a_real_gpu(monkeypatch):
    """What the simulator cannot show: the per-sample kernels, and the helpers they call, compile
    for the CUDA target (PTX for compute capability 8.0), float32 and float64."""
    from types import SimpleNamespace

    import numba.cuda.dispatcher
    from numba import cuda, types

    from stablebptt.cuda.engine import bptt_kernel

    # device functions ask the current GPU for its compute capability: name one instead
    monkeypatch.setattr(numba.cuda.dispatcher, "get_current_device",
                        lambda: SimpleNamespace(compute_capability=(8, 0)))
    for task in (*all_tasks(), load_task("examples.pendulum:Pendulum")):
        _, _, sim, ctrl = next(small_runs(task, width=4))
        kernel, _ = bptt_kernel(sim, ctrl)
        for T in (types.float32, types.float64):
            f64, vec, mat, cube = types.float64, T[::1], T[:, ::1], T[:, :, ::1]
            argument_types = (f64[::1], vec, types.int64[::1], f64[::1], f64, f64, f64, types.boolean,
                              types.boolean, cube, cube, cube, mat, mat, mat, mat, f64[:, ::1], mat, mat,
                              f64[:, ::1])
            ptx, _ = cuda.compile_ptx(kernel.py_func, argument_types, cc=(8, 0))
            assert ".entry" in ptx, task.name
