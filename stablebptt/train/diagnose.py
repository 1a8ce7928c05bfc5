"""``stablebptt diagnose``: why the gradient modes behave as they do, for one set of parameters.

Three views of the gradient flow along a controlled trajectory (:mod:`stablebptt.adjoint.flow`):
the adjoint norms per step along the regular, physics and network paths; the gradient norm of
R, M and S as the horizon grows; and the spectral norms of the per-step Jacobians. They are
written to an HDF5 file (layout below), summarised in a paragraph of plain language, and drawn
by :func:`stablebptt.plots.diagnosis_figure`.

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
from typing import Sequence, Union

import numpy as np

from ..adjoint.flow import PATHS, GradientFlow, log_spaced_horizons
from ..adjoint.modes import cosine_similarity, kept_fraction
from .runfile import atomic_h5

FORMAT = "stablebptt-diagnosis"


def diagnose(problem, theta: np.ndarray, x0: np.ndarray,
             horizons: Union[int, Sequence[int]] = 12) -> dict:
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


def read_diagnosis(path: Union[str, os.PathLike]) -> dict:
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


def config_attrs(config, which):
    return {"config": json.dumps(config.to_dict()), "params": which, "task": config.task}


def default_stem(folder, name, which):
    return os.path.join(folder, f"{name}_diagnose_{which}")
