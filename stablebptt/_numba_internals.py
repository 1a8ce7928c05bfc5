"""Every use of Numba's and LLVM's non-public surface, in one place.

The kernels need four things Numba has no public API for: the machine-code handle of a compiled
function (the engine calls kernels by address), building an array view in code generation (the
controllers' 2-D views), LLVM intrinsics by name (the register-tiled products) and a bit cast
between a float and an integer (the vectorised ``exp``). They are imported or written here only,
and ``tests/test_numba_internals.py`` checks each one, so that a Numba release that moves one of
them fails one test that names it. pyproject.toml pins Numba to the releases that test passed on.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils  # noqa: F401  (re-exported: alloca_once_value, for_range, ...)
from numba.core.imputils import impl_ret_borrowed  # noqa: F401
from numba.core.types.function_type import CompileResultWAP
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array  # noqa: F401


def address_holder(compile_result):
    """A first-class function value that holds a compiled function's machine-code address once
    (``__wrapper_address__()``): handing Numba the dispatcher would look it up on every call."""
    return CompileResultWAP(compile_result)


def function_value_at(context, builder, ftype, address):
    """Code for a first-class function value of type ``ftype`` calling the C wrapper at the
    integer ``address``: no Python object (never boxed) and no JIT address (calls go through the
    C wrapper, as for an unboxed kernel)."""
    func = cgutils.create_struct_proxy(ftype)(context, builder)
    null = ir.Constant(ir.IntType(8).as_pointer(), None)
    func.c_addr = builder.inttoptr(address, null.type)
    func.py_addr = null
    func.jit_addr = null
    return func._getvalue()


def vector_intrinsics(builder, fty, lanes, size):
    """``llvm.fma`` and the masked load/store for ``<lanes x fty>`` vectors, declared in the
    builder's module. The masked ones carry the typed-pointer mangling of LLVM 14; newer LLVMs
    remangle intrinsic names."""
    vty = ir.VectorType(fty, lanes)
    mty = ir.VectorType(ir.IntType(1), lanes)
    i32 = ir.IntType(32)
    name = f"v{lanes}f{8 * size}"
    module = builder.module
    fma = cgutils.get_or_insert_function(module, ir.FunctionType(vty, [vty] * 3), f"llvm.fma.{name}")
    load = cgutils.get_or_insert_function(
        module, ir.FunctionType(vty, [vty.as_pointer(), i32, mty, vty]),
        f"llvm.masked.load.{name}.p0{name}")
    store = cgutils.get_or_insert_function(
        module, ir.FunctionType(ir.VoidType(), [vty, vty.as_pointer(), i32, mty]),
        f"llvm.masked.store.{name}.p0{name}")
    return vty, fma, load, store


def bitcast(source, target):
    """An intrinsic reinterpreting the bits of a ``source`` scalar as a ``target`` one (free, and
    vectorisable, unlike a conversion)."""
    llvm_target = ir.DoubleType() if target == types.float64 else ir.IntType(64)

    @intrinsic
    def cast(typingctx, value):
        if value != source:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], llvm_target)

        return target(source), codegen

    return cast
