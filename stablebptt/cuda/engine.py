"""CUDA mirror of the BPTT engine: every simulator (cart-pole, guidance, quantum) and controller
(MLP, CNN), all gradient modes.

Each GPU thread rolls one trajectory out and sweeps it back with the same recursions as
:mod:`stablebptt.adjoint.engine`; the per-thread parameter gradients are summed by a second kernel
in a fixed order (one thread per parameter), so results do not depend on scheduling. The
trajectory stays on the device for the whole update; only the parameters go in and the gradient
comes out (about 40 kB for the paper's MLP), and Adam runs on the host so that one optimiser
implementation, and one checkpoint format, serves both devices.

The device functions mirror the CPU kernels line by line for one sample (the CPU kernels are
batch-vectorised Numba code using BLAS, which the CUDA target cannot call). A simulator or
controller joins the GPU path by adding its per-sample device functions and scratch size to the
tables at the end of this module.
"""

import math

import numpy as np
from numba import cuda

from ..adjoint.engine import Gradient
from ..contract import ContractError
from ..adjoint.modes import Mode, combine_gradients, parse_mode
from ..controllers import CNN, MLP
from ..controllers.cnn import cnn_layout
from ..sims import CartPole, Guidance, Quantum
from ..sims.cartpole import pole_acceleration, pole_adjoint
from ..sims.guidance import EVADE, FLOCK, SPREAD, radial_profile

_G, _M_POLE, _M_TOTAL, _LENGTH, _DT = range(5)


_pole_acceleration = cuda.jit(device=True)(pole_acceleration)
_pole_adjoint = cuda.jit(device=True)(pole_adjoint)


