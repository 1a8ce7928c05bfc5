"""Training in memory: a :class:`Run` holds everything a run is (config, problem, data,
parameters, optimiser state, RNG, metrics) and trains epoch by epoch without any file; :func:`fit`
builds one from a preset and trains it. A run is written to a run file only when asked
(:meth:`Run.save`); :class:`~stablebptt.train.trainer.Trainer` is the run that keeps its file up
to date, with a lock and checkpoints, as the command line trains.

The loop is the reference's: batches in a fixed order, one optimiser update each, then the loss
of the whole train and test sets.
"""

import os
import signal
import sys
import time
import warnings
from contextlib import contextmanager
from typing import Callable, Dict, Optional, Union

import numpy as np

from ..adjoint.modes import parse_mode
from .build import build_task, initial_parameters, preset, record_task
from .config import RunConfig
from .optim import clip_with_norms, make_optimizer, state_arrays
from .runfile import METRICS, Checkpoint, RunFileError, RunLock, RunRecord, read_run, write_run

ProgressFn = Callable[[int, Dict[str, float]], None]


DIVERGENCE_METRICS = ("batch_loss", "train_loss", "test_loss", "grad_size")


class Diverged(RuntimeError):
    """A run whose loss or gradient became NaN or infinite."""


class Interrupted(RuntimeError):
    """A run stopped on request; its file holds every completed epoch and resumes exactly."""


@contextmanager
def stop_requests(message):
    """A callable that turns true after the first Ctrl-C (SIGINT), which also logs ``message``;
    a second Ctrl-C interrupts at once. Outside the main thread it never turns true. A Ctrl-C
    that the previous handler recorded but Python dropped (its ``requested`` attribute, see
    ``cli._interrupt``) is a KeyboardInterrupt on entry."""
    requested = []

    def handler(signum, frame):
        if requested:
            raise KeyboardInterrupt
        requested.append(signum)
        print(f"stablebptt: {message} (Ctrl-C again to stop at once)", file=sys.stderr)

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        yield lambda: False
        return
    try:
        if getattr(previous, "requested", False):
            raise KeyboardInterrupt
        yield lambda: bool(requested)
    finally:
        signal.signal(signal.SIGINT, previous)


def _batches(data, batch_size):
    """Consecutive batches in a fixed order, the last one possibly smaller (as ``tf.data.batch``)."""
    return [data[i:i + batch_size] for i in range(0, len(data), batch_size)]


class Progress:
    """A one-line progress display on stderr (redrawn in place on a terminal)."""

    def __init__(self, total, label, quiet=False, stream=None):
        self.total, self.label, self.quiet = total, label, quiet
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self._last_line = -1

    def update(self, done, text=""):
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / done * (self.total - done) if done else 0.0
        line = f"{self.label} {done}/{self.total} [{elapsed:.0f}s<{eta:.0f}s] {text}"
        if self.tty:
            self.stream.write("\r" + line.ljust(100)[:120])
            if done == self.total:
                self.stream.write("\n")
        else:
            decile = done * 10 // self.total
            if decile == self._last_line and done != self.total:
                return
            self._last_line = decile
            self.stream.write(line + "\n")
        self.stream.flush()


