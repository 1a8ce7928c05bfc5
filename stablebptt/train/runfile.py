"""Run files in HDF5: one file per run, replaced atomically so that a crash never corrupts it.

Layout::

    /                attrs: format, format_version, status, epochs_done, config (JSON) and each
                     config key, versions of stablebptt / numpy / numba / h5py
    /metrics/NAME    float64 (epochs_done,), growable: one entry per epoch
    /data/train      initial states (n_data, S); /data/test likewise
    /params/initial/LAYER, /params/final/LAYER   Keras layout (kernel (in, out), bias (out,))
    /checkpoint      theta, optimizer/<arrays>; attrs: epoch, optimizer_step, rng_state (JSON)

Every write builds the complete file next to the target and renames it over the target
(``os.replace``), so a reader or a killed process only ever sees the previous or the new snapshot.
"""

import glob
import json
import os
import secrets
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Union

try:
    import fcntl
except ImportError:  # not POSIX: run files are written without the writer's lock
    fcntl = None

import numpy as np

from .._atomic import output_error, write_bytes
from .config import ConfigError, RunConfig

FORMAT = "stablebptt-run"
FORMAT_VERSION = 2  # 2: a config holds only its task's options (1: every built-in task's)
METRICS = ("batch_loss", "train_loss", "test_loss", "batch_physics_loss", "train_physics_loss",
           "test_physics_loss", "grad_size", "cosine_similarity", "epoch_time", "wall_time",
           "grad_norm", "clipped_grad_norm", "clip_active", "kept_fraction")
METRIC_HELP = {
    "batch_loss": "mean loss of the epoch's batches (before each update)",
    "train_loss": "loss of the whole training set after the epoch",
    "test_loss": "loss of the whole test set after the epoch",
    "batch_physics_loss": "batch_loss without the control regulariser rho mean(c^2)",
    "train_physics_loss": "train_loss without the control regulariser",
    "test_physics_loss": "test_loss without the control regulariser",
    "grad_size": "mean over batches of the squared L2 norm of the gradient handed to the optimiser, "
                 "before clipping",
    "cosine_similarity": "mean over batches of cos(g_M, g_R) (combined mode only, else 0)",
    "epoch_time": "seconds spent in the epoch's updates (as the reference times it)",
    "wall_time": "seconds for the whole epoch, evaluation included",
    "grad_norm": "mean over batches of the L2 norm of the gradient before clipping",
    "clipped_grad_norm": "mean over batches of the L2 norm of the gradient after clipping (the "
                         "optimiser's input)",
    "clip_active": "fraction of the epoch's updates whose gradient clipping changed",
    "kept_fraction": "mean over batches of the fraction of g_M's components the sign rule kept "
                     "(combined mode only, else NaN)",
}


class RunFileError(Exception):
    """A run file that is missing, unreadable or not a stablebptt run."""


def versions():
    import numba

    from .. import __version__
    return {"stablebptt": __version__, "numpy": np.__version__, "numba": numba.__version__,
            "h5py": _h5py().__version__}


@dataclass
class Checkpoint:
    epoch: int
    theta: np.ndarray
    optimizer_step: int
    optimizer_arrays: dict
    rng_state: dict


@dataclass
class RunRecord:
    """The contents of a run file."""

    config: RunConfig
    status: str
    metrics: dict = field(default_factory=dict)
    train: np.ndarray = None
    test: np.ndarray = None
    params_initial: dict = field(default_factory=dict)
    params_final: dict = field(default_factory=dict)
    checkpoint: Checkpoint = None
    attrs: dict = field(default_factory=dict)
    path: str = ""  # the file it was read from ("" for a record not read from a file)

    @property
    def epochs_done(self):
        return len(self.metrics.get("test_loss", ()))


