"""The commands of ``stablebptt``: ``run``, ``sweep``, ``gradcheck``, ``inspect``, ``plot``,
``trajectories``, ``animate``, ``toy``, ``diagnose``.

Bad input ends with one line on stderr naming the problem and exit status 2, before any file is
written; a failed gradient check exits with status 1; an interrupted run or sweep keeps every
completed epoch and exits with status 130.
"""

import argparse
import logging
import math
import os
import re
import sys

import numpy as np

from .._atomic import OutputError
from ..contract import ContractError
from ..tasks import COMMON_DEFAULTS, SOURCE, TaskError, all_tasks, load_task, task_names
from ..train.build import converted_options, preset
from ..train.config import MAX_NAME, ConfigError
from ..train.optim import CLIP_MODES
from ..train.runfile import METRICS, RunFileError, read_run

EXIT_BAD_INPUT = 2
PICTURE_SUFFIXES = (".png", ".pdf", ".svg")


class UsageError(Exception):
    """Bad input from the command line; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _add_run_options(p, tasks):
    p.add_argument("task", nargs="?", help="a task: " + "; ".join(
        f"{t.name}: {t.description}" for t in tasks) + "; or an outside task as module:Class")
    p.add_argument("--mode", help="gradient mode: regular/modified/combined/stopped/network, "
                   "R M C S N, or the reference's F (=R) and P (=M) "
                   f"({_default_text('mode', tasks)})")
    p.add_argument("--clip", help=f"gradient clipping: {'/'.join(CLIP_MODES)} "
                   f"({_default_text('clip', tasks)})")
    p.add_argument("--regularization", "--rho", dest="rho", type=float,
                   help="weight rho of the control regulariser rho*mean(c^2) "
                   f"({_default_text('rho', tasks)})")
    p.add_argument("--seed", type=int, help=f"seed for data and initialisation "
                   f"({_default_text('seed', tasks)})")
    _add_task_options(p, tasks, lists=False)
    _add_settings(p, tasks)
    p.add_argument("--out", help="output folder (default runs/)")
    p.add_argument("--name", help="run file name, without folders (default: derived from the "
                   "settings)")
    p.add_argument("--resume", metavar="FILE", help="continue the run in FILE from its checkpoint "
                   "(only --epochs and --device may change)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run file")
    p.add_argument("--threads", type=int, help="CPU threads for each batch (default: every core; "
                   "results are the same for any number)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    _add_task_code(p)


def _add_sweep_options(p, tasks):
    p.add_argument("task", help="a task (" + ", ".join(t.name for t in tasks) + ", or module:Class); "
                   "its grid (the paper's tasks: the reference's Runs/01/01.sh) is the default")
    p.add_argument("--modes", dest="mode", type=_str_list, help="modes, e.g. R,C (default R,M,C,S)")
    p.add_argument("--clips", dest="clip", type=_str_list,
                   help="clipping modes, e.g. value,norm (default value,norm,none)")
    p.add_argument("--rhos", dest="rho", type=_float_list,
                   help="regulariser weights (guidance default 1,0.1,0.01,0.001)")
    p.add_argument("--seeds", type=_int_list, help="one run per seed for every grid point (default: 42)")
    p.add_argument("--optimizers", type=_str_list,
                   help="an optimiser axis, e.g. adam,rmsprop,adagrad (default: --optimizer's one)")
    _add_task_options(p, tasks, lists=True)
    _add_settings(p, tasks)
    p.add_argument("--out", help="sweep folder (default sweeps/TASK)")
    p.add_argument("--workers", type=int, help="worker processes on this machine (default: the cores)")
    p.add_argument("--scheduler", help="run on a Dask cluster at this address (tcp://host:port); "
                   "the folder must be shared with its workers")
    p.add_argument("--log-every", type=float, default=30.0, metavar="SECONDS",
                   help="seconds between progress lines when stderr is not a terminal (default 30)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _add_task_options(p, tasks, lists):
    """One option per task setting of every registered task (``--poles``); in a sweep each takes
    a comma-separated list of values (an axis), also under its plural (``--target-states``).
    Values stay text here and are converted and checked by the task's :class:`Option`."""
    helps = {}
    for task in tasks:
        for option in task.options:
            helps.setdefault(option.name, []).append(
                f"{task.name}: {option.help} (default {option.default})")
    for name, texts in helps.items():
        flag = "--" + name.replace("_", "-")
        flags = [flag, flag + "s"] if lists and not flag.endswith("s") else [flag]
        p.add_argument(*flags, dest=name, type=_str_list if lists else str,
                       metavar="VALUES" if lists else "VALUE", help="; ".join(texts))
    p.set_defaults(task_options=tuple(helps))


