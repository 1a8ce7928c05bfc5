"""Guidance by repulsion: kernels, modes, the regulariser, data, learning and the CLI."""

import subprocess
import sys

import numpy as np
import pytest

from stablebptt.adjoint import Problem, check_modes, check_simulator
from stablebptt.controllers import MLP
from stablebptt import Trainer, preset, read_run
from stablebptt.sims import Guidance

import naive


def _assert_ok(results):
    assert results
    for r in results:
        assert r.ok, f"{r.name}: {r.error:.2e}"


def _moving_states(sim, batch, rng):
    x = sim.sample(batch, np.random.RandomState(0)).astype(np.float64)
    return x + 0.2 * rng.standard_normal(x.shape)


@pytest.mark.parametrize("drivers,evaders", [(2, 4), (1, 1), (3, 2), (1, 5), (4, 6)])
def test_step_adjoint(drivers, evaders, rng):
    sim = Guidance(drivers=drivers, evaders=evaders)
    x = _moving_states(sim, 4, rng)
    _assert_ok(check_simulator(sim, x, rng.standard_normal((4, sim.control_dim)), rng))


@pytest.mark.parametrize("pair", [(0, 1), (0, 2), (2, 3)], ids=["drivers", "driver-evader", "evaders"])
def test_step_adjoint_with_agents_close_together(pair, rng):
    sim = Guidance(drivers=2, evaders=4)
    x = _moving_states(sim, 3, rng)
    a, b = pair
    x[:, 4 * b:4 * b + 2] = x[:, 4 * a:4 * a + 2] + 0.01 * rng.standard_normal((3, 2))
    _assert_ok(check_simulator(sim, x, rng.standard_normal((3, 4)), rng))


@pytest.mark.parametrize("drivers,evaders", [(2, 4), (3, 2)])
def test_step_matches_reference_equations(drivers, evaders, rng):
    sim = Guidance(drivers=drivers, evaders=evaders, dt=4 / 60)
    x = _moving_states(sim, 5, rng)
    c = rng.standard_normal((5, sim.control_dim))
    out = np.zeros_like(x)
    sim.step(sim.params, x, c, out)
    n = drivers + evaders
    expected = naive.guidance_step(x.reshape(5, n, 2, 2), c.reshape(5, drivers, 2), drivers, 4 / 60)
    np.testing.assert_allclose(out, expected.reshape(5, -1), rtol=1e-12, atol=1e-12)


def test_sampler_reproduces_reference_data():
    train, test = Guidance(drivers=2, evaders=4).datasets(256, np.random.RandomState(42))
    ref_train, ref_test = naive.guidance_data(256, 2, 4)
    np.testing.assert_array_equal(train, ref_train.reshape(256, -1))
    np.testing.assert_array_equal(test, ref_test.reshape(256, -1))
    pos = Guidance().positions(train)
    r_drivers = np.linalg.norm(pos[:, :2], axis=-1)
    assert np.all((r_drivers >= 3 - 1e-5) & (r_drivers <= 4 + 1e-5))
    assert not np.any(train.reshape(256, 6, 2, 2)[:, :, 1, :])  # at rest


@pytest.mark.parametrize("loss_mode,rho", [("CONTINUOUS", 0.1), ("FINAL", 0.0), ("FINAL", 1.0)])
def test_modes_match_frozen_trajectory_differences(loss_mode, rho, rng):
    sim = Guidance(drivers=2, evaders=3)
    ctrl = MLP(sim.state_dim, sim.control_dim, width=10, depth=2)
    theta = ctrl.init(rng, np.float64)
    problem = Problem(sim, ctrl, 12, loss_mode, rho=rho)
    results = check_modes(problem, theta, _moving_states(sim, 3, rng), rng, n_directions=5)
    assert len(results) == 5
    _assert_ok(results)


