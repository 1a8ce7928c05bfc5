"""A register-tiled matrix product, its inner block written in LLVM IR through a Numba intrinsic.

Numba's loop vectoriser keeps no block of outputs in vector registers across an inner product:
every loop form tried reloads and stores the outputs on each term or does not vectorise, which
caps a Numba-written product near half of the core's peak. Here the block is spelt out: ``rows``
rows by ``vectors`` SIMD vectors of outputs accumulate in registers over the whole inner
dimension, one fused multiply-add (``llvm.fma``) per term, and are stored once.

Every output element is therefore ``fma(a[i, k-1], b[k-1, j], ... fma(a[i, 0], b[0, j], 0))``,
in order of ``k``, whichever block, lane, row count or machine computes it: FMA rounds exactly
once, so the bits depend on neither the number of rows (samples in a chunk) nor the SIMD width.
Vectors are 32 bytes (8 float32 or 4 float64 lanes, AVX2's registers); AVX-512 machines run the
same code. The columns that fill no whole block end the product in a block whose last vector
is shifted back to end the row: it recomputes some columns of the vector before it (the same
chains, the same bits) and reads and writes nothing beyond the arrays with plain loads and
stores. Only a product at most one vector wide uses masked ones (slow on AMD cores).
"""

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .._numba_internals import cgutils, vector_intrinsics

VECTOR_BYTES = 32
ROWS = 4  # rows of a block: with 2 vectors, 8 accumulators, as many as FMA latency needs
# rows of a block of one vector (a product at most one vector wide): 6 chains, whose broadcasts,
# mask and vector of b fit in AVX2's 16 vector registers (8 spilled; 1.85 against 1.81 us at
# 64 x 100 x 4, float32)
NARROW_ROWS = 6
VECTORS = 2


def _splat(builder, value, vty):
    lanes = vty.count
    i32 = ir.IntType(32)
    single = builder.insert_element(ir.Constant(vty, ir.Undefined), value, ir.Constant(i32, 0))
    return builder.shuffle_vector(single, single, ir.Constant(ir.VectorType(i32, lanes), [0] * lanes))