def _list_of(kind):
    def parse(text):
        items = [v.strip() for v in text.split(",")]
        if "" in items and any(items):
            raise argparse.ArgumentTypeError(f"empty item in the list {text!r}")
        try:
            values = [kind(v) for v in items if v]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a comma-separated list of {kind.__name__}: {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"empty list: {text!r}")
        return values
    parse.__name__ = f"list of {kind.__name__}"
    return parse


_int_list, _float_list, _str_list = _list_of(int), _list_of(float), _list_of(str)


# The options that set one common value of a run (or of every run of a sweep): flag, type and
# what it means. Their defaults are the registry's (COMMON_DEFAULTS and each task's preset),
# written into the help text by _default_text, so --help cannot disagree with a run.
SETTINGS = {
    "clip_value": ("--clip-value", float, "clipping threshold"),
    "optimizer": ("--optimizer", str, "adam, sgd, adagrad, adadelta or rmsprop, with Keras 2.9's "
                  "update rules and defaults"),
    "lr": ("--lr", float, "learning rate"),
    "momentum": ("--momentum", float, "SGD momentum"),
    "batch_size": ("--batch-size", int, "batch size"),
    "epochs": ("--epochs", int, "number of epochs"),
    "n_data": ("--n-data", int, "train and test set size each"),
    "width": ("--width", int, "hidden layer width"),
    "depth": ("--depth", int, "number of hidden layers"),
    "bias": ("--bias", bool, "use biases"),
    "zero_last": ("--zero-last", bool, "zero-initialise the output kernel (what the reference ran)"),
    "time": ("--time", float, "physical time horizon T"),
    "n_steps": ("--steps", int, "number of time steps"),
    "loss_mode": ("--loss-mode", str, "FINAL or CONTINUOUS"),
    "dtype": ("--dtype", str, "float32 or float64"),
    "checkpoint_every": ("--checkpoint-every", int, "epochs between checkpoints"),
    "device": ("--device", str, "cpu or cuda (an NVIDIA GPU through numba.cuda)"),
}
_SETTINGS = tuple(SETTINGS)


def _default_text(name, tasks):
    """``default 100; quantum 60``: the common default and every task preset that differs."""
    def shown(value):
        return ("yes" if value else "no") if isinstance(value, bool) else str(value)

    common = COMMON_DEFAULTS[name]
    ignored = [t.name for t in tasks if name in t.ignores]
    others = [f"{t.name} {shown(t.preset[name])}" for t in tasks
              if name in t.preset and t.preset[name] != common and t.name not in ignored]
    text = f"default {shown(common)}" + "".join(f"; {o}" for o in others)
    return text + (f"; unused by {', '.join(ignored)}" if ignored else "")


def _add_settings(p, tasks):
    """Options that set one value for a run (or for every run of a sweep)."""
    for name, (flag, kind, text) in SETTINGS.items():
        help_text = f"{text} ({_default_text(name, tasks)})"
        if kind is bool:
            p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                           help=help_text)
        else:
            p.add_argument(flag, dest=name, type=kind, help=help_text)


_SWEEP_AXES = ("mode", "clip", "rho")
_CONFIG_OPTIONS = _SETTINGS + _SWEEP_AXES + ("seed",)


def _settings(args, names, task_options=True):
    """The settings given on the command line among ``names`` (and the task options)."""
    names = tuple(names) + (tuple(getattr(args, "task_options", ())) if task_options else ())
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def _preload_tasks(argv):
    """Register the outside tasks a command line names (a ``module:Class`` argument: the TASK or
    a ``--task-code`` value), before its options are parsed. The task a run file records is
    never imported (see :mod:`stablebptt.tasks`)."""
    for token in argv:
        if SOURCE.fullmatch(token):
            try:
                load_task(token)
            except TaskError as err:
                raise UsageError(str(err)) from None


def _add_task_code(p):
    p.add_argument("--task-code", metavar="MODULE:CLASS", action="append",
                   help="import this outside task (a run file's task is never imported on its "
                   "own: name it here to resume, draw or diagnose its runs)")


