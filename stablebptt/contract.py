"""The contract between the engine, simulators and controllers: kernel signatures and interfaces.

This module is the base of the package: simulators, controllers, the engines and the task registry
import it, and it imports none of them. A simulator or controller written outside the package
meets the contract by having the attributes of :class:`Simulator` or :class:`Controller` and
kernels with the signatures below (decorate them with :func:`kernel`, or give plain functions,
which are compiled with the same options); :func:`check_simulator_interface` and
:func:`check_controller_interface` name the first thing that is missing or wrong.


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

A controller may also have ``prepare(theta)``: the array its batch kernels receive as ``theta``
from the engine, made once per batch: the parameters followed by arrays derived from them (the
MLP appends its kernels transposed, so that its adjoint runs the same register-blocked products
as its forward pass). Kernels must accept the plain parameters too (a direct call, a finite-
difference check) and give the same values to rounding; :func:`prepared_parameters` is what the
engine calls.

A controller may also say ``steps_as_rows = True`` (all built-in ones do) when its buffers hold
step ``n``'s ``B`` samples at rows ``n*B .. (n+1)*B`` of blocks laid out for ``nsteps * B`` rows,
so that ``vjp`` called once on the ``N * B`` rows of all steps with ``n = 0, nsteps = 1`` does
what ``N`` calls, one per step, do. A sweep without controller feedback (the modified and stopped
gradients) then needs the controller once per batch instead of once per step;
:func:`~stablebptt.adjoint.check.check_controller` checks the claim. Such a controller may also
give ``delta_widths``: the values per row of each block of its ``deltas`` buffer, in order (they
add up to ``deltas_size(1)``). For a scalar control the engine then calls ``vjp`` once per batch,
on all steps' rows with unit control cotangents, and gets every sweep's cotangents by scaling
those row by row (the adjoint is linear in ``mu``): R's sweep needs the simulator alone, and C
costs one parameter gradient more than R. The same check covers it.

A controller may also say ``input_cotangent_optional = True`` when its ``vjp`` accepts a ``dx``
with no columns, ``(B, 0)``, and then computes no input cotangent (and the same ``deltas``). The
engine passes one wherever it has no use for ``dx``: the sweeps without controller feedback
(M, S, C's second sweep) and the unit cotangents of a scalar control under M and S.
:func:`~stablebptt.adjoint.check.check_controller` checks the claim.

Per-sample kernels (optional; what the GPU path runs, one thread per trajectory). The physics of
one sample is written once, as functions of 1-D arrays decorated with :func:`sample_kernel`, and
the CPU batch kernels above loop over the batch calling them, so both targets run one source.
Where the CPU needs its own batch-vectorised form (quantum's Thomas sweeps), the per-sample twin
sits beside it and a test compares the two. ``work`` is a float64 scratch vector of the object's
``work_size`` entries (0 when absent):

- ``step_one(p, x, c, x_next, work)``, ``step_vjp_one(p, x, c, lam_next, dx, dc, work)``: the
  batch kernels' meaning for one sample.
- ``loss_one(p, x) -> float``: the stage loss of one sample (``loss`` is its batch mean).
- ``loss_grad_one(p, x, scale, gx)``: adds ``scale * d loss_one / dx`` into ``gx``.
- ``forward_one(theta, spec, x, acts, c, work)``: ``c = f(x)``, keeping in ``acts`` (the
  controller's ``acts_size(1)`` entries) what the adjoint needs.
- ``backward_one(theta, spec, x, acts, mu, dx, g, work)``: overwrites ``dx = (df/dx)^T mu`` and
  adds ``(df/dtheta)^T mu`` into ``g``.
"""

from typing import Protocol, runtime_checkable

import numpy as np

# Numba is imported when a signature is first built, not with this module: the command line
# reads the contract (ContractError, the interfaces) and must start without loading Numba.


def _types():
    from numba import types

    return types


def _mat(T):
    return T[:, ::1]


