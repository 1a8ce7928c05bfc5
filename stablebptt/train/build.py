"""Presets of registered tasks, their validation, and the objects a run is built from."""

import os
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import numpy as np

from ..contract import ContractError, check_controller_interface, check_simulator_interface
from ..tasks import COMMON_DEFAULTS, Task, TaskError, all_tasks, check_states, get_task
from .config import ConfigError, RunConfig, preset_config  # noqa: F401 (re-exported)


def preset(task: Union[str, Task], **overrides) -> RunConfig:
    """The validated config of a task preset with ``overrides``; :class:`ConfigError` names the
    first bad setting (also a setting the task does not use, or a run too large for memory).
    ``task`` is a registered name, a ``module:Class`` reference or a :class:`Task`."""
    if not isinstance(task, Task):
        try:
            task = get_task(task)
        except TaskError as err:
            raise ConfigError(str(err)) from None
    overrides = {k: v for k, v in overrides.items() if v is not None}
    base = preset_config(task)
    known = base.settings()
    for name, value in overrides.items():
        if name not in known or name in task.ignores:
            users = [t.name for t in all_tasks() if name in [o.name for o in t.options]
                     or (name in COMMON_DEFAULTS and name not in t.ignores)]
            where = f" (only to {', '.join(users)})" if users else ""
            raise ConfigError(f"{name}={value} does not apply to task {task.name!r}{where}")
    config = base.replace(**converted_options(task, overrides)).validated()
    check_memory(config)
    if config.device == "cuda":
        _require_cuda()
    return config


def converted_options(task, settings):
    """``settings`` with the task's options converted from command-line text to their types;
    :class:`ConfigError` names a value that does not convert."""
    options = {o.name: o for o in task.options}
    converted = dict(settings)
    for name, value in settings.items():
        if name in options:
            try:
                converted[name] = options[name].convert(value)
            except ValueError as why:
                raise ConfigError(f"{name}={value!r} {why}") from None
    return converted


def memory_estimate(config):
    """Bytes a run needs, roughly: trajectory and work buffers of a batch update and of the
    train/test evaluation (the whole set in one batch), the data, and the parameter-sized arrays
    (parameters, optimiser state, gradients, snapshots)."""
    sim = build_simulator(config)
    ctrl = build_controller(config, sim)
    n, b, e = config.n_steps, config.batch_size, config.n_data
    states, controls = sim.state_dim, sim.control_dim
    update = (n + 1) * b * states + n * b * controls + ctrl.acts_size(n * b) + 2 * ctrl.deltas_size(n * b)
    evaluation = (n + 1) * e * states + n * e * controls + ctrl.acts_size(e)
    return np.dtype(config.dtype).itemsize * (update + evaluation + 2 * e * states + 16 * ctrl.n_params)


def check_memory(config, available=None):
    """:class:`ConfigError` with the figures when a run cannot fit in this machine's memory."""
    if available is None:
        try:
            available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):  # no sysconf: nothing to compare with
            return
    need = memory_estimate(config)
    if need > 0.8 * available:
        raise ConfigError(f"the run needs about {_bytes(need)} of memory (n_steps={config.n_steps}, "
                          f"batch_size={config.batch_size}, n_data={config.n_data}, "
                          f"width={config.width}) but this machine has {_bytes(available)}")


def _bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024


@dataclass
class BuiltTask:
    """Everything built from a config: the problem, the data and a fresh parameter vector."""

    config: RunConfig
    problem: object  # an adjoint.engine.Problem (or cuda.engine.CudaProblem)
    train: np.ndarray
    test: np.ndarray

    @property
    def controller(self):
        return self.problem.controller


def build_simulator(config):
    """The simulator of a validated config, checked against the contract."""
    task = config.task_def
    sim = task.simulator(config)
    try:
        check_simulator_interface(sim)
    except ContractError as err:
        raise ContractError(f"task {task.name!r}: {err}") from None
    return sim


def build_controller(config, sim):
    """The controller of a config (the task's; by default an MLP, ``depth=0`` linear), checked
    against the contract and the simulator's sizes."""
    task = config.task_def
    controller = task.controller(config, sim)
    try:
        check_controller_interface(controller, sim)
    except ContractError as err:
        raise ContractError(f"task {task.name!r}: {err}") from None
    return controller


