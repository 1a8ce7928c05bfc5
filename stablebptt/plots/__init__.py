"""Figures: every function returns a :class:`matplotlib.figure.Figure` (or an animation) built
without pyplot, so nothing here switches a notebook's backend; save one with ``fig.savefig``.

Names are imported on first use (matplotlib loads then).
"""

from .._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["gradient_figure", "gradient_figures", "learning_curves", "paper_figures",
                     "task_figure"], ".paper"),
    **dict.fromkeys(["animation", "trajectory_figure"], ".trajectories"),
    **dict.fromkeys(["diagnosis_figure"], ".diagnose"),
    **dict.fromkeys(["rotation_figure", "toy_figures", "unrolled_figure"], ".toy"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
