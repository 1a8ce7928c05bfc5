"""Every kernel against finite differences and the dot-product test (float64), and naive references."""

from dataclasses import dataclass

import numpy as np
import pytest

from stablebptt.adjoint import check_controller, check_simulator
from stablebptt.contract import kernel, param_grad_sig, prepared_parameters, vjp_sig
from stablebptt.controllers import CNN, MLP, Quadratic
from stablebptt.sims import CartPole, Shift

import naive


def _assert_ok(results):
    assert results, "no checks ran"
    for r in results:
        assert r.ok, f"{r.name}: error {r.error:.2e} > {r.tolerance:.0e}"


@pytest.mark.parametrize("poles", [1, 2, 3, 4])
def test_cartpole_step_and_loss_adjoints(poles, rng):
    sim = CartPole(poles=poles)
    x = sim.sample(5, np.random.RandomState(poles)).astype(np.float64)
    x += 0.3 * rng.standard_normal(x.shape)  # away from the sampler's ranges too
    c = 3.0 * rng.standard_normal((5, 1))
    _assert_ok(check_simulator(sim, x, c, rng))


def test_toy_simulator_adjoints(rng):
    _assert_ok(check_simulator(Shift(), rng.standard_normal((4, 1)), rng.standard_normal((4, 1)), rng))


@pytest.mark.parametrize("depth,bias", [(0, True), (1, False), (2, True), (3, True)])
def test_mlp_adjoints(depth, bias, rng):
    ctrl = MLP(6, 2, width=9, depth=depth, bias=bias)
    theta = ctrl.init(rng, np.float64) + 0.1 * rng.standard_normal(ctrl.n_params)
    results = check_controller(ctrl, theta, rng.standard_normal((4, 6)), rng)
    assert any("prepared" in r.name for r in results)  # the engine's path is checked too
    _assert_ok(results)


@pytest.mark.parametrize("controller", [MLP(6, 2, width=20, depth=2), MLP(6, 1, width=20, depth=1),
                                        CNN(nx=16, width=12)], ids=["mlp", "mlp-1-out", "cnn"])
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_prepared_parameters_give_the_plain_adjoint(controller, dtype, rtol, rng):
    """The engine hands kernels ``prepare(theta)`` (transposed kernels appended): the adjoint
    and parameter gradient must equal those of the plain parameters to rounding."""
    theta = controller.init(rng, dtype) + dtype(0.1) * rng.standard_normal(controller.n_params).astype(dtype)
    prepared = controller.prepare(theta)
    assert prepared.dtype == dtype and prepared.size > theta.size
    np.testing.assert_array_equal(prepared[:theta.size], theta)
    batch, spec = 4, controller.spec
    x = rng.standard_normal((batch, controller.n_inputs)).astype(dtype)
    mu = rng.standard_normal((batch, controller.n_outputs)).astype(dtype)
    acts = np.zeros(controller.acts_size(batch), dtype)
    controller.forward(theta, spec, x, acts, 0, 1, np.zeros((batch, controller.n_outputs), dtype))
    results = []
    for kernel_theta in (theta, prepared):
        dx, deltas, g = np.zeros_like(x), np.zeros(controller.deltas_size(batch), dtype), np.zeros_like(theta)
        controller.vjp(kernel_theta, spec, x, acts.copy(), 0, 1, mu, dx, deltas)
        controller.param_grad(kernel_theta, spec, x, acts.copy(), deltas, 1, g)
        results.append((dx, g))
    (dx_plain, g_plain), (dx_prepared, g_prepared) = results
    scale = max(np.abs(g_plain).max(), np.abs(dx_plain).max())
    np.testing.assert_allclose(dx_prepared, dx_plain, rtol=0, atol=rtol * scale)
    np.testing.assert_allclose(g_prepared, g_plain, rtol=0, atol=rtol * scale)
    assert not np.array_equal(g_plain, 0)


