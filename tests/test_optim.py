"""Adam, SGD and clipping against hand-computed values."""

import numpy as np
import pytest

from stablebptt import ConfigError, Trainer, preset, read_run
from stablebptt.train.optim import (SGD, Adam, clip_gradient, clip_with_norms, make_optimizer,
                                          state_arrays)

import naive


def test_adam_first_step_by_hand():
    # t=1: m = 0.1 g, v = 0.001 g^2, lr_t = lr sqrt(0.001)/0.1, step = lr_t * m / (sqrt(v) + eps)
    theta = np.array([1.0, -2.0, 0.5])
    g = np.array([0.5, -4.0, 0.0])
    adam = Adam(lr=0.01)
    state = adam.init(theta)
    adam.update(theta, g, state)
    lr_t = 0.01 * np.sqrt(0.001) / 0.1
    expected = np.array([1.0, -2.0, 0.5]) - lr_t * 0.1 * g / (np.sqrt(0.001) * np.abs(g) + 1e-7)
    np.testing.assert_allclose(theta, expected, rtol=1e-14)
    assert state.step == 1
    # the first Adam step moves every non-zero component by ~lr, whatever its size
    np.testing.assert_allclose(np.abs(theta - [1.0, -2.0, 0.5])[:2], 0.01, rtol=1e-5)


def test_adam_many_steps_match_keras_formula(rng):
    grads = [rng.standard_normal(6) for _ in range(20)]
    theta = rng.standard_normal(6)
    expected = naive.keras_adam(theta, grads, lr=0.003)
    adam = Adam(lr=0.003)
    state = adam.init(theta)
    for g in grads:
        adam.update(theta, g, state)
    np.testing.assert_allclose(theta, expected, rtol=1e-13)
    assert state.step == 20


def test_adam_float32_stays_float32(rng):
    theta = rng.standard_normal(5).astype(np.float32)
    adam = Adam()
    state = adam.init(theta)
    adam.update(theta, rng.standard_normal(5).astype(np.float32), state)
    assert theta.dtype == state.m.dtype == state.v.dtype == np.float32


def test_sgd_momentum_by_hand():
    theta = np.array([1.0])
    sgd = SGD(lr=0.1, momentum=0.9)
    state = sgd.init(theta)
    sgd.update(theta, np.array([2.0]), state)  # u = -0.2
    sgd.update(theta, np.array([1.0]), state)  # u = 0.9 * -0.2 - 0.1 = -0.28
    np.testing.assert_allclose(theta, [1.0 - 0.2 - 0.28])
    plain = SGD(lr=0.1)
    theta = np.array([1.0])
    plain.update(theta, np.array([2.0]), plain.init(theta))
    np.testing.assert_allclose(theta, [0.8])


def test_clip_value():
    g = np.array([3.0, -0.5, -2.0, 1.0])
    np.testing.assert_array_equal(clip_gradient(g, "value", 1.0), [1.0, -0.5, -1.0, 1.0])


def test_clip_global_norm():
    g = np.array([3.0, 4.0])  # norm 5
    np.testing.assert_allclose(clip_gradient(g, "norm", 1.0), [0.6, 0.8])
    small = np.array([0.3, 0.4])  # norm 0.5 < 1: unchanged
    np.testing.assert_array_equal(clip_gradient(small, "norm", 1.0), small)
    np.testing.assert_array_equal(clip_gradient(g, "none"), g)


def test_clip_rejects_bad_settings():
    with pytest.raises(ValueError, match="'sideways'"):
        clip_gradient(np.ones(2), "sideways")
    with pytest.raises(ValueError, match="-1"):
        clip_gradient(np.ones(2), "norm", -1)


KERAS = {"adagrad": naive.keras_adagrad, "adadelta": naive.keras_adadelta,
         "rmsprop": naive.keras_rmsprop}


@pytest.mark.parametrize("name", sorted(KERAS))
@pytest.mark.parametrize("clip", ["none", "value", "norm"])
def test_adaptive_optimisers_match_keras_2_9(name, clip, rng):
    """Several steps against a transcription of Keras 2.9's update equations (defaults, lr 0.01),
    with gradients large enough for both clipping modes to act."""
    grads = [3.0 * rng.standard_normal(7) for _ in range(25)]
    theta = rng.standard_normal(7)
    expected = KERAS[name](theta, grads, lr=0.01, clip=None if clip == "none" else clip, c=1.0)
    optimizer = make_optimizer(name, 0.01)
    state = optimizer.init(theta)
    for g in grads:
        optimizer.update(theta, clip_gradient(g, clip, 1.0), state)
    np.testing.assert_allclose(theta, expected, rtol=1e-13, atol=1e-15)
    assert state.step == 25