class Run:
    """One run in memory: build it with :meth:`new` (or :func:`fit`), continue one from a run
    file with :meth:`load`, train it with :meth:`fit`, write it with :meth:`save`.

    It reads like a run file's record: ``config``, ``metrics`` (name -> list, one value per
    epoch), ``status``, ``epochs_done``, ``params_initial`` and ``params_final`` (Keras layout),
    ``train`` and ``test`` (the data), so every figure function takes a run or a record alike.
    """

    path = ""  # an in-memory run has no file

    def __init__(self, config, task, theta, opt_state, rng, metrics, params_initial, epoch,
                 status="running"):
        self.status = status
        self.attrs = {}
        self.config = config
        self.task = task
        self.theta = theta
        self.optimizer = make_optimizer(config.optimizer, config.lr, config.momentum)
        self.opt_state = opt_state
        self.rng = rng
        self.metrics = metrics
        self.params_initial = params_initial
        self.epoch = epoch
        self.mode = parse_mode(config.mode)
        self._final_theta = None  # the last finite parameters of a diverged run

    @classmethod
    def new(cls, config: RunConfig, threads: int = 1, **extra) -> "Run":
        """A fresh run of a validated ``config`` (see :func:`~stablebptt.preset`): data drawn and
        parameters initialised from its seed. ``threads``: CPU threads per batch (any number
        gives the same results)."""
        task = build_task(config, threads=threads)
        theta, rng = initial_parameters(config, task.controller)
        initial = {k: v.copy() for k, v in task.controller.views(theta).items()}
        run = cls(config, task, theta, None, rng, {name: [] for name in METRICS}, initial, 0,
                  **extra)
        run.opt_state = run.optimizer.init(theta)
        return run

    @classmethod
    def from_record(cls, record: RunRecord, epochs: Optional[int] = None,
                    device: Optional[str] = None, threads: int = 1, **extra) -> "Run":
        """The run a file's record continues from its checkpoint (optionally to a new total of
        ``epochs``, or on another ``device``), with the stored data sets."""
        changes = {k: v for k, v in (("epochs", epochs), ("device", device)) if v is not None}
        config = record.config.replace(**changes).validated() if changes else record.config
        ck = record.checkpoint
        if ck is None:
            raise RunFileError(f"{record.path or 'the run'} has no checkpoint to continue from")
        task = record_task(record, config, threads=threads)
        rng = np.random.default_rng()
        rng.bit_generator.state = ck.rng_state
        metrics = {name: list(record.metrics[name][:ck.epoch]) for name in METRICS}
        run = cls(config, task, ck.theta.copy(), None, rng, metrics, record.params_initial,
                  ck.epoch, record.status, **extra)
        run.opt_state = run.optimizer.init(run.theta)
        run.opt_state.step = ck.optimizer_step
        for name, value in ck.optimizer_arrays.items():
            setattr(run.opt_state, name, value.copy())
        return run

    @classmethod
    def load(cls, path: Union[str, os.PathLike], epochs: Optional[int] = None,
             threads: int = 1) -> "Run":
        """A run file's run in memory, at its checkpoint: :meth:`fit` continues it exactly
        (the file is not written unless :meth:`save` is called)."""
        return cls.from_record(read_run(path), epochs=epochs, device="cpu", threads=threads)

    @property
    def label(self) -> str:
        return os.path.basename(self.path) if self.path else f"{self.config.task} {self.config.mode}"

    @property
    def finished(self) -> bool:
        return self.epoch >= self.config.epochs

    @property
    def epochs_done(self) -> int:
        return self.epoch

    @property
    def controller(self):
        return self.task.controller

    @property
    def train(self) -> np.ndarray:
        """The training set's initial states."""
        return self.task.train

    @property
    def test(self) -> np.ndarray:
        return self.task.test

    @property
    def params(self) -> Dict[str, np.ndarray]:
        """The current parameters in Keras layout (views of the flat vector ``theta``)."""
        return self.task.controller.views(self.theta)

    @property
    def params_final(self) -> Dict[str, np.ndarray]:
        """The parameters a run file stores as final: the current ones, or a diverged run's
        last finite ones."""
        theta = self.theta if self._final_theta is None else self._final_theta
        return {k: v.copy() for k, v in self.task.controller.views(theta).items()}

    def record(self, status: Optional[str] = None, params_final=None, **attrs) -> RunRecord:
        """The run as a run file's contents; the checkpoint always holds the current state."""
        views = (self.params_final if params_final is None
                 else self.task.controller.views(params_final))
        return RunRecord(
            config=self.config, status=status or self.status, attrs={**self.attrs, **attrs},
            metrics={k: v[:self.epoch] for k, v in self.metrics.items()},
            train=self.task.train, test=self.task.test, params_initial=self.params_initial,
            params_final={k: v.copy() for k, v in views.items()},
            checkpoint=Checkpoint(self.epoch, self.theta.copy(), self.opt_state.step,
                                  state_arrays(self.opt_state), self.rng.bit_generator.state),
            path=self.path)

    def save(self, path: Union[str, os.PathLike] = "runs", overwrite: bool = False) -> str:
        """Write the run to a run file: ``path`` is a file (``.h5``) or a folder, where the file
        is named after the settings (:meth:`RunConfig.run_name`). The file resumes exactly
        (``stablebptt run --resume FILE`` or :func:`~stablebptt.resume`). Returns its path."""
        path = os.fspath(path)
        if not path.endswith(".h5"):
            os.makedirs(path, exist_ok=True)
            path = os.path.join(path, self.config.run_name() + ".h5")
        with RunLock(path):
            if os.path.exists(path) and not overwrite:
                raise RunFileError(f"run file exists: {path} (save(..., overwrite=True) replaces it)")
            write_run(path, self.record())
        return path

    def train_epoch(self, stop: Optional[Callable[[], bool]] = None) -> Dict[str, float]:
        """One epoch: an update per batch in fixed order, then the full train and test losses.

        ``stop()`` is asked before each update; when true, :class:`Interrupted` is raised with the
        epoch half done (:meth:`fit` restores the state of the epoch's start).
        """
        cfg, problem = self.config, self.task.problem
        wall0 = time.perf_counter()
        losses, physics, sizes, cosines, update_time = [], [], [], [], 0.0
        norms, clipped_norms, clip_changed, kept = [], [], [], []
        from ..adjoint.threads import one_blas_thread

        # one BLAS setting for the whole epoch: made per call, it costs ~20 us a gradient
        with one_blas_thread():
            for batch in _batches(self.task.train, cfg.batch_size):
                if stop is not None and stop():
                    raise Interrupted(self.path or self.label)
                t0 = time.perf_counter()
                result = problem.gradient(self.theta, batch, self.mode)
                # an overflow here is divergence, which run() detects from the metrics
                clipped, size, clipped_norm, changed = clip_with_norms(result.grad, cfg.clip,
                                                                       cfg.clip_value)
                self.optimizer.update(self.theta, clipped, self.opt_state)
                update_time += time.perf_counter() - t0
                sizes.append(size)
                norms.append(float(np.sqrt(size)))
                clipped_norms.append(clipped_norm)
                clip_changed.append(changed)
                losses.append(result.loss)
                physics.append(result.physics_loss)
                cosines.append(result.cosine)
                kept.append(result.kept_fraction)
            train_loss, train_physics = problem.losses(self.theta, self.task.train)
            test_loss, test_physics = problem.losses(self.theta, self.task.test)
        values = dict(
            batch_loss=float(np.mean(losses)), train_loss=train_loss, test_loss=test_loss,
            batch_physics_loss=float(np.mean(physics)), train_physics_loss=train_physics,
            test_physics_loss=test_physics, grad_size=float(np.mean(sizes)),
            cosine_similarity=float(np.mean(cosines)), epoch_time=update_time,
            wall_time=time.perf_counter() - wall0, grad_norm=float(np.mean(norms)),
            clipped_grad_norm=float(np.mean(clipped_norms)), clip_active=float(np.mean(clip_changed)),
            kept_fraction=float(np.mean(kept)))
        for name, value in values.items():
            self.metrics[name].append(value)
        self.epoch += 1
        return values

    def fit(self, epochs: Optional[int] = None, progress_fn: Optional[ProgressFn] = None,
              quiet: bool = False, stop: Optional[Callable[[], bool]] = None) -> "Run":
        """Train to ``config.epochs`` (or ``epochs`` more, extending the config).

        ``progress_fn(epoch, metrics)`` is called after every epoch with that epoch's values.
        ``stop()`` is asked between batch updates: when it returns true, the epoch in progress is
        dropped and :class:`Interrupted` is raised, so training continues exactly afterwards. A
        NaN or inf in a loss or the gradient stops the run: status ``diverged``, the last finite
        parameters kept as final, and :class:`Diverged` is raised.
        """
        if epochs is not None:
            self.config = self.config.replace(epochs=self.epoch + epochs).validated()
        progress = Progress(self.config.epochs, self.label, quiet)
        self.status = "running"
        while not self.finished:
            before = self._snapshot()
            try:
                values = self.train_epoch(stop)
            except Interrupted:
                self._restore(before)
                self._keep("running")
                raise Interrupted(f"{self.path or self.label}: stopped; epoch {self.epoch} of "
                                  f"{self.config.epochs} is kept") from None
            if not all(np.isfinite(values[k]) for k in DIVERGENCE_METRICS):
                self._keep("diverged", params_final=before[0], diverged_epoch=self.epoch,
                           params_final_epoch=self.epoch - 1)
                raise Diverged(f"{self.path or self.label}: diverged at epoch {self.epoch} "
                               f"(loss {values['batch_loss']}, gradient size {values['grad_size']})")
            if self.epoch % self.config.checkpoint_every == 0 and not self.finished:
                self._keep("running")
            progress.update(self.epoch, f"test loss {values['test_loss']:.4g}")
            if progress_fn is not None:
                progress_fn(self.epoch, values)
        self._keep("finished")
        return self

    def _keep(self, status, params_final=None, **attrs):
        """Record the state the loop reached (a file-backed run writes its file here)."""
        self.status = status
        self.attrs.update(attrs)
        if params_final is not None:
            self._final_theta = params_final.copy()

    def _snapshot(self):
        """Parameters and optimiser state at an epoch boundary (a few arrays of n_params)."""
        arrays = {k: v.copy() for k, v in state_arrays(self.opt_state).items()}
        return self.theta.copy(), self.opt_state.step, arrays

    def _restore(self, snapshot):
        theta, step, arrays = snapshot
        self.theta[:] = theta
        self.opt_state.step = step
        for name, value in arrays.items():
            getattr(self.opt_state, name)[:] = value


