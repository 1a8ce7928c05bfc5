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
    """Read and validate a run file; :class:`RunFileError` names the file and its first problem.

    Everything in :data:`LAYOUT` is checked before the record is returned (types, dtypes, shapes,
    lengths, finite values, the configuration's settings, a format version this release knows),
    so code that uses a record never meets a value the format does not allow. Whether the data
    and parameters fit the task's simulator and controller is checked where those are built
    (:func:`~stablebptt.train.build.record_task`).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise RunFileError(f"no such run file: {path}")
    if os.path.isdir(path):
        raise RunFileError(f"{path} is a folder, not a run file")
    try:
        f = _h5py().File(path, "r")
    except OSError as err:
        if "unable to lock" in str(err).lower():
            raise RunFileError(f"run file is locked: another program has it open for writing: "
                               f"{path}") from None
        raise RunFileError(f"not a readable HDF5 file: {path}") from None
    with f:
        if _text(f.attrs.get("format")) != FORMAT:
            raise RunFileError(f"not a stablebptt run file (no format={FORMAT!r} attribute): {path}")
        try:
            return _read_valid(f, path)
        except _Invalid as why:
            raise RunFileError(f"damaged run file {path}: {why}") from None
        except (OSError, KeyError, ValueError, TypeError) as err:  # HDF5 could not read a part
            raise RunFileError(f"damaged run file {path}: cannot read it ({err})") from None


STATUSES = ("running", "finished", "diverged")

# What a valid run file holds (format versions 1 and 2), as read_run checks it; docs/run-files.md
# shows the same table. A missing metric (one added after the file was written) reads as NaN.
LAYOUT = (
    ("format_version", "attribute", "integer 1..FORMAT_VERSION (absent: 1)"),
    ("status", "attribute", "one of " + ", ".join(STATUSES)),
    ("epochs_done", "attribute", "integer >= 0"),
    ("config", "attribute", "JSON object of valid settings of the file's task"),
    ("metrics/NAME", "dataset", "real numbers, shape (epochs_done,)"),
    ("data/train, data/test", "dataset", "finite floats, shape (n >= 1, S), S the same for both"),
    ("params/initial/LAYER, params/final/LAYER", "dataset", "finite floats, the same layers and "
                                                           "shapes in both groups"),
    ("checkpoint/theta", "dataset", "floats of the config's dtype, shape (P,), P the number of "
                                    "parameters in params/initial; finite unless status is "
                                    "diverged"),
    ("checkpoint/optimizer/NAME", "dataset", "floats of theta's dtype and shape"),
    ("checkpoint epoch", "attribute", "integer 0..epochs_done"),
    ("checkpoint optimizer_step", "attribute", "integer >= 0"),
    ("checkpoint rng_state", "attribute", "JSON state of a numpy PCG64 bit generator"),
)


class _Invalid(Exception):
    """What is wrong with a run file's contents (read_run adds the file's name)."""


def _read_valid(f, path):
    version = _int_attr(f.attrs, "format_version", default=1)
    if version > FORMAT_VERSION or version < 1:
        from .. import __version__
        raise RunFileError(f"{path} is in run-file format version {version}; stablebptt "
                           f"{__version__} reads versions 1 to {FORMAT_VERSION} (a newer "
                           f"stablebptt wrote it: upgrade to read it)")
    status = _text(f.attrs.get("status"))
    if status not in STATUSES:
        raise _Invalid(f"status {status!r} is not one of {', '.join(STATUSES)}")
    epochs = _int_attr(f.attrs, "epochs_done")
    if epochs < 0:
        raise _Invalid(f"epochs_done={epochs} is negative")
    try:
        values = json.loads(_text(f.attrs.get("config")) or "")
    except (ValueError, TypeError):
        raise _Invalid("the config attribute is missing or not JSON") from None
    if not isinstance(values, dict):
        raise _Invalid("the config attribute is not a JSON object")
    try:
        config = RunConfig.from_dict(values, legacy=version < 2).validated()
    except (ConfigError, TypeError) as err:
        raise _Invalid(f"its configuration: {err}") from None
    record = RunRecord(config=config, status=status, path=path)
    if not isinstance(f.get("metrics"), _h5py().Group):
        raise _Invalid("it has no metrics group")
    record.metrics = {name: _array(f, f"metrics/{name}", "fiu", ndim=1, length=epochs)
                      if name in f["metrics"] else np.full(epochs, np.nan) for name in METRICS}
    record.train = _array(f, "data/train", "f", ndim=2, finite=True)
    record.test = _array(f, "data/test", "f", ndim=2, finite=True)
    for part in (record.train, record.test):
        if len(part) == 0:
            raise _Invalid("a data set is empty")
    if record.train.shape[1] != record.test.shape[1]:
        raise _Invalid(f"data/train has {record.train.shape[1]} state components, data/test "
                       f"{record.test.shape[1]}")
    for key, target in (("params/initial", record.params_initial),
                        ("params/final", record.params_final)):
        if not isinstance(f.get(key), _h5py().Group):
            raise _Invalid(f"it has no {key} group")
        for name, _ in _walk(f[key]):
            target[name] = _array(f, f"{key}/{name}", "f", finite=True)
    shapes = {which: {name: value.shape for name, value in params.items()}
              for which, params in (("initial", record.params_initial),
                                    ("final", record.params_final))}
    if shapes["initial"] != shapes["final"]:
        raise _Invalid("params/initial and params/final have different layers or shapes")
    if not isinstance(f.get("checkpoint"), _h5py().Group):
        raise _Invalid("it has no checkpoint group")
    record.checkpoint = _checkpoint(f["checkpoint"], f, config, status, epochs)
    n_params = sum(value.size for value in record.params_initial.values())
    if record.checkpoint.theta.size != n_params:
        raise _Invalid(f"checkpoint/theta has {record.checkpoint.theta.size} parameters, "
                       f"params/initial {n_params} (a checkpoint of another run?)")
    record.attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
    return record


def _checkpoint(g, f, config, status, epochs):
    theta = _array(f, "checkpoint/theta", "f", ndim=1, finite=status != "diverged")
    if theta.dtype != np.dtype(config.dtype):
        raise _Invalid(f"checkpoint/theta is {theta.dtype} but the run's dtype is {config.dtype}")
    arrays = {}
    if "optimizer" in g:
        for name, _ in _walk(g["optimizer"]):
            value = _array(f, f"checkpoint/optimizer/{name}", "f")
            if value.shape != theta.shape or value.dtype != theta.dtype:
                raise _Invalid(f"checkpoint/optimizer/{name} is {value.dtype} {value.shape}, "
                               f"theta {theta.dtype} {theta.shape}")
            arrays[name] = value
    epoch = _int_attr(g.attrs, "epoch", where="checkpoint ")
    if not 0 <= epoch <= epochs:
        raise _Invalid(f"the checkpoint's epoch {epoch} is outside 0..{epochs} (epochs_done)")
    step = _int_attr(g.attrs, "optimizer_step", where="checkpoint ")
    if step < 0:
        raise _Invalid(f"the checkpoint's optimizer_step {step} is negative")
    try:
        rng_state = json.loads(_text(g.attrs.get("rng_state")) or "")
        np.random.default_rng().bit_generator.state = rng_state  # what a resume will do
    except (ValueError, TypeError, KeyError):
        raise _Invalid("the checkpoint's rng_state is not a PCG64 generator state") from None
    return Checkpoint(epoch, theta, step, arrays, rng_state)


_KIND_WORDS = {"f": "floats", "fiu": "real numbers"}


def _array(f, key, kinds, ndim=None, length=None, finite=False):
    """The dataset ``key`` as an array after checking its dtype kind, rank, length and values."""
    ds = f.get(key)
    if not isinstance(ds, _h5py().Dataset):
        raise _Invalid(f"{key} is missing")
    if ds.dtype.kind not in kinds:
        raise _Invalid(f"{key} holds {ds.dtype}, not {_KIND_WORDS[kinds]}")
    if ndim is not None and ds.ndim != ndim:
        raise _Invalid(f"{key} has shape {ds.shape}, expected {ndim} dimension(s)")
    if length is not None and len(ds) != length:
        raise _Invalid(f"{key} has {len(ds)} values but epochs_done is {length}")
    value = ds[()]
    if "i" in kinds and value.dtype.kind != "f":
        value = value.astype(np.float64)
    if finite and not np.all(np.isfinite(value)):
        raise _Invalid(f"{key} holds NaN or infinite values")
    return value


def _int_attr(attrs, name, default=None, where=""):
    value = attrs.get(name, default)
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise _Invalid(f"the {where}{name} attribute is {value!r}, not an integer")
    return int(value)


def _text(value):
    """An HDF5 string attribute as ``str`` (h5py gives bytes for fixed-length strings)."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


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
