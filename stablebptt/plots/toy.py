"""The paper's toy figures: Figure 1 (the unrolled toy's fields) and Figure 2 (Adam on a rotating
field), computed by :mod:`stablebptt.train.toy`."""

from typing import Dict

import numpy as np
from matplotlib.figure import Figure

from ..train.toy import DIAGNOSIS_POINT, START, RotationToy, unrolled_fields

FIELD_COLOURS = {"gradient": "#ef476f", "rotation": "#ffd166", "combination": "#06d6a0"}
FIELD_TITLES = {"gradient": "Gradient field", "rotation": "+ Rotation", "combination": "Combination"}


def rotation_figure(iterations: int = 200, resolution: int = 41) -> Figure:
    """Figure 2: Adam on the gradient field, the rotated field and their combination by the
    sign rule, over |v|, with the three loss curves."""
    toy = RotationToy()
    axis = np.linspace(-5, 5, resolution)
    t1, t2 = np.meshgrid(axis, axis)
    fig = Figure(figsize=(15, 3.6))
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1, 1, 0.8]})
    losses = {}
    for ax, kind in zip(axes[:3], FIELD_TITLES):
        field = np.array([toy.field((a, b), kind) for a, b in zip(t1.ravel(), t2.ravel())])
        u, v = field[:, 0].reshape(t1.shape), field[:, 1].reshape(t1.shape)
        ax.imshow(np.hypot(u, v), extent=(-5, 5, -5, 5), origin="lower", cmap="bone")
        ax.streamplot(axis, axis, u, v, color=FIELD_COLOURS[kind], density=0.9, linewidth=1)
        path, losses[kind] = toy.adam(kind, iterations=iterations)
        ax.plot(path[:, 0], path[:, 1], ".-", color="#9b30d9", ms=3, lw=1, label="Adam trajectory")
        ax.plot(*START, "X", color="#8ecae6", ms=10, label="start")
        ax.set_title(FIELD_TITLES[kind])
        ax.set_xlim(-5, 5)
        ax.set_ylim(-5, 5)
        ax.set_xlabel(r"$\theta_1$")
    axes[0].set_ylabel(r"$\theta_2$")
    axes[0].legend(loc="lower center", fontsize=8)
    for kind, curve in losses.items():
        axes[3].plot(curve, color=FIELD_COLOURS[kind], label=FIELD_TITLES[kind])
    axes[3].set_yscale("log")
    axes[3].set_xlabel("iteration")
    axes[3].set_title("Loss curve")
    axes[3].legend(fontsize=8)
    fig.tight_layout()
    return fig


def unrolled_figure(resolution: int = 41) -> Figure:
    """Figure 1: the unrolled toy's loss landscape and its R, M and C descent directions (the
    star: the point :func:`stablebptt.cli.outputs.toy_diagnosis` diagnoses)."""
    axis1 = np.linspace(-1.5, 1.5, resolution)
    axis2 = np.linspace(-1.5, 2.5, resolution)
    t1, t2 = np.meshgrid(axis1, axis2)
    loss, fields = unrolled_fields(t1, t2)
    fig = Figure(figsize=(15, 3.6))
    axes = fig.subplots(1, 4)
    im = axes[0].imshow(np.log10(loss + 1e-12), extent=(axis1[0], axis1[-1], axis2[0], axis2[-1]),
                        origin="lower", aspect="auto", cmap="viridis")
    fig.colorbar(im, ax=axes[0], label="log10 loss")
    axes[0].set_title("Loss landscape")
    for ax, mode, title in zip(axes[1:], "RMC", ("Regular gradient (R)", "Modified (M)",
                                                  "Combined (C)")):
        u, v = -fields[mode][..., 0], -fields[mode][..., 1]  # descent directions
        ax.imshow(np.log10(loss + 1e-12), extent=(axis1[0], axis1[-1], axis2[0], axis2[-1]),
                  origin="lower", aspect="auto", cmap="Greys", alpha=0.5)
        ax.streamplot(axis1, axis2, u, v, color="#073b4c", density=0.9, linewidth=0.8)
        ax.plot(*DIAGNOSIS_POINT, "*", color="#ef476f", ms=10)
        ax.set_xlim(axis1[0], axis1[-1])
        ax.set_ylim(axis2[0], axis2[-1])
        ax.set_title(title)
    for ax in axes:
        ax.set_xlabel(r"$\theta_1$")
    axes[0].set_ylabel(r"$\theta_2$")
    fig.suptitle("unrolled toy: f = t1 x^2 + t2 x, s = x + c, x0 = -0.3, y = 2, 4 steps", fontsize=10)
    fig.tight_layout()
    return fig


def toy_figures(iterations: int = 200, resolution: int = 41) -> Dict[str, Figure]:
    """Figures 1 and 2 by file stem (``figure1_toy``, ``figure2_toy``)."""
    return {"figure2_toy": rotation_figure(iterations, resolution),
            "figure1_toy": unrolled_figure(resolution)}