@pytest.mark.parametrize("name", sorted(KERAS))
def test_adaptive_optimisers_keras_defaults_and_float32(name, rng):
    optimizer = make_optimizer(name, 1e-3)
    assert optimizer.epsilon == 1e-7
    defaults = {"adagrad": ("initial_accumulator", 0.1), "adadelta": ("rho", 0.95),
                "rmsprop": ("rho", 0.9)}
    field, value = defaults[name]
    assert getattr(optimizer, field) == value
    theta = rng.standard_normal(5).astype(np.float32)
    state = optimizer.init(theta)
    optimizer.update(theta, rng.standard_normal(5).astype(np.float32), state)
    assert theta.dtype == np.float32
    assert all(a.dtype == np.float32 for a in state_arrays(state).values())


def test_momentum_is_for_sgd_only():
    with pytest.raises(ValueError, match="sgd only"):
        make_optimizer("rmsprop", 1e-3, momentum=0.9)
    with pytest.raises(ConfigError, match="momentum=0.9 applies to the sgd optimizer only"):
        preset("cartpole", optimizer="adam", momentum=0.9)
    assert preset("cartpole", optimizer="sgd", momentum=0.9).momentum == 0.9


@pytest.mark.parametrize("name,momentum", [("sgd", 0.9), ("adagrad", 0.0), ("adadelta", 0.0),
                                           ("rmsprop", 0.0)])
def test_resume_is_bit_identical_for_every_optimiser(name, momentum, tmp_path):
    settings = dict(poles=1, width=8, n_steps=10, n_data=16, batch_size=4, checkpoint_every=1,
                    zero_last=False, mode="C", clip="norm", optimizer=name, momentum=momentum,
                    lr=0.01)
    full = Trainer.new(preset("cartpole", epochs=4, **settings), tmp_path / "full.h5")
    full.run(quiet=True)
    part = Trainer.new(preset("cartpole", epochs=2, **settings), tmp_path / "part.h5")
    part.run(quiet=True)
    resumed = Trainer.resume(tmp_path / "part.h5", epochs=4)
    assert resumed.opt_state.step == 8
    resumed.run(quiet=True)
    a, b = read_run(tmp_path / "full.h5"), read_run(tmp_path / "part.h5")
    np.testing.assert_array_equal(a.checkpoint.theta, b.checkpoint.theta)
    assert a.checkpoint.optimizer_arrays.keys() == b.checkpoint.optimizer_arrays.keys()
    for key, value in a.checkpoint.optimizer_arrays.items():
        np.testing.assert_array_equal(b.checkpoint.optimizer_arrays[key], value)
    np.testing.assert_array_equal(a.metrics["test_loss"], b.metrics["test_loss"])
    assert name in a.config.run_name()


def test_sweep_optimiser_axis():
    from stablebptt.train.sweep import expand_grid

    configs = expand_grid("cartpole", {"optimizer": ["adam", "rmsprop", "adagrad"], "mode": ["R", "C"],
                                       "clip": ["norm"]}, poles=3)
    assert len(configs) == 6
    names = {c.run_name() for c in configs}
    assert "cartpole_p3_C_clip-norm_lr0.001_bs8_s42_rmsprop" in names
    assert "cartpole_p3_C_clip-norm_lr0.001_bs8_s42" in names  # adam is the preset's