@cuda.jit(device=True)
def _cartpole_step(p, x, c, out, scratch):
    g, m, total_mass, length, dt = p[_G], p[_M_POLE], p[_M_TOTAL], p[_LENGTH], p[_DT]
    force = c[0]
    csum = 0.0
    for i in range(x.shape[0] // 2 - 1):
        th, td = x[2 + 2 * i], x[3 + 2 * i]
        cos, sin, sintd2, a, bb, tdd = _pole_acceleration(th, td, force, g, m, total_mass, length)
        csum += sintd2 - tdd * cos
        td_new = td + dt * tdd
        out[3 + 2 * i] = td_new
        out[2 + 2 * i] = th + dt * td_new
    xd_new = x[1] + dt * (force + m * length * csum) / total_mass
    out[1] = xd_new
    out[0] = x[0] + dt * xd_new


@cuda.jit(device=True)
def _cartpole_step_vjp(p, x, c, lam, dx, dc, scratch):
    g, m, total_mass, length, dt = p[_G], p[_M_POLE], p[_M_TOTAL], p[_LENGTH], p[_DT]
    ml = m * length
    force = c[0]
    g_xd_new = lam[1] + dt * lam[0]
    dx[0] = lam[0]
    dx[1] = g_xd_new
    g_xdd = dt * g_xd_new
    g_force = g_xdd / total_mass
    g_csum = ml * g_xdd / total_mass
    for i in range(x.shape[0] // 2 - 1):
        th, td = x[2 + 2 * i], x[3 + 2 * i]
        forward = _pole_acceleration(th, td, force, g, m, total_mass, length)
        g_th, g_td, g_force_pole = _pole_adjoint(forward, td, lam[2 + 2 * i], lam[3 + 2 * i],
                                                 g_csum, g, m, total_mass, length, dt)
        dx[2 + 2 * i] = g_th
        dx[3 + 2 * i] = g_td
        g_force += g_force_pole
    dc[0] = g_force


@cuda.jit(device=True)
def _cartpole_loss(p, x):
    """1 - mean cos(theta) of one state (the batch mean is taken over threads)."""
    n_poles = x.shape[0] // 2 - 1
    total = 0.0
    for i in range(n_poles):
        total += math.cos(x[2 + 2 * i])
    return 1.0 - total / n_poles


@cuda.jit(device=True)
def _cartpole_loss_grad(p, x, scale, gx):
    n_poles = x.shape[0] // 2 - 1
    for i in range(n_poles):
        gx[2 + 2 * i] += scale / n_poles * math.sin(x[2 + 2 * i])


@cuda.jit(device=True)
def _mlp_forward(theta, spec, x, acts, c, scratch):
    """One sample through the MLP; hidden activations to ``acts`` (concatenated layers).

    ``spec`` is the CPU MLP's: ``[n_layers, use_bias, size_0, ..., size_L]``.
    """
    n_layers = spec[0]
    use_bias = spec[1]
    sizes = spec[2:]
    p0 = 0
    a_in = -1  # offset of the layer input in acts (-1: the state x)
    a_out = 0
    for k in range(n_layers):
        n_in, n_out = sizes[k], sizes[k + 1]
        for j in range(n_out):
            z = theta[p0 + n_in * n_out + j] if use_bias else 0.0
            for i in range(n_in):
                h = x[i] if a_in < 0 else acts[a_in + i]
                z += h * theta[p0 + i * n_out + j]
            if k < n_layers - 1:
                acts[a_out + j] = math.tanh(z)
            else:
                c[j] = z
        p0 += n_in * n_out + use_bias * n_out
        a_in = a_out
        a_out += n_out


@cuda.jit(device=True)
def _mlp_backward(theta, spec, x, acts, mu, dx, g, scratch):
    """Adds (df/dtheta)^T mu to ``g`` and writes (df/dx)^T mu to ``dx`` for one sample."""
    n_layers = spec[0]
    use_bias = spec[1]
    sizes = spec[2:]
    widest = 0
    for k in range(n_layers + 1):
        widest = max(widest, sizes[k])
    delta = scratch[:widest]
    delta_prev = scratch[widest:2 * widest]
    offsets = 0  # parameter offset of layer k, found by walking forward
    for k in range(n_layers - 1):
        offsets += sizes[k] * sizes[k + 1] + use_bias * sizes[k + 1]
    act_end = 0
    for k in range(1, n_layers):
        act_end += sizes[k]
    for j in range(sizes[n_layers]):
        delta[j] = mu[j]
    p0 = offsets
    a_out = act_end
    for k in range(n_layers - 1, -1, -1):
        n_in, n_out = sizes[k], sizes[k + 1]
        a_in = a_out - n_in  # this layer's input activations (k > 0)
        for j in range(n_out):
            if use_bias:
                g[p0 + n_in * n_out + j] += delta[j]
        for i in range(n_in):
            h = x[i] if k == 0 else acts[a_in + i]
            s = 0.0
            for j in range(n_out):
                g[p0 + i * n_out + j] += h * delta[j]
                s += theta[p0 + i * n_out + j] * delta[j]
            if k == 0:
                dx[i] = s
            else:
                delta_prev[i] = s * (1.0 - h * h)
        if k > 0:
            for i in range(n_in):
                delta[i] = delta_prev[i]
            a_out = a_in
            p0 -= sizes[k - 1] * n_in + use_bias * n_in


# ---- guidance by repulsion (mirrors sims/guidance.py) ----
_DT_G, _N_DRIVERS, _EPS, _C_EVADE, _C_FRIC_EV, _C_FLOCK, _D_FLOCK, _C_SPREAD, _C_FRIC_DR, _TX, _TY = range(11)


_phi = cuda.jit(device=True)(radial_profile)


@cuda.jit(device=True)
def _pair_force(kind, rx, ry, eps, d_flock):
    phi, _ = _phi(kind, eps + math.sqrt(rx * rx + ry * ry), d_flock)
    return phi * rx, phi * ry


@cuda.jit(device=True)
def _pair_force_vjp_scatter(kind, x, dx, i, k, wx, wy, eps, d_flock):
    rx, ry = x[4 * i] - x[4 * k], x[4 * i + 1] - x[4 * k + 1]
    norm = math.sqrt(rx * rx + ry * ry)
    phi, dphi = _phi(kind, eps + norm, d_flock)
    gx, gy = phi * wx, phi * wy
    if norm > 0.0:
        radial = dphi * (rx * wx + ry * wy) / norm
        gx += radial * rx
        gy += radial * ry
    dx[4 * i] += gx
    dx[4 * i + 1] += gy
    dx[4 * k] -= gx
    dx[4 * k + 1] -= gy


@cuda.jit(device=True)
def _guidance_accelerations(p, x, c, acc):
    n_dr = int(p[_N_DRIVERS])
    n_agents = x.shape[0] // 4
    eps, d_flock = p[_EPS], p[_D_FLOCK]
    cx, cy = 0.0, 0.0
    for k in range(n_dr, n_agents):
        cx += x[4 * k]
        cy += x[4 * k + 1]
    for j in range(n_dr):
        vx, vy = x[4 * j] - cx, x[4 * j + 1] - cy
        c0, c1 = c[2 * j], c[2 * j + 1]
        ax = c0 * vx - c1 * vy - p[_C_FRIC_DR] * x[4 * j + 2]
        ay = c0 * vy + c1 * vx - p[_C_FRIC_DR] * x[4 * j + 3]
        for i in range(n_dr):
            if i != j:
                fx, fy = _pair_force(SPREAD, x[4 * j] - x[4 * i], x[4 * j + 1] - x[4 * i + 1],
                                     eps, d_flock)
                ax += p[_C_SPREAD] * fx
                ay += p[_C_SPREAD] * fy
        acc[2 * j], acc[2 * j + 1] = ax, ay
    for k in range(n_dr, n_agents):
        ax = -p[_C_FRIC_EV] * x[4 * k + 2]
        ay = -p[_C_FRIC_EV] * x[4 * k + 3]
        for i in range(n_dr):
            fx, fy = _pair_force(EVADE, x[4 * i] - x[4 * k], x[4 * i + 1] - x[4 * k + 1], eps, d_flock)
            ax += p[_C_EVADE] * fx
            ay += p[_C_EVADE] * fy
        for i in range(n_dr, n_agents):
            if i != k:
                fx, fy = _pair_force(FLOCK, x[4 * i] - x[4 * k], x[4 * i + 1] - x[4 * k + 1],
                                     eps, d_flock)
                ax += p[_C_FLOCK] * fx
                ay += p[_C_FLOCK] * fy
        acc[2 * k], acc[2 * k + 1] = ax, ay


@cuda.jit(device=True)
def _guidance_step(p, x, c, out, scratch):
    dt = p[_DT_G]
    _guidance_accelerations(p, x, c, scratch)
    for a in range(x.shape[0] // 4):
        out[4 * a] = x[4 * a] + dt * x[4 * a + 2]
        out[4 * a + 1] = x[4 * a + 1] + dt * x[4 * a + 3]
        out[4 * a + 2] = x[4 * a + 2] + dt * scratch[2 * a]
        out[4 * a + 3] = x[4 * a + 3] + dt * scratch[2 * a + 1]


@cuda.jit(device=True)
def _guidance_step_vjp(p, x, c, lam, dx, dc, scratch):
    dt = p[_DT_G]
    n_dr = int(p[_N_DRIVERS])
    n_agents = x.shape[0] // 4
    eps, d_flock = p[_EPS], p[_D_FLOCK]
    for a in range(n_agents):
        dx[4 * a] = lam[4 * a]
        dx[4 * a + 1] = lam[4 * a + 1]
        dx[4 * a + 2] = lam[4 * a + 2] + dt * lam[4 * a]
        dx[4 * a + 3] = lam[4 * a + 3] + dt * lam[4 * a + 1]
    cx, cy = 0.0, 0.0
    for k in range(n_dr, n_agents):
        cx += x[4 * k]
        cy += x[4 * k + 1]
    g_cx, g_cy = 0.0, 0.0
    for j in range(n_dr):
        gax, gay = dt * lam[4 * j + 2], dt * lam[4 * j + 3]
        dx[4 * j + 2] -= p[_C_FRIC_DR] * gax
        dx[4 * j + 3] -= p[_C_FRIC_DR] * gay
        vx, vy = x[4 * j] - cx, x[4 * j + 1] - cy
        c0, c1 = c[2 * j], c[2 * j + 1]
        dc[2 * j] = gax * vx + gay * vy
        dc[2 * j + 1] = -gax * vy + gay * vx
        gvx = c0 * gax + c1 * gay
        gvy = c0 * gay - c1 * gax
        dx[4 * j] += gvx
        dx[4 * j + 1] += gvy
        g_cx -= gvx
        g_cy -= gvy
        for i in range(n_dr):
            if i != j:
                _pair_force_vjp_scatter(SPREAD, x, dx, j, i, p[_C_SPREAD] * gax,
                                        p[_C_SPREAD] * gay, eps, d_flock)
    for k in range(n_dr, n_agents):
        gax, gay = dt * lam[4 * k + 2], dt * lam[4 * k + 3]
        dx[4 * k] += g_cx
        dx[4 * k + 1] += g_cy
        dx[4 * k + 2] -= p[_C_FRIC_EV] * gax
        dx[4 * k + 3] -= p[_C_FRIC_EV] * gay
        for i in range(n_dr):
            _pair_force_vjp_scatter(EVADE, x, dx, i, k, p[_C_EVADE] * gax, p[_C_EVADE] * gay,
                                    eps, d_flock)
        for i in range(n_dr, n_agents):
            if i != k:
                _pair_force_vjp_scatter(FLOCK, x, dx, i, k, p[_C_FLOCK] * gax,
                                        p[_C_FLOCK] * gay, eps, d_flock)


@cuda.jit(device=True)
def _guidance_loss(p, x):
    n_dr = int(p[_N_DRIVERS])
    n_agents = x.shape[0] // 4
    total = 0.0
    for k in range(n_dr, n_agents):
        total += (x[4 * k] - p[_TX]) ** 2 + (x[4 * k + 1] - p[_TY]) ** 2
    return total / ((n_agents - n_dr) * 2)


@cuda.jit(device=True)
def _guidance_loss_grad(p, x, scale, gx):
    n_dr = int(p[_N_DRIVERS])
    n_agents = x.shape[0] // 4
    w = 2.0 * scale / ((n_agents - n_dr) * 2)
    for k in range(n_dr, n_agents):
        gx[4 * k] += w * (x[4 * k] - p[_TX])
        gx[4 * k + 1] += w * (x[4 * k + 1] - p[_TY])


# ---- quantum control (mirrors sims/quantum.py with a batch of one) ----


@cuda.jit(device=True)
def _cn_forward(p, x, c, w):
    """Crank-Nicolson for one state; scratch rows (each Nx long): psi (re, im), psi' (re, im),
    Thomas factors cp (re, im) and inverse pivots (re, im), then two rows for the adjoint."""
    dt, dx = p[0], p[1]
    nx = x.shape[0] // 2
    a = 0.5 * dt / (dx * dx)
    pr, pi = w[0:nx], w[nx:2 * nx]
    outr, outi = w[2 * nx:3 * nx], w[3 * nx:4 * nx]
    cpr, cpi = w[4 * nx:5 * nx], w[5 * nx:6 * nx]
    ivr, ivi = w[6 * nx:7 * nx], w[7 * nx:8 * nx]
    for j in range(nx):
        pr[j] = x[2 * j]
        pi[j] = x[2 * j + 1]
    for j in range(nx):
        k = dt / (dx * dx) + 0.5 * dt * c[0] * (j + 1) * dx
        rr = pr[j] + k * pi[j]
        ri = pi[j] - k * pr[j]
        nr, ni = _neighbour_sum(pr, pi, j)
        rr -= a * ni
        ri += a * nr
        mr, mi = 1.0, k
        if j > 0:
            mr -= a * cpi[j - 1]
            mi += a * cpr[j - 1]
            rr -= a * outi[j - 1]
            ri += a * outr[j - 1]
        scale = 1.0 / (mr * mr + mi * mi)
        ir, ii = mr * scale, -mi * scale
        ivr[j], ivi[j] = ir, ii
        cpr[j], cpi[j] = a * ii, -a * ir
        outr[j] = rr * ir - ri * ii
        outi[j] = rr * ii + ri * ir
    for j in range(nx - 2, -1, -1):
        outr[j] -= cpr[j] * outr[j + 1] - cpi[j] * outi[j + 1]
        outi[j] -= cpr[j] * outi[j + 1] + cpi[j] * outr[j + 1]


@cuda.jit(device=True)
def _neighbour_sum(re, im, j):
    nr, ni = 0.0, 0.0
    if j > 0:
        nr += re[j - 1]
        ni += im[j - 1]
    if j < re.shape[0] - 1:
        nr += re[j + 1]
        ni += im[j + 1]
    return nr, ni


@cuda.jit(device=True)
def _quantum_step(p, x, c, out, scratch):
    nx = x.shape[0] // 2
    _cn_forward(p, x, c, scratch)
    for j in range(nx):
        out[2 * j] = scratch[2 * nx + j]
        out[2 * j + 1] = scratch[3 * nx + j]


@cuda.jit(device=True)
def _quantum_step_vjp(p, x, c, lam, dx_out, dc, scratch):
    dt, dx = p[0], p[1]
    nx = x.shape[0] // 2
    a = 0.5 * dt / (dx * dx)
    _cn_forward(p, x, c, scratch)
    pr, pi = scratch[0:nx], scratch[nx:2 * nx]
    outr, outi = scratch[2 * nx:3 * nx], scratch[3 * nx:4 * nx]
    cpr, cpi = scratch[4 * nx:5 * nx], scratch[5 * nx:6 * nx]
    ivr, ivi = scratch[6 * nx:7 * nx], scratch[7 * nx:8 * nx]
    ur, ui = scratch[8 * nx:9 * nx], scratch[9 * nx:10 * nx]
    for j in range(nx):
        gr, gi = lam[2 * j], lam[2 * j + 1]
        if j > 0:
            gr += a * ui[j - 1]
            gi -= a * ur[j - 1]
        ur[j] = gr * ivr[j] + gi * ivi[j]
        ui[j] = gi * ivr[j] - gr * ivi[j]
    for j in range(nx - 2, -1, -1):
        ur[j] -= cpr[j] * ur[j + 1] + cpi[j] * ui[j + 1]
        ui[j] -= cpr[j] * ui[j + 1] - cpi[j] * ur[j + 1]
    dc[0] = 0.0
    for j in range(nx):
        half_dt_x = 0.5 * dt * (j + 1) * dx
        k = dt / (dx * dx) + half_dt_x * c[0]
        gr = ur[j] - k * ui[j]
        gi = ui[j] + k * ur[j]
        nr, ni = _neighbour_sum(ur, ui, j)
        dx_out[2 * j] = gr + a * ni
        dx_out[2 * j + 1] = gi - a * nr
        dc[0] += half_dt_x * (ur[j] * (pi[j] + outi[j]) - ui[j] * (pr[j] + outr[j]))


@cuda.jit(device=True)
def _quantum_overlap(p, x):
    re, im = 0.0, 0.0
    for j in range(x.shape[0] // 2):
        re += p[2 + j] * x[2 * j]
        im += p[2 + j] * x[2 * j + 1]
    return re, im


@cuda.jit(device=True)
def _quantum_loss(p, x):
    re, im = _quantum_overlap(p, x)
    return 1.0 - (re * re + im * im)


@cuda.jit(device=True)
def _quantum_loss_grad(p, x, scale, gx):
    re, im = _quantum_overlap(p, x)
    for j in range(x.shape[0] // 2):
        gx[2 * j] += -2.0 * scale * re * p[2 + j]
        gx[2 * j + 1] += -2.0 * scale * im * p[2 + j]


# ---- the quantum CNN (mirrors controllers/cnn.py for one sample) ----


_cnn_layout = cuda.jit(device=True)(cnn_layout)


@cuda.jit(device=True)
def _cnn_forward(theta, spec, x, acts, c, scratch):
    _, w, bias, p1, p2, k1, b1, k2, b2, k3, b3 = _cnn_layout(spec)
    for q in range(p1):
        for o in range(w):
            z = theta[b1 + o]
            for i in range(6):
                z += x[4 * q + i] * theta[k1 + i * w + o]
            acts[q * w + o] = math.tanh(z)
    h2 = p1 * w
    for q in range(p2):
        for o in range(w):
            z = theta[b2 + o]
            for i in range(3 * w):
                z += acts[2 * q * w + i] * theta[k2 + i * w + o]
            acts[h2 + q * w + o] = math.tanh(z)
    z = theta[b3] if bias else 0.0
    for i in range(p2 * w):
        z += acts[h2 + i] * theta[k3 + i]
    c[0] = z


@cuda.jit(device=True)
def _cnn_backward(theta, spec, x, acts, mu, dx, g, scratch):
    _, w, bias, p1, p2, k1, b1, k2, b2, k3, b3 = _cnn_layout(spec)
    h2 = p1 * w
    d1 = scratch[0:p1 * w]
    d2 = scratch[p1 * w:(p1 + p2) * w]
    m = mu[0]
    if bias:
        g[b3] += m
    for i in range(p2 * w):
        h = acts[h2 + i]
        g[k3 + i] += h * m
        d2[i] = theta[k3 + i] * m * (1.0 - h * h)
    for i in range(p1 * w):
        d1[i] = 0.0
    for q in range(p2):
        for o in range(w):
            d = d2[q * w + o]
            g[b2 + o] += d
            for i in range(3 * w):
                g[k2 + i * w + o] += acts[2 * q * w + i] * d
                d1[2 * q * w + i] += theta[k2 + i * w + o] * d
    for i in range(p1 * w):
        d1[i] *= 1.0 - acts[i] * acts[i]
    for i in range(x.shape[0]):
        dx[i] = 0.0
    for q in range(p1):
        for o in range(w):
            d = d1[q * w + o]
            g[b1 + o] += d
            for i in range(6):
                g[k1 + i * w + o] += x[4 * q + i] * d
                dx[4 * q + i] += theta[k1 + i * w + o] * d


def make_kernels(step, step_vjp, loss, loss_grad, forward, backward):
    """The rollout/sweep kernel for one simulator and controller (per-sample device functions)."""

    @cuda.jit(device=True)
    def sweep(p, theta, spec, weights, reg_scale, a, b, xs, cs, acts, lam, dxs, dxc, mu, scratch, g,
              inv_batch):
        n_steps = cs.shape[0]
        for i in range(lam.shape[0]):
            lam[i] = 0.0
        if weights[n_steps] != 0.0:
            loss_grad(p, xs[n_steps], weights[n_steps] * inv_batch, lam)
        for n in range(n_steps - 1, -1, -1):
            step_vjp(p, xs[n], cs[n], lam, dxs, mu, scratch)
            for j in range(mu.shape[0]):
                mu[j] += reg_scale * cs[n, j]
            backward(theta, spec, xs[n], acts[n], mu, dxc, g, scratch)
            if n == 0:
                break
            for i in range(lam.shape[0]):
                lam[i] = a * dxs[i] + b * dxc[i]
            if weights[n] != 0.0:
                loss_grad(p, xs[n], weights[n] * inv_batch, lam)

    @cuda.jit
    def bptt(p, theta, spec, weights, rho, a, b, sweeps, with_modified, xs, cs, acts, lam, dxs, dxc,
             mu, scratch, g_r, g_m, losses):
        """Thread t: trajectory t forward (its loss and sum of c^2), then its sweep(s)."""
        t = cuda.grid(1)
        if t >= xs.shape[0]:
            return
        n_steps = cs.shape[1]
        total = weights[0] * loss(p, xs[t, 0]) if weights[0] != 0.0 else 0.0
        squares = 0.0
        for n in range(n_steps):
            forward(theta, spec, xs[t, n], acts[t, n], cs[t, n], scratch[t])
            step(p, xs[t, n], cs[t, n], xs[t, n + 1], scratch[t])
            if weights[n + 1] != 0.0:
                total += weights[n + 1] * loss(p, xs[t, n + 1])
            for j in range(cs.shape[2]):
                squares += cs[t, n, j] * cs[t, n, j]
        losses[t, 0] = total
        losses[t, 1] = squares
        if not sweeps:
            return
        inv_batch = 1.0 / xs.shape[0]
        reg_scale = 2.0 * rho / (n_steps * xs.shape[0] * cs.shape[2])
        sweep(p, theta, spec, weights, reg_scale, a, b, xs[t], cs[t], acts[t], lam[t], dxs[t],
              dxc[t], mu[t], scratch[t], g_r[t], inv_batch)
        if with_modified:
            sweep(p, theta, spec, weights, reg_scale, 1.0, 0.0, xs[t], cs[t], acts[t], lam[t],
                  dxs[t], dxc[t], mu[t], scratch[t], g_m[t], inv_batch)

    return bptt


@cuda.jit
def _sum_rows(per_thread, out):
    """out[j] = sum over threads of per_thread[t, j], always in the same order."""
    j = cuda.grid(1)
    if j < out.shape[0]:
        total = 0.0
        for t in range(per_thread.shape[0]):
            total += per_thread[t, j]
        out[j] = total


# per-sample device functions of each simulator and controller, and their scratch needs
SIMULATORS = {
    CartPole: (_cartpole_step, _cartpole_step_vjp, _cartpole_loss, _cartpole_loss_grad),
    Guidance: (_guidance_step, _guidance_step_vjp, _guidance_loss, _guidance_loss_grad),
    Quantum: (_quantum_step, _quantum_step_vjp, _quantum_loss, _quantum_loss_grad),
}
CONTROLLERS = {MLP: (_mlp_forward, _mlp_backward), CNN: (_cnn_forward, _cnn_backward)}
SCRATCH = {CartPole: lambda sim: 0, Guidance: lambda sim: sim.state_dim // 2,
           Quantum: lambda sim: 10 * sim.nx,
           MLP: lambda ctrl: 2 * max(ctrl.sizes), CNN: lambda ctrl: sum(ctrl.lengths) * ctrl.width}
_KERNELS = {}


class CudaProblem:
    """The GPU counterpart of :class:`~stablebptt.adjoint.Problem` (every simulator, MLP or CNN).

    ``gradient`` and ``losses`` have the CPU engine's meaning and return the same types.
    """

    THREADS = 64

    def __init__(self, problem):
        sim_kind, ctrl_kind = type(problem.sim), type(problem.controller)
        if sim_kind not in SIMULATORS or ctrl_kind not in CONTROLLERS:
            raise ContractError(f"no CUDA kernels for {sim_kind.__name__} with {ctrl_kind.__name__} "
                                "(the GPU path covers the built-in simulators and controllers): "
                                "use --device cpu")
        key = (sim_kind, ctrl_kind)
        if key not in _KERNELS:
            _KERNELS[key] = make_kernels(*SIMULATORS[sim_kind], *CONTROLLERS[ctrl_kind])
        self._kernel = _KERNELS[key]
        self.cpu = problem
        self.sim, self.controller = problem.sim, problem.controller
        self.n_steps, self.rho = problem.n_steps, problem.rho
        self._p = cuda.to_device(problem.params)
        self._spec = cuda.to_device(self.controller.spec)
        self._weights = cuda.to_device(problem.weights)
        self._scratch_size = SCRATCH[sim_kind](self.sim) + SCRATCH[ctrl_kind](self.controller)
        self._buffers = {}

    def _buffers_for(self, batch, dtype):
        key = (batch, np.dtype(dtype).str)
        if key not in self._buffers:
            n, s = self.n_steps, self.sim.state_dim
            c = self.sim.control_dim
            self._buffers[key] = {
                "xs": cuda.device_array((batch, n + 1, s), dtype),
                "cs": cuda.device_array((batch, n, c), dtype),
                "acts": cuda.device_array((batch, n, max(1, self.controller.acts_size(1))), dtype),
                "lam": cuda.device_array((batch, s), dtype),
                "dxs": cuda.device_array((batch, s), dtype),
                "dxc": cuda.device_array((batch, s), dtype),
                "mu": cuda.device_array((batch, c), dtype),
                "scratch": cuda.device_array((batch, self._scratch_size), np.float64),
                "losses": cuda.device_array((batch, 2), np.float64),
            }
        return self._buffers[key]

    def _launch(self, theta, x0, mode):
        theta = np.ascontiguousarray(theta)
        x0 = np.ascontiguousarray(x0, dtype=theta.dtype).reshape(len(x0), -1)
        batch = len(x0)
        buf = self._buffers_for(batch, theta.dtype)
        xs_host = np.zeros((batch, self.n_steps + 1, self.sim.state_dim), theta.dtype)
        xs_host[:, 0] = x0
        buf["xs"].copy_to_device(xs_host)
        a, b = mode.path_weights if mode is not None else (0.0, 0.0)
        combined = mode is Mode.COMBINED
        g_r = cuda.to_device(np.zeros((batch, theta.size), theta.dtype))
        g_m = cuda.to_device(np.zeros((batch if combined else 1, theta.size), theta.dtype))
        blocks = (batch + self.THREADS - 1) // self.THREADS
        self._kernel[blocks, self.THREADS](
            self._p, cuda.to_device(theta), self._spec, self._weights, self.rho, a, b,
            mode is not None, combined, buf["xs"], buf["cs"], buf["acts"], buf["lam"], buf["dxs"],
            buf["dxc"], buf["mu"], buf["scratch"], g_r, g_m, buf["losses"])
        per_thread = buf["losses"].copy_to_host()
        physics = float(np.mean(per_thread[:, 0]))
        reg = self.rho * float(np.sum(per_thread[:, 1])) / (self.n_steps * batch * self.sim.control_dim)
        grads = [self._reduce(g) for g in ((g_r, g_m) if combined else (g_r,))] if mode else []
        return physics, reg, grads

    def _reduce(self, per_thread):
        out = cuda.device_array(per_thread.shape[1], per_thread.dtype)
        blocks = (out.shape[0] + self.THREADS - 1) // self.THREADS
        _sum_rows[blocks, self.THREADS](per_thread, out)
        return out.copy_to_host()

    def compile(self, dtype):
        """Nothing to prepare: CUDA kernels compile at their first launch."""
        return self

    def losses(self, theta, x0):
        physics, reg, _ = self._launch(theta, x0, None)
        return physics + reg, physics

    def loss(self, theta, x0):
        return self.losses(theta, x0)[0]

    def gradient(self, theta, x0, mode):
        mode = parse_mode(mode)
        physics, reg, grads = self._launch(theta, x0, mode)
        if mode is Mode.COMBINED:
            g, g_m = grads
            return Gradient(physics + reg, physics, combine_gradients(g_m, g), grad_regular=g,
                            grad_modified=g_m)
        return Gradient(physics + reg, physics, grads[0])

    def rollout(self, theta, x0):
        return self.cpu.rollout(theta, x0)
