"""A folder of run files read as results: the runs, the grid points a sweep lacks, the lines of
the paper's figures (runs that differ only in the seed) and the summary tables (``runs.csv``,
``summary.csv``). No matplotlib here: :mod:`stablebptt.plots` draws from these."""

import collections
import csv
import glob
import itertools
import os
import sys

import numpy as np

from .runfile import RunFileError, read_run

SMOOTHING = 30


def smooth(values, window=SMOOTHING):
    """The reference's smoothing: a moving mean over ``window`` epochs, padded with the first value.

    The window is capped at a third of the run, so that short runs (the guidance script's 10
    epochs) are not flattened into their first value.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return values
    window = max(1, min(window, len(values) // 3))
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, np.ones(window) / window, mode="valid")


def finite_prefix(values):
    """The values before the first NaN or inf: what a diverged run has to show."""
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values)
    return values[:int(np.argmax(bad))] if bad.any() else values


def load_folder(folder):
    """``(runs, problems)``: readable run records by path, and ``(name, reason)`` for the others."""
    runs, problems = {}, []
    for path in sorted(glob.glob(os.path.join(folder, "*.h5"))):
        try:
            runs[path] = read_run(path)
        except RunFileError as err:
            problems.append((os.path.basename(path), str(err)))
    return runs, problems


def missing_runs(records):
    """Grid points absent from a task's runs: every combination of the panel values, modes, clipping
    modes and seeds that occur, which has no run (an incomplete sweep)."""
    missing = []
    for task, group in by_task(records).items():
        field = group[0].config.task_def.panel_setting()
        seen = {(panel_value(r.config, field), r.config.mode, r.config.clip, r.config.seed)
                for r in group}
        axes = [sorted({key[i] for key in seen}) for i in range(4)]
        for combo in itertools.product(*axes):
            if combo not in seen:
                missing.append(f"{task}: {field}={combo[0]} mode={combo[1]} clip={combo[2]} seed={combo[3]}")
    return missing


def panel_value(config, field):
    return getattr(config, field) if field else ""


def by_task(records):
    groups = {}
    for record in records:
        groups.setdefault(record.config.task, []).append(record)
    return groups


def seed_groups(records):
    """Runs that differ only in their seed, as ``[(representative config, [records by seed])]``:
    one line of a figure and one row of the summary each."""
    groups = {}
    for record in records:
        key = record.config.replace(seed=0).run_name()
        groups.setdefault(key, []).append(record)
    return [(members[0].config, sorted(members, key=lambda r: r.config.seed))
            for _, members in sorted(groups.items())]


RUN_FIELDS = ("task", "setting", "mode", "clip", "lr", "seed", "status", "epochs",
              "diverged_epoch", "final_test_loss", "best_test_loss", "best_epoch",
              "epochs_to_threshold", "file")
SUMMARY_FIELDS = ("task", "setting", "mode", "clip", "lr", "seeds", "seed_values", "status",
                  "final_test_loss", "final_min", "final_max", "best_test_loss", "best_min",
                  "best_max", "epochs_to_threshold", "reached_threshold", "files")


def run_rows(runs, threshold):
    """One row per run (``runs.csv``): final and best test loss and the first epoch at or below
    ``threshold``."""
    rows = []
    for path, r in sorted(runs.items(), key=lambda kv: (kv[1].config.task, kv[0])):
        test = np.asarray(r.metrics["test_loss"])
        finite = finite_prefix(test)
        below = np.nonzero(finite <= threshold)[0] if threshold is not None else []
        rows.append(dict(
            task=r.config.task, setting=_setting(r.config), mode=r.config.mode,
            clip=r.config.clip, lr=r.config.lr, seed=r.config.seed, status=r.status,
            epochs=r.epochs_done, diverged_epoch=r.attrs.get("diverged_epoch", ""),
            final_test_loss=float(test[-1]) if len(test) else float("nan"),
            best_test_loss=float(finite.min()) if len(finite) else float("nan"),
            best_epoch=int(np.argmin(finite)) + 1 if len(finite) else "",
            epochs_to_threshold=int(below[0]) + 1 if len(below) else "",
            file=os.path.basename(path)))
    return rows


def _setting(config):
    field = config.task_def.panel_setting()
    return f"{field}={getattr(config, field)}" if field else ""


def summary_rows(runs, threshold):
    """One row per line of the figures (``summary.csv``): runs that differ only in the seed,
    with how many seeds there are, the median final and best test loss and their min and max
    over the seeds, and the median epochs to reach ``threshold`` over the seeds that reached it."""
    per_run = {row["file"]: row for row in run_rows(runs, threshold)}
    file_of = {id(record): os.path.basename(path) for path, record in runs.items()}
    rows = []
    for config, members in sorted(seed_groups(list(runs.values())),
                                  key=lambda item: (item[0].task, _setting(item[0]), item[0].mode,
                                                    item[0].clip, item[0].run_name())):
        files = [file_of[id(m)] for m in members]
        group = [per_run[f] for f in files]
        final = np.array([row["final_test_loss"] for row in group])
        best = np.array([row["best_test_loss"] for row in group])
        reached = [row["epochs_to_threshold"] for row in group if row["epochs_to_threshold"] != ""]
        statuses = collections.Counter(row["status"] for row in group)
        rows.append(dict(
            task=config.task, setting=_setting(config), mode=config.mode, clip=config.clip,
            lr=config.lr, seeds=len(group),
            seed_values=" ".join(str(s) for s in sorted(row["seed"] for row in group)),
            status=", ".join(f"{n} {s}" if len(group) > 1 else s for s, n in sorted(statuses.items())),
            final_test_loss=_median(final), final_min=_nan_safe(np.min, final),
            final_max=_nan_safe(np.max, final), best_test_loss=_median(best),
            best_min=_nan_safe(np.min, best), best_max=_nan_safe(np.max, best),
            epochs_to_threshold=int(np.median(reached)) if reached else "",
            reached_threshold=f"{len(reached)}/{len(group)}", files=" ".join(sorted(files))))
    return rows


def _median(values):
    return _nan_safe(np.median, values)


def _nan_safe(reduce, values):
    """``reduce`` of the finite values (a diverged run's final loss is NaN), NaN if none."""
    finite = values[np.isfinite(values)]
    return float(reduce(finite)) if len(finite) else float("nan")


def write_csv(rows, path, fields):
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def write_summary(rows, path, stream=None):
    """Save the summary rows as CSV and print them as a table (to ``stream``, default stdout)."""
    stream = stream or sys.stdout
    write_csv(rows, path, SUMMARY_FIELDS)
    header = (f"{'task':9} {'setting':16} {'mode':4} {'clip':5} {'lr':>7} {'seeds':>5} "
              f"{'status':18} {'final (median)':>14} {'min-max':>19} {'best':>10} {'to thr.':>7}")
    print(header, file=stream)
    for row in rows:
        spread = f"{row['final_min']:.3g}-{row['final_max']:.3g}" if row["seeds"] > 1 else ""
        print(f"{row['task']:9} {row['setting']:16} {row['mode']:4} {row['clip']:5} "
              f"{row['lr']:>7g} {row['seeds']:>5} {row['status']:18} "
              f"{row['final_test_loss']:>14.4g} {spread:>19} {row['best_test_loss']:>10.4g} "
              f"{str(row['epochs_to_threshold']):>7}", file=stream)
