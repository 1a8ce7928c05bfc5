"""Pictures of what a trained controller does, drawn from a run file."""

import os

import numpy as np

from .presets import build_task
from .results import RunFileError, read_run

PICTURE_SUFFIXES = (".png", ".pdf", ".svg")


def save_png_pdf(fig, stem, dpi):
    """Save ``fig`` as ``stem.png`` and ``stem.pdf``; returns the two paths."""
    paths = [f"{stem}.{ext}" for ext in ("png", "pdf")]
    for path in paths:
        fig.savefig(path, dpi=dpi)
    return paths


def default_picture(path, suffix):
    """``RUN_suffix`` beside the run file ``RUN.h5``."""
    return os.path.splitext(os.fspath(path))[0] + "_" + suffix


def controlled_rollout(path, samples=4, which="final"):
    """Roll the run's stored controller out from its first test states.

    Returns ``(task, states (N+1, K, S), controls (N, K, C), finite_steps)``; ``which`` picks the
    initial or the final parameters of the run (for a diverged run: its last finite ones).
    ``finite_steps`` is the number of leading states that are finite for every sample: a run
    driven out of the float range is drawn up to there.
    """
    record = read_run(path)
    # on the CPU whatever device trained it, with the stored data
    task = build_task(record.config.replace(device="cpu"), data=(record.train, record.test))
    params = record.params_final if which == "final" else record.params_initial
    dtype = np.dtype(record.config.dtype)
    theta = task.controller.flatten(params, dtype)
    if not np.all(np.isfinite(theta)):
        raise RunFileError(f"the {which} parameters of {path} are not finite (status "
                           f"{record.status}); draw --params initial instead")
    with np.errstate(all="ignore"):
        _, states, controls = task.problem.rollout(theta, record.test[:samples].astype(dtype))
    finite = np.all(np.isfinite(states.reshape(len(states), -1)), axis=1)
    finite_steps = len(states) if finite.all() else int(np.argmin(finite))
    return task, states, controls, max(finite_steps, 1)


def plot_trajectories(path, out=None, samples=4, which="final"):
    """Draw the controlled trajectories of a run with its task's ``draw_trajectories`` (guidance:
    the paper's Figure 3a; quantum: the density and control of Figure 5a; cart-pole: the pole
    angles and the cart) and save them as ``out`` (default: next to the run file, .png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task, states, controls, n_finite = controlled_rollout(path, samples, which)
    states, controls = states[:n_finite], controls[:n_finite]
    out = out or default_picture(path, f"trajectories_{which}.png")
    fig = plt.figure()
    task.config.task_def.draw_trajectories(fig, task.problem.sim, states, controls,
                                           task.config.dt)
    title = f"{os.path.basename(os.fspath(path))} ({which} parameters)"
    if n_finite < task.config.n_steps + 1:
        title += f"; the state leaves the float range after step {n_finite - 1}"
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def animate_run(path, out=None, sample=0, fps=25, which="final"):
    """A GIF of the run's controller at work on one test state, drawn by its task's ``animation``
    (cart-pole swing-up, guidance herd, the quantum density), with the time in a corner; returns
    the file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    task, states, controls, n_finite = controlled_rollout(path, sample + 1, which)
    states = states[:n_finite, sample]
    sim, dt = task.problem.sim, task.config.dt
    out = out or default_picture(path, f"{which}.gif")
    fig, ax = plt.subplots(figsize=(5, 4))
    draw = task.config.task_def.animation(ax, sim, states)
    clock = ax.text(0.02, 0.95, "", transform=ax.transAxes, fontsize=8, va="top")

    def frame(t):
        clock.set_text(f"t = {t * dt:.2f}")
        return draw(t) + [clock]

    title = f"{os.path.basename(os.fspath(path))}\ntest state {sample}"
    if n_finite < task.config.n_steps + 1:
        title += f" (state leaves the float range after step {n_finite - 1})"
    ax.set_title(title, fontsize=8)
    animation = FuncAnimation(fig, frame, frames=len(states), blit=True)
    animation.save(out, writer=PillowWriter(fps=fps))
    plt.close(fig)
    return out
