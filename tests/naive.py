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


def keras_clip(g, mode, c):
    """Keras 2.9's clipvalue (component-wise) and global_clipnorm (one norm over all weights)."""
    if mode == "value":
        return np.minimum(np.maximum(g, -c), c)
    if mode == "norm":
        norm = np.sqrt(np.sum(g * g))
        return g * c / max(norm, c)
    return g


def keras_adagrad(theta, grads, lr=1e-3, initial_accumulator_value=0.1, epsilon=1e-7, clip=None, c=1.0):
    """Keras 2.9 Adagrad (ResourceApplyAdagradV2) over a list of gradients, in float64."""
    theta = np.array(theta, dtype=np.float64)
    accum = np.full_like(theta, initial_accumulator_value)
    for g in grads:
        g = keras_clip(g, clip, c)
        accum = accum + g * g
        theta = theta - lr * g / (np.sqrt(accum) + epsilon)
    return theta


def keras_adadelta(theta, grads, lr=1e-3, rho=0.95, epsilon=1e-7, clip=None, c=1.0):
    """Keras 2.9 Adadelta (ResourceApplyAdadelta) over a list of gradients, in float64."""
    theta = np.array(theta, dtype=np.float64)
    accum = np.zeros_like(theta)
    accum_update = np.zeros_like(theta)
    for g in grads:
        g = keras_clip(g, clip, c)
        accum = rho * accum + (1 - rho) * g * g
        update = np.sqrt(accum_update + epsilon) / np.sqrt(accum + epsilon) * g
        accum_update = rho * accum_update + (1 - rho) * update * update
        theta = theta - lr * update
    return theta


def keras_rmsprop(theta, grads, lr=1e-3, rho=0.9, epsilon=1e-7, clip=None, c=1.0):
    """Keras 2.9 RMSprop without momentum, not centred (its Python update), in float64."""
    theta = np.array(theta, dtype=np.float64)
    rms = np.zeros_like(theta)
    for g in grads:
        g = keras_clip(g, clip, c)
        rms = rho * rms + (1 - rho) * g * g
        theta = theta - lr * g / (np.sqrt(rms) + epsilon)
    return theta


def guidance_step(state, control, n_drivers, dt, eps=0.1, c_evade=15.0, c_fric_ev=4.0,
                  c_flock=0.2, d_flock=0.5, c_spread=0.2, c_fric_dr=1.0):
    """The reference's driver-evader Euler step, one pair at a time.

    ``state`` (B, agents, 2, 2) = position/velocity x spatial; ``control`` (B, n_drivers, 2).
    """
    x, v = state[:, :, 0, :], state[:, :, 1, :]
    n_agents = x.shape[1]
    acc = np.zeros_like(x)

    def dist(r):
        return eps + np.sqrt(np.sum(r * r, axis=-1, keepdims=True))

    centre = x[:, n_drivers:].sum(axis=1)
    for j in range(n_drivers):
        cv = x[:, j] - centre
        orth = np.stack([-cv[:, 1], cv[:, 0]], axis=-1)
        acc[:, j] += control[:, j, :1] * cv + control[:, j, 1:] * orth - c_fric_dr * v[:, j]
        for i in range(n_drivers):
            if i != j:
                r = x[:, j] - x[:, i]
                acc[:, j] += c_spread * r / dist(r) ** 2
    for k in range(n_drivers, n_agents):
        acc[:, k] -= c_fric_ev * v[:, k]
        for i in range(n_drivers):
            r = x[:, i] - x[:, k]
            acc[:, k] += c_evade * (-1.0 / dist(r) ** 2) * r
        for i in range(n_drivers, n_agents):
            if i != k:
                r = x[:, i] - x[:, k]
                d = dist(r)
                acc[:, k] += c_flock * ((d_flock / d - 1.0) / d) * r
    out = np.empty_like(state)
    out[:, :, 0, :] = x + dt * v
    out[:, :, 1, :] = v + dt * acc
    return out


