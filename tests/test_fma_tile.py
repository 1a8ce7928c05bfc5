"""The register-blocked product: each element is the in-order FMA chain over k, whatever block,
row count, column offset or operand layout computes it."""

import numpy as np
import pytest

from stablebptt.controllers._fma_tile import (NARROW_ROWS, ROWS, VECTOR_BYTES, VECTORS, fma_affine,
                                              fma_matmul)

# rows: whole blocks, each leftover count, fewer than a block; columns (float32): whole vector
# pairs (32), up to a vector more with the last pair (21, 17, 100), more in a block of their own
# (13, 60), at most one vector (masked: 1, 4, 8)
SHAPES = [(8, 100, 32), (7, 100, 21), (6, 37, 13), (5, 9, 1), (3, 64, 17), (2, 1, 8), (1, 100, 100),
          (13, 180, 60), (19, 100, 4), (9, 6, 8)]


def _fma_chain_float32(a, b):
    """``a @ b`` as float32 FMA chains in order of k, emulated in float64: the float64 sum of a
    float32 product (exact in float64) and a float32 accumulator is exact unless their exponents
    lie far apart, and even then one rounding to float32 differs from FMA's single rounding only
    for a float64 result on a float32 midpoint (about 2^-29 per term; these inputs have none)."""
    acc = np.zeros((a.shape[0], b.shape[1]), np.float32)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    for p in range(a.shape[1]):
        acc = (acc.astype(np.float64) + a64[:, p:p + 1] * b64[p]).astype(np.float32)
    return acc


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_float32_elements_are_in_order_fma_chains(m, k, n, rng):
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    out = np.full((m, n), np.nan, np.float32)
    fma_matmul(a, b, out)
    np.testing.assert_array_equal(out, _fma_chain_float32(a, b))
    # a transposed (strided) left operand: the parameter gradient's a.T @ b
    at = np.full((m, n), np.nan, np.float32)
    fma_matmul(np.ascontiguousarray(a.T).T, b, at)
    np.testing.assert_array_equal(at, out)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-13), (np.float32, 1e-5)])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_every_element_has_the_same_bits_in_any_block(m, k, n, dtype, rtol, rng):
    """Rows alone, in leftover blocks or whole blocks, columns in full, shifted, masked or
    single-column blocks at any offset: the same bits, and near the float64 product."""
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    whole = np.full((m, n), np.nan, dtype)
    fma_matmul(a, b, whole)
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    assert np.all(np.abs(whole - a.astype(np.float64) @ b.astype(np.float64)) <= rtol * scale)
    for start in range(m):
        rows = slice(start, min(m, start + 1 + start % max(ROWS, NARROW_ROWS)))
        part = np.full((rows.stop - rows.start, n), np.nan, dtype)
        fma_matmul(np.ascontiguousarray(a[rows]), b, part)
        np.testing.assert_array_equal(part, whole[rows])
    lanes = VECTOR_BYTES // np.dtype(dtype).itemsize
    for start in sorted({0, 1, lanes - 1, lanes + 3, VECTORS * lanes - 1} & set(range(n))):
        cols = slice(start, min(n, start + lanes + 5))
        part = np.full((m, cols.stop - cols.start), np.nan, dtype)
        fma_matmul(a, np.ascontiguousarray(b[:, cols]), part)
        np.testing.assert_array_equal(part, whole[:, cols])


@pytest.mark.parametrize("n", [3, 11, 21, 60])
def test_last_columns_write_nothing_outside_the_output(n, rng):
    """The last vector, masked (n = 3) or shifted back to end the row: the memory before and
    after the output is untouched."""
    a = rng.standard_normal((5, 20)).astype(np.float32)
    b = rng.standard_normal((20, n)).astype(np.float32)
    memory = np.full(5 * n + 32, -7.0, np.float32)
    out = memory[16:16 + 5 * n].reshape(5, n)
    fma_matmul(a, b, out)
    assert np.all(memory[:16] == -7.0) and np.all(memory[16 + 5 * n:] == -7.0)
    np.testing.assert_array_equal(out, _fma_chain_float32(a, b))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_bias_added_in_the_blocks_is_a_separate_add(m, k, n, dtype, rng):
    """Whole, merged, shifted and masked blocks add the bias as ``out += bias`` after the product
    would (one rounding, the same bits); an empty bias adds nothing; a bias of another length is
    an error."""
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    bias = rng.standard_normal(n).astype(dtype)
    product = np.full((m, n), np.nan, dtype)
    fma_matmul(a, b, product)
    out = np.full((m, n), np.nan, dtype)
    fma_affine(a, b, bias, out)
    np.testing.assert_array_equal(out, product + bias)
    fma_affine(a, b, bias[:0], out)
    np.testing.assert_array_equal(out, product)
    with pytest.raises(ValueError, match="bias"):
        fma_affine(a, b, np.ones(n + 1, dtype), out)


def _layouts(a):
    """``a``'s values in every layout the blocks compile for: C, transposed (Numba's F), a
    column slice (any layout, contiguous rows: the constant stride is chosen at run time),
    every other column (any layout, strided rows: the generic loop) and 3-D (groups of rows)."""
    m, k = a.shape
    wide = np.zeros((m, k + 5), a.dtype)
    wide[:, 2:k + 2] = a
    spread = np.zeros((m, 2 * k), a.dtype)
    spread[:, ::2] = a
    return {"C": a, "F": np.ascontiguousarray(a.T).T, "column slice": wide[:, 2:k + 2],
            "strided": spread[:, ::2], "3-D": a.reshape(1, m, k),
            "3-D strided": spread[:, ::2].reshape(1, m, k)}


@pytest.mark.parametrize("m,k,n", [(7, 100, 21), (13, 180, 60), (19, 100, 4)])
def test_every_layout_of_a_gives_the_same_fma_chains(m, k, n, rng):
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    expected = _fma_chain_float32(a, b)
    for layout, view in _layouts(a).items():
        out = np.full((m, n), np.nan, np.float32)
        fma_matmul(view, b, out)
        np.testing.assert_array_equal(out, expected, err_msg=layout)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups,per_group", [(1, 7), (4, 7), (5, 3), (3, 1)])
def test_3d_operand_reads_overlapping_windows_in_place(groups, per_group, dtype, rng):
    """A 3-D ``a`` (groups, rows, k) with overlapping rows, as the CNN's windows: the same bits
    as the product of its rows copied into a 2-D array, whatever block a row falls into."""
    k, stride, n = 18, 12, 20
    source = rng.standard_normal((groups, stride * (per_group - 1) + k + 3)).astype(dtype)
    size = source.itemsize
    windows = np.lib.stride_tricks.as_strided(source, (groups, per_group, k),
                                              (source.strides[0], stride * size, size))
    b = rng.standard_normal((k, n)).astype(dtype)
    copied, in_place = np.zeros((groups * per_group, n), dtype), np.zeros((groups * per_group, n), dtype)
    fma_matmul(np.ascontiguousarray(windows).reshape(-1, k), b, copied)
    fma_matmul(windows, b, in_place)
    np.testing.assert_array_equal(in_place, copied)
    rtol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(in_place, windows.reshape(-1, k) @ b, rtol=rtol)


def test_rejects_operands_without_contiguous_rows():
    """``b`` and ``out`` must be C-contiguous (vectors load along their rows)."""
    a = np.ones((4, 6), np.float32)
    with pytest.raises(Exception, match="(?i)typing"):
        fma_matmul(a, np.ones((12, 8), np.float32)[::2], np.zeros((4, 8), np.float32))
