"""Run configuration: one flat, validated, serialisable record of everything that defines a run."""

import dataclasses
from dataclasses import dataclass

from ..adjoint.modes import parse_mode
from ..sims.quantum import WEIGHTINGS
from .optim import CLIP_MODES, OPTIMIZERS

TASKS = ("cartpole", "guidance", "quantum")
DTYPES = ("float32", "float64")
DEVICES = ("cpu", "cuda")


class ConfigError(ValueError):
    """A bad setting; its message names the setting and the value."""


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
        checks = [
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
        """A file stem derived from the settings that distinguish runs of a sweep."""
        if self.task == "guidance":
            system = f"d{self.drivers}e{self.evaders}_rho{self.rho:g}"
            if (self.target_x, self.target_y) != (0.0, 0.0):
                system += f"_target{self.target_x:g},{self.target_y:g}"
        elif self.task == "quantum":
            system = f"ts{self.target_state}_w{self.weighting}_nx{self.nx}"
        else:
            system = f"p{self.poles}"
        return (f"{self.task}_{system}_{self.mode}_clip-{self.clip}_lr{self.lr:g}"
                f"_bs{self.batch_size}_s{self.seed}")