def _block(vectors, last_vector="whole", max_rows=ROWS):
    """An intrinsic ``block(a, b, bias, out, i, rows, j, last)``: ``out[i:i+rows, cols] =
    a[i:i+rows] @ b[:, cols] + bias[cols]`` for ``rows`` (1 to ``max_rows``) rows and the
    ``vectors`` vectors of columns from ``j``; an empty ``bias`` adds nothing. The bias is added
    to the finished chains before they are stored: the one rounding of a separate ``out += bias``.
    The last vector is ``last_vector``: ``"whole"``; ``"masked"``, ``last`` lanes wide (masked
    loads and stores are slow on some cores: only a product's last columns use them); or
    ``"shifted"`` back to end at column ``j + (vectors - 1) * lanes + last``, so that it ends the
    row with plain loads and stores (it recomputes columns of the vector before it: the same
    chains, the same bits). Each row count has its own code (a switch), so that leftover rows
    still run several chains at once. ``a`` may have any strides (``a.T`` included), and may be
    3-D ``(groups, rows, k)``: its row ``i`` is then row ``i % rows`` of group ``i // rows`` (the
    CNN's overlapping windows, read in place); ``b``, ``bias`` and ``out`` are C-contiguous."""
    masked = last_vector == "masked"
    shifted = last_vector == "shifted"

    @intrinsic
    def block(typingctx, a, b, bias, out, i, rows, j, last):
        arrays = (a, b, bias, out)
        if not all(isinstance(x, types.Array) and x.dtype == a.dtype for x in arrays):
            return None
        if a.ndim not in (2, 3) or b.ndim != 2 or bias.ndim != 1 or out.ndim != 2:
            return None
        if a.dtype not in (types.float32, types.float64) or any(x.layout != "C" for x in arrays[1:]):
            return None

        def codegen(context, builder, signature, args):
            a_arr, b_arr, bias_arr, o_arr = (context.make_array(t)(context, builder, v)
                                             for t, v in zip(signature.args[:4], args[:4]))
            i0, row_count, j0, last_lanes = args[4:]
            fty = context.get_value_type(signature.args[0].dtype)
            size = context.get_abi_sizeof(fty)
            lanes = VECTOR_BYTES // size
            vty, fma, masked_load, masked_store = vector_intrinsics(builder, fty, lanes, size)
            i64, i32 = ir.IntType(64), ir.IntType(32)
            byte_ptr = ir.IntType(8).as_pointer()
            a_ndim = signature.args[0].ndim
            k = builder.extract_value(a_arr.shape, a_ndim - 1)
            a_row, a_col = (builder.extract_value(a_arr.strides, d) for d in (a_ndim - 2, a_ndim - 1))
            # A stride LLVM knows lets it address the unrolled k loop's loads as constant
            # displacements from one pointer per row; a run-time stride has it keep an offset per
            # row and unrolled term, more than the registers hold (the CNN's windows: 75 against
            # 87 GFLOP/s). Each layout gets the constant it guarantees; a window view (any
            # layout) tests for contiguous rows at run time.
            element = ir.Constant(i64, size)
            a_layout = signature.args[0].layout
            if a_layout == "C":
                a_col = element
            elif a_layout == "F" and a_ndim == 2:  # a transposed C array (parameter gradients)
                a_row = element

            def a_row_offset(row):
                if a_ndim == 2:
                    return builder.mul(row, a_row)
                group_rows = builder.extract_value(a_arr.shape, 1)
                group_stride = builder.extract_value(a_arr.strides, 0)
                return builder.add(builder.mul(builder.udiv(row, group_rows), group_stride),
                                   builder.mul(builder.urem(row, group_rows), a_row))
            b_row = builder.extract_value(b_arr.strides, 0)
            has_bias = builder.icmp_unsigned("!=", builder.extract_value(bias_arr.shape, 0),
                                             ir.Constant(i64, 0))
            o_row = builder.extract_value(o_arr.strides, 0)
            lane_index = ir.Constant(ir.VectorType(i64, lanes), list(range(lanes)))
            mask = builder.icmp_unsigned("<", lane_index,
                                         _splat(builder, last_lanes, ir.VectorType(i64, lanes)))
            zero = ir.Constant(vty, [0.0] * lanes)
            alignment = ir.Constant(i32, size)

            def address(arr, byte_offset, ty):
                return builder.bitcast(builder.gep(builder.bitcast(arr.data, byte_ptr), [byte_offset]),
                                       ty.as_pointer())

            def b_or_out(arr, row_stride, row, v):
                column = builder.add(j0, ir.Constant(i64, v * lanes))
                if shifted and v == vectors - 1:
                    column = builder.sub(builder.add(column, last_lanes), ir.Constant(i64, lanes))
                offset = builder.add(builder.mul(row, row_stride),
                                     builder.mul(column, ir.Constant(i64, size)))
                return address(arr, offset, vty)

            def load_vector(arr, row_stride, row, v):
                ptr = b_or_out(arr, row_stride, row, v)
                if masked and v == vectors - 1:
                    return builder.call(masked_load, [ptr, alignment, mask, zero])
                return builder.load(ptr, align=size)

            def store_rows(acc, with_bias):
                origin = ir.Constant(i64, 0)
                bias_vec = [load_vector(bias_arr, origin, origin, v) for v in range(vectors)
                            ] if with_bias else None
                for r in range(len(acc)):
                    row = builder.add(i0, ir.Constant(i64, r))
                    for v in range(vectors):
                        ptr = b_or_out(o_arr, o_row, row, v)
                        value = builder.load(acc[r][v])
                        if with_bias:
                            value = builder.fadd(value, bias_vec[v])
                        if masked and v == vectors - 1:
                            builder.call(masked_store, [value, ptr, alignment, mask])
                        else:
                            builder.store(value, ptr, align=size)

            def rows_block(rows, a_col):
                # accumulators as stack slots: LLVM promotes them to registers
                acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(vectors)]
                       for _ in range(rows)]
                row_offsets = [a_row_offset(builder.add(i0, ir.Constant(i64, r))) for r in range(rows)]
                with cgutils.for_range(builder, k) as loop:
                    p = loop.index
                    b_vec = [load_vector(b_arr, b_row, p, v) for v in range(vectors)]
                    for r in range(rows):
                        offset = builder.add(row_offsets[r], builder.mul(p, a_col))
                        a_val = _splat(builder, builder.load(address(a_arr, offset, fty), align=size), vty)
                        for v in range(vectors):
                            total = builder.call(fma, [a_val, b_vec[v], builder.load(acc[r][v])])
                            builder.store(total, acc[r][v])
                with builder.if_else(has_bias) as (then, otherwise):
                    with then:
                        store_rows(acc, True)
                    with otherwise:
                        store_rows(acc, False)

            done = builder.append_basic_block("block.done")
            switch = builder.switch(row_count, done)
            for rows in range(1, max_rows + 1):
                case = builder.append_basic_block(f"block.rows{rows}")
                switch.add_case(ir.Constant(row_count.type, rows), case)
                builder.position_at_end(case)
                if isinstance(a_col, ir.Constant):
                    rows_block(rows, a_col)
                else:
                    contiguous = builder.icmp_unsigned("==", a_col, element)
                    with builder.if_else(contiguous) as (then, otherwise):
                        with then:
                            rows_block(rows, element)
                        with otherwise:
                            rows_block(rows, a_col)
                builder.branch(done)
            builder.position_at_end(done)
            return context.get_dummy_value()

        return types.void(a, b, bias, out, types.intp, types.intp, types.intp, types.intp), codegen

    return block


