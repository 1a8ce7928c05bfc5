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

from ..contract import kernel, loss_grad_sig, loss_sig, sample_kernel, step_sig, step_vjp_sig

_DT, _DX = 0, 1
_TARGET = 2  # the target eigenstate's Nx values follow the two scalars


# Rows of the work: complex quantities as (real, imaginary) rows. The per-sample twins (the GPU
# path's, below) keep each row as Nx consecutive values of a work vector.
_PSI_R, _PSI_I, _NEW_R, _NEW_I, _CP_R, _CP_I, _INV_R, _INV_I, _U_R, _U_I = range(10)
_WORK_ROWS = 10

# The batch kernels take the samples in passes of up to _LANES, one sample per lane, in a flat
# work array with point j's rows next to each other, ``w[((j + 1) * _WORK_ROWS + row) * _LANES +
# lane]`` (_at), a zero point on either side (j = -1 and j = Nx: the walls), then a row of the
# pass's controls and one of its control cotangents. So that LLVM runs the lanes in vector
# registers: rows lie a compile-time constant apart (it could not prove row views of one
# (rows, Nx, B) array apart), neighbours are read without a branch (the walls are zeros),
# indices are unsigned (a signed one is tested for a negative value on every access), and the
# loops over lanes run to a count known only at run time (a constant 8 is unrolled into scalar
# code before the loop vectoriser sees it). Ran one sample at a time before: 2-4x slower. The
# kernels are compiled without FMA contraction: the lanes of the vector loop and those of its
# scalar remainder then do the same rounded operations, so a sample's bits never depend on its
# lane or on the batch around it. 8 lanes: 640 bytes of work per point, 22 KB at Nx = 32.
_LANES = 8


@njit(cache=True, inline="always")
def _at(j, row, lane):
    return np.uint64(((j + 1) * _WORK_ROWS + row) * _LANES + lane)


@njit(cache=True, inline="always")
def _c_at(nx, lane):
    """The lane's control ``c``."""
    return np.uint64((nx + 2) * _WORK_ROWS * _LANES + lane)


@njit(cache=True, inline="always")
def _dc_at(nx, lane):
    """The lane's control cotangent (accumulated in float64 over the points)."""
    return np.uint64(((nx + 2) * _WORK_ROWS + 1) * _LANES + lane)


@njit(cache=True, inline="always")
def _work_array(nx):
    """A work array with its two wall points zero."""
    w = np.empty(((nx + 2) * _WORK_ROWS + 2) * _LANES)
    for row in range(_WORK_ROWS):
        for lane in range(_LANES):
            w[_at(-1, row, lane)] = 0.0
            w[_at(nx, row, lane)] = 0.0
    return w


