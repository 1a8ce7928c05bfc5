"""The paper's result figures (3, 4, 5) and a summary table, made from a folder of run files."""

import collections
import csv
import glob
import itertools
import os
import sys

import numpy as np

from .figures import save_png_pdf
from .results import RunFileError, read_run

MODE_COLOURS = {"R": "#ef476f", "M": "#ffd166", "C": "#06d6a0", "S": "#073b4c", "N": "#118ab2"}
CLIP_STYLES = {"norm": "-", "value": "--", "none": ":"}
SMOOTHING = 30
METRIC_TITLES = {"grad_size": "update size |g|^2"}


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
    for task, group in _by_task(records).items():
        field = group[0].config.task_def.panel_setting()
        seen = {(_panel_value(r.config, field), r.config.mode, r.config.clip, r.config.seed)
                for r in group}
        axes = [sorted({key[i] for key in seen}) for i in range(4)]
        for combo in itertools.product(*axes):
            if combo not in seen:
                missing.append(f"{task}: {field}={combo[0]} mode={combo[1]} clip={combo[2]} seed={combo[3]}")
    return missing


def _panel_value(config, field):
    return getattr(config, field) if field else ""


def _by_task(records):
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


def _line_order(item):
    config = item[0]
    return (config.mode, config.clip)


def paper_figures(records, out_folder, window=SMOOTHING):
    """One figure per task present (PNG and PDF); returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_folder, exist_ok=True)
    written = []
    for task, group in sorted(_by_task(records).items()):
        lines = sorted(seed_groups(group), key=_line_order)
        spec = group[0].config.task_def
        field = spec.panel_setting()
        title = spec.panel_title or (f"{field} = {{}}" if field else task)
        panels = sorted({_panel_value(r.config, field) for r in group},
                        reverse=spec.panels_descending)
        extras = list(spec.figure_extra)
        n = len(panels) + len(extras)
        cols = min(n, spec.figure_columns or n)
        rows = -(-n // cols)
        # at least 6 inches wide, so that the legend below a single panel fits
        fig, axes = plt.subplots(rows, cols, figsize=(max(3.6 * cols, 6.0), 3.0 * rows + 0.5),
                                 squeeze=False)
        axes = axes.ravel()
        for ax, value in zip(axes, panels):
            # the panel setting is part of a run's identity: a line lies in one panel
            panel_lines = [line for line in lines if _panel_value(line[0], field) == value]
            for _, runs in panel_lines:
                _seed_curve(ax, runs, "test_loss", window, lw=1.2)
            ax.set_title(title.format(value) + _seed_note(panel_lines), fontsize=10)
            ax.set_yscale("log")
            _paper_range(ax, spec.figure_yrange)
            _plain_log_ticks(ax)
            ax.set_xlabel("epoch", fontsize=8)
            longest = max(r.epochs_done for _, runs in panel_lines for r in runs)
            ax.set_ylabel(f"test loss (smoothed over {max(1, min(window, longest // 3))})", fontsize=8)
        for ax, metric in zip(axes[len(panels):], extras):
            for _, runs in lines:
                _seed_curve(ax, runs, metric, window, lw=1.0)
            ax.set_yscale("log")
            ax.set_title(f"{METRIC_TITLES.get(metric, metric)} (all panels)", fontsize=10)
            ax.set_xlabel("epoch", fontsize=8)
        for ax in axes[n:]:
            ax.set_visible(False)
        bottom = _legend(fig, lines)
        fig.suptitle(task, fontsize=12)
        fig.tight_layout(rect=(0, bottom, 1, 0.97))
        written += save_png_pdf(fig, os.path.join(out_folder, spec.figure_name or f"figure_{task}"),
                                dpi=130)
        plt.close(fig)
    return written


GRADIENT_PANELS = (("grad_norm", "|g| before clipping", "log"),
                   ("clipped_grad_norm", "|g| after clipping (to the optimiser)", "log"),
                   ("clip_active", "updates changed by clipping (fraction)", "linear"),
                   ("kept_fraction", "components kept by the sign rule (C)", "linear"))


def gradient_figures(records, out_folder, window=SMOOTHING):
    """Per task, the gradient-flow metrics of every run (PNG and PDF): the gradient norm before
    and after clipping, how often clipping acted, and the fraction of g_M that C kept. Runs
    written before these metrics existed read them as NaN and draw nothing. Returns the written
    paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for task, group in sorted(_by_task(records).items()):
        lines = sorted(seed_groups(group), key=_line_order)
        fig, axes = plt.subplots(1, len(GRADIENT_PANELS), figsize=(3.6 * len(GRADIENT_PANELS), 3.0))
        for ax, (metric, title, scale) in zip(axes, GRADIENT_PANELS):
            for _, runs in lines:
                _seed_curve(ax, runs, metric, window, lw=1.0)
            if scale == "log" and any(np.any(line.get_ydata() > 0) for line in ax.get_lines()):
                ax.set_yscale("log")
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("epoch", fontsize=8)
        bottom = _legend(fig, lines)
        fig.suptitle(f"{task}: gradient flow", fontsize=11)
        fig.tight_layout(rect=(0, bottom, 1, 0.94))
        written += save_png_pdf(fig, os.path.join(out_folder, f"gradients_{task}"), dpi=110)
        plt.close(fig)
    return written