def test_a_prepare_returning_the_wrong_array_is_a_contract_error(rng):
    from stablebptt.contract import ContractError, prepared_parameters

    class Short(MLP):
        def prepare(self, theta):
            return theta[:-1]

    class Float64(MLP):
        def prepare(self, theta):
            return theta.astype(np.float64)

    for cls in (Short, Float64):
        ctrl = cls(6, 2, width=5, depth=1)
        with pytest.raises(ContractError, match=f"{cls.__name__}.prepare must return a contiguous"):
            prepared_parameters(ctrl, ctrl.init(rng, np.float32))
    plain = MLP(6, 2, width=5, depth=1)
    theta = plain.init(rng, np.float32)
    assert prepared_parameters(plain, theta).size == theta.size + 6 * 5 + 5 * 2


@kernel(vjp_sig)
def _sample_major_vjp(theta, spec, x, acts, n, nsteps, mu, dx, deltas):
    for b in range(x.shape[0]):
        dx[b, 0] = (2.0 * theta[0] * x[b, 0] + theta[1]) * mu[b, 0]
        deltas[b * nsteps + n] = mu[b, 0]  # sample-major: not what steps_as_rows promises


@kernel(param_grad_sig)
def _sample_major_param_grad(theta, spec, xs, acts, deltas, nsteps, g):
    batch = xs.shape[0] // nsteps
    for r in range(xs.shape[0]):
        delta = deltas[(r % batch) * nsteps + r // batch]
        g[0] += xs[r, 0] ** 2 * delta
        g[1] += xs[r, 0] * delta


class _SampleMajorQuadratic(Quadratic):
    """A correct controller (one call per step) that wrongly claims ``steps_as_rows``."""

    vjp = staticmethod(_sample_major_vjp)
    param_grad = staticmethod(_sample_major_param_grad)


@dataclass(frozen=True)
class _MisreadWidthsMLP(MLP):
    """A correct MLP that gives its cotangent blocks' widths in the wrong order."""

    @property
    def delta_widths(self):
        return tuple(reversed(super().delta_widths))


def test_steps_as_rows_check_passes_built_ins_and_fails_a_false_claim(rng):
    from stablebptt.adjoint.check import check_steps_as_rows

    for ctrl in (MLP(6, 2, width=9, depth=2), MLP(6, 1, width=9, depth=2), CNN(nx=8, width=5),
                 Quadratic()):
        x = rng.standard_normal((4, ctrl.n_inputs))
        theta = ctrl.init(rng, np.float64) + 0.1 * rng.standard_normal(ctrl.n_params)
        checks = check_steps_as_rows(ctrl, prepared_parameters(ctrl, theta), x, rng)
        # scalar controls also check delta_widths
        assert len(checks) == (2 if ctrl.n_outputs == 1 else 1) and all(r.ok for r in checks)
    liar = _SampleMajorQuadratic()
    x = rng.standard_normal((4, 1))
    theta = np.array([0.3, -0.7])
    adjoint_checks = [r for r in check_controller(liar, theta, x, rng) if "steps_as_rows" not in r.name]
    assert all(r.ok for r in adjoint_checks)  # its adjoint is right
    result = check_steps_as_rows(liar, theta, x, rng)[0]
    assert not result.ok and "remove steps_as_rows" in result.detail

    misread = _MisreadWidthsMLP(3, 1, width=5, depth=2)
    theta = misread.init(rng, np.float64) + 0.1 * rng.standard_normal(misread.n_params)
    x = rng.standard_normal((4, 3))
    steps, widths = check_steps_as_rows(misread, theta, x, rng)
    assert steps.ok and not widths.ok and "widths" in widths.detail


@dataclass(frozen=True)
class _CarelessQuadratic(Quadratic):
    """Claims input_cotangent_optional, but its vjp writes dx whatever its shape."""

    input_cotangent_optional = True


def test_input_cotangent_optional_check_passes_built_ins_and_fails_a_false_claim(rng):
    from stablebptt.adjoint.check import check_input_cotangent_optional

    for ctrl in (MLP(6, 2, width=9, depth=2), MLP(6, 1, width=9, depth=2), CNN(nx=8, width=5)):
        x = rng.standard_normal((4, ctrl.n_inputs))
        theta = ctrl.init(rng, np.float64) + 0.1 * rng.standard_normal(ctrl.n_params)
        for kernel_theta in (theta, prepared_parameters(ctrl, theta)):
            assert check_input_cotangent_optional(ctrl, kernel_theta, x).ok
        assert sum("input_cotangent_optional" in r.name for r in check_controller(ctrl, theta, x, rng)) == 2
    result = check_input_cotangent_optional(_CarelessQuadratic(), np.array([0.3, -0.7]),
                                            rng.standard_normal((4, 1)))
    assert not result.ok and "remove input_cotangent_optional" in result.detail


def test_check_detects_a_wrong_adjoint(rng):
    """The checker itself must fail on a broken vjp (a check that cannot fail is no check)."""
    from stablebptt.adjoint import check_vjp

    a = rng.standard_normal((3, 3))
    results = check_vjp("wrong", lambda x: a @ x, lambda w: a @ w, rng.standard_normal(3), rng)
    assert not any(r.ok for r in results)


def test_dot_product_check_is_relative_to_its_terms():
    """A correct adjoint passes when the random vectors make <J v, w> cancel to ~0 (the error of
    the differences scales with the terms, not with their sum); a wrong one still fails."""
    from stablebptt.adjoint import check_vjp

    class Draws:  # hands check_vjp the vectors v and w in turn
        def __init__(self, *vectors):
            self.vectors = list(vectors)

        def standard_normal(self, shape):
            return self.vectors.pop(0).reshape(shape)

    x = np.array([0.3, -1.1])
    v = np.array([1.0, 1.0])
    w = np.array([np.cos(x[1]), -np.cos(x[0])])  # <diag(cos x) v, w> = 0
    right, = [r for r in check_vjp("sin", np.sin, lambda u: np.cos(x) * u, x, Draws(v, w))
              if "dot product" in r.name]
    assert right.ok, right.error
    wrong, = [r for r in check_vjp("sin", np.sin, lambda u: np.cos(x) * u * [1.0, 1.001], x,
                                   Draws(v, w)) if "dot product" in r.name]
    assert not wrong.ok and wrong.error > 1e-4


@pytest.mark.parametrize("poles", [1, 3])
def test_cartpole_step_matches_reference_equations(poles):
    sim = CartPole(poles=poles, dt=0.01)
    x = sim.sample(7, np.random.RandomState(0)).astype(np.float64)
    c = np.linspace(-2, 2, 7)[:, None]
    out = np.zeros_like(x)
    sim.step(sim.params, x, c, out)
    expected = naive.cartpole_step(x.reshape(7, poles + 1, 2), c[:, 0], 0.01).reshape(7, -1)
    np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-13)


