"""Sweeps: the reference's run grids, run in parallel processes or on a Dask cluster.

A sweep is a folder of run files named from their settings. Running a sweep again skips finished
(and diverged) runs and resumes unfinished ones from their checkpoints, so an interrupted sweep
is continued by repeating its command. Every run is deterministic, so results do not depend on
the number of workers or on where a run executes.

Workers are child processes that ignore Ctrl-C: the parent turns the first Ctrl-C into a stop
request (queued runs are dropped, running ones checkpoint their completed epochs and return) and
a second one into termination of the workers. Workers die with the parent, however it dies.
"""

import ctypes
import itertools
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

from .config import NOT_IDENTITY, ConfigError, RunConfig
from .build import preset
from .runfile import RunFileError, RunLock, read_run
from .trainer import stop_requests

def expand_grid(task: str, axes: Optional[Dict[str, Sequence]] = None,
                seeds: Sequence[Optional[int]] = (None,), **fixed) -> List[RunConfig]:
    """Configs of a sweep: the task's grid (``Task.grid``; the paper's tasks: the reference's
    Runs/01/01.sh, in its loop order) with ``axes`` ({name: values}) replacing or adding axes,
    ``fixed`` settings applied to every run, and one run per seed (None: the preset's seed)."""
    from ..tasks import TaskError, get_task

    try:
        grid = dict(get_task(task).grid)
    except TaskError as err:
        raise ConfigError(str(err)) from None
    for name in set(fixed) & set(grid):  # a fixed value of a grid axis narrows it to that value
        grid[name] = [fixed.pop(name)]
    for name, values in (axes or {}).items():
        if not values:
            raise ConfigError(f"empty list of values for {name}")
        grid[name] = list(values)
    names = list(grid)
    configs = []
    for values in itertools.product(*(grid[n] for n in names), list(seeds)):
        settings = dict(zip(names, values[:-1]), **fixed)
        if values[-1] is not None:
            settings["seed"] = values[-1]
        configs.append(preset(task, **settings))
    if len({c.run_name() for c in configs}) != len(configs):
        raise ConfigError("the sweep has duplicate runs (the same settings twice)")
    return configs


@dataclass
class RunOutcome:
    name: str
    status: str  # finished, skipped, diverged, failed, interrupted, not started
    message: str = ""
    final_test_loss: float = float("nan")


# Set in each worker process by _init_worker: where epochs are reported, and the stop request.
_worker_progress = None
_worker_stop = None


def _init_worker(progress, stop, parent_pid):
    """Worker set-up: report to ``progress``, stop when ``stop`` is set, ignore Ctrl-C (the parent
    decides), end cleanly on SIGTERM, and die with the parent."""
    global _worker_progress, _worker_stop
    _worker_progress, _worker_stop = progress, stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _die_with_parent(parent_pid)


_terminating = False  # SIGTERM came: stop the run in progress at its next update, then exit
_running = False


def _exit_on_sigterm(signum, frame):
    """SIGTERM in a worker: an idle worker exits at once; a run in progress stops at its next
    update like an interrupted one (completed epochs saved, lock released), then the worker
    exits (see :func:`run_one`). No exception is raised here: one raised inside library code
    can be swallowed, and the worker would train on as an orphan."""
    global _terminating
    _terminating = True
    # progress not yet sent is dropped: waiting to send it to a parent that is gone would keep
    # this process alive for ever
    if _worker_progress is not None:
        _worker_progress.cancel_join_thread()
    if not _running:
        os._exit(128 + signum)