def test_regulariser_reaches_theta_in_every_mode(rng):
    sim = Guidance()
    ctrl = MLP(sim.state_dim, sim.control_dim, width=10, depth=2)
    theta = ctrl.init(rng, np.float64)
    x0 = _moving_states(sim, 3, rng)
    plain = Problem(sim, ctrl, 10, "CONTINUOUS", rho=0.0)
    regular = Problem(sim, ctrl, 10, "CONTINUOUS", rho=1.0)
    for mode in "RMNSC":
        with_reg = regular.gradient(theta, x0, mode)
        without = plain.gradient(theta, x0, mode)
        assert with_reg.loss > with_reg.physics_loss == pytest.approx(without.loss)
        assert not np.allclose(with_reg.grad, without.grad), mode


def test_stopped_gradient_is_zero_with_a_zero_output_layer(rng):
    """Known behaviour: one-step losses have no control path in explicit Euler and c = 0."""
    sim = Guidance()
    ctrl = MLP(sim.state_dim, sim.control_dim, width=10, depth=2, zero_last=True)
    theta = ctrl.init(rng, np.float32)
    problem = Problem(sim, ctrl, 20, "CONTINUOUS", rho=0.1)
    x0 = sim.sample(8, np.random.RandomState(1))
    assert not np.any(problem.gradient(theta, x0, "S").grad)
    assert np.any(problem.gradient(theta, x0, "R").grad)


def test_target_point_moves_the_loss(rng):
    x = _moving_states(Guidance(), 4, rng)
    at_origin = Guidance()
    elsewhere = Guidance(target=(1.0, -2.0))
    pos = at_origin.positions(x)[:, 2:]
    assert at_origin.loss(at_origin.params, x) == pytest.approx(np.mean(pos ** 2))
    assert elsewhere.loss(elsewhere.params, x) == pytest.approx(np.mean((pos - [1.0, -2.0]) ** 2))
    _assert_ok(check_simulator(elsewhere, x, rng.standard_normal((4, 4)), rng))


def test_learning_brings_evaders_to_the_target(tmp_path):
    config = preset("guidance", mode="C", clip="norm", width=32, n_data=256, epochs=4,
                    checkpoint_every=4)
    Trainer.new(config, str(tmp_path / "g.h5")).run(quiet=True)
    record = read_run(tmp_path / "g.h5")
    distance = record.metrics["test_physics_loss"]
    assert distance[-1] < 0.6 * distance[0], distance
    assert np.all(record.metrics["test_physics_loss"] <= record.metrics["test_loss"])


def test_cli_guidance_run_and_gradcheck(tmp_path):
    done = subprocess.run([sys.executable, "-m", "stablebptt", "run", "guidance", "--drivers", "1",
                           "--evaders", "2", "--regularization", "0.1", "--target-x", "0.5",
                           "--target-y=-0.5",
                           "--epochs", "1", "--n-data", "16", "--width", "8", "--quiet",
                           "--out", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    record = read_run(tmp_path / ("guidance_d1e2_rho0.1_target0.5,-0.5_C_clip-norm_lr0.001_bs8_s42"
                                  "_n-data16_width8.h5"))
    cfg = record.config
    assert (cfg.drivers, cfg.evaders, cfg.rho, cfg.target_x, cfg.target_y) == (1, 2, 0.1, 0.5, -0.5)
    check = subprocess.run([sys.executable, "-m", "stablebptt", "gradcheck", "guidance"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    assert "0 failed" in check.stdout and "close pair" in check.stdout


@pytest.mark.parametrize("task", ["guidance", "cartpole", "quantum"])
def test_trajectory_picture_from_a_run_file(task, tmp_path):
    import matplotlib.image

    from stablebptt.cli import main

    overrides = dict(epochs=1, n_data=16, width=8, checkpoint_every=1)
    if task == "cartpole":
        overrides.update(poles=2, n_steps=20, time=0.2)
    if task == "quantum":
        overrides.update(nx=12, n_steps=20, time=1.0, width=4)
    Trainer.new(preset(task, **overrides), str(tmp_path / "run.h5")).run(quiet=True)
    assert main(["trajectories", str(tmp_path / "run.h5"), "--samples", "2",
                 "--out", str(tmp_path / "pic.png")]) == 0
    image = matplotlib.image.imread(tmp_path / "pic.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 200
    assert image[..., :3].std() > 0.05  # something was drawn
    assert main(["trajectories", str(tmp_path / "run.h5"), "--samples", "99"]) == 2
    assert not (tmp_path / "run_trajectories_final.png").exists()
