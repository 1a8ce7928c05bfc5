"""Each gradient mode against finite differences of the frozen-trajectory function that defines it."""

import numpy as np
import pytest

from stablebptt.adjoint import (Mode, Problem, check_modes, combine_gradients, parse_mode,
                                toy_problem_gradients)
from stablebptt.adjoint.sweeps import combine_with_metrics
from stablebptt.adjoint.modes import cosine_similarity, kept_fraction
from stablebptt.controllers import MLP, Quadratic
from stablebptt.sims import CartPole, Shift


@pytest.mark.parametrize("poles,loss_mode,rho", [(1, "FINAL", 0.0), (2, "CONTINUOUS", 0.0),
                                                 (4, "FINAL", 0.0), (1, "CONTINUOUS", 0.1)])
def test_modes_match_frozen_trajectory_differences(poles, loss_mode, rho, rng):
    sim = CartPole(poles=poles)
    ctrl = MLP(sim.state_dim, 1, width=12, depth=2)
    theta = ctrl.init(rng, np.float64)
    x0 = sim.sample(3, np.random.RandomState(0)).astype(np.float64)
    problem = Problem(sim, ctrl, 15, loss_mode, rho=rho)
    results = check_modes(problem, theta, x0, rng, n_directions=5)
    assert len(results) == 5
    for r in results:
        assert r.ok, f"{r.name}: {r.error:.2e}"


def test_modes_differ_from_each_other(rng):
    """R, M, N, S are four different gradients on a closed-loop problem (else the test above is weak)."""
    sim = CartPole(poles=2)
    ctrl = MLP(sim.state_dim, 1, width=12, depth=2)
    theta = ctrl.init(rng, np.float64)
    problem = Problem(sim, ctrl, 15)
    x0 = sim.sample(3, np.random.RandomState(0)).astype(np.float64)
    grads = {m: problem.gradient(theta, x0, m).grad for m in "RMNS"}
    for a in "RMNS":
        for b in "RMNS":
            if a < b:
                assert not np.allclose(grads[a], grads[b], rtol=1e-6, atol=0), (a, b)


def test_toy_closed_form():
    problem = Problem(Shift(target=2.0), Quadratic(), 4)
    x0 = np.array([[-0.3]])
    for theta in ([0.3, -0.5], [1.0, 0.5], [-0.2, 0.1]):
        theta = np.array(theta)
        loss, expected = toy_problem_gradients(theta)
        assert problem.loss(theta, x0) == pytest.approx(loss, rel=1e-14)
        for mode in "RM":
            np.testing.assert_allclose(problem.gradient(theta, x0, mode).grad, expected[mode], rtol=1e-12)
    # by hand at theta = (0, 0): x stays at -0.3, dL/dtheta = (x - y) * N * (x^2, x) for both modes
    zero = np.zeros(2)
    by_hand = (-0.3 - 2.0) * 4 * np.array([0.09, -0.3])
    for mode in "RM":
        np.testing.assert_allclose(problem.gradient(zero, x0, mode).grad, by_hand, rtol=1e-14)


def test_combination_rule():
    g_m = np.array([1.0, -2.0, 3.0, 0.0, -1.0, 2.0], dtype=np.float32)
    g_r = np.array([5.0, 1.0, 0.5, 0.0, -7.0, 0.0], dtype=np.float32)
    combined = combine_gradients(g_m, g_r)
    np.testing.assert_array_equal(combined, [1.0, 0.0, 3.0, 0.0, -1.0, 0.0])
    assert combined.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_combination_matches_the_rule_and_metrics(dtype, rng):
    """The engine's one-pass combination: the same update as ``combine_gradients`` (bit for bit,
    zeros and NaNs included), the same kept fraction and cosine as the numpy definitions."""
    g_m = rng.standard_normal(1001).astype(dtype)
    g_r = rng.standard_normal(1001).astype(dtype)
    g_m[:3], g_r[:3] = 0.0, [0.0, 1.0, -1.0]
    g_m[3], g_r[4] = np.nan, np.nan
    update, cosine, kept = combine_with_metrics(g_m, g_r)
    np.testing.assert_array_equal(update, combine_gradients(g_m, g_r))
    assert update.dtype == dtype
    assert kept == kept_fraction(g_m, g_r)
    finite = np.isfinite(g_m) & np.isfinite(g_r)
    _, cosine, _ = combine_with_metrics(g_m[finite], g_r[finite])
    assert cosine == pytest.approx(cosine_similarity(g_m[finite], g_r[finite]), rel=1e-12)
    assert combine_with_metrics(np.zeros(3, dtype), g_r[:3])[1] == 0.0


