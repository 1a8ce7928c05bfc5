"""Quantum control: a 1-D Schrödinger equation steered by a uniform field (the reference's QMC).

``i dpsi/dt = -psi_xx + c(t) x psi`` on (0, 2) with hard walls, ``Nx`` interior points
``x_j = j dx`` (j = 1..Nx, ``dx = 2/(Nx+1)``), and no factor 1/2 on the Laplacian, as the reference.
Crank-Nicolson: ``(1 + i dt/2 H) psi' = (1 - i dt/2 H) psi`` with a tridiagonal ``H = -Lap_h + c x``,
solved by the Thomas algorithm in O(Nx) per state. The step is unitary, so it conserves the norm.

State ``(B, 2*Nx)``: the row-major flattening of ``(B, Nx, 2)`` = (real, imaginary) per point.
Control ``(B, 1)``: the field strength ``c``.

Adjoint, with complex cotangents ``g = dL/dRe + i dL/dIm``: for ``psi' = A(c)^-1 U(c) psi``,
``g_psi = U^H A^-H g'`` (one solve with the conjugate-transposed matrix) and
``dL/dc = Re <A^-H g', -i dt x (psi + psi') / 2>``.
"""

from dataclasses import dataclass

import numpy as np
from numba import njit

from ..adjoint.contract import kernel, loss_grad_sig, loss_sig, step_sig, step_vjp_sig

_DT, _DX = 0, 1
_TARGET = 2  # the target eigenstate's Nx values follow the two scalars


@njit(cache=True, inline="always", error_model="numpy")
def _reciprocal(z):
    """1/z with one real division. Safe here: the pivots of I + iK (K real symmetric) have a real
    part >= 1, so |z| is never near 0 or overflow."""
    scale = 1.0 / (z.real * z.real + z.imag * z.imag)
    return complex(z.real * scale, -z.imag * scale)


@njit(cache=True, inline="always", error_model="numpy")
def _thomas(off, diag, rhs, cprime, out):
    """Solve the tridiagonal system with constant off-diagonals ``off`` and diagonal ``diag``."""
    n = rhs.shape[0]
    inv = _reciprocal(diag[0])
    cprime[0] = off * inv
    out[0] = rhs[0] * inv
    for j in range(1, n):
        inv = _reciprocal(diag[j] - off * cprime[j - 1])
        cprime[j] = off * inv
        out[j] = (rhs[j] - off * out[j - 1]) * inv
    for j in range(n - 2, -1, -1):
        out[j] -= cprime[j] * out[j + 1]


@njit(cache=True, inline="always", error_model="numpy")
def _crank_nicolson(p, x, c, b, psi, diag, explicit, cprime, psi_new):
    """One step for sample ``b``: fills psi, the implicit diagonal, and psi_new."""
    dt, dx = p[_DT], p[_DX]
    nx = psi.shape[0]
    alpha = 0.5j * dt / (dx * dx)
    for j in range(nx):
        psi[j] = x[b, 2 * j] + 1j * x[b, 2 * j + 1]
    for j in range(nx):
        pot = 0.5j * dt * c[b, 0] * (j + 1) * dx
        diag[j] = 1.0 + 1j * dt / (dx * dx) + pot
        explicit[j] = (1.0 - 1j * dt / (dx * dx) - pot) * psi[j]
        if j > 0:
            explicit[j] += alpha * psi[j - 1]
        if j < nx - 1:
            explicit[j] += alpha * psi[j + 1]
    _thomas(-alpha, diag, explicit, cprime, psi_new)


@njit(cache=True, inline="always", error_model="numpy")
def _work(nx):
    """Complex work vectors of one state: (psi, diag, explicit, cprime, psi_new)."""
    w = np.empty((5, nx), np.complex128)
    return w[0], w[1], w[2], w[3], w[4]


@kernel(step_sig)
def quantum_step(p, x, c, x_next):
    nx = x.shape[1] // 2
    psi, diag, explicit, cprime, psi_new = _work(nx)
    for b in range(x.shape[0]):
        _crank_nicolson(p, x, c, b, psi, diag, explicit, cprime, psi_new)
        for j in range(nx):
            x_next[b, 2 * j] = psi_new[j].real
            x_next[b, 2 * j + 1] = psi_new[j].imag


