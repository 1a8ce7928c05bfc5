"""The training loop of the reference: fixed-order batches, then train- and test-set losses."""

import os
import signal
import sys
import time
from contextlib import contextmanager

import numpy as np

from ..adjoint.modes import parse_mode
from .optim import clip_with_norms, make_optimizer, state_arrays
from .presets import build_task, initial_parameters
from .results import METRICS, Checkpoint, RunFileError, RunLock, RunRecord, read_run, write_run


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


class Trainer:
    """Trains one run and keeps its file up to date. Build with :meth:`new` or :meth:`resume`.

    A trainer holds its run file's :class:`RunLock` from creation until :meth:`close` (which
    :meth:`run` calls when it ends), so no other process writes the same run meanwhile.
    """

    def __init__(self, config, path, task, theta, opt_state, rng, metrics, params_initial, epoch,
                 status="running", lock=None):
        self.lock = lock
        self.status = status
        self.config = config
        self.path = path
        self.task = task
        self.theta = theta
        self.optimizer = make_optimizer(config.optimizer, config.lr, config.momentum)
        self.opt_state = opt_state
        self.rng = rng
        self.metrics = metrics
        self.params_initial = params_initial
        self.epoch = epoch
        self.mode = parse_mode(config.mode)

    @classmethod
    def new(cls, config, path, overwrite=False, threads=1):
        """A fresh run written to ``path``; :class:`RunFileError` if it exists (unless
        ``overwrite``) or another process is writing it. ``threads``: CPU threads per batch
        (any number gives the same results)."""
        path = os.fspath(path)
        lock = RunLock(path).acquire()
        try:
            if os.path.exists(path) and not overwrite:
                raise RunFileError(f"run file exists: {path} (continue it with --resume, or "
                                   "--overwrite)")
            task = build_task(config, threads=threads)
            theta, rng = initial_parameters(config, task.controller)
            optimizer = make_optimizer(config.optimizer, config.lr, config.momentum)
            initial = {k: v.copy() for k, v in task.controller.views(theta).items()}
            trainer = cls(config, path, task, theta, optimizer.init(theta), rng,
                          {name: [] for name in METRICS}, initial, 0, lock=lock)
            trainer.save("running")
        except BaseException:
            lock.release()
            raise
        return trainer

    @classmethod
    def resume(cls, path, epochs=None, device=None, threads=1):
        """Continue the run in ``path`` from its checkpoint (optionally to a new total of epochs,
        or on another device: a run trained on a GPU continues on the CPU, and back)."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise RunFileError(f"no such run file: {path}")
        lock = RunLock(path).acquire()
        try:
            return cls._from_record(read_run(path), path, epochs, device, threads, lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _from_record(cls, record, path, epochs, device, threads, lock):
        changes = {k: v for k, v in (("epochs", epochs), ("device", device)) if v is not None}
        config = record.config.replace(**changes).validated() if changes else record.config
        task = build_task(config, data=(record.train, record.test), threads=threads)  # stored sets
        ck = record.checkpoint
        optimizer = make_optimizer(config.optimizer, config.lr, config.momentum)
        theta = ck.theta.copy()
        opt_state = optimizer.init(theta)
        opt_state.step = ck.optimizer_step
        for name, value in ck.optimizer_arrays.items():
            setattr(opt_state, name, value.copy())
        rng = np.random.default_rng()
        rng.bit_generator.state = ck.rng_state
        metrics = {name: list(record.metrics[name][:ck.epoch]) for name in METRICS}
        return cls(config, path, task, theta, opt_state, rng, metrics, record.params_initial,
                   ck.epoch, record.status, lock=lock)

    def close(self):
        """Release the run file's lock (the file stays as last saved)."""
        if self.lock is not None:
            self.lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def finished(self):
        return self.epoch >= self.config.epochs

    def save(self, status, params_final=None, **attrs):
        """Write the run file; ``params_final`` (default: the current parameters) is stored as the
        run's final parameters, the checkpoint always holds the current state."""
        views = self.task.controller.views(self.theta if params_final is None else params_final)
        record = RunRecord(
            config=self.config, status=status, attrs=attrs,
            metrics={k: v[:self.epoch] for k, v in self.metrics.items()},
            train=self.task.train, test=self.task.test, params_initial=self.params_initial,
            params_final={k: v.copy() for k, v in views.items()},
            checkpoint=Checkpoint(self.epoch, self.theta.copy(), self.opt_state.step,
                                  state_arrays(self.opt_state), self.rng.bit_generator.state))
        write_run(self.path, record)

    def train_epoch(self, stop=None):
        """One epoch: an update per batch in fixed order, then the full train and test losses.

        ``stop()`` is asked before each update; when true, :class:`Interrupted` is raised with the
        epoch half done (:meth:`run` restores the state of the epoch's start).
        """
        cfg, problem = self.config, self.task.problem
        wall0 = time.perf_counter()
        losses, physics, sizes, cosines, update_time = [], [], [], [], 0.0
        norms, clipped_norms, clip_changed, kept = [], [], [], []
        from ..adjoint.engine import one_blas_thread  # (not at import: the command line loads this)

        # one BLAS setting for the whole epoch: made per call, it costs ~20 us a gradient
        with one_blas_thread():
            for batch in _batches(self.task.train, cfg.batch_size):
                if stop is not None and stop():
                    raise Interrupted(self.path)
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

    def run(self, quiet=False, on_epoch=None, stop=None):
        """Train to ``config.epochs``, checkpointing every ``checkpoint_every`` epochs and at the end.

        A NaN or inf in a loss or in the gradient stops the run: its file keeps the epoch's metrics
        and the last finite parameters as ``params/final``, is marked ``diverged`` (attribute
        ``diverged_epoch``), and :class:`Diverged` is raised. ``on_epoch(epoch, values)`` is called
        after every epoch (progress reporting). ``stop()`` is asked between batch updates: when it
        returns true, the epoch in progress is dropped, every completed epoch is checkpointed and
        :class:`Interrupted` is raised, so a resumed run continues exactly.
        """
        try:
            return self._run(quiet, on_epoch, stop)
        finally:
            self.close()

    def _run(self, quiet, on_epoch, stop):
        progress = Progress(self.config.epochs, os.path.basename(self.path), quiet)
        while not self.finished:
            before = self._snapshot()
            try:
                values = self.train_epoch(stop)
            except Interrupted:
                self._restore(before)
                self.save("running")
                raise Interrupted(f"{self.path}: stopped; epoch {self.epoch} of "
                                  f"{self.config.epochs} is kept") from None
            if not all(np.isfinite(values[k]) for k in DIVERGENCE_METRICS):
                self.save("diverged", params_final=before[0], diverged_epoch=self.epoch,
                          params_final_epoch=self.epoch - 1)
                raise Diverged(f"{self.path}: diverged at epoch {self.epoch} "
                               f"(loss {values['batch_loss']}, gradient size {values['grad_size']})")
            if self.epoch % self.config.checkpoint_every == 0 and not self.finished:
                self.save("running")
            progress.update(self.epoch, f"test loss {values['test_loss']:.4g}")
            if on_epoch is not None:
                on_epoch(self.epoch, values)
        self.save("finished")
        return self.metrics

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