def build_task(config: RunConfig, data: Optional[Tuple[np.ndarray, np.ndarray]] = None,
               threads: int = 1) -> "BuiltTask":
    """The problem and data sets of a validated config; data are drawn from ``seed`` as the
    reference, unless ``data = (train, test)`` are given (a resumed run's stored sets).
    ``threads``: the CPU threads that compute each batch (results are the same for any number)."""
    from ..adjoint.engine import Problem  # loads Numba: not needed to validate a config

    sim = build_simulator(config)
    controller = build_controller(config, sim)
    problem = Problem(sim, controller, config.n_steps, config.loss_mode, rho=config.rho,
                      threads=threads)
    if config.device == "cuda":
        problem = _cuda_problem(problem)
    if data is None:
        data = config.task_def.datasets(config, sim, np.random.RandomState(config.seed))
    train, test = (check_states(config.task_def, sim, np.asarray(d), "datasets()") for d in data)
    dtype = np.dtype(config.dtype)
    return BuiltTask(config, problem, train.astype(dtype), test.astype(dtype))


def record_task(record, config: Optional[RunConfig] = None, threads: int = 1) -> BuiltTask:
    """The task a run file's ``record`` was trained on (``config``: the record's, changed), built
    with the stored data sets, after checking that the file's data and parameters fit its
    simulator and controller (:class:`~stablebptt.train.runfile.RunFileError` names what does
    not, e.g. a checkpoint from another task)."""
    from .runfile import RunFileError

    config = record.config if config is None else config
    where = getattr(record, "path", "") or "the run"
    state_dim = build_simulator(config).state_dim
    if record.train.shape[1] != state_dim:
        raise RunFileError(f"damaged run file {where}: its data have {record.train.shape[1]} "
                           f"state components, the task's simulator {state_dim}")
    task = build_task(config, data=(record.train, record.test), threads=threads)
    controller = task.controller
    expected = {name: shape for name, _, shape in _layout(controller)}
    for which, params in (("initial", record.params_initial), ("final", record.params_final)):
        shapes = {name: tuple(value.shape) for name, value in params.items()}
        if params and shapes != expected:
            raise RunFileError(f"damaged run file {where}: its {which} parameters "
                               f"{_shapes(shapes)} do not fit the task's controller "
                               f"{_shapes(expected)}")
    ck = getattr(record, "checkpoint", None)  # a Run serves as a record too
    if ck is not None and ck.theta.size != controller.n_params:
        raise RunFileError(f"damaged run file {where}: its checkpoint has {ck.theta.size} "
                           f"parameters, the task's controller {controller.n_params}")
    return task


def _layout(controller):
    """``[(name, offset, shape)]`` of a controller's parameters (from its views when it does not
    declare ``param_layout``)."""
    if hasattr(controller, "param_layout"):
        return controller.param_layout
    views = controller.views(np.zeros(controller.n_params))
    return [(name, None, tuple(v.shape)) for name, v in views.items()]


def _shapes(shapes):
    return ", ".join(f"{name} {tuple(shape)}" for name, shape in shapes.items())


def initial_parameters(config, controller):
    """``(theta, rng)``: the parameters a run of ``config`` starts from, drawn in its dtype from
    a generator seeded with ``seed``, and that generator, which the run goes on to shuffle with."""
    rng = np.random.default_rng(config.seed)
    return controller.init(rng, np.dtype(config.dtype)), rng


def _require_cuda():
    from ..cuda import cuda_available

    if not cuda_available():
        raise ConfigError("device='cuda' but numba.cuda finds no usable GPU "
                          "(pip install 'stablebptt[cuda]' on a machine with an NVIDIA GPU; a run "
                          "trained on a GPU continues here with --resume FILE --device cpu)")


def _cuda_problem(problem):
    _require_cuda()
    from ..cuda.engine import CudaProblem

    return CudaProblem(problem)


def controlled_rollout(record, samples=4, which="final"):
    """Roll a run's stored controller out from its first test states, on the CPU whatever device
    trained it, with the stored data.

    Returns ``(task, states (N+1, K, S), controls (N, K, C), finite_steps)``; ``which`` picks the
    initial or the final parameters of the run (for a diverged run: its last finite ones).
    ``finite_steps`` is the number of leading states that are finite for every sample: a run
    driven out of the float range is drawn up to there.
    """
    from .runfile import RunFileError

    task = record_task(record, record.config.replace(device="cpu"))
    params = record.params_final if which == "final" else record.params_initial
    dtype = np.dtype(record.config.dtype)
    theta = task.controller.flatten(params, dtype)
    if not np.all(np.isfinite(theta)):
        raise RunFileError(f"the {which} parameters of {getattr(record, 'path', 'the run')} are "
                           f"not finite (status {record.status}); draw --params initial instead")
    with np.errstate(all="ignore"):
        _, states, controls = task.problem.rollout(theta, record.test[:samples].astype(dtype))
    finite = np.all(np.isfinite(states.reshape(len(states), -1)), axis=1)
    finite_steps = len(states) if finite.all() else int(np.argmin(finite))
    return task, states, controls, max(finite_steps, 1)
