"""Pictures of what a trained controller does, drawn from a run file."""

import os

import numpy as np

from .presets import build_task
from .results import RunFileError, read_run

PICTURE_SUFFIXES = (".png", ".pdf", ".svg")


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
    task = build_task(record.config)
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
    """Draw the controlled trajectories of a run (guidance: the paper's Figure 3a; quantum: the
    density and control of Figure 5a; cart-pole: the pole angles and the cart) and save them as
    ``out`` (default: next to the run file, .png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task, states, controls, n_finite = controlled_rollout(path, samples, which)
    states, controls = states[:n_finite], controls[:n_finite]
    k = states.shape[1]
    out = out or default_picture(path, f"trajectories_{which}.png")
    if task.config.task == "guidance":
        fig, axes = plt.subplots(1, k, figsize=(3.2 * k, 3.4), squeeze=False)
        _draw_guidance(task.problem.sim, states, axes[0])
    elif task.config.task == "quantum":
        fig, axes = plt.subplots(2, k, figsize=(3.2 * k, 4.6), squeeze=False, sharex=True,
                                 gridspec_kw={"height_ratios": [3, 1]})
        _draw_quantum(task.problem.sim, states, controls, task.config.dt, axes)
    else:
        fig, axes = plt.subplots(2, k, figsize=(3.2 * k, 5.0), squeeze=False, sharex=True)
        _draw_cartpole(task.problem.sim, states, task.config.dt, axes)
    title = f"{os.path.basename(os.fspath(path))} ({which} parameters)"
    if n_finite < task.config.n_steps + 1:
        title += f"; the state leaves the float range after step {n_finite - 1}"
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _draw_guidance(sim, states, axes):
    """Drivers (red) and evaders (blue) over time: earlier positions smaller and fainter."""
    positions = sim.positions(states)  # (N+1, K, agents, 2)
    n_times = positions.shape[0]
    fade = np.linspace(0.15, 1.0, n_times)
    size = np.linspace(2, 18, n_times)
    for s, ax in enumerate(axes):
        for a in range(sim.drivers + sim.evaders):
            colour = "tab:red" if a < sim.drivers else "tab:blue"
            path = positions[:, s, a]
            ax.plot(path[:, 0], path[:, 1], color=colour, lw=0.6, alpha=0.5)
            rgba = np.zeros((n_times, 4))
            rgba[:, :3] = matplotlib_colour(colour)
            rgba[:, 3] = fade
            ax.scatter(path[:, 0], path[:, 1], s=size, c=rgba, edgecolors="none")
        ax.plot(*sim.target, marker="x", color="k", ms=8)
        ax.set_aspect("equal")
        ax.set_title(f"test state {s}: drivers red, evaders blue", fontsize=7)
        ax.tick_params(labelsize=6)


def _draw_quantum(sim, states, controls, dt, axes):
    """|psi(x, t)|^2 over time and space (the paper's Figure 5a) with the control c(t) below."""
    density = np.abs(sim.wavefunction(states)) ** 2  # (N+1, K, Nx)
    t_end = (states.shape[0] - 1) * dt
    for s in range(states.shape[1]):
        axes[0, s].imshow(density[:, s].T, origin="lower", aspect="auto", cmap="magma",
                          extent=(0, t_end, 0, 2))
        axes[0, s].set_title(f"test state {s}: |psi(x,t)|^2, target state {sim.target_state}",
                             fontsize=7)
        axes[0, s].set_ylabel("x", fontsize=7)
        axes[1, s].plot(np.arange(controls.shape[0]) * dt, controls[:, s, 0], color="k", lw=1)
        axes[1, s].set_ylabel("c(t)", fontsize=7)
        axes[1, s].set_xlabel("t", fontsize=7)
        for ax in axes[:, s]:
            ax.tick_params(labelsize=6)


def _draw_cartpole(sim, states, dt, axes):
    """Pole angles (upright = 0) and cart position over time, one column per test state."""
    t = np.arange(states.shape[0]) * dt
    for s in range(states.shape[1]):
        flat = states[:, s]
        for i in range(sim.poles):
            angle = np.angle(np.exp(1j * flat[:, 2 + 2 * i]))  # wrapped to (-pi, pi]
            angle[1:][np.abs(np.diff(angle)) > np.pi] = np.nan  # no vertical line at a wrap
            axes[0, s].plot(t, angle, lw=1, label=f"pole {i + 1}")
        axes[0, s].axhline(0, color="k", lw=0.5)
        axes[0, s].set_ylim(-np.pi, np.pi)
        axes[0, s].set_title(f"test state {s}: pole angles (0 = upright)", fontsize=7)
        axes[1, s].plot(t, flat[:, 0], color="k", lw=1)
        axes[1, s].set_title("cart position", fontsize=7)
        axes[1, s].set_xlabel("t", fontsize=7)
        for ax in axes[:, s]:
            ax.tick_params(labelsize=6)
    axes[0, 0].legend(fontsize=6)


def matplotlib_colour(name):
    from matplotlib.colors import to_rgb

    return to_rgb(name)


def animate_run(path, out=None, sample=0, fps=25, which="final"):
    """A GIF of the run's controller at work on one test state (cart-pole swing-up, guidance
    herd, or the quantum density), with the time in a corner; returns the file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    task, states, controls, n_finite = controlled_rollout(path, sample + 1, which)
    states = states[:n_finite, sample]
    sim, name, dt = task.problem.sim, task.config.task, task.config.dt
    out = out or default_picture(path, f"{which}.gif")
    fig, ax = plt.subplots(figsize=(5, 4))
    if name == "cartpole":
        draw = _cartpole_frames(ax, sim, states)
    elif name == "guidance":
        draw = _guidance_frames(ax, sim, states)
    else:
        draw = _quantum_frames(ax, sim, states)
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


def _cartpole_frames(ax, sim, states):
    """Cart and poles at true proportions (equal axis scales)."""
    length = 2 * sim.length  # drawn at the full pole length
    reach = length * sim.poles + 0.5
    span = max(np.abs(states[:, 0]).max() + reach, 3.0)
    ax.set_xlim(-span, span)
    ax.set_ylim(-reach, reach)
    ax.set_aspect("equal", adjustable="datalim")
    ax.axhline(0, color="k", lw=0.5)
    cart, = ax.plot([], [], "s", color="#073b4c", ms=14)
    poles = [ax.plot([], [], "-o", color="#ef476f", lw=3, ms=4)[0] for _ in range(sim.poles)]

    def draw(t):
        x = states[t, 0]
        cart.set_data([x], [0.0])
        for i, line in enumerate(poles):
            th = states[t, 2 + 2 * i]  # theta = 0 upright, pi hanging
            line.set_data([x, x + length * np.sin(th)], [0.0, length * np.cos(th)])
        return [cart] + poles

    return draw


def _guidance_frames(ax, sim, states):
    """Drivers and evaders; the view follows the herd and the target, so that a driver that runs
    away leaves the picture (marked at the edge) instead of shrinking the herd to a few pixels."""
    positions = sim.positions(states)
    herd = np.concatenate([positions[:, sim.drivers:].reshape(-1, 2), np.reshape(sim.target, (1, 2))])
    low, high = herd.min(axis=0) - 1.0, herd.max(axis=0) + 1.0
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    ax.set_aspect("equal", adjustable="datalim")
    ax.plot(*sim.target, "x", color="k", ms=10)
    drivers, = ax.plot([], [], "o", color="tab:red", ms=8)
    away, = ax.plot([], [], ">", color="tab:red", ms=6, alpha=0.5, ls="none")
    evaders, = ax.plot([], [], "o", color="tab:blue", ms=6)

    def draw(t):
        d = positions[t, :sim.drivers]
        drivers.set_data(d[:, 0], d[:, 1])
        edge = np.clip(d, low, high)
        outside = np.any(edge != d, axis=1)
        away.set_data(edge[outside, 0], edge[outside, 1])
        evaders.set_data(positions[t, sim.drivers:, 0], positions[t, sim.drivers:, 1])
        return [drivers, away, evaders]

    return draw


def _quantum_frames(ax, sim, states):
    """|psi|^2 over x against the target eigenstate's density."""
    density = np.abs(sim.wavefunction(states)) ** 2
    grid = sim.dx * np.arange(1, sim.nx + 1)
    ax.plot(grid, sim.params[2:] ** 2, color="#06d6a0", label=f"target state {sim.target_state}")
    ax.set_ylim(0, density.max() * 1.1)
    line, = ax.plot([], [], color="#073b4c", label="|psi|^2")
    ax.legend(fontsize=8)

    def draw(t):
        line.set_data(grid, density[t])
        return [line]

    return draw
