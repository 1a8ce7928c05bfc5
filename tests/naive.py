"""Slow, obviously correct references written straight from the equations (numpy, no Numba)."""

import numpy as np


def cartpole_step(state, force, dt, g=9.8, m=0.1, total_mass=1.1, length=0.5):
    """The reference's multi-pole step on states shaped (B, 1+P, 2) and forces (B,)."""
    ml = m * length
    x, x_dot = state[:, 0, 0], state[:, 0, 1]
    th, th_dot = state[:, 1:, 0], state[:, 1:, 1]
    f = force[:, None]
    cos, sin = np.cos(th), np.sin(th)
    sintd2 = sin * th_dot ** 2
    a = (f + ml * sintd2) / total_mass
    b = length * (4.0 / 3.0 - m * cos ** 2 / total_mass)
    th_dot2 = (g * sin - cos * a) / b
    c = np.sum(sintd2 - th_dot2 * cos, axis=1)
    x_dot2 = (force + ml * c) / total_mass
    th_dot_new = th_dot + dt * th_dot2
    th_new = th + dt * th_dot_new
    x_dot_new = x_dot + dt * x_dot2
    x_new = x + dt * x_dot_new
    out = np.empty_like(state)
    out[:, 0, 0], out[:, 0, 1] = x_new, x_dot_new
    out[:, 1:, 0], out[:, 1:, 1] = th_new, th_dot_new
    return out


def mlp_forward(weights, x, bias=True):
    """Keras Sequential of Dense layers: tanh hidden, linear output; ``weights`` as get_weights()."""
    h = x
    step = 2 if bias else 1
    layers = [weights[i:i + step] for i in range(0, len(weights), step)]
    for k, layer in enumerate(layers):
        h = h @ layer[0] + (layer[1] if bias else 0.0)
        if k < len(layers) - 1:
            h = np.tanh(h)
    return h


def keras_adam(theta, grads, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7):
    """Keras 2.9 (optimizer_v2) Adam applied to a list of gradients, in float64."""
    theta = np.array(theta, dtype=np.float64)
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        lr_t = lr * np.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        theta = theta - lr_t * m / (np.sqrt(v) + eps)
    return theta
