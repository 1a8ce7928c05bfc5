"""Quantum control: Crank-Nicolson step and its adjoint, norm conservation, data, CNN, modes."""

import subprocess
import sys

import numpy as np
import pytest

from stablebptt.adjoint import Problem, check_controller, check_modes, check_simulator
from stablebptt.adjoint.check import check_per_sample
from stablebptt.controllers import CNN
from stablebptt import Trainer, preset, read_run
from stablebptt.sims import Quantum
from stablebptt.sims.quantum import eigenstate

import naive


def _assert_ok(results):
    assert results
    for r in results:
        assert r.ok, f"{r.name}: {r.error:.2e}"


def _states(sim, batch, rng, noise=0.1):
    x = sim.sample(batch, np.random.RandomState(0)).astype(np.float64)
    return x + noise * rng.standard_normal(x.shape)


@pytest.mark.parametrize("nx", [32, 9, 2])
def test_step_and_loss_adjoints(nx, rng):
    sim = Quantum(nx=nx, target_state=min(3, nx))
    x = rng.standard_normal((4, 2 * nx)) if nx < 3 else _states(sim, 4, rng)
    _assert_ok(check_simulator(sim, x, 4.0 * rng.standard_normal((4, 1)), rng))


def test_step_matches_dense_crank_nicolson(rng):
    sim = Quantum(nx=16, dt=0.05)
    x = _states(sim, 3, rng)
    c = np.array([[0.0], [2.5], [-7.0]])
    out = np.zeros_like(x)
    sim.step(sim.params, x, c, out)
    psi = sim.wavefunction(x)
    for b in range(3):
        expected = naive.crank_nicolson_dense(psi[b], c[b, 0], 0.05, sim.dx)
        np.testing.assert_allclose(sim.wavefunction(out[b]), expected, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("nx", [7, 32])
def test_per_sample_twin_matches_the_batch_kernels(nx, rng):
    """The GPU's per-sample Crank-Nicolson and CNN beside the CPU's batch-vectorised forms."""
    sim, ctrl = Quantum(nx=nx), CNN(nx, width=3)
    x = sim.sample(5, np.random.RandomState(0)) + 0.1 * rng.standard_normal((5, sim.state_dim))
    theta = ctrl.init(rng, np.float64) + 0.1 * rng.standard_normal(ctrl.n_params)
    results = check_per_sample(sim, ctrl, theta, x, rng.standard_normal((5, 1)), rng)
    assert len(results) == 8 and all(r.ok for r in results), [(r.name, r.error) for r in results]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_step_gives_each_sample_the_bits_it_has_alone(dtype, rng):
    """The batch kernels run the samples in passes of a few, some lanes in vector registers and
    some not: a sample's step and adjoint must not depend on its lane or the batch around it
    (an evaluation chunk of 64 against a gradient chunk of 4)."""
    sim = Quantum()
    x = _states(sim, 19, rng).astype(dtype)
    c = (4.0 * rng.standard_normal((19, 1))).astype(dtype)
    lam = rng.standard_normal(x.shape).astype(dtype)

    def kernels(rows):
        xn, dx, dc = np.zeros_like(x[rows]), np.zeros_like(x[rows]), np.zeros_like(c[rows])
        sim.step(sim.params, x[rows], c[rows], xn)
        sim.step_vjp(sim.params, x[rows], c[rows], lam[rows], dx, dc)
        return xn, dx, dc

    whole = kernels(slice(0, 19))
    for rows in (slice(0, 1), slice(0, 4), slice(3, 11), slice(5, 9), slice(9, 19), slice(16, 19)):
        for part, full in zip(kernels(rows), whole):
            np.testing.assert_array_equal(part, full[rows])


def test_step_conserves_the_norm(rng):
    sim = Quantum()
    x = _states(sim, 5, rng, noise=0.3)
    norm0 = np.linalg.norm(x, axis=1)
    out = np.zeros_like(x)
    for _ in range(200):
        sim.step(sim.params, x, 10.0 * rng.standard_normal((5, 1)), out)
        x, out = out, x
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), norm0, rtol=1e-12)


def test_eigenstates_are_orthonormal_and_stationary():
    nx = 32
    basis = np.array([eigenstate(n, nx) for n in range(1, 6)])
    np.testing.assert_allclose(basis @ basis.T, np.eye(5), atol=1e-13)
    sim = Quantum(nx=nx, target_state=3)
    x = np.stack([basis[2], 0 * basis[2]], axis=-1).reshape(1, -1)
    out = np.zeros_like(x)
    for _ in range(50):  # without a field an eigenstate only turns its phase
        sim.step(sim.params, x, np.zeros((1, 1)), out)
        x, out = out, x
    assert sim.loss(sim.params, x) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("weighting,w",
                         [("1-1", (1, 1)), ("3-1", (3, 1)), ("7-1", (7, 1)), ("15-1", (15, 1))])