def _vec(T):
    return T[::1]


def step_sig(T):
    t = _types()
    return t.void(t.float64[::1], _mat(T), _mat(T), _mat(T))


def step_vjp_sig(T):
    t = _types()
    return t.void(t.float64[::1], _mat(T), _mat(T), _mat(T), _mat(T), _mat(T))


def loss_sig(T):
    t = _types()
    return t.float64(t.float64[::1], _mat(T))


def loss_grad_sig(T):
    t = _types()
    return t.void(t.float64[::1], _mat(T), t.float64, _mat(T))


def forward_sig(T):
    t = _types()
    return t.void(_vec(T), t.int64[::1], _mat(T), _vec(T), t.int64, t.int64, _mat(T))


def vjp_sig(T):
    t = _types()
    return t.void(_vec(T), t.int64[::1], _mat(T), _vec(T), t.int64, t.int64, _mat(T), _mat(T),
                  _vec(T))


def param_grad_sig(T):
    t = _types()
    return t.void(_vec(T), t.int64[::1], _mat(T), _vec(T), _vec(T), t.int64, _vec(T))


def function_type(make_sig, T):
    return _types().FunctionType(make_sig(T))


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


def sample_kernel(func):
    """Decorator for per-sample physics and its helpers: plain scalar and 1-D array code, compiled
    by Numba for the CPU (inlined into the batch loops that call it) and, when the GPU path calls
    it, by Numba's CUDA target as a device function. Write it with ``math`` functions, no array
    allocation and no exceptions, which both targets support."""
    from numba import njit

    return njit(cache=True, inline="always", error_model="numpy")(func)


class ContractError(TypeError):
    """A simulator, controller or kernel that does not meet the contract; the message names it."""


SIMULATOR_KERNELS = {"step": step_sig, "step_vjp": step_vjp_sig, "loss": loss_sig,
                     "loss_grad": loss_grad_sig}
CONTROLLER_KERNELS = {"forward": forward_sig, "vjp": vjp_sig, "param_grad": param_grad_sig}
SIGNATURE_TEXT = {
    "step": "step(p, x, c, x_next)", "step_vjp": "step_vjp(p, x, c, lam_next, dx, dc)",
    "loss": "loss(p, x) -> float", "loss_grad": "loss_grad(p, x, scale, gx)",
    "forward": "forward(theta, spec, x, acts, n, nsteps, c)",
    "vjp": "vjp(theta, spec, x, acts, n, nsteps, mu, dx, deltas)",
    "param_grad": "param_grad(theta, spec, xs, acts, deltas, nsteps, g)",
}

SAMPLE_SIMULATOR_KERNELS = {
    "step_one": "step_one(p, x, c, x_next, work)",
    "step_vjp_one": "step_vjp_one(p, x, c, lam_next, dx, dc, work)",
    "loss_one": "loss_one(p, x) -> float", "loss_grad_one": "loss_grad_one(p, x, scale, gx)"}
SAMPLE_CONTROLLER_KERNELS = {
    "forward_one": "forward_one(theta, spec, x, acts, c, work)",
    "backward_one": "backward_one(theta, spec, x, acts, mu, dx, g, work)"}


@runtime_checkable
class Simulator(Protocol):
    """What the engine needs of a simulator ``x_{n+1} = s(x_n, c_n)`` with stage loss ``l(x)``.

    ``params`` is a float64 vector handed to every kernel as ``p`` (name its layout once, as
    module constants); ``continuous_reduction`` ("sum" or "mean") says whether a CONTINUOUS loss
    sums or averages the stage losses over time. ``sample(n, rng)`` draws ``n`` initial states
    from a ``numpy.random.RandomState``. The kernels are static: ``step``, ``step_vjp``, ``loss``,
    ``loss_grad`` with the signatures in this module's docstring.
    """

    name: str
    state_dim: int
    control_dim: int
    params: np.ndarray

    def sample(self, n, rng): ...


