"""Sweeps: the reference's run grids, run in parallel processes or on a Dask cluster.

A sweep is a folder of run files named from their settings. Running a sweep again skips finished
(and diverged) runs and resumes unfinished ones from their checkpoints, so an interrupted sweep
is continued by repeating its command. Every run is deterministic, so results do not depend on
the number of workers or on where a run executes.
"""

import itertools
import multiprocessing
import os
import queue
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass

from .config import ConfigError, RunConfig
from .presets import preset
from .results import RunFileError, read_run

# The grids of the reference's Runs/01/01.sh scripts, in their loop order.
GRIDS = {
    "cartpole": {"poles": [1, 2, 3, 4], "mode": ["R", "M", "C", "S"], "clip": ["value", "norm", "none"]},
    "guidance": {"rho": [1.0, 0.1, 0.01, 0.001], "clip": ["value", "norm", "none"], "mode": ["R", "M", "C", "S"]},
    "quantum": {"target_state": [3, 4, 5], "clip": ["value", "norm", "none"], "mode": ["R", "M", "C", "S"]},
}


def expand_grid(task, axes=None, seeds=(None,), **fixed):
    """Configs of a sweep: the task's grid with ``axes`` ({name: values}) replacing or adding axes,
    ``fixed`` settings applied to every run, and one run per seed (None: the preset's seed)."""
    if task not in GRIDS:
        raise ConfigError(f"unknown task {task!r} for sweep: choose from {', '.join(GRIDS)}")
    grid = dict(GRIDS[task])
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
    status: str  # finished, skipped, diverged, failed
    message: str = ""
    final_test_loss: float = float("nan")


def run_one(config_values, folder, progress=None):
    """Run (or skip, or resume) one run of a sweep in this process; never raises."""
    from .training import Diverged, Trainer, single_threaded_blas

    config = RunConfig.from_dict(config_values)
    name = config.run_name()
    path = os.path.join(folder, name + ".h5")
    try:
        if os.path.exists(path):
            record = read_run(path)
            differ = _differences(record.config, config)
            if differ:
                return RunOutcome(name, "failed", f"{path} exists with other settings ({differ})")
            done = record.checkpoint.epoch if record.checkpoint else 0
            if record.status == "diverged" or (record.status == "finished" and done >= config.epochs):
                return RunOutcome(name, "skipped", f"already {record.status}",
                                  _last(record.metrics["test_loss"]))
            trainer = Trainer.resume(path, epochs=config.epochs)  # unfinished, or extended
        else:
            trainer = Trainer.new(config, path)

        def report(epoch, values):
            if progress is not None:
                progress.put((name, epoch, config.epochs))

        with single_threaded_blas():
            metrics = trainer.run(quiet=True, on_epoch=report)
        return RunOutcome(name, "finished", "", metrics["test_loss"][-1])
    except Diverged as err:
        return RunOutcome(name, "diverged", str(err))
    except (RunFileError, ConfigError, OSError, ValueError, FloatingPointError) as err:
        return RunOutcome(name, "failed", f"{type(err).__name__}: {err}")
    except Exception as err:  # a bug in one run must not stop the sweep: report it by name
        return RunOutcome(name, "failed", f"{type(err).__name__}: {err}")


def _differences(stored, wanted):
    """Settings in which a stored run differs from the wanted one (its length may grow)."""
    a, b = stored.to_dict(), wanted.to_dict()
    return ", ".join(f"{k}={a[k]!r} not {b[k]!r}" for k in a
                     if k not in ("epochs", "checkpoint_every") and a[k] != b[k])


def _last(values):
    return float(values[-1]) if len(values) else float("nan")


class SweepDisplay:
    """One status line for the sweep (runs done, failures, ETA) plus the epochs of running runs."""

    def __init__(self, total, quiet=False, stream=None):
        self.total, self.done, self.failed, self.quiet = total, 0, 0, quiet
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self.running = {}

    def epoch(self, name, epoch, total):
        self.running[name] = (epoch, total)
        if self.tty:
            self._draw()

    def finished(self, outcome):
        self.running.pop(outcome.name, None)
        self.done += 1
        self.failed += outcome.status in ("failed", "diverged")
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r" + " " * 120 + "\r")
        loss = f", final test loss {outcome.final_test_loss:.5g}" if outcome.final_test_loss == outcome.final_test_loss else ""
        self.stream.write(f"[{self.done}/{self.total}] {outcome.name}: {outcome.status}"
                          f"{' (' + outcome.message + ')' if outcome.message else ''}{loss}\n")
        if self.tty:
            self._draw()
        self.stream.flush()

    def _draw(self):
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        runs = " | ".join(f"{n[:28]} {e}/{t}" for n, (e, t) in list(self.running.items())[:3])
        line = f"sweep {self.done}/{self.total} done, {self.failed} failed, {elapsed:.0f}s, ETA {eta:.0f}s | {runs}"
        self.stream.write("\r" + line[:160].ljust(120))
        self.stream.flush()


def run_sweep(configs, folder, workers=None, scheduler=None, quiet=False):
    """Run every config into ``folder``; returns the outcomes in the order of ``configs``.

    ``workers`` processes on this machine (default: the cores), or, with ``scheduler`` (a Dask
    address such as ``tcp://host:8786``), one Dask task per run on that cluster; the folder must
    then be shared with the workers.
    """
    os.makedirs(folder, exist_ok=True)
    display = SweepDisplay(len(configs), quiet)
    values = [c.to_dict() for c in configs]
    if scheduler is not None:
        outcomes = _run_on_dask(values, folder, scheduler, display)
    else:
        outcomes = _run_in_processes(values, folder, workers or os.cpu_count() or 1, display)
    order = {c.run_name(): i for i, c in enumerate(configs)}
    return sorted(outcomes, key=lambda o: order[o.name])


def _run_in_processes(values, folder, workers, display):
    # spawn, not fork: the parent may hold BLAS threads, which do not survive a fork
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        progress = manager.Queue()
        outcomes = []
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            pending = {pool.submit(run_one, v, folder, progress) for v in values}
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                _drain(progress, display)
                for future in done:
                    outcome = future.result()
                    outcomes.append(outcome)
                    display.finished(outcome)
        return outcomes


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
        for future in as_completed(futures):
            outcome = future.result()
            outcomes.append(outcome)
            display.finished(outcome)
        return outcomes