@njit(cache=True, inline="always", error_model="numpy")
def _load_pair(x, b0, n, w, row_r, row_i):
    """Samples ``b0 .. b0 + n - 1`` of a (B, 2 Nx) array of (real, imaginary) pairs into the
    rows ``row_r``, ``row_i`` of lanes ``0 .. n - 1``."""
    for lane in range(n):
        for j in range(x.shape[1] // 2):
            w[_at(j, row_r, lane)] = x[b0 + lane, 2 * j]
            w[_at(j, row_i, lane)] = x[b0 + lane, 2 * j + 1]


@njit(cache=True, inline="always", error_model="numpy")
def _store_pair(w, row_r, row_i, b0, n, out):
    """Rows ``row_r``, ``row_i`` of lanes ``0 .. n - 1`` into samples ``b0 ..`` of a (B, 2 Nx)
    array."""
    for lane in range(n):
        for j in range(out.shape[1] // 2):
            out[b0 + lane, 2 * j] = w[_at(j, row_r, lane)]
            out[b0 + lane, 2 * j + 1] = w[_at(j, row_i, lane)]


@njit(cache=True, inline="always", error_model="numpy")
def _neighbour_sum(w, j, row_r, row_i, lane):
    """``z_{j-1} + z_{j+1}`` of a lane's complex rows ``(row_r, row_i)`` (zero at the walls)."""
    nr, ni = 0.0, 0.0
    nr += w[_at(j - 1, row_r, lane)]
    ni += w[_at(j - 1, row_i, lane)]
    nr += w[_at(j + 1, row_r, lane)]
    ni += w[_at(j + 1, row_i, lane)]
    return nr, ni


@njit(cache=True, error_model="numpy")
def _crank_nicolson(p, nx, n, w):
    """psi' in lanes ``0 .. n - 1`` of ``w`` (psi and c loaded), keeping what the adjoint reuses.

    Fills psi' and the Thomas factors of A = 1 + i dt/2 H: ``cp`` (the modified super-
    diagonal) and ``inv`` (the reciprocal pivots). A has the constant off-diagonal ``-i a`` with
    ``a = dt / (2 dx^2)`` and the diagonal ``1 + i k_j``, ``k_j = dt/dx^2 + dt c x_j / 2``; the
    explicit side is ``(1 - i k_j) psi_j + i a (psi_{j-1} + psi_{j+1})``. The pivots of I + iK
    (K real symmetric) have real part >= 1, so one real division per pivot is safe.
    """
    dt, dx = p[_DT], p[_DX]
    a = 0.5 * dt / (dx * dx)
    for j in range(nx):
        for lane in range(n):
            k = dt / (dx * dx) + 0.5 * dt * w[_c_at(nx, lane)] * (j + 1) * dx
            pr, pi = w[_at(j, _PSI_R, lane)], w[_at(j, _PSI_I, lane)]
            rr = pr + k * pi
            ri = pi - k * pr
            nr, ni = _neighbour_sum(w, j, _PSI_R, _PSI_I, lane)
            rr -= a * ni
            ri += a * nr
            # pivot m = 1 + i k - off * cp_{j-1}, off * z = (a z_i, -a z_r) (cp = 0 at the wall)
            mr, mi = 1.0, k
            mr -= a * w[_at(j - 1, _CP_I, lane)]
            mi += a * w[_at(j - 1, _CP_R, lane)]
            # rhs - off * out_{j-1}
            rr -= a * w[_at(j - 1, _NEW_I, lane)]
            ri += a * w[_at(j - 1, _NEW_R, lane)]
            scale = 1.0 / (mr * mr + mi * mi)
            ir, ii = mr * scale, -mi * scale
            w[_at(j, _INV_R, lane)] = ir
            w[_at(j, _INV_I, lane)] = ii
            # cp = off * inv = (a ii, -a ir); out = rhs * inv
            w[_at(j, _CP_R, lane)] = a * ii
            w[_at(j, _CP_I, lane)] = -a * ir
            w[_at(j, _NEW_R, lane)] = rr * ir - ri * ii
            w[_at(j, _NEW_I, lane)] = rr * ii + ri * ir
    for j in range(nx - 2, -1, -1):
        for lane in range(n):
            cpr, cpi = w[_at(j, _CP_R, lane)], w[_at(j, _CP_I, lane)]
            nextr, nexti = w[_at(j + 1, _NEW_R, lane)], w[_at(j + 1, _NEW_I, lane)]
            w[_at(j, _NEW_R, lane)] -= cpr * nextr - cpi * nexti
            w[_at(j, _NEW_I, lane)] -= cpr * nexti + cpi * nextr


@njit(cache=True, error_model="numpy")
def _crank_nicolson_adjoint(p, nx, n, w):
    """The adjoint in lanes ``0 .. n - 1`` of ``w`` (after :func:`_crank_nicolson`, g' loaded in the ``u``
    rows): ``u = A^-H g'`` in place of g', the state cotangent ``U^H u`` in place of psi' (each
    point's psi' is read first), and dL/dc in the lanes' control cotangents."""
    dt, dx = p[_DT], p[_DX]
    a = 0.5 * dt / (dx * dx)
    # u = A^-H g': A^H = conj(A) (A is complex symmetric), so its Thomas factors are the
    # conjugates of A's; its off-diagonal is conj(-i a) = i a, and (i a) z = (-a z_i, a z_r).
    for j in range(nx):
        for lane in range(n):
            gr, gi = w[_at(j, _U_R, lane)], w[_at(j, _U_I, lane)]
            gr += a * w[_at(j - 1, _U_I, lane)]
            gi -= a * w[_at(j - 1, _U_R, lane)]
            # times conj(inv)
            ivr, ivi = w[_at(j, _INV_R, lane)], w[_at(j, _INV_I, lane)]
            w[_at(j, _U_R, lane)] = gr * ivr + gi * ivi
            w[_at(j, _U_I, lane)] = gi * ivr - gr * ivi
    for j in range(nx - 2, -1, -1):
        for lane in range(n):
            # u_j -= conj(cp_j) u_{j+1}
            cpr, cpi = w[_at(j, _CP_R, lane)], w[_at(j, _CP_I, lane)]
            nextr, nexti = w[_at(j + 1, _U_R, lane)], w[_at(j + 1, _U_I, lane)]
            w[_at(j, _U_R, lane)] -= cpr * nextr + cpi * nexti
            w[_at(j, _U_I, lane)] -= cpr * nexti - cpi * nextr
    for lane in range(n):
        w[_dc_at(nx, lane)] = 0.0
    for j in range(nx):
        half_dt_x = 0.5 * dt * (j + 1) * dx
        for lane in range(n):
            k = dt / (dx * dx) + half_dt_x * w[_c_at(nx, lane)]
            ur, ui = w[_at(j, _U_R, lane)], w[_at(j, _U_I, lane)]
            # U^H u = (1 + i k) u_j - i a (u_{j-1} + u_{j+1})
            gr = ur - k * ui
            gi = ui + k * ur
            nr, ni = _neighbour_sum(w, j, _U_R, _U_I, lane)
            # dL/dc += Re(conj(u_j) w_j), w_j = -i (dt x_j / 2)(psi_j + psi'_j)
            sr = w[_at(j, _PSI_R, lane)] + w[_at(j, _NEW_R, lane)]
            si = w[_at(j, _PSI_I, lane)] + w[_at(j, _NEW_I, lane)]
            w[_dc_at(nx, lane)] += half_dt_x * (ur * si - ui * sr)
            w[_at(j, _NEW_R, lane)] = gr + a * ni
            w[_at(j, _NEW_I, lane)] = gi - a * nr


@njit(cache=True, inline="always", error_model="numpy")
def _step_lanes(p, x, c, b0, n, w):
    """Samples ``b0 .. b0 + n - 1`` of the batch into the lanes of ``w``, and their step."""
    nx = x.shape[1] // 2
    _load_pair(x, b0, n, w, _PSI_R, _PSI_I)
    for lane in range(n):
        w[_c_at(nx, lane)] = c[b0 + lane, 0]
    _crank_nicolson(p, nx, n, w)


@kernel(step_sig)
def quantum_step(p, x, c, x_next):
    w = _work_array(x.shape[1] // 2)
    for b0 in range(0, x.shape[0], _LANES):
        n = min(_LANES, x.shape[0] - b0)
        _step_lanes(p, x, c, b0, n, w)
        _store_pair(w, _NEW_R, _NEW_I, b0, n, x_next)


@kernel(step_vjp_sig)
def quantum_step_vjp(p, x, c, lam_next, dx_out, dc):
    nx = x.shape[1] // 2
    w = _work_array(nx)
    for b0 in range(0, x.shape[0], _LANES):
        n = min(_LANES, x.shape[0] - b0)
        _step_lanes(p, x, c, b0, n, w)
        _load_pair(lam_next, b0, n, w, _U_R, _U_I)
        _crank_nicolson_adjoint(p, nx, n, w)
        _store_pair(w, _NEW_R, _NEW_I, b0, n, dx_out)
        for lane in range(n):
            dc[b0 + lane, 0] = w[_dc_at(nx, lane)]


# ---- the per-sample twins of the batch Crank-Nicolson kernels above (the GPU path's) ----
# The same recursions for one state; ``work`` holds the rows of the batch work array, each Nx long.


@sample_kernel
def _neighbour_sum_one(re, im, j):
    """``z_{j-1} + z_{j+1}`` of a complex pair of rows, zero beyond the walls."""
    nr, ni = 0.0, 0.0
    if j > 0:
        nr += re[j - 1]
        ni += im[j - 1]
    if j < re.shape[0] - 1:
        nr += re[j + 1]
        ni += im[j + 1]
    return nr, ni


@sample_kernel
def _row(work, row, nx):
    """Row ``row`` of a per-sample work vector (the rows of the batch work array, each Nx long)."""
    return work[row * nx:(row + 1) * nx]


@sample_kernel
def _crank_nicolson_one(p, x, c, work):
    """:func:`_crank_nicolson` for one state; fills the rows ``_PSI_*`` to ``_INV_*`` of ``work``."""
    dt, dx = p[_DT], p[_DX]
    nx = x.shape[0] // 2
    a = 0.5 * dt / (dx * dx)
    pr, pi = _row(work, _PSI_R, nx), _row(work, _PSI_I, nx)
    outr, outi = _row(work, _NEW_R, nx), _row(work, _NEW_I, nx)
    cpr, cpi = _row(work, _CP_R, nx), _row(work, _CP_I, nx)
    ivr, ivi = _row(work, _INV_R, nx), _row(work, _INV_I, nx)
    for j in range(nx):
        pr[j] = x[2 * j]
        pi[j] = x[2 * j + 1]
    for j in range(nx):
        k = dt / (dx * dx) + 0.5 * dt * c[0] * (j + 1) * dx
        rr = pr[j] + k * pi[j]
        ri = pi[j] - k * pr[j]
        nr, ni = _neighbour_sum_one(pr, pi, j)
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


@sample_kernel
def quantum_step_one(p, x, c, x_next, work):
    nx = x.shape[0] // 2
    _crank_nicolson_one(p, x, c, work)
    for j in range(nx):
        x_next[2 * j] = work[_NEW_R * nx + j]
        x_next[2 * j + 1] = work[_NEW_I * nx + j]


@sample_kernel
def quantum_step_vjp_one(p, x, c, lam_next, dx_out, dc, work):
    """:func:`quantum_step_vjp` for one state."""
    dt, dx = p[_DT], p[_DX]
    nx = x.shape[0] // 2
    a = 0.5 * dt / (dx * dx)
    _crank_nicolson_one(p, x, c, work)
    pr, pi = _row(work, _PSI_R, nx), _row(work, _PSI_I, nx)
    outr, outi = _row(work, _NEW_R, nx), _row(work, _NEW_I, nx)
    cpr, cpi = _row(work, _CP_R, nx), _row(work, _CP_I, nx)
    ivr, ivi = _row(work, _INV_R, nx), _row(work, _INV_I, nx)
    ur, ui = _row(work, _U_R, nx), _row(work, _U_I, nx)
    for j in range(nx):
        gr, gi = lam_next[2 * j], lam_next[2 * j + 1]
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
        nr, ni = _neighbour_sum_one(ur, ui, j)
        dx_out[2 * j] = gr + a * ni
        dx_out[2 * j + 1] = gi - a * nr
        dc[0] += half_dt_x * (ur[j] * (pi[j] + outi[j]) - ui[j] * (pr[j] + outr[j]))


@sample_kernel
def _overlap(p, x):
    """<target, psi> for the real target stored in ``p``: (real, imaginary)."""
    re, im = 0.0, 0.0
    for j in range(x.shape[0] // 2):
        re += p[_TARGET + j] * x[2 * j]
        im += p[_TARGET + j] * x[2 * j + 1]
    return re, im


@sample_kernel
def quantum_loss_one(p, x):
    """1 - |<target, psi>|^2."""
    re, im = _overlap(p, x)
    return 1.0 - (re * re + im * im)


@sample_kernel
def quantum_loss_grad_one(p, x, scale, gx):
    re, im = _overlap(p, x)
    for j in range(x.shape[0] // 2):
        gx[2 * j] += -2.0 * scale * re * p[_TARGET + j]
        gx[2 * j + 1] += -2.0 * scale * im * p[_TARGET + j]


@kernel(loss_sig)
def quantum_loss(p, x):
    """The batch mean of :func:`quantum_loss_one`."""
    total = 0.0
    for b in range(x.shape[0]):
        total += quantum_loss_one(p, x[b])
    return total / x.shape[0]


@kernel(loss_grad_sig)
def quantum_loss_grad(p, x, scale, gx):
    for b in range(x.shape[0]):
        quantum_loss_grad_one(p, x[b], scale / x.shape[0], gx[b])


def eigenstate(n, nx):
    """The n-th particle-in-a-box eigenstate on the Nx interior points, normalised (walls are 0)."""
    j = np.arange(1, nx + 1)
    return np.sqrt(2.0 / (nx + 1)) * np.sin(np.pi * n * j / (nx + 1))


def reference_eigenstate(n, nx):
    """:func:`eigenstate` as the reference computes it for its data: complex64 arithmetic on the
    Nx + 2 points including the walls, normalised there, walls then dropped."""
    points = np.arange(nx + 2, dtype=np.complex64)
    wave = np.sin(np.pi * n / (nx + 1) * points)
    wave = wave / np.sum(np.abs(wave) ** 2) ** 0.5
    return wave[1:-1]


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
    step_one = staticmethod(quantum_step_one)
    step_vjp_one = staticmethod(quantum_step_vjp_one)
    loss_one = staticmethod(quantum_loss_one)
    loss_grad_one = staticmethod(quantum_loss_grad_one)

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
    def work_size(self):
        """Per-sample scratch of the per-sample twins: the work rows, each Nx long."""
        return _WORK_ROWS * self.nx

    @property
    def params(self):
        return np.concatenate([[self.dt, self.dx], eigenstate(self.target_state, self.nx)])

    def sample(self, n, rng):
        """Random complex superpositions of eigenstates 1 and 2 (the reference's data.py): weights
        ``w1 N(0,1)`` and ``w2 N(0,1)`` with uniform phases, normalised; ``rng`` a RandomState.

        Computed as the reference computed them, in float32/complex64 arithmetic throughout
        (eigenstates included), so that the states are the reference's bit for bit.
        """
        w1, w2 = (int(w) for w in self.weighting.split("-"))
        c1 = rng.normal(size=(n, 1)).astype(np.float32) * w1
        c2 = rng.normal(size=(n, 1)).astype(np.float32) * w2
        p1 = rng.uniform(0, 2 * np.pi, size=(n, 1)).astype(np.float32)
        p2 = rng.uniform(0, 2 * np.pi, size=(n, 1)).astype(np.float32)
        norm = np.sqrt(c1 ** 2 + c2 ** 2)
        psi = (c1 * np.exp(1j * p1) / norm * reference_eigenstate(1, self.nx)
               + c2 * np.exp(1j * p2) / norm * reference_eigenstate(2, self.nx))
        assert psi.dtype == np.complex64
        return np.stack([psi.real, psi.imag], axis=-1).reshape(n, self.state_dim)

    def datasets(self, n, rng):
        """Train and test sets as the reference draws them: 2n states at once, split in halves."""
        states = self.sample(2 * n, rng)
        return states[:n], states[n:]

    def wavefunction(self, states):
        """Complex ``psi`` of flat states ``(..., 2*Nx)``."""
        pairs = states.reshape(states.shape[:-1] + (self.nx, 2))
        return pairs[..., 0] + 1j * pairs[..., 1]
