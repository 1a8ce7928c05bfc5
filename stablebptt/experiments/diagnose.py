"""``stablebptt diagnose``: why the gradient modes behave as they do, for one set of parameters.

Three views of the gradient flow along a controlled trajectory (:mod:`stablebptt.adjoint.flow`):
the adjoint norms per step along the regular, physics and network paths; the gradient norm of
R, M and S as the horizon grows; and the spectral norms of the per-step Jacobians. They are
written to an HDF5 file (layout below), drawn as one figure (PNG and PDF), and summarised in a
paragraph of plain language.

HDF5 layout::

    /                  attrs: format="stablebptt-diagnosis", config (JSON), params (which
                       parameters), samples, reading (the plain-language summary), cosine_MR,
                       kept_fraction
    /step              (N+1,) step index n of the adjoint norms
    /adjoint_norm/P    (N+1,) batch mean of the per-sample |lam_n| along path P (regular,
                       physics, network)
    /horizon           (H,) horizons h of the horizon sweep
    /grad_norm/M       (H,) |g| of mode M (R, M, S) for the loss of the first h steps
    /jacobian_norm/J   (N, B) spectral norm of the step-n Jacobian J (physics, network,
                       closed_loop) for each sample
"""

import json
import os
import warnings

import numpy as np

from ..adjoint.flow import PATHS, GradientFlow, log_spaced_horizons
from ..adjoint.modes import cosine_similarity, kept_fraction
from .figures import save_png_pdf
from .paper import MODE_COLOURS
from .results import atomic_h5

FORMAT = "stablebptt-diagnosis"
# the colours of the modes in every figure: a path is drawn in the colour of the mode it gives
PATH_STYLE = {"regular": (MODE_COLOURS["R"], "regular path (1, 1): R"),
              "physics": (MODE_COLOURS["M"], "physics path (1, 0): M"),
              "network": (MODE_COLOURS["N"], "network path (0, 1): N")}
JACOBIAN_STYLE = {"physics": (MODE_COLOURS["M"], "physics ds/dx"),
                  "network": (MODE_COLOURS["N"], "network ds/dc df/dx"),
                  "closed_loop": (MODE_COLOURS["R"], "closed loop (sum)")}


def diagnose(problem, theta, x0, horizons=12):
    """Every number of a diagnosis as a dict (float64 arrays; see the module's HDF5 layout).

    ``horizons`` is a count of log-spaced horizons from 1 to N, or the horizons themselves.
    """
    with np.errstate(all="ignore"):  # a diverging trajectory gives inf/NaN, which the reading names
        return _diagnose(problem, theta, x0, horizons)


def _diagnose(problem, theta, x0, horizons):
    flow = GradientFlow(problem, theta, x0)
    if np.ndim(horizons) == 0:
        horizons = log_spaced_horizons(flow.n_steps, horizons)
    sweeps = {name: flow.sweep(name) for name in PATHS}
    regular, modified = sweeps["regular"].grad, sweeps["physics"].grad
    return {
        "step": np.arange(flow.n_steps + 1),
        "adjoint_norm": {name: sweep.adjoint_norms for name, sweep in sweeps.items()},
        "horizon": np.asarray(horizons),
        "grad_norm": flow.horizon_gradients(horizons),
        "jacobian_norm": flow.jacobian_norms(),
        "cosine_MR": cosine_similarity(modified, regular),
        "kept_fraction": kept_fraction(modified, regular),
    }


def _factor(value):
    """``×3.2``, ``×1e-12``; a product below the float range reads ``×0 (underflow)``."""
    if not np.isfinite(value):
        return "not finite"
    if value == 0.0:
        return "×0 (underflow)"
    return f"×{value:.2g}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")


