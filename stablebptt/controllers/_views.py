"""A 2-D view of a contiguous array without Numba's reshape machinery.

``a.reshape(m, n)`` in compiled code calls a general helper that works out strides for any
layout: ~16 ns a call. The kernels take a few such views of their flat parameter and work
buffers per layer and step (an MLP forward step on 4 samples: 6 views, ~100 of its ~1700 ns).
For a C-contiguous array the view is just its data pointer with shape ``(m, n)`` and row
stride ``n``: ``as_matrix`` builds that directly.
"""

from numba import njit, types
from numba.extending import intrinsic

from .._numba_internals import cgutils, impl_ret_borrowed, make_array, populate_array


@intrinsic
def _c_matrix(typingctx, array, rows, cols):
    """The ``(rows, cols)`` view of a C-contiguous array's data; sizes unchecked (``as_matrix``)."""
    if not (isinstance(array, types.Array) and array.layout == "C"
            and isinstance(rows, types.Integer) and isinstance(cols, types.Integer)):
        return None
    matrix = array.copy(ndim=2, layout="C")

    def codegen(context, builder, signature, args):
        source = make_array(signature.args[0])(context, builder, args[0])
        view = make_array(matrix)(context, builder)
        intp = context.get_value_type(types.intp)
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(
            context.get_data_type(matrix.dtype)))
        n_rows, n_cols = (context.cast(builder, v, t, types.intp)
                          for v, t in zip(args[1:], signature.args[1:]))
        populate_array(view, data=source.data,
                       shape=cgutils.pack_array(builder, [n_rows, n_cols], ty=intp),
                       strides=cgutils.pack_array(builder, [builder.mul(n_cols, itemsize), itemsize],
                                                  ty=intp),
                       itemsize=itemsize, meminfo=source.meminfo, parent=source.parent)
        return impl_ret_borrowed(context, builder, matrix, view._getvalue())

    return matrix(array, rows, cols), codegen


@njit(cache=True, inline="always", error_model="numpy")
def as_matrix(array, rows, cols):
    """``array.reshape(rows, cols)`` for a C-contiguous ``array`` of ``rows * cols`` elements."""
    if rows * cols != array.size:
        raise ValueError("as_matrix: rows * cols must equal the array's size")
    return _c_matrix(array, rows, cols)