def _legend(fig, lines):
    """Mode colours, clipping line styles, the seed band and the divergence marker of ``lines``
    (:func:`seed_groups`), below the panels; returns the fraction of the figure's height the
    legend takes."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    group = [r for _, runs in lines for r in runs]
    modes = sorted({r.config.mode for r in group}, key="RMCSN".index)
    clips = sorted({r.config.clip for r in group})
    handles = ([Line2D([], [], color=MODE_COLOURS[m], label=m) for m in modes]
               + [Line2D([], [], color="grey", ls=CLIP_STYLES[c], label=f"clip {c}") for c in clips])
    if any(len(runs) > 1 for _, runs in lines):
        handles.append(Patch(color="grey", alpha=0.25, label="median, min-max over seeds"))
    if any(r.status == "diverged" for r in group):
        handles.append(Line2D([], [], color="grey", marker="x", ls="none", label="diverged"))
    per_row = max(3, int(fig.get_figwidth() / 1.2))  # entries per legend row that fit the width
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), per_row), fontsize=8,
               frameon=False)
    legend_rows = -(-len(handles) // per_row)
    return (0.25 * legend_rows + 0.1) / fig.get_figheight()  # the figure's fraction it takes


def _paper_range(ax, yrange):
    """Use the paper's y-range when every curve drawn on ``ax`` lies inside it."""
    values = [v for line in ax.get_lines() for v in np.asarray(line.get_ydata(), float).ravel()]
    values = np.asarray(values)[np.isfinite(values)] if values else np.zeros(0)
    if yrange is not None and len(values) and yrange[0] <= values.min() and values.max() <= yrange[1]:
        ax.set_ylim(*yrange)


def _plain_log_ticks(ax):
    """Tick labels 0.5, 0.7, 1, 2, 3, 5 instead of 5x10^-1 ... on a log axis of at most two
    decades (the paper's Figure 3); wider axes keep matplotlib's decades."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    low, high = ax.get_ylim()
    if not (low > 0 and high / low <= 100):
        return
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0, 7.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _seed_note(lines):
    """`` (3 seeds)`` when every line of a panel has the same number of seeds, more than one;
    `` (1-3 seeds)`` when they differ; nothing for single runs."""
    counts = sorted({len(runs) for _, runs in lines})
    if counts == [1]:
        return ""
    return f" ({counts[0]} seeds)" if len(counts) == 1 else f" ({counts[0]}-{counts[-1]} seeds)"


def _seed_curve(ax, runs, metric, window, lw):
    """One line for runs that differ only in the seed: a single run as :func:`_curve`; several
    as the median of their smoothed curves with a min-max band, over the epochs every one of
    them has finite values for; a diverged seed still ends in an x where it diverged."""
    if len(runs) == 1:
        _curve(ax, runs[0], metric, window, lw)
        return
    config = runs[0].config
    curves = [smooth(finite_prefix(r.metrics[metric]), window) for r in runs]
    common = min(len(c) for c in curves)
    style = dict(color=MODE_COLOURS[config.mode], lw=lw)
    if common:
        stacked = np.stack([c[:common] for c in curves])
        epochs = np.arange(1, common + 1)
        ax.fill_between(epochs, stacked.min(axis=0), stacked.max(axis=0), alpha=0.2, lw=0,
                        color=style["color"])
        ax.plot(epochs, np.median(stacked, axis=0), ls=CLIP_STYLES[config.clip], **style)
    for r, curve in zip(runs, curves):
        if r.status == "diverged" and len(curve):
            ax.plot([len(curve)], [curve[-1]], marker="x", ms=7, ls="none", **style)


def _curve(ax, record, metric, window, lw):
    """A run's smoothed metric up to its first non-finite value; a diverged run ends in an x."""
    values = finite_prefix(record.metrics[metric])
    style = dict(color=MODE_COLOURS[record.config.mode], lw=lw)
    if len(values):
        ax.plot(np.arange(1, len(values) + 1), smooth(values, window),
                ls=CLIP_STYLES[record.config.clip], **style)
    if record.status == "diverged":
        end = smooth(values, window)[-1] if len(values) else record.metrics[metric][0]
        if np.isfinite(end):
            ax.plot([len(values)], [end], marker="x", ms=7, ls="none", **style)


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
