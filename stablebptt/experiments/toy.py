"""The paper's toy examples (Figures 1 and 2), computed with the library's own engine and Adam.

Figure 2: Adam from (2, 4) for 200 iterations on L = t1^2 + t2^2 following (a) the gradient field,
(b) the gradient plus its rotation by 90 degrees, (c) their combination by the C rule (keep each
component of (b) where its sign agrees with (a)). The gradient comes from the engine: a one-step
``Shift`` in 2-D driven by a ``Constant`` control, whose loss is |t|^2 / 2 (so the field is twice
the engine's gradient).

Figure 1: the unrolled toy f = t1 x^2 + t2 x, s = x + c, x0 = -0.3, y = 2, 4 steps: its loss
landscape and the regular (R), modified (M) and combined (C) gradient fields from the engine.
"""

import os

import numpy as np

from ..adjoint.engine import Problem
from ..adjoint.modes import combine_gradients
from ..controllers import Constant, Quadratic
from ..sims import Shift
from .figures import save_png_pdf
from .optim import Adam

ROTATION = 2.0  # weight of the rotated component in field (b)
# Figure 1's point for the gradient-flow view: there the network path explodes over 4 steps
DIAGNOSIS_POINT = (-1.0, 2.0)
START = (2.0, 4.0)
FIELD_COLOURS = {"gradient": "#ef476f", "rotation": "#ffd166", "combination": "#06d6a0"}
FIELD_TITLES = {"gradient": "Gradient field", "rotation": "+ Rotation", "combination": "Combination"}


class RotationToy:
    """The three fields of Figure 2 at a point ``theta``."""

    def __init__(self, rotation=ROTATION):
        self.rotation = rotation
        self.problem = Problem(Shift(target=(0.0, 0.0)), Constant(2, 2), 1)
        self._x0 = np.zeros((1, 2))

    def loss(self, theta):
        return 2.0 * self.problem.loss(np.asarray(theta, dtype=np.float64), self._x0)

    def field(self, theta, kind):
        g = 2.0 * self.problem.gradient(np.asarray(theta, dtype=np.float64), self._x0, "R").grad
        if kind == "gradient":
            return g
        rotated = g + self.rotation * np.array([-g[1], g[0]])
        if kind == "rotation":
            return rotated
        if kind == "combination":
            return combine_gradients(rotated, g)
        raise ValueError(f"unknown field {kind!r}")

    def adam(self, kind, start=START, iterations=200, lr=0.1):
        """Adam's path ``(iterations+1, 2)`` following ``kind`` and the loss along it."""
        theta = np.array(start, dtype=np.float64)
        optimizer = Adam(lr=lr)
        state = optimizer.init(theta)
        path, losses = [theta.copy()], [self.loss(theta)]
        for _ in range(iterations):
            optimizer.update(theta, self.field(theta, kind), state)
            path.append(theta.copy())
            losses.append(self.loss(theta))
        return np.array(path), np.array(losses)


def unrolled_toy():
    """Figure 1's unrolled toy: the problem and its initial state."""
    return Problem(Shift(target=2.0), Quadratic(), 4), np.array([[-0.3]])


def unrolled_fields(t1, t2):
    """Loss and R, M, C gradients of Figure 1's unrolled toy on a grid (engine, float64)."""
    problem, x0 = unrolled_toy()
    loss = np.zeros(t1.shape)
    fields = {m: np.zeros(t1.shape + (2,)) for m in "RMC"}
    for idx in np.ndindex(t1.shape):
        theta = np.array([t1[idx], t2[idx]])
        result = problem.gradient(theta, x0, "C")
        loss[idx] = result.loss
        fields["R"][idx] = result.grad_regular
        fields["M"][idx] = result.grad_modified
        fields["C"][idx] = result.grad
    return loss, fields


def toy_figures(out_folder, iterations=200, resolution=41):
    """Write figure1_toy and figure2_toy (PNG and PDF); returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_folder, exist_ok=True)
    written = []

    toy = RotationToy()
    axis = np.linspace(-5, 5, resolution)
    t1, t2 = np.meshgrid(axis, axis)
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6), gridspec_kw={"width_ratios": [1, 1, 1, 0.8]})
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
    written += save_png_pdf(fig, os.path.join(out_folder, "figure2_toy"), dpi=120)
    plt.close(fig)

    axis1 = np.linspace(-1.5, 1.5, resolution)
    axis2 = np.linspace(-1.5, 2.5, resolution)
    t1, t2 = np.meshgrid(axis1, axis2)
    loss, fields = unrolled_fields(t1, t2)
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
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
    written += save_png_pdf(fig, os.path.join(out_folder, "figure1_toy"), dpi=120)
    plt.close(fig)
    return written


def toy_diagnosis(out_folder, theta=DIAGNOSIS_POINT):
    """The gradient-flow view (``stablebptt diagnose``) of Figure 1's unrolled toy at ``theta``
    (the star in Figure 1): the physics path s = x + c passes the adjoint on unchanged, the
    network path multiplies it by df/dx = 2 t1 x + t2 at every step. Returns
    ``(paths, reading)``."""
    from .diagnose import run_diagnosis

    problem, x0 = unrolled_toy()
    attrs = {"task": "toy", "params": f"theta={tuple(theta)}"}
    title = f"unrolled toy (Figure 1) at theta = {tuple(theta)} (the star): gradient flow"
    return run_diagnosis(problem, np.array(theta, dtype=np.float64), x0,
                         os.path.join(out_folder, "diagnose_toy"), attrs, title, horizons=4)
