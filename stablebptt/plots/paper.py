"""The paper's result figures (3, 4, 5), learning curves and gradient-flow panels, as Figures.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot: nothing here
switches the backend or keeps figures alive, so a notebook shows what it is given and a script
saves it (``fig.savefig``)."""

from typing import Dict, Optional, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..train.summary import SMOOTHING, by_task, finite_prefix, panel_value, seed_groups, smooth

MODE_COLOURS = {"R": "#ef476f", "M": "#ffd166", "C": "#06d6a0", "S": "#073b4c", "N": "#118ab2"}
CLIP_STYLES = {"norm": "-", "value": "--", "none": ":"}
METRIC_TITLES = {"grad_size": "update size |g|^2"}

def _line_order(item):
    config = item[0]
    return (config.mode, config.clip)


def task_figure(records: Sequence, window: int = SMOOTHING) -> Figure:
    """The paper's figure of one task's runs (Figures 3, 4 and 5): a panel of smoothed test-loss
    curves per value of the task's panel setting (median and min-max band over seeds), then its
    extra panels (Figure 5: the update size).

    Parameters
    ----------
    records : runs of one task: run files read by :func:`~stablebptt.read_run` or in-memory
        :class:`~stablebptt.Run` objects.
    window : moving-mean window in epochs (the reference's 30; capped at a third of a run).

    Returns
    -------
    matplotlib.figure.Figure, drawn without pyplot (no backend is touched).
    """
    records = list(records)
    tasks = {r.config.task for r in records}
    if len(tasks) != 1:
        raise ValueError(f"task_figure draws the runs of one task, got {', '.join(sorted(tasks))}")
    task = tasks.pop()
    lines = sorted(seed_groups(records), key=_line_order)
    spec = records[0].config.task_def
    field = spec.panel_setting()
    title = spec.panel_title or (f"{field} = {{}}" if field else task)
    panels = sorted({panel_value(r.config, field) for r in records}, reverse=spec.panels_descending)
    extras = list(spec.figure_extra)
    n = len(panels) + len(extras)
    cols = min(n, spec.figure_columns or n)
    rows = -(-n // cols)
    # at least 6 inches wide, so that the legend below a single panel fits
    fig = Figure(figsize=(max(3.6 * cols, 6.0), 3.0 * rows + 0.5))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, value in zip(axes, panels):
        # the panel setting is part of a run's identity: a line lies in one panel
        panel_lines = [line for line in lines if panel_value(line[0], field) == value]
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
    return fig


def paper_figures(records: Sequence, window: int = SMOOTHING) -> Dict[str, Figure]:
    """:func:`task_figure` of every task among ``records``, by file stem (the task's
    ``figure_name``, e.g. ``figure4_cartpole``)."""
    return {(group[0].config.task_def.figure_name or f"figure_{task}"): task_figure(group, window)
            for task, group in sorted(by_task(records).items())}


def learning_curves(runs: Sequence, metric: str = "test_loss", window: int = SMOOTHING,
                    ax: Optional[Axes] = None) -> Figure:
    """One metric of any runs against the epoch, one line per run setting (runs that differ only
    in the seed: their median and min-max band), coloured by gradient mode.

    Parameters
    ----------
    runs : in-memory :class:`~stablebptt.Run` objects or records read from run files.
    metric : a name of :data:`~stablebptt.METRICS` (default the test loss).
    window : moving-mean window in epochs (capped at a third of a run).
    ax : draw into these axes (their figure is returned); default a new figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from ..train.runfile import METRICS

    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: one of {', '.join(METRICS)}")
    runs = list(runs)
    if ax is None:
        fig = Figure(figsize=(6.0, 4.0))
        ax = fig.subplots()
    else:
        fig = ax.figure
    lines = sorted(seed_groups(runs), key=_line_order)
    for config, members in lines:
        _seed_curve(ax, members, metric, window, lw=1.2, label=_line_label(config, lines))
    if metric in ("test_loss", "train_loss", "batch_loss", "grad_size", "grad_norm") and \
            any(np.any(np.asarray(line.get_ydata()) > 0) for line in ax.get_lines()):
        ax.set_yscale("log")
    longest = max((r.epochs_done for r in runs), default=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{METRIC_TITLES.get(metric, metric.replace('_', ' '))} "
                  f"(smoothed over {max(1, min(window, longest // 3))})")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def _line_label(config, lines):
    """A line's label: its mode and clipping, and the settings in which the lines differ."""
    label = f"{config.mode}, clip {config.clip}"
    settings = [c.settings() for c, _ in lines]
    varying = [k for k in settings[0] if k not in ("mode", "clip", "seed", "epochs")
               and len({str(s.get(k)) for s in settings}) > 1]
    values = config.settings()
    return label + "".join(f", {k}={values[k]}" for k in varying)


GRADIENT_PANELS = (("grad_norm", "|g| before clipping", "log"),
                   ("clipped_grad_norm", "|g| after clipping (to the optimiser)", "log"),
                   ("clip_active", "updates changed by clipping (fraction)", "linear"),
                   ("kept_fraction", "components kept by the sign rule (C)", "linear"))


def gradient_figure(records: Sequence, window: int = SMOOTHING) -> Figure:
    """The gradient-flow metrics of one task's runs: the gradient norm before and after
    clipping, how often clipping acted, and the fraction of g_M that C kept. Runs written before
    these metrics existed read them as NaN and draw nothing."""
    records = list(records)
    task = records[0].config.task
    lines = sorted(seed_groups(records), key=_line_order)
    fig = Figure(figsize=(3.6 * len(GRADIENT_PANELS), 3.0))
    axes = fig.subplots(1, len(GRADIENT_PANELS))
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
    return fig


def gradient_figures(records: Sequence, window: int = SMOOTHING) -> Dict[str, Figure]:
    """:func:`gradient_figure` of every task among ``records``, by file stem (``gradients_TASK``)."""
    return {f"gradients_{task}": gradient_figure(group, window)
            for task, group in sorted(by_task(records).items())}


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


def _seed_curve(ax, runs, metric, window, lw, label=None):
    """One line for runs that differ only in the seed: a single run as :func:`_curve`; several
    as the median of their smoothed curves with a min-max band, over the epochs every one of
    them has finite values for; a diverged seed still ends in an x where it diverged."""
    if len(runs) == 1:
        _curve(ax, runs[0], metric, window, lw, label)
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
        ax.plot(epochs, np.median(stacked, axis=0), ls=CLIP_STYLES[config.clip], label=label,
                **style)
    for r, curve in zip(runs, curves):
        if r.status == "diverged" and len(curve):
            ax.plot([len(curve)], [curve[-1]], marker="x", ms=7, ls="none", **style)


def _curve(ax, record, metric, window, lw, label=None):
    """A run's smoothed metric up to its first non-finite value; a diverged run ends in an x."""
    values = finite_prefix(record.metrics[metric])
    style = dict(color=MODE_COLOURS[record.config.mode], lw=lw)
    if len(values):
        ax.plot(np.arange(1, len(values) + 1), smooth(values, window),
                ls=CLIP_STYLES[record.config.clip], label=label, **style)
    if record.status == "diverged":
        end = smooth(values, window)[-1] if len(values) else record.metrics[metric][0]
        if np.isfinite(end):
            ax.plot([len(values)], [end], marker="x", ms=7, ls="none", **style)
