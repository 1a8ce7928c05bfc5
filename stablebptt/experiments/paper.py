"""The paper's result figures (3, 4, 5) and a summary table, made from a folder of run files."""

import csv
import glob
import itertools
import os
import sys

import numpy as np

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


def paper_figures(records, out_folder, window=SMOOTHING):
    """One figure per task present (PNG and PDF); returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_folder, exist_ok=True)
    written = []
    for task, group in sorted(_by_task(records).items()):
        spec = group[0].config.task_def
        field = spec.panel_setting()
        title = spec.panel_title or (f"{field} = {{}}" if field else task)
        panels = sorted({_panel_value(r.config, field) for r in group},
                        reverse=spec.panels_descending)
        extras = list(spec.figure_extra)
        n = len(panels) + len(extras)
        cols = min(n, spec.figure_columns or n)
        rows = -(-n // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
        axes = axes.ravel()
        for ax, value in zip(axes, panels):
            members = [r for r in group if _panel_value(r.config, field) == value]
            for r in sorted(members, key=lambda r: (r.config.mode, r.config.clip, r.config.seed)):
                _curve(ax, r, "test_loss", window, lw=1.2)
            ax.set_title(title.format(value), fontsize=10)
            ax.set_yscale("log")
            _paper_range(ax, spec.figure_yrange)
            _plain_log_ticks(ax)
            ax.set_xlabel("epoch", fontsize=8)
            longest = max(r.epochs_done for r in members)
            ax.set_ylabel(f"test loss (smoothed over {max(1, min(window, longest // 3))})", fontsize=8)
        for ax, metric in zip(axes[len(panels):], extras):
            for r in group:
                _curve(ax, r, metric, window, lw=1.0)
            ax.set_yscale("log")
            ax.set_title(f"{METRIC_TITLES.get(metric, metric)} (all panels)", fontsize=10)
            ax.set_xlabel("epoch", fontsize=8)
        for ax in axes[n:]:
            ax.set_visible(False)
        _legend(fig, group)
        fig.suptitle(task, fontsize=12)
        fig.tight_layout(rect=(0, 0.06, 1, 0.97))
        stem = os.path.join(out_folder, spec.figure_name or f"figure_{task}")
        for ext in ("png", "pdf"):
            fig.savefig(f"{stem}.{ext}", dpi=130)
            written.append(f"{stem}.{ext}")
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
        fig, axes = plt.subplots(1, len(GRADIENT_PANELS), figsize=(3.6 * len(GRADIENT_PANELS), 3.0))
        for ax, (metric, title, scale) in zip(axes, GRADIENT_PANELS):
            for r in sorted(group, key=lambda r: (r.config.mode, r.config.clip, r.config.seed)):
                _curve(ax, r, metric, window, lw=1.0)
            if scale == "log" and any(np.any(line.get_ydata() > 0) for line in ax.get_lines()):
                ax.set_yscale("log")
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("epoch", fontsize=8)
        _legend(fig, group)
        fig.suptitle(f"{task}: gradient flow", fontsize=11)
        fig.tight_layout(rect=(0, 0.1, 1, 0.94))
        stem = os.path.join(out_folder, f"gradients_{task}")
        for ext in ("png", "pdf"):
            fig.savefig(f"{stem}.{ext}", dpi=110)
            written.append(f"{stem}.{ext}")
        plt.close(fig)
    return written


def _legend(fig, group):
    """Mode colours, clipping line styles and the divergence marker, below the panels."""
    from matplotlib.lines import Line2D

    modes = sorted({r.config.mode for r in group}, key="RMCSN".index)
    clips = sorted({r.config.clip for r in group})
    handles = ([Line2D([], [], color=MODE_COLOURS[m], label=m) for m in modes]
               + [Line2D([], [], color="grey", ls=CLIP_STYLES[c], label=f"clip {c}") for c in clips])
    if any(r.status == "diverged" for r in group):
        handles.append(Line2D([], [], color="grey", marker="x", ls="none", label="diverged"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)


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


SUMMARY_FIELDS = ("task", "setting", "mode", "clip", "lr", "seed", "status", "epochs",
                  "diverged_epoch", "final_test_loss", "best_test_loss", "best_epoch",
                  "epochs_to_threshold", "file")


def summary_rows(runs, threshold):
    """One row per run: final and best test loss and the first epoch at or below ``threshold``."""
    rows = []
    for path, r in sorted(runs.items(), key=lambda kv: (kv[1].config.task, kv[0])):
        field = r.config.task_def.panel_setting()
        test = np.asarray(r.metrics["test_loss"])
        finite = finite_prefix(test)
        below = np.nonzero(finite <= threshold)[0] if threshold is not None else []
        rows.append(dict(
            task=r.config.task, setting=f"{field}={getattr(r.config, field)}" if field else "",
            mode=r.config.mode,
            clip=r.config.clip, lr=r.config.lr, seed=r.config.seed, status=r.status,
            epochs=r.epochs_done, diverged_epoch=r.attrs.get("diverged_epoch", ""),
            final_test_loss=float(test[-1]) if len(test) else float("nan"),
            best_test_loss=float(finite.min()) if len(finite) else float("nan"),
            best_epoch=int(np.argmin(finite)) + 1 if len(finite) else "",
            epochs_to_threshold=int(below[0]) + 1 if len(below) else "",
            file=os.path.basename(path)))
    return rows


def write_summary(rows, path, stream=None):
    """Save the rows as CSV and print them as a table (to ``stream``, default stdout)."""
    stream = stream or sys.stdout
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    header = (f"{'task':9} {'setting':16} {'mode':4} {'clip':5} {'lr':>7} {'seed':>4} "
              f"{'status':9} {'epochs':>6} {'final':>10} {'best':>10} {'to thr.':>7}")
    print(header, file=stream)
    for row in rows:
        print(f"{row['task']:9} {row['setting']:16} {row['mode']:4} {row['clip']:5} "
              f"{row['lr']:>7g} {row['seed']:>4} {row['status']:9} {row['epochs']:>6} "
              f"{row['final_test_loss']:>10.4g} {row['best_test_loss']:>10.4g} "
              f"{str(row['epochs_to_threshold']):>7}", file=stream)
