"""The figure of ``stablebptt diagnose``: the gradient flow along a controlled trajectory."""

import warnings

import numpy as np
from matplotlib.figure import Figure

from .paper import MODE_COLOURS

# the colours of the modes in every figure: a path is drawn in the colour of the mode it gives
PATH_STYLE = {"regular": (MODE_COLOURS["R"], "regular path (1, 1): R"),
              "physics": (MODE_COLOURS["M"], "physics path (1, 0): M"),
              "network": (MODE_COLOURS["N"], "network path (0, 1): N")}
JACOBIAN_STYLE = {"physics": (MODE_COLOURS["M"], "physics ds/dx"),
                  "network": (MODE_COLOURS["N"], "network ds/dc df/dx"),
                  "closed_loop": (MODE_COLOURS["R"], "closed loop (sum)")}


def _positive(values):
    """``values`` with zeros and negatives as NaN, for a log axis."""
    values = np.array(values, dtype=np.float64)
    values[~(values > 0)] = np.nan
    return values


def _at_most_decades(ax, curves, decades):
    """Show at most ``decades`` below the largest value: a path that vanishes (to 1e-300 over a
    long horizon) leaves through the bottom instead of flattening the others."""
    values = np.concatenate([_positive(c) for c in curves])
    values = values[np.isfinite(values)]
    if len(values) and values.max() / values.min() > 10.0**decades:
        ax.set_ylim(values.max() * 10.0**-decades, values.max() * 10)


def diagnosis_figure(diag: dict, title: str = "") -> Figure:
    """The three views of a diagnosis (:func:`stablebptt.diagnose`) side by side: the adjoint
    norms per step along each path, |g| of R, M and S against the horizon, and the per-step
    Jacobian norms.

    Parameters
    ----------
    diag : what :func:`~stablebptt.diagnose` returns or :func:`~stablebptt.read_diagnosis` reads.
    title : the figure's title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = Figure(figsize=(14, 3.9))
    axes = fig.subplots(1, 3)
    ax = axes[0]
    for name, (colour, label) in PATH_STYLE.items():
        ax.plot(diag["step"], _positive(diag["adjoint_norm"][name]), color=colour, label=label)
    ax.set_yscale("log")
    _at_most_decades(ax, [diag["adjoint_norm"][name] for name in PATH_STYLE], 16)
    ax.invert_xaxis()  # the sweep runs from N back to 0
    ax.set_xlabel("step n (backpropagated from N to 0)")
    ax.set_title("adjoint norm |λ_n| (batch mean)")
    ax.legend(fontsize=7)

    ax = axes[1]
    for mode, values in diag["grad_norm"].items():
        ax.plot(diag["horizon"], _positive(values), "o-", ms=3, color=MODE_COLOURS[mode],
                label=mode)
    ax.set_xscale("log")
    ax.set_yscale("log")
    if len(diag["horizon"]) <= 8:  # a few horizons: label each, in plain numbers
        ax.set_xticks(diag["horizon"], [str(h) for h in diag["horizon"]])
        ax.minorticks_off()
    ax.set_xlabel("horizon h (steps)")
    ax.set_title("gradient norm |g| against horizon")
    ax.legend(fontsize=7)

    ax = axes[2]
    steps = np.arange(len(diag["step"]) - 1)
    for name, (colour, label) in JACOBIAN_STYLE.items():
        norms = _positive(diag["jacobian_norm"][name])
        with warnings.catch_warnings():  # a step where every sample is zero: all-NaN slice
            warnings.simplefilter("ignore", RuntimeWarning)
            ax.fill_between(steps, np.nanmin(norms, axis=1), np.nanmax(norms, axis=1),
                            color=colour, alpha=0.2, lw=0)
            ax.plot(steps, np.nanmedian(norms, axis=1), color=colour, label=label)
    ax.axhline(1.0, color="k", lw=0.5, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("step n")
    ax.set_title("per-step Jacobian spectral norm (median, min-max)")
    ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