@runtime_checkable
class Controller(Protocol):
    """What the engine needs of a controller ``c = f_theta(x)`` over a flat parameter vector.

    ``spec`` is an int64 vector describing the network to its kernels; ``acts_size(rows)`` and
    ``deltas_size(rows)`` are the work-buffer sizes for ``rows = steps * batch`` samples;
    ``init(rng, dtype)`` returns fresh parameters; ``views``/``flatten`` convert between the flat
    vector and named arrays (what run files store). Kernels: ``forward``, ``vjp``, ``param_grad``.
    """

    n_inputs: int
    n_outputs: int
    n_params: int
    spec: np.ndarray

    def acts_size(self, rows): ...

    def deltas_size(self, rows): ...

    def init(self, rng, dtype=np.float32): ...


def _check_attributes(obj, protocol, kernels, what):
    for name in list(protocol.__annotations__) + [n for n in vars(protocol)
                                                 if not n.startswith("_")] + list(kernels):
        if not hasattr(obj, name):
            raise ContractError(f"{what} {type(obj).__name__} has no attribute {name!r}")
    for name in kernels:
        if not callable(getattr(obj, name)):
            raise ContractError(f"{what} {type(obj).__name__}.{name} is not a function: the "
                                f"contract wants {SIGNATURE_TEXT[name]}")


# What a simulator or controller may declare beyond the required interface, and what the engine
# assumes when it does not: every optional capability, with its default, in one place. Read them
# with :func:`capability`.
OPTIONAL_CAPABILITIES = {
    "simulator": {
        # CONTINUOUS stage weights: 1 per step ("sum") or 1/N ("mean", a time average)
        "continuous_reduction": "sum",
        # float64 scratch values each sample's per-sample kernels need (the GPU path, checks)
        "work_size": 0,
    },
    "controller": {
        # buffers hold step n's samples at rows n*B..(n+1)*B: one adjoint call may cover steps
        "steps_as_rows": False,
        # widths of the cotangent blocks: with a scalar control, the adjoint runs once for unit
        # cotangents and is scaled per sweep
        "delta_widths": None,
        # the adjoint may skip input cotangents when handed a dx without columns
        "input_cotangent_optional": False,
        # prepare(theta) -> the parameters the batch kernels receive (theta, then derived arrays)
        "prepare": None,
        "work_size": 0,
    },
}


def capability(obj, name):
    """The optional capability ``name`` of a simulator or controller, or its default
    (:data:`OPTIONAL_CAPABILITIES`)."""
    for defaults in OPTIONAL_CAPABILITIES.values():
        if name in defaults:
            return getattr(obj, name, defaults[name])
    raise KeyError(f"{name!r} is not an optional capability: one of "
                   f"{', '.join(sorted(set().union(*OPTIONAL_CAPABILITIES.values())))}")