def fit(task: Union[str, RunConfig] = "cartpole", *, progress_fn: Optional[ProgressFn] = None,
        quiet: bool = False, threads: int = 1, **settings) -> Run:
    """Train a controller in memory and return its :class:`Run`.

    Parameters
    ----------
    task : a registered task (``"cartpole"``, ``"guidance"``, ``"quantum"``, ``"toy"``), an
        outside ``"module:Class"``, or a validated :class:`RunConfig`.
    progress_fn : called as ``progress_fn(epoch, metrics)`` after every epoch.
    quiet : no progress line on stderr.
    threads : CPU threads per batch (the results are the same for any number).
    **settings : the preset's settings to change, e.g. ``poles=3, mode="C", epochs=200``
        (:func:`~stablebptt.preset` checks them).

    Returns
    -------
    Run: its ``metrics``, parameters and ``status`` (``finished``; ``diverged`` at a NaN or inf,
    with a warning; ``running`` when Ctrl-C stopped it, which ``run.fit()`` continues).
    Nothing is written unless ``run.save(folder)`` is called.
    """
    config = task if isinstance(task, RunConfig) else preset(task, **settings)
    if isinstance(task, RunConfig) and settings:
        config = task.replace(**settings).validated()
    run = Run.new(config, threads=threads)
    run.task.problem.compile(config.dtype)
    try:
        with stop_requests("stopping after the current update") as stop:
            run.fit(progress_fn=progress_fn, quiet=quiet, stop=stop)
    except (Diverged, Interrupted) as err:
        warnings.warn(str(err), stacklevel=2)
    return run
