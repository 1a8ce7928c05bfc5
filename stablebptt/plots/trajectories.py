"""Pictures of what a trained controller does: its trajectories and an animation."""

import os

from matplotlib.figure import Figure

from ..train.build import controlled_rollout


def trajectory_figure(record, samples: int = 4, which: str = "final") -> Figure:
    """The controlled trajectories of a run, drawn by its task's ``draw_trajectories`` (guidance:
    the paper's Figure 3a; quantum: the density and control of Figure 5a; cart-pole: the pole
    angles and the cart).

    Parameters
    ----------
    record : a run read by :func:`~stablebptt.read_run` (or an in-memory :class:`~stablebptt.Run`).
    samples : how many of its test states to start from.
    which : ``"final"`` (trained) or ``"initial"`` parameters.

    Returns
    -------
    matplotlib.figure.Figure
    """
    task, states, controls, n_finite = controlled_rollout(record, samples, which)
    states, controls = states[:n_finite], controls[:n_finite]
    fig = Figure()
    task.config.task_def.draw_trajectories(fig, task.problem.sim, states, controls, task.config.dt)
    title = f"{_name(record)} ({which} parameters)"
    if n_finite < task.config.n_steps + 1:
        title += f"; the state leaves the float range after step {n_finite - 1}"
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return fig


def animation(record, sample: int = 0, which: str = "final"):
    """The run's controller at work on one test state, drawn by its task's ``animation``
    (cart-pole swing-up, guidance herd, the quantum density), with the time in a corner.

    Returns
    -------
    matplotlib.animation.FuncAnimation: ``.save("run.gif", writer="pillow")`` writes a GIF; in a
    notebook, ``IPython.display.HTML(anim.to_jshtml())`` plays it.
    """
    from matplotlib.animation import FuncAnimation
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    task, states, controls, n_finite = controlled_rollout(record, sample + 1, which)
    states = states[:n_finite, sample]
    sim, dt = task.problem.sim, task.config.dt
    fig = Figure(figsize=(5, 4))
    FigureCanvasAgg(fig)  # an animation draws through a canvas; Agg needs no display
    ax = fig.subplots()
    draw = task.config.task_def.animation(ax, sim, states)
    clock = ax.text(0.02, 0.95, "", transform=ax.transAxes, fontsize=8, va="top")

    def frame(t):
        clock.set_text(f"t = {t * dt:.2f}")
        return draw(t) + [clock]

    title = f"{_name(record)}\ntest state {sample}"
    if n_finite < task.config.n_steps + 1:
        title += f" (state leaves the float range after step {n_finite - 1})"
    ax.set_title(title, fontsize=8)
    return FuncAnimation(fig, frame, frames=len(states), blit=True)


def _name(record):
    path = getattr(record, "path", None)
    return os.path.basename(os.fspath(path)) if path else record.config.run_name()