class RunLock:
    """The right to write one run file, held by one process at a time.

    An exclusive ``flock`` on ``NAME.h5.lock``, which holds the owner's pid; the kernel drops it
    when the process dies, however it dies. Acquiring it also removes temporary files that a
    writer killed mid-write left behind (only the holder writes, so none of them is live).
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.lock_path = self.path + ".lock"
        self._fd = None

    def acquire(self):
        if fcntl is None or self._fd is not None:
            return self
        try:
            return self._acquire()
        except OSError as err:
            if self._fd is not None:
                self.release()
            raise RunFileError(output_error(err, self.lock_path).strerror) from None

    def _acquire(self):
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunFileError(f"run file {self.path} is being written by another process "
                                   f"(pid {owner})") from None
            # the previous holder may have removed the lock file between our open and flock
            try:
                current = os.path.samestat(os.fstat(fd), os.stat(self.lock_path))
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        self._fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        for stale in glob.glob(glob.escape(self.path) + ".tmp-*"):
            os.remove(stale)
        return self

    def release(self):
        if self._fd is not None:
            os.remove(self.lock_path)  # while still holding it: see acquire
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def write_run(path: Union[str, os.PathLike], record: RunRecord) -> None:
    """Write ``record`` to ``path`` atomically (temporary file in the same folder, then rename).

    The temporary name is unique to this write, so a concurrent writer's file is never touched;
    hold :class:`RunLock` to keep other processes from writing the same run.
    """
    with atomic_h5(path) as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["status"] = record.status
        f.attrs["epochs_done"] = record.epochs_done
        config = record.config.to_dict()
        f.attrs["config"] = json.dumps(config)
        for key, value in config.items():
            f.attrs[f"config.{key}"] = value
        for key, value in versions().items():
            f.attrs[f"version.{key}"] = value
        for key, value in record.attrs.items():
            f.attrs[key] = value
        metrics = f.create_group("metrics")
        for name in METRICS:
            values = np.asarray(record.metrics.get(name, []), dtype=np.float64)
            ds = metrics.create_dataset(name, data=values, maxshape=(None,), chunks=(256,))
            ds.attrs["description"] = METRIC_HELP[name]
        if record.train is not None:
            f["data/train"] = record.train
            f["data/test"] = record.test
        for group, params in (("params/initial", record.params_initial),
                              ("params/final", record.params_final)):
            for name, value in params.items():
                f[f"{group}/{name}"] = value
        if record.checkpoint is not None:
            ck = record.checkpoint
            g = f.create_group("checkpoint")
            g["theta"] = ck.theta
            for name, value in ck.optimizer_arrays.items():
                g[f"optimizer/{name}"] = value
            g.attrs["epoch"] = ck.epoch
            g.attrs["optimizer_step"] = ck.optimizer_step
            g.attrs["rng_state"] = json.dumps(ck.rng_state)


@contextmanager
def atomic_h5(path):
    """An HDF5 file open for writing that appears at ``path`` only when the block completes:
    it is written under a temporary name unique to this write in the same folder, synced, and
    renamed over ``path``; an error or interrupt in the block leaves ``path`` as it was."""
    # HDF5 builds the file in memory and Python writes its bytes: a failed write (a full disk)
    # is then an OSError here, not a broken HDF5 file id that crashes the process when freed
    f = _h5py().File(f"{os.path.basename(path)}-{secrets.token_hex(4)}", "w", driver="core",
                     backing_store=False)
    try:
        yield f
        f.flush()
        image = f.id.get_file_image()
    finally:
        f.close()
    write_bytes(path, image)


def read_run(path: Union[str, os.PathLike]) -> RunRecord:
    """Read a run file; :class:`RunFileError` with a one-line reason when it is not a readable run."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise RunFileError(f"no such run file: {path}")
    try:
        f = _h5py().File(path, "r")
    except OSError as err:
        if "unable to lock" in str(err).lower():
            raise RunFileError(f"run file is locked: another program has it open for writing: "
                               f"{path}") from None
        raise RunFileError(f"not a readable HDF5 file: {path}") from None
    with f:
        if f.attrs.get("format") != FORMAT:
            raise RunFileError(f"not a stablebptt run file (no format={FORMAT!r} attribute): {path}")
        try:
            values = json.loads(f.attrs["config"])
        except (KeyError, ValueError) as err:
            raise RunFileError(f"incomplete or damaged run file {path}: {err}") from None
        try:
            config = RunConfig.from_dict(values, legacy=int(f.attrs.get("format_version", 1)) < 2)
        except ConfigError as err:
            raise RunFileError(f"cannot read the configuration of {path}: {err}") from None
        try:
            record = RunRecord(config=config, status=str(f.attrs["status"]), path=path)
            epochs = int(f.attrs["epochs_done"])
            # a metric added after the file was written reads as NaN
            record.metrics = {name: f[f"metrics/{name}"][()] if name in f["metrics"]
                              else np.full(epochs, np.nan) for name in METRICS}
            record.train = f["data/train"][()]
            record.test = f["data/test"][()]
            for key, target in (("params/initial", record.params_initial),
                                ("params/final", record.params_final)):
                if key in f:
                    for name, ds in _walk(f[key]):
                        target[name] = ds[()]
            if "checkpoint" in f:
                g = f["checkpoint"]
                arrays = {name: ds[()] for name, ds in _walk(g["optimizer"])} if "optimizer" in g else {}
                record.checkpoint = Checkpoint(int(g.attrs["epoch"]), g["theta"][()],
                                               int(g.attrs["optimizer_step"]), arrays,
                                               json.loads(g.attrs["rng_state"]))
            record.attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        except (KeyError, ValueError, TypeError, ConfigError) as err:
            raise RunFileError(f"incomplete or damaged run file {path}: {err}") from None
    return record


def _walk(group, prefix=""):
    for name, item in group.items():
        if isinstance(item, _h5py().Group):
            yield from _walk(item, f"{prefix}{name}/")
        else:
            yield f"{prefix}{name}", item


def _h5py():
    """h5py, imported when a file is first read or written (the command line starts without it)."""
    import h5py

    return h5py
