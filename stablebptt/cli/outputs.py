"""The files the commands write besides run files: figures, GIFs and diagnosis files.

Each appears whole or not at all (:func:`stablebptt._atomic.atomic_path`): a killed process or a
full disk leaves the previous file as it was.
"""

import os

import numpy as np

from .._atomic import atomic_path

FIGURE_DPI = {"paper": 130, "gradients": 110, "diagnose": 110, "toy": 120, "trajectories": 120}


def save_figure(fig, path, dpi):
    """Save ``fig`` to ``path`` atomically (the format from its suffix); returns ``path``."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=os.path.splitext(path)[1][1:].lower())
    return path


def save_png_pdf(fig, stem, dpi):
    """Save ``fig`` as ``stem.png`` and ``stem.pdf``; returns the two paths."""
    return [save_figure(fig, f"{stem}.{ext}", dpi) for ext in ("png", "pdf")]


def save_figures(figures, folder, dpi):
    """Save ``{stem: Figure}`` as PNG and PDF in ``folder``; returns the paths."""
    return [path for stem, fig in figures.items()
            for path in save_png_pdf(fig, os.path.join(folder, stem), dpi)]


def save_animation(animation, path, fps):
    """Write a :class:`~matplotlib.animation.FuncAnimation` as a GIF, atomically."""
    from matplotlib.animation import PillowWriter

    with atomic_path(path) as tmp:
        animation.save(tmp, writer=PillowWriter(fps=fps))
    return path


def run_diagnosis(problem, theta, x0, stem, attrs, title, horizons=12):
    """Diagnose, write ``stem.h5`` and the figure (PNG, PDF); returns ``(paths, reading)``."""
    from ..plots.diagnose import diagnosis_figure
    from ..train.diagnose import diagnose, reading, write_diagnosis

    diag = diagnose(problem, theta, x0, horizons)
    attrs = {**attrs, "samples": len(x0)}
    paths = [write_diagnosis(stem + ".h5", diag, attrs)]
    paths += save_png_pdf(diagnosis_figure(diag, title), stem, dpi=FIGURE_DPI["diagnose"])
    return paths, reading(diag)


def toy_diagnosis(out_folder, theta=None):
    """The gradient-flow view (``stablebptt diagnose``) of Figure 1's unrolled toy at ``theta``
    (default the star in Figure 1): the physics path s = x + c passes the adjoint on unchanged,
    the network path multiplies it by df/dx = 2 t1 x + t2 at every step. Returns
    ``(paths, reading)``."""
    from ..train.toy import DIAGNOSIS_POINT, unrolled_toy

    theta = DIAGNOSIS_POINT if theta is None else theta
    problem, x0 = unrolled_toy()
    attrs = {"task": "toy", "params": f"theta={tuple(theta)}"}
    title = f"unrolled toy (Figure 1) at theta = {tuple(theta)} (the star): gradient flow"
    return run_diagnosis(problem, np.array(theta, dtype=np.float64), x0,
                         os.path.join(out_folder, "diagnose_toy"), attrs, title, horizons=4)