def _numpy_updates(name, theta, grad, state, opt):
    """The updates as numpy array operations, one operation per line in the documented order:
    the compiled loops must give the same bits."""
    dtype = theta.dtype.type
    if name == "adam":
        t = state.step
        lr_t = dtype(opt.lr * np.sqrt(1.0 - opt.beta2 ** t) / (1.0 - opt.beta1 ** t))
        state.m *= dtype(opt.beta1)
        state.m += dtype(1.0 - opt.beta1) * grad
        state.v *= dtype(opt.beta2)
        state.v += dtype(1.0 - opt.beta2) * grad * grad
        theta -= lr_t * state.m / (np.sqrt(state.v) + dtype(opt.epsilon))
    elif name == "sgd":
        state.velocity *= dtype(opt.momentum)
        state.velocity -= dtype(opt.lr) * grad
        theta += state.velocity
    elif name == "adagrad":
        state.accumulator += grad * grad
        theta -= dtype(opt.lr) * grad / (np.sqrt(state.accumulator) + dtype(opt.epsilon))
    elif name == "adadelta":
        rho, eps = dtype(opt.rho), dtype(opt.epsilon)
        state.accumulator *= rho
        state.accumulator += dtype(1.0 - opt.rho) * grad * grad
        step = np.sqrt(state.update_accumulator + eps) / np.sqrt(state.accumulator + eps) * grad
        state.update_accumulator *= rho
        state.update_accumulator += dtype(1.0 - opt.rho) * step * step
        theta -= dtype(opt.lr) * step
    else:
        state.rms *= dtype(opt.rho)
        state.rms += dtype(1.0 - opt.rho) * grad * grad
        theta -= dtype(opt.lr) * grad / (np.sqrt(state.rms) + dtype(opt.epsilon))


@pytest.mark.parametrize("name", ["adam", "sgd", "adagrad", "adadelta", "rmsprop"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_updates_are_the_numpy_operations_bit_for_bit(name, dtype, rng):
    optimizer = make_optimizer(name, 3e-3, momentum=0.9 if name == "sgd" else 0.0)
    theta = rng.standard_normal(1001).astype(dtype)
    state = optimizer.init(theta)
    expected, expected_state = theta.copy(), optimizer.init(theta)
    for _ in range(30):
        g = (rng.standard_normal(1001) * 10.0 ** rng.uniform(-4, 2, 1001)).astype(dtype)
        optimizer.update(theta, g, state)
        expected_state.step += 1
        _numpy_updates(name, expected, g, expected_state, optimizer)
    np.testing.assert_array_equal(theta, expected)
    for key, value in state_arrays(state).items():
        np.testing.assert_array_equal(value, state_arrays(expected_state)[key])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_with_norms_reports_what_it_did(dtype, rng):
    g = (3.0 * rng.standard_normal(500)).astype(dtype)
    size = float(np.sum(np.square(g, dtype=np.float64)))
    for mode, expected in [("none", g), ("value", np.clip(g, -1.0, 1.0)),
                           ("norm", g * dtype(1.0 / np.sqrt(size)))]:
        clipped, got_size, clipped_norm, changed = clip_with_norms(g, mode, 1.0)
        assert clipped.dtype == dtype and clipped is not g
        np.testing.assert_array_equal(clipped, expected)
        assert got_size == pytest.approx(size, rel=1e-13)
        assert clipped_norm == pytest.approx(np.linalg.norm(expected.astype(np.float64)), rel=1e-13)
        assert changed == (mode != "none")
    # below the threshold nothing changes; a NaN propagates and counts as a change
    small = (g / np.sqrt(size) * 0.5).astype(dtype)
    assert not clip_with_norms(small, "norm", 1.0)[3]
    bad = g.copy()
    bad[7] = np.nan
    for mode in ("value", "norm"):
        clipped, got_size, _, changed = clip_with_norms(bad, mode, 1.0)
        assert np.isnan(clipped[7]) and np.isnan(got_size) and changed
    assert np.isnan(clip_with_norms(bad, "norm", 1.0)[0]).all()  # a NaN norm spoils every entry


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clipping_norm_sums_in_its_documented_order(dtype, rng):
    """The gradient's sum of squares: eight partial sums (element i into sum i % 8) in order,
    then ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7)): a fixed order, whatever the machine."""
    from stablebptt.train._optim_kernels import sum_of_products

    for n in (0, 1, 7, 8, 13, 1001):
        a = (3.0 * rng.standard_normal(n)).astype(dtype)
        b = rng.standard_normal(n).astype(dtype)
        partial = [0.0] * 8
        for i in range(n):
            partial[i % 8] += float(a[i]) * float(b[i])
        expected = ((partial[0] + partial[1]) + (partial[2] + partial[3])) + (
            (partial[4] + partial[5]) + (partial[6] + partial[7]))
        assert sum_of_products(a, b) == expected
        assert clip_with_norms(a, "none", 1.0)[1] == sum_of_products(a, a)