def reading(diag):
    """A paragraph saying in plain words what the numbers of ``diag`` show."""
    norms, jac = diag["adjoint_norm"], diag["jacobian_norm"]
    n_steps = len(diag["step"]) - 1

    def growth(path):
        start, end = norms[path][n_steps], norms[path][0]
        return end / start if start > 0 else float("nan")

    def median(name):
        return float(np.median(jac[name]))

    phys, reg, net = growth("physics"), growth("regular"), growth("network")
    text = [f"Backpropagated over {n_steps} steps, the adjoint changes by {_factor(phys)} along the "
            f"physics path (median per-step Jacobian norm {median('physics'):.3g}), by "
            f"{_factor(net)} along the network path ({median('network'):.3g}) and by "
            f"{_factor(reg)} along both together, the regular gradient's path "
            f"({median('closed_loop'):.3g})."]
    if not np.all(np.isfinite([phys, reg])):
        text.append("The trajectory or its adjoint leaves the float range: these parameters "
                    "diverge.")
    else:
        if phys > 1e2:
            text.append("The physics itself amplifies feedback over the horizon (unstable or "
                        "chaotic dynamics): M keeps that growth, only clipping tames it.")
        elif phys < 1e-2:
            text.append("The physics damps feedback over the horizon: early steps get little "
                        "gradient along it.")
        if norms["network"][0] == 0.0 and np.all(jac["network"] == 0.0):
            text.append("The network path is exactly zero: at these parameters the controller's "
                        "output does not depend on its input (e.g. a zero-initialised output "
                        "kernel), so R and M coincide.")
        elif reg > 1e2 * phys:
            text.append(f"Feedback through the controller's input makes R's adjoint grow "
                        f"{_factor(reg / phys)} beyond the physics path's: it dominates R's "
                        "gradient, and M (and C) discard it.")
        elif reg > 3 * phys:
            text.append(f"Feedback through the controller's input makes R's adjoint grow "
                        f"{_factor(reg / phys)} beyond the physics path's: a large part of R's "
                        "gradient comes through it, and M drops that part.")
        elif reg < 1e-2 * phys:
            text.append(f"Feedback through the controller's input damps R's adjoint "
                        f"({_factor(reg / phys)} of the physics path's): M, which drops it, "
                        "keeps the gradient that R loses.")
        elif reg < phys / 3:
            text.append(f"Feedback through the controller's input shrinks R's adjoint to "
                        f"{_factor(reg / phys)} of the physics path's.")
        else:
            text.append(f"R's adjoint stays within {_factor(max(reg / phys, phys / reg))} of the "
                        "physics path's: feedback through the controller's input changes its "
                        "size little.")
    h, g = diag["horizon"], diag["grad_norm"]
    if len(h) > 1:
        ratios = ", ".join(f"{_factor(g[m][-1] / g[m][0]) if g[m][0] > 0 else 'from zero'} for {m}"
                           for m in g)
        text.append(f"From horizon {h[0]} to {h[-1]} the gradient norm changes by {ratios}.")
    text.append(f"At the full horizon cos(g_M, g_R) = {diag['cosine_MR']:.3f} and the sign rule "
                f"of C keeps {100 * diag['kept_fraction']:.0f}% of g_M's components.")
    return " ".join(text)


def write_diagnosis(path, diag, attrs):
    """Write ``diag`` (and ``attrs``, e.g. the config and which parameters) to ``path`` atomically."""
    with atomic_h5(path) as f:
        f.attrs["format"] = FORMAT
        for key, value in attrs.items():
            f.attrs[key] = value
        f.attrs["reading"] = reading(diag)
        f.attrs["cosine_MR"] = diag["cosine_MR"]
        f.attrs["kept_fraction"] = diag["kept_fraction"]
        f["step"] = diag["step"]
        f["horizon"] = diag["horizon"]
        for group in ("adjoint_norm", "grad_norm", "jacobian_norm"):
            for name, values in diag[group].items():
                f[f"{group}/{name}"] = values
    return path


def read_diagnosis(path):
    """A diagnosis file as the dict :func:`diagnose` returns, with ``attrs`` added."""
    import h5py

    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise ValueError(f"not a stablebptt diagnosis file: {path}")
        diag = {"step": f["step"][()], "horizon": f["horizon"][()],
                "cosine_MR": float(f.attrs["cosine_MR"]),
                "kept_fraction": float(f.attrs["kept_fraction"]),
                "attrs": {k: v for k, v in f.attrs.items()}}
        for group in ("adjoint_norm", "grad_norm", "jacobian_norm"):
            diag[group] = {name: ds[()] for name, ds in f[group].items()}
    return diag


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


def diagnosis_figure(diag, stem, title):
    """Draw ``diag`` as ``stem.png`` and ``stem.pdf``; returns the two paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.9))
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
    paths = save_png_pdf(fig, stem, dpi=110)
    plt.close(fig)
    return paths


def run_diagnosis(problem, theta, x0, stem, attrs, title, horizons=12):
    """Diagnose, write ``stem.h5`` and the figure; returns ``(paths, reading)``."""
    diag = diagnose(problem, theta, x0, horizons)
    attrs = {**attrs, "samples": len(x0)}
    paths = [write_diagnosis(stem + ".h5", diag, attrs)]
    paths += diagnosis_figure(diag, stem, title)
    return paths, reading(diag)


def config_attrs(config, which):
    return {"config": json.dumps(config.to_dict()), "params": which, "task": config.task}


def default_stem(folder, name, which):
    return os.path.join(folder, f"{name}_diagnose_{which}")