def test_sampler_reproduces_reference_data(weighting, w):
    sim = Quantum(weighting=weighting)
    train, test = sim.datasets(256, np.random.RandomState(42))
    ref_train, ref_test = naive.quantum_data(256, 32, *w)
    assert ref_train.dtype == np.complex64 and train.dtype == np.float32
    np.testing.assert_array_equal(sim.wavefunction(train), ref_train)  # bit for bit
    np.testing.assert_array_equal(sim.wavefunction(test), ref_test)
    np.testing.assert_allclose(np.linalg.norm(train, axis=1), 1.0, atol=1e-6)
    # the data live in eigenstates 1 and 2, orthogonal to the target 3: the loss starts at 1 per step
    assert sim.loss(sim.params, train.astype(np.float64)) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("nx,bias", [(32, True), (9, False), (12, True)])
def test_cnn_adjoints(nx, bias, rng):
    ctrl = CNN(nx, width=5, bias=bias)
    theta = ctrl.init(rng, np.float64) + 0.1 * rng.standard_normal(ctrl.n_params)
    _assert_ok(check_controller(ctrl, theta, rng.standard_normal((3, 2 * nx)), rng))


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-4)])
def test_cnn_forward_matches_keras_convolutions(dtype, tol, rng):
    ctrl = CNN(32, width=7)
    theta = (ctrl.init(rng, np.float64) + 0.1 * rng.standard_normal(ctrl.n_params)).astype(dtype)
    x = rng.standard_normal((4, 64)).astype(dtype)
    c = np.zeros((4, 1), dtype)
    ctrl.forward(theta, ctrl.spec, x, np.zeros(ctrl.acts_size(4), dtype), 0, 1, c)
    weights = [w.astype(np.float64) for w in ctrl.views(theta).values()]
    np.testing.assert_allclose(c, naive.cnn_forward(weights, x.reshape(4, 32, 2).astype(np.float64)),
                               rtol=tol, atol=tol)


def test_cnn_layout_and_initialisation(rng):
    ctrl = CNN(32, width=60)
    assert ctrl.lengths == (15, 7)
    views = ctrl.views(ctrl.init(rng))
    assert [(k, v.shape) for k, v in views.items()] == [
        ("conv2d/kernel", (3, 2, 1, 60)), ("conv2d/bias", (60,)), ("conv1d/kernel", (3, 60, 60)),
        ("conv1d/bias", (60,)), ("dense/kernel", (420, 1)), ("dense/bias", (1,))]
    assert 0.9 * np.sqrt(6 / 366) < np.abs(views["conv2d/kernel"]).max() <= np.sqrt(6 / 366)
    assert np.any(views["dense/kernel"]) and not np.any(views["dense/bias"])
    assert not np.any(CNN(32, zero_last=True).views(CNN(32, zero_last=True).init(rng))["dense/kernel"])


@pytest.mark.parametrize("loss_mode", ["CONTINUOUS", "FINAL"])
def test_modes_match_frozen_trajectory_differences(loss_mode, rng):
    sim = Quantum(nx=9, target_state=3)
    ctrl = CNN(9, width=4)
    theta = ctrl.init(rng, np.float64) + 0.1 * rng.standard_normal(ctrl.n_params)
    problem = Problem(sim, ctrl, 10, loss_mode)
    results = check_modes(problem, theta, _states(sim, 3, rng), rng, n_directions=5)
    assert len(results) == 5
    _assert_ok(results)


def test_learning_moves_towards_the_target_state(tmp_path):
    config = preset("quantum", mode="C", n_steps=64, time=4.0, width=16, epochs=3, checkpoint_every=3)
    Trainer.new(config, str(tmp_path / "q.h5")).run(quiet=True)
    test = read_run(tmp_path / "q.h5").metrics["test_loss"]
    assert test[0] > 40  # the loss starts near N = 64: nothing of eigenstate 3 at first
    assert test[-1] < 0.8 * test[0] and np.all(np.diff(test) < 0), test


def test_cli_quantum_options_and_gradcheck(tmp_path):
    done = subprocess.run([sys.executable, "-m", "stablebptt", "run", "quantum", "--target-state", "4",
                           "--weighting", "3-1", "--nx", "16", "--steps", "8", "--width", "4",
                           "--epochs", "1", "--n-data", "16", "--quiet", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    record = read_run(tmp_path / ("quantum_ts4_w3-1_nx16_C_clip-norm_lr0.001_bs8_s42_n-data16"
                                  "_width4_steps8.h5"))
    assert (record.config.target_state, record.config.weighting, record.config.nx) == (4, "3-1", 16)
    assert record.train.shape == (16, 32)
    bad = subprocess.run([sys.executable, "-m", "stablebptt", "run", "quantum", "--weighting", "2-1",
                          "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode == 2 and "weighting='2-1'" in bad.stderr and not (tmp_path / "x").exists()
    check = subprocess.run([sys.executable, "-m", "stablebptt", "gradcheck", "quantum"],
                           capture_output=True, text=True)
    assert check.returncode == 0 and "0 failed" in check.stdout, check.stdout