_BLOCK = _block(VECTORS)
# The columns left after the whole blocks end the rows with a shifted last vector: a masked one
# leaves LLVM too few registers for the mask in a block of 12 chains. Up to one vector of them
# go with the last whole block's columns (12 chains keep both FMA units busy, where the vector
# alone, 4 chains, would wait on FMA latency); a product at most a vector wide takes the mask.
_MERGED_BLOCK = _block(VECTORS + 1, "shifted")
_LAST_BLOCK = _block(VECTORS, "shifted")
_LAST_VECTOR = _block(1, "masked", NARROW_ROWS)


# A compiled function's callees are linked into its code and optimised again there, at every
# level of calls: the blocks' code (~1 s to optimise) stays in ``fma_affine`` alone, and the
# helpers around it are inlined into their callers (``inline="always"``) instead of adding a
# level each (a first cart-pole run: 20.8 -> 16.1 s).
@njit(cache=True, error_model="numpy", inline="always")
def fma_matmul(a, b, out):
    """``out = a @ b``: :func:`fma_affine` without a bias."""
    fma_affine(a, b, out.ravel()[:0], out)


@njit(cache=True, error_model="numpy")
def fma_affine(a, b, bias, out):
    """``out = a @ b + bias`` in register blocks; element ``(i, j)`` is the in-order FMA chain over
    ``k`` (see the module's docstring) plus ``bias[j]`` in one more rounding, as ``out += bias``
    after the product would give, without the pass over ``out``; an empty ``bias`` adds nothing.
    ``b``, ``bias`` and ``out`` C-contiguous, ``a`` any 2-D float array, or a 3-D one whose
    first two axes make the rows (``a.reshape(-1, k)`` without the copy).
    Column blocks of ``VECTORS`` vectors (their slice of ``b`` stays in L1 for all rows), each in
    blocks of ``ROWS`` rows and the rows left over. The columns that fill no block come last,
    in a block whose last vector is shifted to end the row: up to one vector of them with the
    last whole block's columns, more in a block of their own; masked where ``n`` <= a vector."""
    m, n = out.shape
    if bias.size != 0 and bias.size != n:
        raise ValueError("fma_affine: the bias must have one value per column of out, or none")
    lanes = VECTOR_BYTES // a.itemsize
    width = VECTORS * lanes
    columns = n % width
    end = n - columns
    merge = 0 < columns <= lanes and end > 0  # the last whole block takes the leftover vector
    if merge:
        end -= width
    for j in range(0, end, width):
        for i in range(0, m, ROWS):
            _BLOCK(a, b, bias, out, i, min(ROWS, m - i), j, lanes)
    if merge:
        for i in range(0, m, ROWS):
            _MERGED_BLOCK(a, b, bias, out, i, min(ROWS, m - i), end, columns)
    elif columns > lanes:
        for i in range(0, m, ROWS):
            _LAST_BLOCK(a, b, bias, out, i, min(ROWS, m - i), end, columns - lanes)
    elif columns > 0:  # n <= lanes
        for i in range(0, m, NARROW_ROWS):
            _LAST_VECTOR(a, b, bias, out, i, min(NARROW_ROWS, m - i), end, columns)