def test_combined_mode_uses_one_forward_pass_and_the_rule(rng):
    sim = CartPole(poles=1)
    ctrl = MLP(sim.state_dim, 1, width=8, depth=2)
    theta = ctrl.init(rng, np.float32)
    x0 = sim.sample(4, np.random.RandomState(1))
    problem = Problem(sim, ctrl, 20)
    c = problem.gradient(theta, x0, "C")
    r = problem.gradient(theta, x0, "R")
    m = problem.gradient(theta, x0, "M")
    np.testing.assert_array_equal(c.grad_regular, r.grad)
    np.testing.assert_array_equal(c.grad_modified, m.grad)
    np.testing.assert_array_equal(c.grad, combine_gradients(m.grad, r.grad))
    assert -1.0 <= c.cosine <= 1.0 and c.cosine != 0.0
    assert c.kept_fraction == kept_fraction(m.grad, r.grad)
    assert np.isnan(r.kept_fraction) and r.cosine == 0.0


class _PerStepMLP(MLP):
    steps_as_rows = False  # the engine then calls the controller's adjoint once per step


@pytest.mark.parametrize("rho", [0.0, 0.1])
def test_sweeps_without_feedback_take_all_steps_in_one_controller_call(rho, rng):
    """M, S and C's modified part call the controller's adjoint once on all steps' rows when it
    says ``steps_as_rows``: the same gradients as one call per step (to float64 rounding)."""
    sim = CartPole(poles=2)
    x0 = sim.sample(5, np.random.RandomState(2)).astype(np.float64)
    gradients = []
    for cls in (MLP, _PerStepMLP):
        ctrl = cls(sim.state_dim, 1, width=12, depth=2)
        theta = ctrl.init(np.random.default_rng(3), np.float64)
        problem = Problem(sim, ctrl, 25, "CONTINUOUS", rho=rho)
        gradients.append({m: problem.gradient(theta, x0, m) for m in "MSC"})
    one_call, per_step = gradients
    for m in "MSC":
        for name in ("grad", "grad_modified"):
            a, b = getattr(one_call[m], name), getattr(per_step[m], name)
            if b is not None:
                np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13 * np.abs(b).max(), err_msg=m)
        assert one_call[m].loss == per_step[m].loss


@pytest.mark.parametrize("name,mode", [("regular", Mode.REGULAR), ("F", Mode.REGULAR), ("R", Mode.REGULAR),
                                       ("modified", Mode.MODIFIED), ("P", Mode.MODIFIED),
                                       ("combined", Mode.COMBINED), ("s", Mode.STOPPED),
                                       ("network", Mode.NETWORK)])
def test_parse_mode(name, mode):
    assert parse_mode(name) is mode


def test_parse_mode_rejects_unknown():
    with pytest.raises(ValueError, match="'X'"):
        parse_mode("X")


def test_float32_gradient_close_to_float64(rng):
    sim = CartPole(poles=2)
    ctrl = MLP(sim.state_dim, 1, width=16, depth=2)
    theta = ctrl.init(rng, np.float64)
    x0 = sim.sample(4, np.random.RandomState(3)).astype(np.float64)
    problem = Problem(sim, ctrl, 30)
    for mode in "RMS":
        g64 = problem.gradient(theta, x0, mode).grad
        g32 = problem.gradient(theta.astype(np.float32), x0.astype(np.float32), mode).grad
        assert np.max(np.abs(g32 - g64)) <= 1e-3 * np.max(np.abs(g64))


def test_same_numbers_whatever_the_blas_thread_count(rng):
    """The guarantee: Problem's gradients, losses and cosine do not depend on the caller's BLAS
    thread setting (the engine runs its products on one BLAS thread; the cosine uses numpy sums).
    Without that, OpenBLAS's AVX2 kernels change about one gradient entry in seven."""
    from threadpoolctl import threadpool_limits

    sim = CartPole(poles=2)
    ctrl = MLP(sim.state_dim, 1, width=100, depth=2)
    theta = ctrl.init(rng, np.float32)
    x0 = sim.sample(256, np.random.RandomState(0))
    problem = Problem(sim, ctrl, 20)
    results = []
    for threads in (1, 2, 4):
        with threadpool_limits(threads, user_api="blas"):
            results.append((problem.gradient(theta, x0[:8], "C"), problem.loss(theta, x0)))
    (a, loss_a) = results[0]
    for b, loss_b in results[1:]:
        np.testing.assert_array_equal(a.grad_regular, b.grad_regular)
        np.testing.assert_array_equal(a.grad_modified, b.grad_modified)
        assert loss_a == loss_b and a.cosine == b.cosine