def check_simulator_interface(sim):
    """:class:`ContractError` naming the first attribute or kernel a simulator lacks or gets wrong."""
    _check_attributes(sim, Simulator, SIMULATOR_KERNELS, "simulator")
    for name in ("state_dim", "control_dim"):
        value = getattr(sim, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ContractError(f"simulator {type(sim).__name__}.{name}={value!r} must be a "
                                "positive integer")
    params = np.asarray(sim.params)
    if params.ndim != 1 or not np.issubdtype(params.dtype, np.number):
        raise ContractError(f"simulator {type(sim).__name__}.params must be a 1-D vector of "
                            f"numbers, got shape {params.shape} ({params.dtype})")
    if capability(sim, "continuous_reduction") not in ("sum", "mean"):
        raise ContractError(f"simulator {type(sim).__name__}.continuous_reduction="
                            f"{sim.continuous_reduction!r} must be 'sum' or 'mean'")


def check_controller_interface(controller, sim=None):
    """:class:`ContractError` naming the first attribute or kernel a controller lacks or gets
    wrong, or a size that does not match the simulator ``sim``."""
    _check_attributes(controller, Controller, CONTROLLER_KERNELS, "controller")
    if sim is not None and (controller.n_inputs, controller.n_outputs) != (sim.state_dim,
                                                                          sim.control_dim):
        raise ContractError(
            f"controller {type(controller).__name__} maps {controller.n_inputs} -> "
            f"{controller.n_outputs} but simulator {type(sim).__name__} has state_dim="
            f"{sim.state_dim} and control_dim={sim.control_dim}")


def prepared_parameters(controller, theta):
    """What the batch kernels of ``controller`` receive as parameters: ``controller.prepare(theta)``
    where it has one, else ``theta``. A :class:`ContractError` if ``prepare`` returns anything
    but a contiguous vector of ``theta``'s dtype at least as long."""
    prepare = capability(controller, "prepare")
    if prepare is None:
        return theta
    prepared = prepare(theta)
    if (not isinstance(prepared, np.ndarray) or prepared.ndim != 1 or prepared.dtype != theta.dtype
            or prepared.size < theta.size or not prepared.flags.c_contiguous):
        raise ContractError(
            f"controller {type(controller).__name__}.prepare must return a contiguous 1-D "
            f"{theta.dtype} array of at least {theta.size} values (the parameters first), got "
            f"{getattr(prepared, 'dtype', type(prepared).__name__)} of shape {np.shape(prepared)}")
    return prepared


_plain_kernels = {}


def as_kernel(func, make_sig, owner="", name=""):
    """The Numba dispatcher of a contract kernel: ``func`` itself when it is one (made by
    :func:`kernel` or ``njit``), else ``func`` compiled with :func:`kernel`'s options."""
    if hasattr(func, "overloads") and hasattr(func, "compile"):
        return func
    if not callable(func):
        raise ContractError(f"{owner}.{name} is not a function: the contract wants "
                            f"{SIGNATURE_TEXT.get(name, name)}")
    if func not in _plain_kernels:
        _plain_kernels[func] = kernel(make_sig)(func)
    return _plain_kernels[func]


def compile_kernel(func, make_sig, T, owner, name):
    """:func:`compile_variant` of a simulator's or controller's kernel, with a compilation
    failure (wrong number of arguments, a type error inside) as a :class:`ContractError` naming
    the kernel, the wanted signature and the first line of Numba's message."""
    from numba.core.errors import NumbaError

    dispatcher = as_kernel(func, make_sig, owner, name)
    try:
        return compile_variant(dispatcher, make_sig, T)
    except (NumbaError, TypeError, ValueError) as err:
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ContractError(f"kernel {owner}.{name} does not compile as {SIGNATURE_TEXT[name]} "
                            f"for {T}: {first}") from None


def _missing_kernels(obj, names):
    return [name for name in names if not callable(getattr(obj, name, None))]


def has_sample_kernels(sim, controller):
    """Whether a simulator and a controller both have all their per-sample kernels."""
    return not (_missing_kernels(sim, SAMPLE_SIMULATOR_KERNELS)
                or _missing_kernels(controller, SAMPLE_CONTROLLER_KERNELS))


def sample_kernels(obj, names):
    """``{name: function}`` of the per-sample kernels ``names`` (a dict of signature texts) of a
    simulator or controller, plus its ``work_size``; a :class:`ContractError` names what is
    missing (the GPU path needs all of them)."""
    missing = _missing_kernels(obj, names)
    if missing:
        raise ContractError(f"{type(obj).__name__} has no per-sample kernel {missing[0]} (wanted: "
                            f"{names[missing[0]]}), which the GPU path runs: use --device cpu, or "
                            "write its physics per sample (see stablebptt.contract)")
    work = capability(obj, "work_size")
    if isinstance(work, bool) or not isinstance(work, (int, np.integer)) or work < 0:
        raise ContractError(f"{type(obj).__name__}.work_size={work!r} must be an integer >= 0")
    return {name: getattr(obj, name) for name in names}, int(work)
