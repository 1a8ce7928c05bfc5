"""Adam, SGD and clipping against hand-computed values."""

import numpy as np
import pytest

from stablebptt.experiments.optim import SGD, Adam, clip_gradient

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
