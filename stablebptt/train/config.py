"""Run configuration: one flat, validated, serialisable record of everything that defines a run.

A config holds the settings every task has (training, network, horizon, bookkeeping) as fields,
and its task's own settings (cart-pole's ``poles``, ...) as ``options``, which read as attributes
too (``config.poles``). Which options exist, their defaults, checks and part in run names come
from the task registry (:mod:`stablebptt.tasks`).
"""

import dataclasses
import hashlib
from dataclasses import dataclass

from ..adjoint.modes import parse_mode
from ..tasks import COMMON_DEFAULTS, TaskError, format_number, get_task, unloaded_task
from ..tasks.base import type_problem
from .optim import CLIP_MODES, OPTIMIZERS

DTYPES = ("float32", "float64")
DEVICES = ("cpu", "cuda")

# Settings that do not change a run's numbers: not part of its name or identity.
NOT_IDENTITY = ("epochs", "checkpoint_every", "device", "task_source")
MAX_SEED = 2**32 - 1  # numpy's RandomState, which draws the reference's data, takes 32-bit seeds
MAX_NAME = 180  # characters of a run name: the file name plus its temporary suffixes stay < 255


class ConfigError(ValueError):
    """A bad setting; its message names the setting and the value."""


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a run. The common settings' defaults are the registry's
    :data:`~stablebptt.tasks.base.COMMON_DEFAULTS` (defined there once; a task's ``preset``
    changes some); build a config with :func:`~stablebptt.preset` rather than by hand."""

    task: str = "cartpole"
    rho: float = COMMON_DEFAULTS["rho"]
    mode: str = COMMON_DEFAULTS["mode"]
    clip: str = COMMON_DEFAULTS["clip"]
    clip_value: float = COMMON_DEFAULTS["clip_value"]
    optimizer: str = COMMON_DEFAULTS["optimizer"]
    lr: float = COMMON_DEFAULTS["lr"]
    momentum: float = COMMON_DEFAULTS["momentum"]
    batch_size: int = COMMON_DEFAULTS["batch_size"]
    epochs: int = COMMON_DEFAULTS["epochs"]
    n_data: int = COMMON_DEFAULTS["n_data"]
    width: int = COMMON_DEFAULTS["width"]
    depth: int = COMMON_DEFAULTS["depth"]
    bias: bool = COMMON_DEFAULTS["bias"]
    zero_last: bool = COMMON_DEFAULTS["zero_last"]
    time: float = COMMON_DEFAULTS["time"]
    n_steps: int = COMMON_DEFAULTS["n_steps"]
    loss_mode: str = COMMON_DEFAULTS["loss_mode"]
    seed: int = COMMON_DEFAULTS["seed"]
    dtype: str = COMMON_DEFAULTS["dtype"]
    checkpoint_every: int = COMMON_DEFAULTS["checkpoint_every"]
    device: str = COMMON_DEFAULTS["device"]
    options: tuple = ()  # ((name, value), ...) of the task's own settings, in its order
    task_source: str = ""  # "module:Class" of a task from outside the package

    def __getattr__(self, name):
        # the task's options read as attributes; guarded for pickling (no __dict__ yet)
        if not name.startswith("_"):
            for key, value in self.__dict__.get("options", ()):
                if key == name:
                    return value
        raise AttributeError(f"{type(self).__name__} of task {self.__dict__.get('task')!r} has "
                             f"no setting {name!r}")

    @property
    def dt(self):
        return self.time / self.n_steps

    @property
    def task_def(self):
        """The registered :class:`~stablebptt.tasks.Task` of this config (loaded on first use)."""
        try:
            return get_task(self.task, self.task_source)
        except TaskError as err:
            if self.task_source:  # a file's outside task, not loaded: its settings still read
                return unloaded_task(self.task, self.task_source, self.options)
            raise ConfigError(str(err)) from None

    def settings(self):
        """Every setting as ``{name: value}``: the common ones, then the task's options."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in ("options", "task_source")}
        values.update(self.options)
        return values

    def replace(self, **changes):
        """A copy with ``changes`` (common settings or options), not yet validated."""
        return RunConfig.from_dict({**self.to_dict(), **changes})

    def validated(self):
        """A normalised copy (mode as its paper letter, lower-case names), or :class:`ConfigError`."""
        task = self.task_def
        try:
            mode = parse_mode(self.mode).letter
        except ValueError as err:
            raise ConfigError(str(err)) from None
        for f in dataclasses.fields(self):
            if f.type in (int, float, bool):
                why = type_problem(f.type, getattr(self, f.name))
                if why:
                    raise ConfigError(f"{f.name}={getattr(self, f.name)!r} {why}")
        settings = self.settings()
        for option in task.options:
            value = settings[option.name]
            why = option.problem(value, settings)
            if why:
                raise ConfigError(f"{option.name}={value!r} {why}")
        checks = [
            ("seed", 0 <= self.seed <= MAX_SEED, f"must be in 0..{MAX_SEED}"),
            ("rho", self.rho >= 0, "must be >= 0"),
            ("lr", self.lr > 0, "must be > 0"),
            ("epochs", self.epochs >= 1, "must be >= 1"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("n_data", self.n_data >= 1, "must be >= 1"),
            ("batch_size", self.batch_size <= self.n_data,
             f"must not exceed the data set size n_data={self.n_data}"),
            ("width", self.width >= 1, "must be >= 1"),
            ("depth", self.depth >= 0, "must be >= 0"),
            ("time", self.time > 0, "must be > 0"),
            ("n_steps", self.n_steps >= 1, "must be >= 1"),
            ("clip_value", self.clip_value > 0, "must be > 0"),
            ("momentum", 0 <= self.momentum < 1, "must be in [0, 1)"),
            ("momentum", self.momentum == 0 or str(self.optimizer).lower() == "sgd",
             f"applies to the sgd optimizer only, not {self.optimizer!r}"),
            ("checkpoint_every", self.checkpoint_every >= 1, "must be >= 1"),
            ("clip", str(self.clip).lower() in CLIP_MODES, f"must be one of {', '.join(CLIP_MODES)}"),
            ("optimizer", str(self.optimizer).lower() in OPTIMIZERS,
             f"must be one of {', '.join(OPTIMIZERS)}"),
            ("loss_mode", str(self.loss_mode).upper() in ("FINAL", "CONTINUOUS"),
             "must be FINAL or CONTINUOUS"),
            ("dtype", self.dtype in DTYPES, f"must be one of {', '.join(DTYPES)}"),
            ("device", self.device in DEVICES, f"must be one of {', '.join(DEVICES)}"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise ConfigError(f"{name}={getattr(self, name)!r} {why}")
        return dataclasses.replace(self, mode=mode, clip=str(self.clip).lower(),
                                   optimizer=str(self.optimizer).lower(),
                                   loss_mode=str(self.loss_mode).upper())

    def to_dict(self):
        """Flat ``{setting: value}`` (options at top level), with ``task_source`` if it has one:
        what run files store."""
        values = {"task": self.task, **self.settings()}
        if self.task_source:
            values["task_source"] = self.task_source
        return values

    @classmethod
    def from_dict(cls, values, legacy=False):
        """The config of flat ``values`` (as :meth:`to_dict` writes); missing options take their
        task's default. ``legacy``: drop settings of other built-in tasks, which run files of
        format 2 carried for every task."""
        values = dict(values)
        task_name = values.pop("task", cls.task)
        source = values.pop("task_source", "")
        common = {f.name for f in dataclasses.fields(cls)} - {"task", "options", "task_source"}
        try:
            task = get_task(task_name, source)
        except TaskError as err:
            if not source:
                raise ConfigError(str(err)) from None
            try:  # a file's outside task, not loaded (never imported from a file)
                task = unloaded_task(task_name, source,
                                     [(k, v) for k, v in values.items() if k not in common])
            except TaskError as why:
                raise ConfigError(str(why)) from None
        option_names = [o.name for o in task.options]
        unknown = set(values) - common - set(option_names)
        if legacy:
            for key in unknown & LEGACY_OPTIONS:
                values.pop(key)
            unknown -= LEGACY_OPTIONS
        if unknown:
            raise ConfigError(f"unknown configuration keys for task {task_name!r}: "
                              f"{', '.join(sorted(unknown))}")
        options = tuple((o.name, values.pop(o.name, o.default)) for o in task.options)
        return cls(task=task_name, options=options, task_source=task.source, **values)

    def run_name(self):
        """A file stem derived from every setting that changes the run's numbers.

        The main settings always appear (task system, mode, clipping, lr, batch size, seed); every
        other setting that differs from the task's preset follows as ``_KEYVALUE`` (e.g.
        ``_float64``, ``_rho0.1``, ``_width32``), so runs with different numbers never share a
        name. Epochs, checkpoint interval and device are not part of it (a run may be extended,
        and is the same run on either device). Names longer than ``MAX_NAME`` keep their first
        part and replace the rest by a hash of it.
        """
        task = self.task_def
        system = task.system_name(self)
        base = "_".join(part for part in (self.task, system) if part)
        base += (f"_{self.mode}_clip-{self.clip}_lr{format_number(self.lr)}"
                 f"_bs{self.batch_size}_s{self.seed}")
        preset = preset_config(task).settings()
        shown = set(task.named_settings()) | set(NOT_IDENTITY) | set(_IN_BASE) | set(task.ignores)
        extras = []
        for name, value in self.settings().items():
            if name in shown or value == preset[name]:
                continue
            if isinstance(value, bool):
                extras.append(name.replace("_", "-") if value else "no-" + name.replace("_", "-"))
            elif name in ("dtype", "optimizer", "loss_mode"):
                extras.append(str(value).lower())
            else:
                number = format_number(value) if isinstance(value, float) else str(value)
                extras.append(f"{_NAME_KEYS.get(name, name.replace('_', '-'))}{number}")
        name = "_".join([base] + extras)
        if len(name) > MAX_NAME:
            digest = hashlib.sha1("_".join(extras).encode()).hexdigest()[:12]
            name = f"{base[:MAX_NAME - 14]}_h{digest}"
        return name


def preset_config(task) -> "RunConfig":
    """The unvalidated preset of a registered task: common defaults, the task's ``preset`` and
    its options' defaults."""
    settings = {**COMMON_DEFAULTS, **task.preset}
    settings.update((o.name, o.default) for o in task.options)
    return RunConfig.from_dict({"task": task.name, "task_source": task.source, **settings})


_IN_BASE = ("task", "mode", "clip", "lr", "batch_size", "seed")
_NAME_KEYS = {"n_steps": "steps"}  # as the command-line option
# Run files of format 2 stored every built-in task's settings in every config.
LEGACY_OPTIONS = frozenset({"poles", "drivers", "evaders", "target_x", "target_y", "nx",
                            "target_state", "weighting"})