def guidance_data(n, n_drivers, n_evaders, seed=42):
    """The reference's data generator (2n states drawn at once, split into train and test)."""
    rng = np.random.RandomState(seed)
    states = np.zeros((2 * n, n_drivers + n_evaders, 2, 2), dtype=np.float32)

    def annulus(rmin, rmax):
        s1 = rng.rand(2 * n).astype(np.float32)
        s2 = rng.rand(2 * n).astype(np.float32)
        phi = 2 * np.pi * s1
        r = (rmax - rmin) * s2 + rmin
        return np.stack([r * np.cos(phi), r * np.sin(phi)], axis=-1)

    def rectangle(lo, hi):
        x = (hi - lo) * rng.rand(2 * n).astype(np.float32) + lo
        y = (hi - lo) * rng.rand(2 * n).astype(np.float32) + lo
        return np.stack([x, y], axis=-1)

    for k in range(n_drivers):
        states[:, k, 0, :] = annulus(3, 4)
    centre = annulus(1, 2)
    for k in range(n_evaders):
        states[:, n_drivers + k, 0, :] = centre + rectangle(-0.5, 0.5)
    return states[:n], states[n:]


def crank_nicolson_dense(psi, c, dt, dx):
    """One Crank-Nicolson step of i psi_t = -psi_xx + c x psi with dense matrices (complex psi (Nx,))."""
    nx = psi.shape[0]
    x = dx * np.arange(1, nx + 1)
    lap = (np.diag(np.full(nx - 1, 1.0), -1) - 2 * np.eye(nx) + np.diag(np.full(nx - 1, 1.0), 1)) / dx ** 2
    h = -lap + np.diag(c * x)
    return np.linalg.solve(np.eye(nx) + 0.5j * dt * h, (np.eye(nx) - 0.5j * dt * h) @ psi)


def quantum_data(n, nx, w1, w2, seed=42):
    """The reference's data.py (and its eigenstate()) transcribed line by line: float32 draws,
    complex64 arithmetic, the outer products as tensordot. Returns (train, test) complex64 states."""
    np.random.seed(seed)

    def eigenstate(k, length):
        points = np.arange(length + 2, dtype=np.complex64)
        k_n = np.pi * k / (length + 1)
        wave = np.sin(k_n * points)
        prob = np.abs(wave) ** 2
        wave = wave / np.sum(prob) ** 0.5
        return wave[1:-1]

    es1 = eigenstate(1, nx).reshape((1, -1))
    es2 = eigenstate(2, nx).reshape((1, -1))
    c1 = np.random.normal(size=(2 * n, 1)).astype(np.float32) * w1
    c2 = np.random.normal(size=(2 * n, 1)).astype(np.float32) * w2
    p1 = np.random.uniform(0, 2 * np.pi, size=(2 * n, 1)).astype(np.float32)
    p2 = np.random.uniform(0, 2 * np.pi, size=(2 * n, 1)).astype(np.float32)
    norm = np.sqrt(c1 ** 2 + c2 ** 2)
    f1 = c1 * np.exp(1.j * p1) / norm
    f2 = c2 * np.exp(1.j * p2) / norm
    states = np.tensordot(f1, es1, axes=(1, 0)) + np.tensordot(f2, es2, axes=(1, 0))
    return states[:n], states[n:]


def cnn_forward(weights, state, bias=True):
    """Keras Conv2D((3, 2), stride 2, tanh) -> Conv1D(3, stride 2, tanh) -> Dense(1), one loop per sum.

    ``weights`` as get_weights(); ``state`` (B, Nx, 2).
    """
    k1, b1, k2, b2, k3 = weights[:5]
    b3 = weights[5] if bias else np.zeros(1)
    batch, nx, _ = state.shape
    p1 = (nx - 3) // 2 + 1
    p2 = (p1 - 3) // 2 + 1
    h1 = np.zeros((batch, p1, k1.shape[-1]))
    for p in range(p1):
        for kh in range(3):
            for kw in range(2):
                h1[:, p] += state[:, 2 * p + kh, kw, None] * k1[kh, kw, 0]
    h1 = np.tanh(h1 + b1)
    h2 = np.zeros((batch, p2, k2.shape[-1]))
    for q in range(p2):
        for k in range(3):
            h2[:, q] += h1[:, 2 * q + k] @ k2[k]
    h2 = np.tanh(h2 + b2)
    return h2.reshape(batch, -1) @ k3 + b3