def test_cartpole_sampler_reproduces_reference_draws():
    sim = CartPole(poles=2)
    states = sim.sample(256, np.random.RandomState(42)).reshape(256, 3, 2)
    np.random.seed(42)
    ref = np.random.rand(256, 3, 2).astype(np.float32) * 2 - 1
    ref[:, 1:, 0] = np.pi + ref[:, 1:, 0] * np.pi / 6
    np.testing.assert_array_equal(states, ref)
    assert np.all(np.abs(states[:, 1:, 0] - np.pi) <= np.pi / 6 + 1e-6)
    assert np.all(np.abs(states[:, 0, :]) <= 1) and np.all(np.abs(states[:, 1:, 1]) <= 1)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_mlp_forward_matches_keras_layout(dtype, rtol, rng):
    ctrl = MLP(4, 1, width=10, depth=2)
    theta = ctrl.init(rng, dtype) + dtype(0.1)
    x = rng.standard_normal((5, 4)).astype(dtype)
    c = np.zeros((5, 1), dtype)
    ctrl.forward(theta, ctrl.spec, x, np.zeros(ctrl.acts_size(5), dtype), 0, 1, c)
    weights = list(ctrl.views(theta.astype(np.float64)).values())
    np.testing.assert_allclose(c, naive.mlp_forward(weights, x.astype(np.float64)), rtol=rtol, atol=rtol)


