"""The chaotic outside task (examples/double_cartpole.py): its kernels against the equations of
motion written naively, its physics against energy conservation, its Lyapunov exponent two ways,
gradcheck, a short training run, and its pictures."""

import os

import numpy as np
import pytest

from stablebptt.adjoint.flow import lyapunov_exponent, separation_exponent
from stablebptt import Trainer, preset, read_run
from stablebptt.cli import main
from stablebptt.train.gradcheck import format_table, gradcheck_task
from stablebptt.tasks import register

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = "examples.double_cartpole:DoubleCartPole"


@pytest.fixture(autouse=True)
def repository_on_path(monkeypatch):
    monkeypatch.syspath_prepend(ROOT)


@pytest.fixture
def module():
    from examples import double_cartpole

    return double_cartpole


def naive_step(state, force, dt, m0=1.0, m1=0.1, m2=0.1, l1=0.5, l2=0.5, g=9.8):
    """Lagrange's equations of the cart with two chained point-mass poles, solved with numpy,
    then semi-implicit Euler; one sample at a time."""
    out = np.empty_like(state)
    for b, (x, th1, th2, v, w1, w2) in enumerate(state):
        m12 = m1 + m2
        mass = np.array([
            [m0 + m12, m12 * l1 * np.cos(th1), m2 * l2 * np.cos(th2)],
            [m12 * l1 * np.cos(th1), m12 * l1**2, m2 * l1 * l2 * np.cos(th1 - th2)],
            [m2 * l2 * np.cos(th2), m2 * l1 * l2 * np.cos(th1 - th2), m2 * l2**2]])
        rhs = np.array([
            force[b] + m12 * l1 * np.sin(th1) * w1**2 + m2 * l2 * np.sin(th2) * w2**2,
            m12 * g * l1 * np.sin(th1) - m2 * l1 * l2 * np.sin(th1 - th2) * w2**2,
            m2 * g * l2 * np.sin(th2) + m2 * l1 * l2 * np.sin(th1 - th2) * w1**2])
        velocity = np.array([v, w1, w2]) + dt * np.linalg.solve(mass, rhs)
        out[b, 3:] = velocity
        out[b, :3] = np.array([x, th1, th2]) + dt * velocity
    return out


def test_step_and_loss_match_the_naive_equations(module, rng):
    sim = module.DoubleCartPoleSim(dt=0.01)
    x = rng.uniform(-3, 3, (16, 6))
    c = rng.normal(0, 5, (16, 1))
    got = np.zeros_like(x)
    sim.step(sim.params, x, c, got)
    np.testing.assert_allclose(got, naive_step(x, c[:, 0], 0.01), rtol=1e-12, atol=1e-12)
    expected = np.mean((2 - np.cos(x[:, 1]) - np.cos(x[:, 2])) / 2)
    assert sim.loss(sim.params, x) == pytest.approx(expected, rel=1e-14)


def test_energy_is_conserved_as_the_time_step_shrinks(module):
    """Without a force the equations conserve energy; semi-implicit Euler's drift is first order
    in dt, so a wrong term in the dynamics shows as a drift that does not shrink."""
    x0 = module.DoubleCartPoleSim().sample(8, np.random.RandomState(1)).astype(np.float64)
    drifts = []
    for dt in (1e-3, 1e-4):
        sim = module.DoubleCartPoleSim(dt=dt)
        states = module.rollout(sim, x0, int(round(0.5 / dt)))
        drifts.append(np.abs(sim.energy(states[-1]) / sim.energy(x0) - 1).max())
    assert drifts[1] < 2e-3 and drifts[1] < 0.2 * drifts[0]


def test_the_uncontrolled_system_is_chaotic(module):
    """The maximal Lyapunov exponent from the tangent dynamics (adjoint kernel) equals the one
    from two nearby trajectories, and is positive from every start."""
    sim = module.DoubleCartPoleSim(dt=0.002)
    x0 = sim.sample(4, np.random.RandomState(0)).astype(np.float64)
    tangent = lyapunov_exponent(sim, x0, 2500, sim.dt)
    pairs = separation_exponent(sim, x0, 2500, sim.dt)
    np.testing.assert_allclose(tangent, pairs, rtol=1e-3)
    assert np.all(tangent > 1.0)
    # for contrast, small swings of the hanging poles: not chaotic, the finite-time exponent
    # is the tangent vector's slow (sub-exponential) growth and falls like 1/time
    hanging = x0.copy()
    hanging[:, 1:3] = np.pi + 0.1 * x0[:, 1:3]
    hanging[:, 4:] = 0.0
    short, long = (lyapunov_exponent(sim, hanging, n, sim.dt) for n in (2500, 10000))
    assert np.all(short < 0.25) and np.all(long < 0.6 * short)


def test_gradcheck_passes(module):
    results = gradcheck_task(register(module.DoubleCartPole), np.random.default_rng(0))
    assert results and all(r.ok for r in results), format_table(results)
    assert any("per-sample step_vjp_one" in r.name for r in results)


def test_training_run_and_pictures(module, tmp_path):
    config = preset(TASK, epochs=3, n_data=16, n_steps=20, time=0.2, width=8)
    path = tmp_path / "run.h5"
    Trainer.new(config, str(path)).run(quiet=True)
    record = read_run(path)
    assert record.status == "finished" and record.config.task_source == TASK
    assert np.all(np.isfinite(record.metrics["test_loss"]))
    for command in (["trajectories", str(path), "--samples", "2"],
                    ["animate", str(path), "--fps", "5"],
                    ["diagnose", str(path), "--samples", "2", "--horizons", "3"]):
        assert main(command) == 0, command
    assert (tmp_path / "run_trajectories_final.png").stat().st_size > 10_000
    assert (tmp_path / "run_final.gif").exists() and (tmp_path / "run_diagnose_final.png").exists()
