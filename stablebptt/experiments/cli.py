"""The ``stablebptt`` command line: ``run``, ``sweep``, ``gradcheck``, ``inspect``, ``trajectories``.

Bad input ends with one line on stderr naming the problem and exit status 2, before any file is
written; a failed gradient check exits with status 1.
"""

import argparse
import os
import sys

import numpy as np

from .config import ConfigError
from .gradcheck import GRADCHECK_TASKS, format_table, run_gradcheck
from .optim import CLIP_MODES
from .presets import PRESET_HELP, PRESETS, preset
from .results import METRICS, RunFileError, read_run
from .sweep import GRIDS

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """Bad input from the command line; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _add_run_options(p):
    p.add_argument("task", nargs="?", help="task preset: " + "; ".join(
        f"{k}: {v}" for k, v in PRESET_HELP.items()))
    p.add_argument("--poles", type=int, help="cartpole: number of poles (default 1)")
    p.add_argument("--mode", help="gradient mode: regular/modified/combined/stopped/network, "
                   "R M C S N, or the reference's F (=R) and P (=M) (default combined)")
    p.add_argument("--clip", help=f"gradient clipping: {'/'.join(CLIP_MODES)} (default norm)")
    p.add_argument("--regularization", "--rho", dest="rho", type=float,
                   help="weight rho of the control regulariser rho*mean(c^2) (guidance preset 0.01)")
    p.add_argument("--target-state", type=int, help="quantum: target eigenstate (default 3; paper 3, 4, 5)")
    p.add_argument("--seed", type=int, help="seed for data and initialisation (default 42)")
    _add_settings(p)
    p.add_argument("--out", default="runs", help="output folder (default runs/)")
    p.add_argument("--name", help="run file name (default: derived from the settings)")
    p.add_argument("--resume", metavar="FILE", help="continue the run in FILE from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run file")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _add_sweep_options(p):
    p.add_argument("task", help=f"one of {', '.join(GRIDS)}; the grid is the reference's Runs/01/01.sh")
    p.add_argument("--poles", type=_int_list, help="cartpole: pole counts, e.g. 3,4 (default 1,2,3,4)")
    p.add_argument("--modes", dest="mode", type=_str_list, help="modes, e.g. R,C (default R,M,C,S)")
    p.add_argument("--clips", dest="clip", type=_str_list,
                   help="clipping modes, e.g. value,norm (default value,norm,none)")
    p.add_argument("--rhos", dest="rho", type=_float_list,
                   help="guidance: regulariser weights (default 1,0.1,0.01,0.001)")
    p.add_argument("--target-states", dest="target_state", type=_int_list,
                   help="quantum: target eigenstates (default 3,4,5)")
    p.add_argument("--seeds", type=_int_list, help="one run per seed for every grid point (default: 42)")
    _add_settings(p)
    p.add_argument("--out", help="sweep folder (default sweeps/TASK)")
    p.add_argument("--workers", type=int, help="worker processes on this machine (default: the cores)")
    p.add_argument("--scheduler", help="run on a Dask cluster at this address (tcp://host:port); "
                   "the folder must be shared with its workers")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _list_of(kind):
    def parse(text):
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a comma-separated list of {kind.__name__}: {text!r}") from None
    parse.__name__ = f"list of {kind.__name__}"
    return parse


_int_list, _float_list, _str_list = _list_of(int), _list_of(float), _list_of(str)


def _add_settings(p):
    """Options that set one value for a run (or for every run of a sweep)."""
    p.add_argument("--drivers", type=int, help="guidance: number of drivers (default 2)")
    p.add_argument("--evaders", type=int, help="guidance: number of evaders (default 4)")
    p.add_argument("--weighting", help="quantum: weights of eigenstates 1-2 in the data: 1-1 (default), 3-1, 7-1, 15-1")
    p.add_argument("--nx", type=int, help="quantum: interior grid points (default 32)")
    p.add_argument("--target", nargs=2, type=float, metavar=("X", "Y"),
                   help="guidance: the point the evaders are herded to (default 0 0)")
    p.add_argument("--clip-value", type=float, help="clipping threshold (default 1.0)")
    p.add_argument("--optimizer", help="adam or sgd (default adam)")
    p.add_argument("--lr", type=float, help="learning rate (default 1e-3)")
    p.add_argument("--momentum", type=float, help="SGD momentum (default 0)")
    p.add_argument("--batch-size", type=int, help="batch size (default 8)")
    p.add_argument("--epochs", type=int, help="number of epochs (preset: 1000)")
    p.add_argument("--n-data", type=int, help="train and test set size each (default 256)")
    p.add_argument("--width", type=int, help="hidden layer width (default 100)")
    p.add_argument("--depth", type=int, help="number of hidden layers (default 2)")
    p.add_argument("--bias", action=argparse.BooleanOptionalAction, default=None,
                   help="use biases (default yes)")
    p.add_argument("--zero-last", action=argparse.BooleanOptionalAction, default=None,
                   help="zero-initialise the output kernel (default yes: what the reference ran)")
    p.add_argument("--time", type=float, help="physical time horizon T (default 1.0)")
    p.add_argument("--steps", dest="n_steps", type=int, help="number of time steps (default 100)")
    p.add_argument("--loss-mode", help="FINAL or CONTINUOUS (default FINAL)")
    p.add_argument("--dtype", help="float32 (default) or float64")
    p.add_argument("--checkpoint-every", type=int, help="epochs between checkpoints (default 10)")
    p.add_argument("--device", help="cpu (default) or cuda (an NVIDIA GPU through numba.cuda)")


_SETTINGS = ("drivers", "evaders", "weighting", "nx", "clip_value", "optimizer", "lr", "momentum",
             "batch_size", "epochs", "n_data", "width", "depth", "bias", "zero_last", "time",
             "n_steps", "loss_mode", "dtype", "checkpoint_every", "device")
_SWEEP_AXES = ("poles", "mode", "clip", "rho", "target_state")
_CONFIG_OPTIONS = _SETTINGS + _SWEEP_AXES + ("seed",)


def _settings(args, names):
    values = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    if getattr(args, "target", None) is not None:
        values["target_x"], values["target_y"] = args.target
    return values


def build_parser():
    parser = _Parser(prog="stablebptt", description="Stable backpropagation through time for "
                     "neural controllers of differentiable simulators.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_run_options(sub.add_parser("run", help="train one run and write its HDF5 file"))
    _add_sweep_options(sub.add_parser("sweep", help="run a grid of runs (the reference's sweep) in parallel"))
    g = sub.add_parser("gradcheck", help="check every adjoint and gradient mode against finite differences")
    g.add_argument("task", nargs="?", help=f"one of {', '.join(GRADCHECK_TASKS)} (default: all)")
    g.add_argument("--seed", type=int, default=0)
    f = sub.add_parser("plot", help="the paper's figures 3-5 and a summary table from a folder of runs")
    f.add_argument("folder", help="a folder of run files (e.g. a sweep's)")
    f.add_argument("--out", help="where the figures and summary.csv go (default: the folder)")
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
    i = sub.add_parser("inspect", help="summarise a run file")
    i.add_argument("file")
    i.add_argument("--metrics", action="store_true", help="print the per-epoch metrics table")
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
    from .training import Diverged, Trainer, single_threaded_blas

    if args.resume:
        trainer = Trainer.resume(args.resume, epochs=args.epochs)
        if trainer.finished:
            print(f"{args.resume}: already finished ({trainer.epoch} epochs)")
            return 0
        if trainer.status == "diverged":
            raise UsageError(f"{args.resume} diverged at epoch {trainer.epoch}; it cannot be resumed")
        print(f"resuming {args.resume} at epoch {trainer.epoch} of {trainer.config.epochs}")
    else:
        if args.task is None:
            raise UsageError("run needs a TASK (one of: " + ", ".join(PRESETS) + ") or --resume FILE")
        config = preset(args.task, **_settings(args, _CONFIG_OPTIONS))
        _writable_folder(args.out)
        path = os.path.join(args.out, (args.name or config.run_name()) + ".h5")
        if os.path.exists(path) and not args.overwrite:
            raise UsageError(f"run file exists: {path} (continue it with --resume, or --overwrite)")
        trainer = Trainer.new(config, path)
    with single_threaded_blas():
        try:
            metrics = trainer.run(quiet=args.quiet)
        except Diverged as err:
            print(f"stablebptt: {err}; the file is kept and marked diverged", file=sys.stderr)
            return 1
    print(f"{trainer.path}: {trainer.epoch} epochs, final test loss {metrics['test_loss'][-1]:.6g}")
    return 0


def cmd_sweep(args):
    from .sweep import expand_grid, run_sweep

    axes = {k: getattr(args, k) for k in _SWEEP_AXES if getattr(args, k) is not None}
    configs = expand_grid(args.task, axes, seeds=args.seeds or (None,), **_settings(args, _SETTINGS))
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    folder = args.out or os.path.join("sweeps", args.task)
    _writable_folder(folder)
    if not args.quiet:
        print(f"sweep {args.task}: {len(configs)} runs into {folder}", file=sys.stderr)
    outcomes = run_sweep(configs, folder, workers=args.workers, scheduler=args.scheduler,
                         quiet=args.quiet)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("finished", "skipped", "diverged", "failed")}
    print(f"sweep {args.task}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for o in outcomes:
        if o.status in ("diverged", "failed"):
            print(f"  {o.status}: {o.name}: {o.message}")
    return 1 if counts["failed"] else 0


def cmd_gradcheck(args):
    if args.task is not None and args.task not in GRADCHECK_TASKS:
        raise UsageError(f"unknown task {args.task!r} for gradcheck: choose from {', '.join(GRADCHECK_TASKS)}")
    results = run_gradcheck([args.task] if args.task else GRADCHECK_TASKS, seed=args.seed)
    print(format_table(results))
    return 0 if all(r.ok for r in results) else 1


def cmd_inspect(args):
    record = read_run(args.file)
    cfg = record.config
    print(f"file:     {args.file}")
    print(f"status:   {record.status}, {record.epochs_done} of {cfg.epochs} epochs"
          + (f", checkpoint at epoch {record.checkpoint.epoch}" if record.checkpoint else "")
          + (f", NaN/inf at epoch {record.attrs['diverged_epoch']}" if "diverged_epoch" in record.attrs else ""))
    print("config:   " + " ".join(f"{k}={v}" for k, v in cfg.to_dict().items()))
    print("versions: " + " ".join(f"{k.split('.', 1)[1]}={v}" for k, v in record.attrs.items()
                                  if k.startswith("version.")))
    test = record.metrics["test_loss"]
    if len(test):
        best = int(np.argmin(test))
        print(f"test loss: first {test[0]:.6g}, last {test[-1]:.6g}, best {test[best]:.6g} (epoch {best + 1})")
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
    from .paper import load_folder, missing_runs, paper_figures, summary_rows, write_summary

    if not os.path.isdir(args.folder):
        raise UsageError(f"no such folder: {args.folder}")
    runs, problems = load_folder(args.folder)
    for name, reason in problems:
        print(f"stablebptt: unreadable run {name}: {reason}", file=sys.stderr)
    for line in missing_runs(list(runs.values())):
        print(f"stablebptt: missing run: {line}", file=sys.stderr)
    if not runs:
        raise UsageError(f"no readable run files in {args.folder}")
    out = args.out or args.folder
    _writable_folder(out)
    if args.smooth < 1:
        raise UsageError(f"--smooth must be >= 1, got {args.smooth}")
    for path in paper_figures(list(runs.values()), out, args.smooth):
        print(path)
    write_summary(summary_rows(runs, args.threshold), os.path.join(out, "summary.csv"))
    print(os.path.join(out, "summary.csv"))
    return 1 if problems else 0


def cmd_animate(args):
    from .figures import animate_run

    record = read_run(args.file)
    if not 0 <= args.sample < len(record.test):
        raise UsageError(f"--sample={args.sample} is not one of the {len(record.test)} test states")
    if args.fps < 1:
        raise UsageError(f"--fps must be >= 1, got {args.fps}")
    if args.out:
        _writable_folder(os.path.dirname(os.path.abspath(args.out)))
    print(animate_run(args.file, args.out, args.sample, args.fps, args.params))
    return 0


def cmd_toy(args):
    from .toy import toy_figures

    if args.iterations < 1:
        raise UsageError(f"--iterations must be >= 1, got {args.iterations}")
    _writable_folder(args.out)
    for path in toy_figures(args.out, iterations=args.iterations):
        print(path)
    return 0


def cmd_trajectories(args):
    from .figures import plot_trajectories

    if args.samples < 1:
        raise UsageError(f"--samples must be >= 1, got {args.samples}")
    record = read_run(args.file)  # a bad file is reported before anything is drawn
    if args.samples > len(record.test):
        raise UsageError(f"--samples={args.samples} exceeds the {len(record.test)} test states")
    if args.out:
        _writable_folder(os.path.dirname(os.path.abspath(args.out)))
    print(plot_trajectories(args.file, args.out, args.samples, args.params))
    return 0


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        commands = {"run": cmd_run, "sweep": cmd_sweep, "gradcheck": cmd_gradcheck,
                    "inspect": cmd_inspect, "trajectories": cmd_trajectories, "plot": cmd_plot,
                    "toy": cmd_toy, "animate": cmd_animate}
        return commands[args.command](args)
    except (UsageError, ConfigError, RunFileError) as err:
        print(f"stablebptt: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # output piped into e.g. head: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("stablebptt: interrupted; the run file holds the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