def build_parser():
    tasks = all_tasks()
    parser = _Parser(prog="stablebptt", description="Stable backpropagation through time for "
                     "neural controllers of differentiable simulators.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_run_options(sub.add_parser("run", help="train one run and write its HDF5 file"), tasks)
    _add_sweep_options(sub.add_parser("sweep", help="run a grid of runs (the reference's sweep) "
                                      "in parallel"), tasks)
    g = sub.add_parser("gradcheck", help="check every kernel and gradient mode of a task against "
                       "finite differences and dot-product tests")
    g.add_argument("task", nargs="?", help=f"one of {', '.join(t.name for t in tasks)}, or an "
                   "outside task as module:Class (default: every registered task)")
    g.add_argument("--seed", type=int, default=0)
    f = sub.add_parser("plot", help="the paper's figures 3-5 and a summary table from a folder of runs")
    f.add_argument("folder", help="a folder of run files (e.g. a sweep's), or one run file")
    f.add_argument("--out", help="where the figures, summary.csv and runs.csv go (default: the "
                   "folder)")
    f.add_argument("--threshold", type=float, default=0.1,
                   help="test loss for the 'epochs to reach' column (default 0.1)")
    f.add_argument("--smooth", type=int, default=30,
                   help="moving-mean window in epochs (default 30, the reference's; capped at a "
                   "third of a run)")
    a = sub.add_parser("animate", help="a GIF of a run's controller at work")
    a.add_argument("file")
    a.add_argument("--out", help="GIF file (default: beside the run file)")
    a.add_argument("--sample", type=int, default=0, help="which test state (default 0)")
    a.add_argument("--fps", type=int, default=25)
    a.add_argument("--params", choices=("final", "initial"), default="final")
    y = sub.add_parser("toy", help="the paper's toy examples (Figures 1 and 2)")
    y.add_argument("--out", default="figures", help="output folder (default figures/)")
    y.add_argument("--iterations", type=int, default=200, help="Adam iterations (default 200)")
    t = sub.add_parser("trajectories", help="draw a run's controlled trajectories (PNG or PDF)")
    t.add_argument("file")
    t.add_argument("--out", help="image file (default: beside the run file, .png)")
    t.add_argument("--samples", type=int, default=4, help="number of test states drawn (default 4)")
    t.add_argument("--params", choices=("final", "initial"), default="final",
                   help="the run's final (trained) or initial parameters")
    d = sub.add_parser("diagnose", help="gradient flow of a task preset or a run: adjoint norms "
                       "along the regular, physics and network paths, |g| of R M S against the "
                       "horizon, per-step Jacobian norms (HDF5, PNG, PDF and a plain reading)")
    d.add_argument("task", help="a task (" + ", ".join(t.name for t in tasks) + ", or "
                   "module:Class) at its preset with the options below, or a run file (.h5)")
    d.add_argument("--params", choices=("initial", "final", "checkpoint"),
                   help="a run file's parameters (default final; a task preset: the initial ones)")
    d.add_argument("--epoch", type=int, help="a run file's parameters after epoch K (0: initial; "
                   "the checkpoint's epoch; the last epoch: final)")
    d.add_argument("--samples", type=int, default=8,
                   help="number of test states the trajectory starts from (default 8)")
    d.add_argument("--horizons", type=int, default=12,
                   help="number of log-spaced horizons from 1 to N for |g| (default 12)")
    d.add_argument("--regularization", "--rho", dest="rho", type=float,
                   help="weight rho of the control regulariser (task preset only)")
    d.add_argument("--seed", type=int, help="seed for data and initialisation (task preset only)")
    _add_task_options(d, tasks, lists=False)
    _add_settings(d, tasks)
    d.add_argument("--out", help="output folder (default: beside a run file; diagnose/ for a "
                   "task preset)")
    i = sub.add_parser("inspect", help="summarise a run file")
    i.add_argument("file")
    i.add_argument("--metrics", action="store_true", help="print the per-epoch metrics table")
    for command in (f, a, t, d, i):
        _add_task_code(command)
    return parser


def _writable_folder(folder):
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".stablebptt-write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as err:
        raise UsageError(f"cannot write to output folder {folder!r}: {err.strerror or err}") from None


def cmd_run(args):
    from ..train.sweep import available_cores
    from ..train.trainer import Diverged, Interrupted, Trainer, stop_requests

    if args.threads is None:
        args.threads = available_cores()
    elif args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    elif args.threads > available_cores():  # more would only contend (results are the same)
        print(f"stablebptt: --threads {args.threads} is more than the {available_cores()} cores "
              f"this process may use; running with {available_cores()}", file=sys.stderr)
        args.threads = available_cores()
    if args.resume:
        trainer = _resume(args)
        if trainer is None:
            return 0
    else:
        if args.task is None:
            raise UsageError("run needs a TASK (one of: " + ", ".join(task_names())
                             + ", or module:Class) or --resume FILE")
        config = preset(args.task, **_settings(args, _CONFIG_OPTIONS))
        name = _run_name(args.name) if args.name is not None else config.run_name()
        out = args.out or "runs"
        _writable_folder(out)
        trainer = Trainer.new(config, os.path.join(out, name + ".h5"), overwrite=args.overwrite,
                              threads=args.threads)
    with trainer:  # the run file's lock is released however this ends
        try:
            # compile first: a first Ctrl-C then means "stop after this update" at once
            trainer.task.problem.compile(trainer.config.dtype)
            with stop_requests(f"stopping {trainer.path} after the current update") as stop:
                metrics = trainer.run(quiet=args.quiet, stop=stop)
        except Diverged as err:
            print(f"stablebptt: {err}; the file is kept and marked diverged", file=sys.stderr)
            return 1
        except Interrupted as err:
            print(f"stablebptt: interrupted: {err}; continue with: stablebptt run --resume "
                  f"{trainer.path}", file=sys.stderr)
            return 130
    print(f"{trainer.path}: {trainer.epoch} epochs, final test loss {metrics['test_loss'][-1]:.6g}")
    return 0


def _resume(args):
    """The trainer that continues ``--resume FILE``, or None when it has nothing left to do.

    Only ``--epochs`` may change a run; any other run option must repeat the file's value.
    """
    from ..train.trainer import Trainer

    for flag, given in (("--out", args.out), ("--name", args.name), ("--overwrite", args.overwrite)):
        if given:
            raise UsageError(f"{flag} does not apply to --resume (the run stays in its file)")
    trainer = Trainer.resume(args.resume, epochs=args.epochs, device=args.device,
                             threads=args.threads)
    try:
        _check_unchanged(args, trainer.config)
    except (UsageError, ConfigError):
        trainer.close()
        raise
    if trainer.status == "diverged":
        trainer.close()
        raise UsageError(f"{args.resume} diverged at epoch {trainer.epoch}; it cannot be resumed")
    if trainer.finished:
        trainer.close()
        print(f"{args.resume}: already finished ({trainer.epoch} epochs)")
        return None
    print(f"resuming {args.resume} at epoch {trainer.epoch} of {trainer.config.epochs}")
    return trainer


def _check_unchanged(args, stored):
    """:class:`UsageError` when an option given with ``--resume`` differs from the run's file."""
    if args.task is not None and args.task not in (stored.task, stored.task_source):
        raise UsageError(f"task {args.task!r} conflicts with the run file's task {stored.task!r}")
    given = _settings(args, _CONFIG_OPTIONS)
    given.pop("epochs", None)
    given.pop("device", None)
    wanted = stored.replace(**converted_options(stored.task_def, given)).validated()
    for key in given:
        if getattr(wanted, key) != getattr(stored, key):
            raise UsageError(f"{key}={getattr(wanted, key)!r} conflicts with the run file's "
                             f"{key}={getattr(stored, key)!r}; only --epochs and --device can "
                             "change a run being resumed")


def _run_name(text):
    """A ``--name``: a file name in the output folder (``.h5`` is added; a given one is kept)."""
    name = text[:-3] if text.endswith(".h5") else text
    if any(sep and sep in name for sep in ("/", os.sep, os.altsep, "\0")):
        raise UsageError(f"--name {text!r} must not contain a folder (use --out for the folder)")
    if not name or name.startswith("."):
        raise UsageError(f"--name {text!r} must be a plain file name (not empty, not starting with '.')")
    if any(not ch.isprintable() for ch in name):
        raise UsageError(f"--name {text!r} contains a control character (a newline, a tab, ...)")
    if len(name) > MAX_NAME:
        raise UsageError(f"--name of {len(name)} characters is too long (at most {MAX_NAME})")
    return name


def cmd_sweep(args):
    from ..train.sweep import expand_grid, run_sweep

    axes = _settings(args, _SWEEP_AXES)
    if args.optimizers is not None:
        if args.optimizer is not None:
            raise UsageError("give --optimizer (one for all runs) or --optimizers (an axis), not both")
        axes["optimizer"] = args.optimizers
    configs = expand_grid(args.task, axes, seeds=args.seeds or (None,),
                          **_settings(args, _SETTINGS, task_options=False))
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if not args.log_every > 0:
        raise UsageError(f"--log-every must be > 0 seconds, got {args.log_every}")
    if args.scheduler is not None and not _SCHEDULER.fullmatch(args.scheduler):
        raise UsageError(f"--scheduler {args.scheduler!r} is not a Dask scheduler address "
                         "such as tcp://host:8786")
    folder = args.out or os.path.join("sweeps", configs[0].task)
    _writable_folder(folder)
    if not args.quiet:
        print(f"sweep {args.task}: {len(configs)} runs into {folder}", file=sys.stderr)
    outcomes = run_sweep(configs, folder, workers=args.workers, scheduler=args.scheduler,
                         quiet=args.quiet, log_every=args.log_every)
    states = ("finished", "skipped", "diverged", "failed", "interrupted", "not started")
    counts = {s: sum(o.status == s for o in outcomes) for s in states}
    print(f"sweep {args.task}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    for o in outcomes:
        if o.status in ("diverged", "failed"):
            print(f"  {o.status}: {o.name}: {o.message}")
    if counts["interrupted"] or counts["not started"]:
        print("stablebptt: sweep interrupted: every run file keeps its completed epochs; "
              "repeat the command to continue", file=sys.stderr)
        return 130
    return 1 if counts["failed"] else 0


_SCHEDULER = re.compile(r"(tcp|tls|ucx|ws|wss|inproc)://[\w.\-\[\]:]+(:\d+)?(/[\w.\-]*)?")


def cmd_gradcheck(args):
    from ..tasks import get_task
    from ..train.gradcheck import format_table, run_gradcheck

    tasks = [get_task(args.task)] if args.task else all_tasks()
    results = run_gradcheck(tasks, seed=args.seed)
    print(format_table(results))
    return 0 if all(r.ok for r in results) else 1


def cmd_inspect(args):
    record = read_run(args.file)
    cfg = record.config
    print(f"file:     {args.file}")
    print(f"status:   {record.status}, {record.epochs_done} of {cfg.epochs} epochs"
          + (f", checkpoint at epoch {record.checkpoint.epoch}" if record.checkpoint else "")
          + (f", NaN/inf at epoch {record.attrs['diverged_epoch']}"
             if "diverged_epoch" in record.attrs else ""))
    print("config:   " + " ".join(f"{k}={v}" for k, v in cfg.to_dict().items()))
    print("versions: " + " ".join(f"{k.split('.', 1)[1]}={v}" for k, v in record.attrs.items()
                                  if k.startswith("version.")))
    test = record.metrics["test_loss"]
    if len(test):
        best = int(np.argmin(test))
        print(f"test loss: first {test[0]:.6g}, last {test[-1]:.6g}, best {test[best]:.6g} "
              f"(epoch {best + 1})")
        print(f"time per epoch: {np.mean(record.metrics['wall_time']):.4g} s "
              f"(updates {np.mean(record.metrics['epoch_time']):.4g} s)")
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in record.params_final.items())
    print(f"parameters: {shapes}")
    if args.metrics:
        print("epoch " + " ".join(f"{m:>17}" for m in METRICS))
        for e in range(record.epochs_done):
            print(f"{e + 1:5d} " + " ".join(f"{record.metrics[m][e]:17.9g}" for m in METRICS))
    return 0


def cmd_plot(args):
    from ..plots.paper import gradient_figures, paper_figures
    from ..train.summary import (RUN_FIELDS, load_folder, missing_runs, run_rows, summary_rows,
                                 write_csv, write_summary)
    from .outputs import FIGURE_DPI, save_figures

    one_file = os.path.isfile(args.folder)
    if not one_file and not os.path.isdir(args.folder):
        raise UsageError(f"no such folder or run file: {args.folder}")
    if args.smooth < 1:
        raise UsageError(f"--smooth must be >= 1, got {args.smooth}")
    if not math.isfinite(args.threshold):
        raise UsageError(f"--threshold must be a finite number, got {args.threshold}")
    if one_file:  # one run's figures, written beside it
        runs, problems = {args.folder: read_run(args.folder)}, []
        args.out = args.out or os.path.dirname(args.folder) or "."
    else:
        runs, problems = load_folder(args.folder)
    for name, reason in problems:
        print(f"stablebptt: unreadable run {name}: {reason}", file=sys.stderr)
    for line in missing_runs(list(runs.values())):
        print(f"stablebptt: missing run: {line}", file=sys.stderr)
    if not runs:
        raise UsageError(f"no readable run files in {args.folder}")
    out = args.out or args.folder
    _writable_folder(out)
    records = list(runs.values())
    for path in (save_figures(paper_figures(records, args.smooth), out, FIGURE_DPI["paper"])
                 + save_figures(gradient_figures(records, args.smooth), out,
                                FIGURE_DPI["gradients"])):
        print(path)
    write_summary(summary_rows(runs, args.threshold), os.path.join(out, "summary.csv"))
    write_csv(run_rows(runs, args.threshold), os.path.join(out, "runs.csv"), RUN_FIELDS)
    print(os.path.join(out, "summary.csv"))
    print(os.path.join(out, "runs.csv"))
    return 1 if problems else 0


def cmd_animate(args):
    from ..plots.trajectories import animation
    from .outputs import save_animation

    if args.fps < 1:
        raise UsageError(f"--fps must be >= 1, got {args.fps}")
    record = read_run(args.file)
    if not 0 <= args.sample < len(record.test):
        raise UsageError(f"--sample={args.sample} is not one of the {len(record.test)} test states")
    out = _picture_path(args.out, _default_picture(args.file, f"{args.params}.gif"), (".gif",))
    print(save_animation(animation(record, args.sample, args.params), out, args.fps))
    return 0


def _default_picture(path, suffix):
    """``RUN_suffix`` beside the run file ``RUN.h5``."""
    return os.path.splitext(os.fspath(path))[0] + "_" + suffix


def _picture_path(out, default, suffixes):
    """Where a picture goes: ``out`` (a file with one of ``suffixes``, or an existing folder for
    the default name in it) or ``default``; its folder is created and checked first."""
    if out is None:
        path = default
    elif os.path.isdir(out):
        path = os.path.join(out, os.path.basename(default))
    else:
        path = out
        if os.path.splitext(out)[1].lower() not in suffixes:
            raise UsageError(f"--out {out!r} must end in {' or '.join(suffixes)}, or be a folder")
    _writable_folder(os.path.dirname(os.path.abspath(path)))
    return path


def cmd_toy(args):
    from ..plots.toy import toy_figures
    from .outputs import FIGURE_DPI, save_figures, toy_diagnosis

    if args.iterations < 1:
        raise UsageError(f"--iterations must be >= 1, got {args.iterations}")
    _writable_folder(args.out)
    for path in save_figures(toy_figures(iterations=args.iterations), args.out, FIGURE_DPI["toy"]):
        print(path)
    paths, text = toy_diagnosis(args.out)
    for path in paths:
        print(path)
    print(text)
    return 0


def cmd_trajectories(args):
    from ..plots.trajectories import trajectory_figure
    from .outputs import FIGURE_DPI, save_figure

    if args.samples < 1:
        raise UsageError(f"--samples must be >= 1, got {args.samples}")
    record = read_run(args.file)  # a bad file is reported before anything is drawn
    if args.samples > len(record.test):
        raise UsageError(f"--samples={args.samples} exceeds the {len(record.test)} test states")
    out = _picture_path(args.out, _default_picture(args.file, f"trajectories_{args.params}.png"),
                        PICTURE_SUFFIXES)
    fig = trajectory_figure(record, args.samples, args.params)
    print(save_figure(fig, out, FIGURE_DPI["trajectories"]))
    return 0


def cmd_diagnose(args):
    from ..train.build import build_task, initial_parameters, record_task
    from ..train.diagnose import config_attrs, default_stem
    from .outputs import run_diagnosis

    if args.samples < 1:
        raise UsageError(f"--samples must be >= 1, got {args.samples}")
    if args.horizons < 1:
        raise UsageError(f"--horizons must be >= 1, got {args.horizons}")
    if args.task.endswith(".h5") or os.path.isfile(args.task):
        given = _settings(args, _CONFIG_OPTIONS)
        if given:
            flag = "--" + next(iter(given)).replace("_", "-")
            raise UsageError(f"{flag} does not apply to a run file (its settings are the file's)")
        record = read_run(args.task)
        config = record.config.replace(device="cpu")
        which, theta = _stored_parameters(record, args.params, args.epoch)
        task = record_task(record, config)
        theta = task.controller.flatten(theta, np.float64) if isinstance(theta, dict) else theta
        name = os.path.splitext(os.path.basename(args.task))[0]
        folder = args.out or os.path.dirname(os.path.abspath(args.task))
    else:
        if args.params is not None or args.epoch is not None:
            raise UsageError("--params and --epoch apply to a run file; a task preset is "
                             "diagnosed at its initial parameters")
        config = preset(args.task, **_settings(args, _CONFIG_OPTIONS)).replace(device="cpu")
        task = build_task(config)
        theta, _ = initial_parameters(config, task.controller)
        which, name, folder = "initial", config.run_name(), args.out or "diagnose"
    if args.samples > len(task.test):
        raise UsageError(f"--samples={args.samples} exceeds the {len(task.test)} test states")
    if not np.all(np.isfinite(theta)):
        raise UsageError(f"the {which} parameters are not finite; diagnose other parameters")
    _writable_folder(folder)
    title = f"{name}: gradient flow at the {which} parameters, {args.samples} test states"
    paths, text = run_diagnosis(task.problem, np.asarray(theta, np.float64),
                                task.test[:args.samples], default_stem(folder, name, which),
                                config_attrs(config, which), title, args.horizons)
    for path in paths:
        print(path)
    print(text)
    return 0


def _stored_parameters(record, which, epoch):
    """``(label, parameters)`` of a run file: ``which`` (initial, final, checkpoint) or those
    after ``epoch``, where the file holds them; :class:`UsageError` lists the epochs it has."""
    ck = record.checkpoint
    stored = {"initial": (0, record.params_initial), "final": (record.epochs_done, record.params_final),
              "checkpoint": (ck.epoch, ck.theta) if ck is not None else None}
    if which is not None and epoch is not None:
        raise UsageError("give --params or --epoch, not both")
    if epoch is not None:
        for name in ("checkpoint", "final", "initial"):
            if stored[name] is not None and stored[name][0] == epoch and len(stored[name][1]):
                return f"epoch{epoch}", stored[name][1]
        have = sorted((s[0], n) for n, s in stored.items() if s is not None and len(s[1]))
        raise UsageError(f"--epoch {epoch}: the run file keeps parameters only after epochs "
                         + ", ".join(f"{e} ({n})" for e, n in have))
    which = which or "final"
    if stored[which] is None or not len(stored[which][1]):
        raise UsageError(f"the run file has no {which} parameters")
    return which, stored[which][1]


COMMANDS = {"run": cmd_run, "sweep": cmd_sweep, "gradcheck": cmd_gradcheck, "inspect": cmd_inspect,
            "trajectories": cmd_trajectories, "plot": cmd_plot, "toy": cmd_toy,
            "animate": cmd_animate, "diagnose": cmd_diagnose}


def dispatch(argv=None):
    """Parse ``argv`` and run the command; bad input is one line on stderr and exit status 2."""
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        _preload_tasks(argv)
        args = build_parser().parse_args(argv)
        _headless_matplotlib()
        _log_to_stderr(quiet=getattr(args, "quiet", False))
        return COMMANDS[args.command](args)
    except (UsageError, ConfigError, RunFileError, TaskError, ContractError, OutputError) as err:
        print(f"stablebptt: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _headless_matplotlib():
    """The command line draws into files only: the Agg backend, set before anything imports
    pyplot (the library's figure functions never touch the backend)."""
    if "matplotlib.pyplot" not in sys.modules:
        os.environ.setdefault("MPLBACKEND", "Agg")


def _log_to_stderr(quiet):
    """Messages of the library (logger ``stablebptt``: compiling kernels, ...) as lines on stderr."""
    log = logging.getLogger("stablebptt")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("stablebptt: %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
