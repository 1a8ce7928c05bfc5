"""The one compatibility test of Numba's non-public surface (stablebptt._numba_internals): each
piece the kernels rely on, exercised on its own, so that a Numba release that moves one fails
here by name. pyproject.toml pins Numba to the releases this passed on."""

import numpy as np
import pytest
from numba import njit, types


def test_the_internal_names_exist():
    from stablebptt import _numba_internals as internals

    for name in ("create_struct_proxy", "get_or_insert_function", "alloca_once_value",
                 "for_range", "pack_array"):
        assert callable(getattr(internals.cgutils, name)), name
    for name in ("make_array", "populate_array", "impl_ret_borrowed", "CompileResultWAP"):
        assert callable(getattr(internals, name)), name


def test_bitcast_round_trips_the_bits():
    from stablebptt._numba_internals import bitcast

    to_bits, from_bits = bitcast(types.float64, types.int64), bitcast(types.int64, types.float64)

    @njit
    def round_trip(x):
        return to_bits(x), from_bits(to_bits(x))

    bits, back = round_trip(-2.5)
    assert bits == np.array(-2.5).view(np.int64) and back == -2.5


def test_views_are_views():
    from stablebptt.controllers._views import as_matrix

    @njit
    def write_through(a):
        m = as_matrix(a, 2, 3)
        m[1, 2] = 7.0
        return m.shape

    a = np.zeros(6)
    assert write_through(a) == (2, 3) and a[5] == 7.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_llvm_intrinsics_compute_a_product(dtype):
    from stablebptt.controllers._fma_tile import fma_matmul

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 7)).astype(dtype), rng.standard_normal((7, 11)).astype(dtype)
    out = np.zeros((5, 11), dtype)
    fma_matmul(a, b, out)
    np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_kernels_are_called_by_address():
    """The engine's kernel_at and address_holder: a gradient through them matches a rollout."""
    import stablebptt as sb

    problem = sb.Problem(sb.Shift(target=2.0), sb.Quadratic(), 4)
    theta, x0 = np.array([0.3, -0.2]), np.array([[-0.3]])
    result = problem.gradient(theta, x0, "R")
    assert result.loss == pytest.approx(problem.loss(theta, x0))
    assert np.all(np.isfinite(result.grad))
