"""Numba type signatures of the kernel contract between the engine, simulators and controllers.

Every kernel is compiled for float32 or float64 (``T``) with these signatures when a run first
needs that variant, and the engine receives kernels as first-class function values of exactly
these types. Fixed types are what
let the engine be generic over simulators and controllers *and* be cached on disk by Numba.

Simulator kernels (``p`` is the simulator's float64 parameter vector, states are ``(B, S)``,
controls ``(B, C)``):

- ``step(p, x, c, x_next)``: writes ``s(x, c)`` into ``x_next``.
- ``step_vjp(p, x, c, lam_next, dx, dc)``: overwrites ``dx = (ds/dx)^T lam_next`` and
  ``dc = (ds/dc)^T lam_next``.
- ``loss(p, x) -> float``: the stage loss, a mean over the batch.
- ``loss_grad(p, x, scale, gx)``: adds ``scale * d loss / dx`` into ``gx``.

Controller kernels (``theta`` the flat parameters, ``spec`` an int64 description of the network,
``acts``/``deltas`` flat work buffers laid out by the controller for ``nsteps`` steps of ``B``
samples, ``n`` the step index into them):

- ``forward(theta, spec, x, acts, n, nsteps, c)``: writes ``c = f(x)`` and stores what the
  adjoint needs in ``acts``.
- ``vjp(theta, spec, x, acts, n, nsteps, mu, dx, deltas)``: overwrites ``dx = (df/dx)^T mu`` and
  stores the layer cotangents of step ``n`` in ``deltas``.
- ``param_grad(theta, spec, xs, acts, deltas, nsteps, g)``: adds ``sum_n (df/dtheta)^T mu_n`` for
  all stored steps into ``g`` (``xs`` holds the ``nsteps * B`` controller inputs).
"""

from numba import types

FLOAT_TYPES = (types.float32, types.float64)

_P = types.float64[::1]
_I = types.int64


def _mat(T):
    return T[:, ::1]


def _vec(T):
    return T[::1]


def step_sig(T):
    return types.void(_P, _mat(T), _mat(T), _mat(T))


def step_vjp_sig(T):
    return types.void(_P, _mat(T), _mat(T), _mat(T), _mat(T), _mat(T))


def loss_sig(T):
    return types.float64(_P, _mat(T))


def loss_grad_sig(T):
    return types.void(_P, _mat(T), types.float64, _mat(T))


def forward_sig(T):
    return types.void(_vec(T), _I[::1], _mat(T), _vec(T), _I, _I, _mat(T))


def vjp_sig(T):
    return types.void(_vec(T), _I[::1], _mat(T), _vec(T), _I, _I, _mat(T), _mat(T), _vec(T))


def param_grad_sig(T):
    return types.void(_vec(T), _I[::1], _mat(T), _vec(T), _vec(T), _I, _vec(T))


def function_type(make_sig, T):
    return types.FunctionType(make_sig(T))


def kernel(make_sig, **options):
    """Decorator making a contract kernel: a lazy, disk-cached Numba dispatcher.

    Nothing is compiled at import: the engine compiles (or loads from Numba's cache) only the
    variant a run needs, with :func:`compile_variant`. ``make_sig`` is kept on the dispatcher as
    ``contract_signature``. ``error_model="numpy"``: division by zero gives inf/nan (caught later
    as divergence) instead of raising, and lets LLVM vectorise loops that divide.
    """
    from numba import njit

    options.setdefault("cache", True)
    options.setdefault("error_model", "numpy")

    def decorate(func):
        dispatcher = njit(**options)(func)
        dispatcher.contract_signature = make_sig
        return dispatcher

    return decorate


def compile_variant(dispatcher, make_sig, T):
    """Compile (or load from the on-disk cache) the ``T`` variant of a kernel; returns its
    compile result, the handle the engine passes on as a first-class function value."""
    sig = make_sig(T)
    if sig.args not in dispatcher.overloads:
        dispatcher.compile(sig)
    return dispatcher.overloads[sig.args]
