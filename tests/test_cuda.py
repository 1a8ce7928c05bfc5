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
TINY = ["--poles", "1", "--width", "4", "--steps", "3", "--n-data", "8", "--batch-size", "4",
        "--epochs", "2", "--dtype", "float64", "--quiet", "--no-zero-last"]


def test_cuda_kernels_agree_with_cpu_in_the_simulator():
    done = subprocess.run([sys.executable, str(HERE / "cuda_agreement.py")], env=SIM,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cartpole: CUDA agrees with CPU" in done.stdout


def test_training_on_the_simulated_device_matches_cpu(tmp_path):
    for device in ("cuda", "cpu"):
        done = subprocess.run([sys.executable, "-m", "stablebptt", "run", "cartpole", *TINY,
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


def test_cuda_for_other_tasks_is_refused(tmp_path, capsys):
    assert main(["run", "quantum", "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    assert "cartpole task so far" in capsys.readouterr().err


@pytest.mark.skipif(not cuda_available() or os.environ.get("NUMBA_ENABLE_CUDASIM") == "1",
                    reason="needs a real NVIDIA GPU")
def test_cuda_agreement_on_a_real_gpu():
    done = subprocess.run([sys.executable, str(HERE / "cuda_agreement.py")], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