def _die_with_parent(parent_pid):
    """SIGTERM to this process when ``parent_pid`` ends: the kernel's parent-death signal on
    Linux, a watchdog thread elsewhere. Either way no worker outlives a killed sweep."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(1, signal.SIGTERM, 0, 0, 0) == 0:  # PR_SET_PDEATHSIG
                if os.getppid() != parent_pid:  # the parent died before prctl took effect
                    os.kill(os.getpid(), signal.SIGTERM)
                return
        except (OSError, AttributeError):
            pass

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


def run_one(config_values, folder, progress=None, stop=None):
    """Run (or skip, or resume) one run of a sweep in this process; never raises.

    ``progress`` (a queue) receives ``(name, epoch, epochs)`` after every epoch; ``stop`` (an
    event) ends the run at the next update with its completed epochs saved. In worker processes
    both default to the ones the worker was started with.
    """
    global _running
    progress = _worker_progress if progress is None else progress
    stop = _worker_stop if stop is None else stop
    if stop is not None and stop.is_set():
        return _not_started(config_values)
    _running = True
    try:
        return _run_one(config_values, folder, progress,
                        lambda: _terminating or (stop is not None and stop.is_set()))
    finally:
        _running = False
        if _terminating:
            os._exit(128 + signal.SIGTERM)


def _run_one(config_values, folder, progress, stop):
    from ..tasks import load_task
    from .trainer import Diverged, Interrupted, Trainer

    if config_values.get("task_source"):  # the task the sweep's user named, in a fresh worker
        load_task(config_values["task_source"])
    config = RunConfig.from_dict(config_values)
    name = config.run_name()
    path = os.path.join(folder, name + ".h5")
    try:
        if os.path.exists(path):
            lock = RunLock(path).acquire()  # held from the one read to the end of the run
            try:
                record = read_run(path)
                differ = _differences(record.config, config)
                if differ:
                    lock.release()
                    return RunOutcome(name, "failed", f"{path} exists with other settings ({differ})")
                done = record.checkpoint.epoch if record.checkpoint else 0
                if record.status == "diverged" or (record.status == "finished"
                                                   and done >= config.epochs):
                    lock.release()
                    return RunOutcome(name, "skipped", f"already {record.status}",
                                      _last(record.metrics["test_loss"]))
                # unfinished, or extended
                trainer = Trainer.from_record(record, config.epochs, path=path, lock=lock)
            except BaseException:
                lock.release()
                raise
        else:
            trainer = Trainer.new(config, path)

        def report(epoch, values):
            if progress is not None:
                progress.put((name, epoch, config.epochs))

        metrics = trainer.run(quiet=True, on_epoch=report, stop=stop)
        return RunOutcome(name, "finished", "", metrics["test_loss"][-1])
    except Diverged as err:
        return RunOutcome(name, "diverged", str(err))
    except Interrupted as err:
        return RunOutcome(name, "interrupted", str(err))
    except (RunFileError, ConfigError, OSError, ValueError, FloatingPointError) as err:
        return RunOutcome(name, "failed", f"{type(err).__name__}: {err}")
    except Exception as err:  # a bug in one run must not stop the sweep: report it by name
        return RunOutcome(name, "failed", f"{type(err).__name__}: {err}")


def _differences(stored, wanted):
    """Settings in which a stored run differs from the wanted one (its length may grow)."""
    a, b = stored.to_dict(), wanted.to_dict()
    return ", ".join(f"{k}={a[k]!r} not {b.get(k)!r}" for k in a
                     if k not in NOT_IDENTITY and a[k] != b.get(k))


def _last(values):
    return float(values[-1]) if len(values) else float("nan")


class SweepDisplay:
    """One status line for the sweep (runs done, failures, ETA) plus the epochs of running runs.

    On a terminal the line is redrawn in place; otherwise (a log file) it is written as a new line
    every ``log_every`` seconds, so a long sweep shows steady progress between finished runs.
    """

    def __init__(self, total, quiet=False, stream=None, log_every=30.0):
        self.total, self.done, self.failed, self.quiet = total, 0, 0, quiet
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self.log_every = log_every
        self._last_log = self.start
        self.running = {}

    def epoch(self, name, epoch, total):
        self.running[name] = (epoch, total)
        if self.tty:
            self._draw()

    def tick(self):
        """Called regularly while waiting: a progress line when one is due (not on a terminal)."""
        now = time.perf_counter()
        if self.quiet or self.tty or now - self._last_log < self.log_every:
            return
        self._last_log = now
        self.stream.write(self._status() + "\n")
        self.stream.flush()

    def finished(self, outcome):
        self.running.pop(outcome.name, None)
        self.done += 1
        self.failed += outcome.status in ("failed", "diverged")
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r" + " " * 120 + "\r")
        finite = outcome.final_test_loss == outcome.final_test_loss  # not NaN
        loss = f", final test loss {outcome.final_test_loss:.5g}" if finite else ""
        self.stream.write(f"[{self.done}/{self.total}] {outcome.name}: {outcome.status}"
                          f"{' (' + outcome.message + ')' if outcome.message else ''}{loss}\n")
        if self.tty:
            self._draw()
        self.stream.flush()

    def _status(self):
        elapsed = time.perf_counter() - self.start
        eta = f"{elapsed / self.done * (self.total - self.done):.0f}s" if self.done else "?"
        runs = " | ".join(f"{_short(n)} {e}/{t}" for n, (e, t) in list(self.running.items())[:3])
        return (f"sweep {self.done}/{self.total} done, {self.failed} failed, {elapsed:.0f}s, "
                f"ETA {eta} | {runs}")

    def _draw(self):
        if self.quiet:
            return
        self.stream.write("\r" + self._status()[:160].ljust(120))
        self.stream.flush()


def _short(name, width=36):
    """A run name cut in the middle: runs of a sweep share their beginning, not their end."""
    return name if len(name) <= width else name[:14] + ".." + name[-(width - 16):]


def available_cores():
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def run_sweep(configs: Sequence[RunConfig], folder: Union[str, os.PathLike],
              workers: Optional[int] = None, scheduler: Optional[str] = None, quiet: bool = False,
              log_every: float = 30.0) -> list:
    """Run every config into ``folder``; returns the outcomes in the order of ``configs``.

    ``workers`` processes on this machine (default: the cores), or, with ``scheduler`` (a Dask
    address such as ``tcp://host:8786``), one Dask task per run on that cluster; the folder must
    then be shared with the workers. A Ctrl-C stops the sweep: runs not started are reported as
    ``not started``, running ones as ``interrupted`` (their files keep every completed epoch).
    """
    os.makedirs(folder, exist_ok=True)
    display = SweepDisplay(len(configs), quiet, log_every=log_every)
    values = [c.to_dict() for c in configs]
    if scheduler is not None:
        outcomes = _run_on_dask(values, folder, scheduler, display)
    else:
        outcomes = _run_in_processes(values, folder, workers or available_cores(), display)
    order = {c.run_name(): i for i, c in enumerate(configs)}
    return sorted(outcomes, key=lambda o: order[o.name])


def _run_in_processes(values, folder, workers, display):
    # spawn, not fork: the parent may hold BLAS threads, which do not survive a fork
    context = multiprocessing.get_context("spawn")
    progress, stop = context.Queue(), context.Event()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                               initargs=(progress, stop, os.getpid()))
    futures = {pool.submit(run_one, v, folder): v for v in values}
    outcomes = []
    message = "stopping the sweep: queued runs are dropped, running runs save their epochs"
    try:
        with stop_requests(message) as requested:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                _drain(progress, display)
                display.tick()
                for future in done:
                    outcome = _outcome(future, futures[future])
                    outcomes.append(outcome)
                    display.finished(outcome)
                if requested() and not stop.is_set():
                    stop.set()
                    for future in pending:
                        future.cancel()
    except KeyboardInterrupt:  # the second Ctrl-C: stop the running runs now
        # (the executor has no public way to end its workers; without this its exit handler
        # would wait for them)
        for process in list(pool._processes.values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return outcomes


def _outcome(future, config_values):
    """The outcome of a finished future; a cancelled one (``wait`` counts it as done) was never
    started."""
    return _not_started(config_values) if future.cancelled() else future.result()


def _not_started(config_values):
    return RunOutcome(RunConfig.from_dict(config_values).run_name(), "not started")


def _drain(progress, display):
    while True:
        try:
            display.epoch(*progress.get_nowait())
        except queue.Empty:
            return


def _run_on_dask(values, folder, scheduler, display):
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        raise ConfigError("--scheduler needs Dask: pip install 'stablebptt[cluster]'") from None
    try:
        client = Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as err:
        raise ConfigError(f"cannot reach the Dask scheduler {scheduler!r}: {err}") from None
    with client:
        futures = client.map(run_one, values, folder=os.path.abspath(folder), pure=False)
        outcomes = []
        try:
            for future in as_completed(futures):
                outcome = future.result()
                outcomes.append(outcome)
                display.finished(outcome)
        except KeyboardInterrupt:
            client.cancel(futures)
            raise
        return outcomes
