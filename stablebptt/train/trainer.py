"""A run that keeps its run file up to date: the command line's and the sweeps' trainer.

:class:`Trainer` is a :class:`~stablebptt.train.loop.Run` that holds its file's lock from
creation until :meth:`Trainer.close`, writes the file at every checkpoint and when training ends
(finished, diverged or interrupted), and continues a file exactly (:meth:`Trainer.resume`).
"""

import os
from typing import Optional, Union

from .build import build_task, initial_parameters  # noqa: F401 (names of the old experiments.training)
from .config import RunConfig
from .loop import (DIVERGENCE_METRICS, Diverged, Interrupted, Progress, ProgressFn, Run,  # noqa: F401
                   _batches, stop_requests)
from .runfile import RunFileError, RunLock, read_run, write_run


class Trainer(Run):
    """Trains one run and keeps its file up to date. Build with :meth:`new` or :meth:`resume`.

    A trainer holds its run file's :class:`RunLock` from creation until :meth:`close` (which
    :meth:`run` calls when it ends), so no other process writes the same run meanwhile.
    """

    def __init__(self, *args, path, lock=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.path = path
        self.lock = lock

    @classmethod
    def new(cls, config: RunConfig, path: Union[str, os.PathLike], overwrite: bool = False,
            threads: int = 1) -> "Trainer":
        """A fresh run written to ``path``; :class:`RunFileError` if it exists (unless
        ``overwrite``) or another process is writing it. ``threads``: CPU threads per batch
        (any number gives the same results)."""
        path = os.fspath(path)
        lock = RunLock(path).acquire()
        try:
            if os.path.exists(path) and not overwrite:
                raise RunFileError(f"run file exists: {path} (continue it with --resume, or "
                                   "--overwrite)")
            trainer = super().new(config, threads=threads, path=path, lock=lock)
            trainer.write("running")
        except BaseException:
            lock.release()
            raise
        return trainer

    @classmethod
    def resume(cls, path: Union[str, os.PathLike], epochs: Optional[int] = None,
               device: Optional[str] = None, threads: int = 1) -> "Trainer":
        """Continue the run in ``path`` from its checkpoint (optionally to a new total of epochs,
        or on another device: a run trained on a GPU continues on the CPU, and back)."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise RunFileError(f"no such run file: {path}")
        lock = RunLock(path).acquire()
        try:
            return cls.from_record(read_run(path), epochs, device, threads, path=path, lock=lock)
        except BaseException:
            lock.release()
            raise

    def close(self):
        """Release the run file's lock (the file stays as last saved)."""
        if self.lock is not None:
            self.lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def write(self, status: str = "running", params_final=None, **attrs):
        """Write the run file; ``params_final`` (default: the current parameters) is stored as the
        run's final parameters, the checkpoint always holds the current state."""
        write_run(self.path, self.record(status, params_final, **attrs))

    def _keep(self, status, params_final=None, **attrs):
        super()._keep(status, params_final, **attrs)
        self.write(status)

    def run(self, quiet: bool = False, on_epoch: Optional[ProgressFn] = None, stop=None) -> dict:
        """Train to ``config.epochs`` (:meth:`Run.fit`), writing the file every
        ``checkpoint_every`` epochs and at the end, and release the lock; returns the metrics.

        A diverged run's file keeps the epoch's metrics and the last finite parameters as
        ``params/final``, is marked ``diverged`` (attribute ``diverged_epoch``), and
        :class:`Diverged` is raised; an interrupted one (``stop()`` true between updates) keeps
        every completed epoch and raises :class:`Interrupted`, so a resumed run continues exactly.
        """
        try:
            self.fit(progress_fn=on_epoch, quiet=quiet, stop=stop)
            return self.metrics
        finally:
            self.close()


def resume(path: Union[str, os.PathLike], epochs: Optional[int] = None,
           progress_fn: Optional[ProgressFn] = None, quiet: bool = False,
           threads: int = 1) -> Trainer:
    """Continue the run file ``path`` to its ``epochs`` (or a new total), writing it as the
    command line does (``stablebptt run --resume``); returns the finished :class:`Trainer`."""
    trainer = Trainer.resume(path, epochs=epochs, threads=threads)
    trainer.run(quiet=quiet, on_epoch=progress_fn)
    return trainer
