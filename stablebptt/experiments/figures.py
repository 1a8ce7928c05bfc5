"""Pictures of what a trained controller does, drawn from a run file."""

import os

import numpy as np

from .presets import build_task
from .results import read_run


def controlled_rollout(path, samples=4, which="final"):
    """Roll the run's stored controller out from its first test states.

    Returns ``(task, states (N+1, K, S), controls (N, K, C))``; ``which`` picks the initial or the
    final parameters of the run.
    """
    record = read_run(path)
    task = build_task(record.config)
    params = record.params_final if which == "final" else record.params_initial
    dtype = np.dtype(record.config.dtype)
    theta = task.controller.flatten(params, dtype)
    _, states, controls = task.problem.rollout(theta, record.test[:samples].astype(dtype))
    return task, states, controls


def plot_trajectories(path, out=None, samples=4, which="final"):
    """Draw the controlled trajectories of a run (guidance: the paper's Figure 3a; quantum: the
    density and control of Figure 5a; cart-pole: the pole angles and the cart) and save them as
    ``out`` (default: next to the run file, .png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task, states, controls = controlled_rollout(path, samples, which)
    k = states.shape[1]
    out = out or os.path.splitext(os.fspath(path))[0] + f"_trajectories_{which}.png"
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
    fig.suptitle(f"{os.path.basename(os.fspath(path))} ({which} parameters)", fontsize=8)
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
    herd, or the quantum density); returns the file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    task, states, controls = controlled_rollout(path, sample + 1, which)
    states = states[:, sample]
    sim, name = task.problem.sim, task.config.task
    out = out or os.path.splitext(os.fspath(path))[0] + f"_{which}.gif"
    fig, ax = plt.subplots(figsize=(5, 4))
    artists = []
    if name == "cartpole":
        length = 2 * sim.length  # drawn at the full pole length
        reach = length * sim.poles + 0.5
        span = max(np.abs(states[:, 0]).max() + reach, 3.0)
        ax.set_xlim(-span, span)
        ax.set_ylim(-reach, reach)
        ax.axhline(0, color="k", lw=0.5)
        cart, = ax.plot([], [], "s", color="#073b4c", ms=14)
        poles = [ax.plot([], [], "-o", color="#ef476f", lw=3, ms=4)[0] for _ in range(sim.poles)]
        artists = [cart] + poles

        def draw(t):
            x = states[t, 0]
            cart.set_data([x], [0.0])
            for i, line in enumerate(poles):
                th = states[t, 2 + 2 * i]  # theta = 0 upright, pi hanging
                line.set_data([x, x + length * np.sin(th)], [0.0, length * np.cos(th)])
            return artists
    elif name == "guidance":
        positions = sim.positions(states)
        ax.set_xlim(positions[..., 0].min() - 0.5, positions[..., 0].max() + 0.5)
        ax.set_ylim(positions[..., 1].min() - 0.5, positions[..., 1].max() + 0.5)
        ax.set_aspect("equal")
        ax.plot(*sim.target, "x", color="k", ms=10)
        drivers, = ax.plot([], [], "o", color="tab:red", ms=8)
        evaders, = ax.plot([], [], "o", color="tab:blue", ms=6)
        artists = [drivers, evaders]

        def draw(t):
            drivers.set_data(positions[t, :sim.drivers, 0], positions[t, :sim.drivers, 1])
            evaders.set_data(positions[t, sim.drivers:, 0], positions[t, sim.drivers:, 1])
            return artists
    else:
        density = np.abs(sim.wavefunction(states)) ** 2
        grid = sim.dx * np.arange(1, sim.nx + 1)
        ax.plot(grid, sim.params[2:] ** 2, color="#06d6a0", label=f"target state {sim.target_state}")
        ax.set_ylim(0, density.max() * 1.1)
        line, = ax.plot([], [], color="#073b4c", label="|psi|^2")
        ax.legend(fontsize=8)
        artists = [line]

        def draw(t):
            line.set_data(grid, density[t])
            return artists
    ax.set_title(f"{os.path.basename(os.fspath(path))}\ntest state {sample}", fontsize=8)
    animation = FuncAnimation(fig, draw, frames=len(states), blit=True)
    animation.save(out, writer=PillowWriter(fps=fps))
    plt.close(fig)
    return out
