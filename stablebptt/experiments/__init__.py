"""Presets, the training loop, optimisers and clipping, HDF5 run files and the command line."""

from .config import ConfigError, RunConfig
from .optim import SGD, Adam, clip_gradient, make_optimizer
from .presets import PRESETS, Task, build_task, preset
from .results import METRICS, RunFileError, RunRecord, read_run, write_run
from .training import Trainer, single_threaded_blas

__all__ = [
    "METRICS", "PRESETS", "SGD", "Adam", "ConfigError", "RunConfig", "RunFileError", "RunRecord",
    "Task", "Trainer", "build_task", "clip_gradient", "make_optimizer", "preset", "read_run",
    "single_threaded_blas",
    "write_run",
]