@kernel(step_vjp_sig)
def quantum_step_vjp(p, x, c, lam_next, dx_out, dc):
    dt, dx = p[_DT], p[_DX]
    nx = x.shape[1] // 2
    psi, diag, explicit, cprime, psi_new = _work(nx)
    g_new, u = np.empty(nx, np.complex128), np.empty(nx, np.complex128)
    alpha = 0.5j * dt / (dx * dx)
    for b in range(x.shape[0]):
        _crank_nicolson(p, x, c, b, psi, diag, explicit, cprime, psi_new)
        for j in range(nx):
            g_new[j] = lam_next[b, 2 * j] + 1j * lam_next[b, 2 * j + 1]
            diag[j] = np.conj(diag[j])
        _thomas(np.conj(-alpha), diag, g_new, cprime, u)  # u = A^-H g'
        grad_c = 0.0
        for j in range(nx):
            x_j = (j + 1) * dx
            pot = 0.5j * dt * c[b, 0] * x_j
            g = np.conj(1.0 - 1j * dt / (dx * dx) - pot) * u[j]  # U^H u
            if j > 0:
                g += np.conj(alpha) * u[j - 1]
            if j < nx - 1:
                g += np.conj(alpha) * u[j + 1]
            dx_out[b, 2 * j] = g.real
            dx_out[b, 2 * j + 1] = g.imag
            w = -0.5j * dt * x_j * (psi[j] + psi_new[j])
            grad_c += (np.conj(u[j]) * w).real
        dc[b, 0] = grad_c


@njit(cache=True, inline="always", error_model="numpy")
def _overlap(p, x, b):
    """<target, psi_b> for the real target stored in ``p``: (real, imaginary)."""
    re, im = 0.0, 0.0
    for j in range(x.shape[1] // 2):
        re += p[_TARGET + j] * x[b, 2 * j]
        im += p[_TARGET + j] * x[b, 2 * j + 1]
    return re, im


@kernel(loss_sig)
def quantum_loss(p, x):
    """1 - |<target, psi>|^2, mean over the batch."""
    total = 0.0
    for b in range(x.shape[0]):
        re, im = _overlap(p, x, b)
        total += 1.0 - (re * re + im * im)
    return total / x.shape[0]


@kernel(loss_grad_sig)
def quantum_loss_grad(p, x, scale, gx):
    w = -2.0 * scale / x.shape[0]
    for b in range(x.shape[0]):
        re, im = _overlap(p, x, b)
        for j in range(x.shape[1] // 2):
            gx[b, 2 * j] += w * re * p[_TARGET + j]
            gx[b, 2 * j + 1] += w * im * p[_TARGET + j]


def eigenstate(n, nx):
    """The n-th particle-in-a-box eigenstate on the Nx interior points, normalised (walls are 0)."""
    j = np.arange(1, nx + 1)
    return np.sqrt(2.0 / (nx + 1)) * np.sin(np.pi * n * j / (nx + 1))


WEIGHTINGS = ("1-1", "3-1", "7-1", "15-1")


@dataclass(frozen=True)
class Quantum:
    """The reference's quantum system: Nx = 32, dt = 0.0625, target eigenstate 3 (paper: 3, 4, 5)."""

    nx: int = 32
    dt: float = 0.0625
    target_state: int = 3
    weighting: str = "1-1"

    name = "quantum"
    control_dim = 1
    # the reference sums the CONTINUOUS loss over time (it starts near N)
    continuous_reduction = "sum"

    step = staticmethod(quantum_step)
    step_vjp = staticmethod(quantum_step_vjp)
    loss = staticmethod(quantum_loss)
    loss_grad = staticmethod(quantum_loss_grad)

    def __post_init__(self):
        if self.nx < 2:
            raise ValueError(f"nx must be >= 2, got {self.nx}")
        if not 1 <= self.target_state <= self.nx:
            raise ValueError(f"target_state must be in 1..nx={self.nx}, got {self.target_state}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}")

    @property
    def dx(self):
        return 2.0 / (self.nx + 1)

    @property
    def state_dim(self):
        return 2 * self.nx

    @property
    def params(self):
        return np.concatenate([[self.dt, self.dx], eigenstate(self.target_state, self.nx)])

    def sample(self, n, rng):
        """Random complex superpositions of eigenstates 1 and 2 (the reference's data.py): weights
        ``w1 N(0,1)`` and ``w2 N(0,1)`` with uniform phases, normalised; ``rng`` a RandomState."""
        w1, w2 = (float(w) for w in self.weighting.split("-"))
        c1 = rng.normal(size=(n, 1)).astype(np.float32) * w1
        c2 = rng.normal(size=(n, 1)).astype(np.float32) * w2
        p1 = rng.uniform(0, 2 * np.pi, size=(n, 1)).astype(np.float32)
        p2 = rng.uniform(0, 2 * np.pi, size=(n, 1)).astype(np.float32)
        norm = np.sqrt(c1.astype(np.float64) ** 2 + c2.astype(np.float64) ** 2)
        psi = (c1 * np.exp(1j * p1) / norm * eigenstate(1, self.nx)
               + c2 * np.exp(1j * p2) / norm * eigenstate(2, self.nx))
        return np.stack([psi.real, psi.imag], axis=-1).reshape(n, self.state_dim).astype(np.float32)

    def datasets(self, n, rng):
        """Train and test sets as the reference draws them: 2n states at once, split in halves."""
        states = self.sample(2 * n, rng)
        return states[:n], states[n:]

    def wavefunction(self, states):
        """Complex ``psi`` of flat states ``(..., 2*Nx)``."""
        pairs = states.reshape(states.shape[:-1] + (self.nx, 2))
        return pairs[..., 0] + 1j * pairs[..., 1]
