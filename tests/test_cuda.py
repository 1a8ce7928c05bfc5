"""The CUDA path: agreement with the CPU path under Numba's CUDA simulator, CLI behaviour."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stablebptt.cuda import cuda_available
from stablebptt.experiments import read_run
from stablebptt.experiments.cli import main

HERE = Path(__file__).parent
SIM = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
COMMON = ["--steps", "3", "--n-data", "8", "--batch-size", "4", "--epochs", "2", "--dtype", "float64",
          "--quiet", "--no-zero-last"]
TINY = {"cartpole": ["--poles", "1", "--width", "4"],
        "guidance": ["--drivers", "1", "--evaders", "2", "--width", "4"],
        "quantum": ["--nx", "9", "--width", "3"]}


def test_cuda_kernels_agree_with_cpu_in_the_simulator():
    done = subprocess.run([sys.executable, str(HERE / "cuda_agreement.py")], env=SIM,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    for task in ("cartpole", "guidance", "quantum"):
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


def test_outside_task_on_the_device_is_a_one_line_error(tmp_path):
    """The GPU path covers the built-in simulators; an outside task is told to use the CPU."""
    root = HERE.parent
    env = {**SIM, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "stablebptt", "run", "examples.pendulum:Pendulum",
                           *COMMON, "--device", "cuda", "--out", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600, cwd=root)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "no CUDA kernels for PendulumSim" in done.stderr
    assert "--device cpu" in done.stderr and not list(tmp_path.glob("*.h5"))