def test_mlp_init_is_glorot_with_zero_biases_and_optional_zero_output(rng):
    ctrl = MLP(6, 1, width=100, depth=2, zero_last=True)
    views = ctrl.views(ctrl.init(rng))
    assert [k for k in views] == ["dense_0/kernel", "dense_0/bias", "dense_1/kernel", "dense_1/bias",
                                  "dense_2/kernel", "dense_2/bias"]
    assert views["dense_1/kernel"].shape == (100, 100)
    limit = np.sqrt(6 / 200)
    assert 0.9 * limit < np.abs(views["dense_1/kernel"]).max() <= limit
    assert not np.any(views["dense_0/bias"]) and not np.any(views["dense_2/kernel"])
    assert np.any(MLP(6, 1, zero_last=False).views(MLP(6, 1).init(rng))["dense_2/kernel"])


def test_float32_tanh_approximation_is_accurate():
    from stablebptt.controllers._dense import tanh_in_place

    x = np.linspace(-12, 12, 100001).astype(np.float32).reshape(1, -1)
    y = x.copy()
    tanh_in_place(y)
    assert np.max(np.abs(y - np.tanh(x.astype(np.float64)))) < 5e-7


def test_float64_tanh_is_within_two_ulp_of_libm():
    """The vectorising float64 tanh against numpy's, over the whole range and both branches
    (|x| < 0.625 rational, beyond exp-based, clamped at 22), with the special values."""
    from stablebptt.controllers._dense import tanh_in_place

    x = np.concatenate([np.linspace(-30, 30, 600_001), np.geomspace(1e-300, 30, 20_001),
                        -np.geomspace(1e-300, 30, 20_001), np.nextafter(0.625, [0, 1]),
                        -np.nextafter(0.625, [0, 1]), [0.0, -0.0, 22.0, np.inf, -np.inf]])
    y = x.reshape(1, -1).copy()
    tanh_in_place(y)
    expected = np.tanh(x)
    ulp = np.abs(y[0] - expected) / np.spacing(np.abs(expected))
    assert ulp.max() <= 2.0
    assert np.signbit(y[0, -4]) and not np.signbit(y[0, -5])  # tanh(-0) = -0
    z = np.array([[np.nan, 1.0]])
    tanh_in_place(z)
    assert np.isnan(z[0, 0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_as_matrix_is_reshape_without_copy(dtype, rng):
    from stablebptt.controllers._views import as_matrix

    flat = rng.standard_normal(60).astype(dtype)
    view = as_matrix(flat[12:48], 4, 9)
    np.testing.assert_array_equal(view, flat[12:48].reshape(4, 9))
    assert view.flags.c_contiguous and np.shares_memory(view, flat)
    np.testing.assert_array_equal(as_matrix(view, 2, 18), flat[12:48].reshape(2, 18))
    with pytest.raises(ValueError, match="rows \\* cols"):
        as_matrix(flat, 7, 9)


def test_bias_gradient_sums_a_column_in_order_over_its_rows(rng):
    """The sum's order must not depend on what the caller's view tells LLVM about its strides:
    a single column seen as contiguous must not become a reordered vector reduction."""
    from numba import njit

    from stablebptt.controllers._dense import add_column_sums
    from stablebptt.controllers._views import as_matrix

    @njit
    def column_sum(flat, out):
        add_column_sums(as_matrix(flat, flat.size, 1), out)

    flat = (rng.standard_normal(1000) * 10.0 ** rng.integers(-4, 4, 1000)).astype(np.float32)
    out = np.zeros(1, np.float32)
    column_sum(flat, out)
    in_order = np.float32(0)
    for value in flat:
        in_order = np.float32(in_order + value)
    assert out[0] == in_order
