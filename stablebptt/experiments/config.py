"""Run configuration: one flat, validated, serialisable record of everything that defines a run."""

import dataclasses
import hashlib
import math
import numbers
from dataclasses import dataclass

from ..adjoint.modes import parse_mode
from ..sims.quantum import WEIGHTINGS
from .optim import CLIP_MODES, OPTIMIZERS

TASKS = ("cartpole", "guidance", "quantum")
DTYPES = ("float32", "float64")
DEVICES = ("cpu", "cuda")


# Settings that only some tasks use; giving one to another task is an error, not a no-op.
TASK_ONLY = {
    "poles": ("cartpole",),
    "drivers": ("guidance",), "evaders": ("guidance",), "target_x": ("guidance",),
    "target_y": ("guidance",),
    "nx": ("quantum",), "target_state": ("quantum",), "weighting": ("quantum",),
    "depth": ("cartpole", "guidance"),  # the quantum CNN has a fixed depth (as the reference)
}
# Settings that do not change a run's numbers: not part of its name or identity.
NOT_IDENTITY = ("epochs", "checkpoint_every", "device")
MAX_SEED = 2**32 - 1  # numpy's RandomState, which draws the reference's data, takes 32-bit seeds
MAX_NAME = 180  # characters of a run name: the file name plus its temporary suffixes stay < 255


class ConfigError(ValueError):
    """A bad setting; its message names the setting and the value."""


def format_number(value):
    """The shortest text that reads back as ``value`` exactly (``1e-3`` -> ``0.001``)."""
    text = f"{value:g}"
    return text if float(text) == value else repr(float(value))


@dataclass(frozen=True)
class RunConfig:
    task: str = "cartpole"
    poles: int = 1
    drivers: int = 2
    evaders: int = 4
    target_x: float = 0.0
    target_y: float = 0.0
    rho: float = 0.0
    nx: int = 32
    target_state: int = 3
    weighting: str = "1-1"
    mode: str = "C"
    clip: str = "norm"
    clip_value: float = 1.0
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    batch_size: int = 8
    epochs: int = 1000
    n_data: int = 256
    width: int = 100
    depth: int = 2
    bias: bool = True
    zero_last: bool = True
    time: float = 1.0
    n_steps: int = 100
    loss_mode: str = "FINAL"
    seed: int = 42
    dtype: str = "float32"
    checkpoint_every: int = 10
    device: str = "cpu"

    @property
    def dt(self):
        return self.time / self.n_steps

    def validated(self):
        """A normalised copy (mode as its paper letter, lower-case names), or :class:`ConfigError`."""
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}: choose from {', '.join(TASKS)}")
        try:
            mode = parse_mode(self.mode).letter
        except ValueError as err:
            raise ConfigError(str(err)) from None
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type is float and not (isinstance(value, numbers.Real)
                                        and math.isfinite(value)):
                raise ConfigError(f"{f.name}={value!r} must be a finite number")
            if f.type is int and (isinstance(value, bool)
                                  or not isinstance(value, numbers.Integral)):
                raise ConfigError(f"{f.name}={value!r} must be an integer")
        checks = [
            ("seed", 0 <= self.seed <= MAX_SEED, f"must be in 0..{MAX_SEED}"),
            ("poles", self.poles >= 1, "must be >= 1"),
            ("drivers", self.drivers >= 1, "must be >= 1"),
            ("evaders", self.evaders >= 1, "must be >= 1"),
            ("rho", self.rho >= 0, "must be >= 0"),
            ("nx", self.nx >= 7, "must be >= 7 (the CNN's two stride-2 convolutions)"),
            ("target_state", 1 <= self.target_state <= self.nx, f"must be in 1..nx={self.nx}"),
            ("weighting", self.weighting in WEIGHTINGS, f"must be one of {', '.join(WEIGHTINGS)}"),
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
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = set(values) - set(fields)
        if unknown:
            raise ConfigError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
        return cls(**values)

    def run_name(self):
        """A file stem derived from every setting that changes the run's numbers.

        The main settings always appear (task system, mode, clipping, lr, batch size, seed); every
        other setting that differs from the task's preset follows as ``_KEYVALUE`` (e.g.
        ``_float64``, ``_rho0.1``, ``_width32``), so runs with different numbers never share a
        name. Epochs, checkpoint interval and device are not part of it (a run may be extended,
        and is the same run on either device). Names longer than ``MAX_NAME`` keep their first
        part and replace the rest by a hash of it.
        """
        from .presets import PRESETS

        if self.task == "guidance":
            system = f"d{self.drivers}e{self.evaders}_rho{format_number(self.rho)}"
            if (self.target_x, self.target_y) != (0.0, 0.0):
                system += f"_target{format_number(self.target_x)},{format_number(self.target_y)}"
            shown = ("drivers", "evaders", "rho", "target_x", "target_y")
        elif self.task == "quantum":
            system = f"ts{self.target_state}_w{self.weighting}_nx{self.nx}"
            shown = ("target_state", "weighting", "nx")
        else:
            system = f"p{self.poles}"
            shown = ("poles",)
        base = (f"{self.task}_{system}_{self.mode}_clip-{self.clip}_lr{format_number(self.lr)}"
                f"_bs{self.batch_size}_s{self.seed}")
        preset = RunConfig(**PRESETS[self.task])
        extras = []
        for f in dataclasses.fields(self):
            name, value = f.name, getattr(self, f.name)
            skip = (name in shown or name in NOT_IDENTITY or name in _IN_BASE
                    or self.task not in TASK_ONLY.get(name, (self.task,)))
            if skip or value == getattr(preset, name):
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


_IN_BASE = ("task", "mode", "clip", "lr", "batch_size", "seed")
_NAME_KEYS = {"n_steps": "steps"}  # as the command-line option