def _quantum_problem(rng):
    from stablebptt.controllers import CNN
    from stablebptt.sims import Quantum

    sim = Quantum(nx=9)
    ctrl = CNN(nx=9, width=3)
    x0 = sim.sample(5, np.random.RandomState(2)).astype(np.float64)
    return Problem(sim, ctrl, 7, "CONTINUOUS", rho=0.1), ctrl.init(rng, np.float64), x0


def _cartpole_problem(rng):
    sim = CartPole(poles=2)
    ctrl = MLP(sim.state_dim, 1, width=6, depth=2)
    x0 = sim.sample(5, np.random.RandomState(2)).astype(np.float64)
    return Problem(sim, ctrl, 12, "FINAL", rho=0.1), ctrl.init(rng, np.float64), x0


def _guidance_problem(rng):
    from stablebptt.sims import Guidance

    sim = Guidance(drivers=2, evaders=2)
    ctrl = MLP(sim.state_dim, sim.control_dim, width=6, depth=2)
    x0 = sim.sample(5, np.random.RandomState(2)).astype(np.float64)
    return Problem(sim, ctrl, 9, "CONTINUOUS", rho=0.1), ctrl.init(rng, np.float64), x0


class _EveryInputCotangent:
    """A controller as given, but without ``input_cotangent_optional``: the engine then has it
    compute every input cotangent, used or not."""

    input_cotangent_optional = False

    def __init__(self, controller):
        self._controller = controller

    def __getattr__(self, name):
        return getattr(self._controller, name)


@pytest.mark.parametrize("make", [_cartpole_problem, _quantum_problem, _guidance_problem])
def test_skipping_unused_input_cotangents_changes_no_bit(make, rng):
    """Where the engine hands an optional-cotangent controller a ``dx`` without columns (M, S,
    C's second sweep; a scalar control's unit cotangents under M and S), every mode's loss and
    gradient are the bits of computing them all; with and without the unit cotangents."""
    problem, theta, x0 = make(rng)
    theta = theta + 0.3 * rng.standard_normal(theta.size)
    assert problem.controller.input_cotangent_optional
    every, _, _ = make(rng)
    every.controller = _EveryInputCotangent(every.controller)
    every.input_cotangent_optional = False  # the problem reads the capability once, when built
    for unit in (True, False):
        if not unit:
            problem.unit_widths = every.unit_widths = np.zeros(0, np.int64)
        for mode in "RMNSC":
            skipped, computed = problem.gradient(theta, x0, mode), every.gradient(theta, x0, mode)
            np.testing.assert_array_equal(skipped.grad, computed.grad, err_msg=mode)
            assert skipped.loss == computed.loss


@pytest.mark.parametrize("make", [_cartpole_problem, _quantum_problem])
def test_unit_cotangents_give_each_sweeps_own_adjoint(make, rng):
    """With a scalar control the engine runs the controller's adjoint once, for unit control
    cotangents, and scales it for each sweep: every mode's gradient must equal, to rounding, the
    one from calling the adjoint with each sweep's cotangents (the path without delta_widths)."""
    problem, theta, x0 = make(rng)
    theta = theta + 0.3 * rng.standard_normal(theta.size)
    assert problem.unit_widths.size > 0  # the scaled path is the one under test
    per_sweep, _, _ = make(rng)
    per_sweep.unit_widths = np.zeros(0, np.int64)
    for mode in "RMNSC":
        scaled, direct = problem.gradient(theta, x0, mode), per_sweep.gradient(theta, x0, mode)
        assert np.abs(direct.grad).max() > 0
        np.testing.assert_allclose(scaled.grad, direct.grad, rtol=1e-12,
                                   atol=1e-13 * np.abs(direct.grad).max(), err_msg=mode)
        assert scaled.loss == direct.loss
