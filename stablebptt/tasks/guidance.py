"""Guidance by repulsion: drivers herd evaders to a target, as GuidanceByRepulsion/Runs/01/01.sh."""

import numpy as np

from .base import Option, Task, at_least, format_number


class GuidanceTask(Task):
    name = "guidance"
    description = ("guidance by repulsion as GuidanceByRepulsion/Runs/01/01.sh: 2 drivers herd 4 "
                   "evaders to the origin, T=4 over 60 steps, CONTINUOUS loss mean |x_evader|^2 + "
                   "rho mean c^2 (rho 0.01), MLP 2x100 tanh with a zero output kernel, Adam lr "
                   "1e-3, batch 8; 400 epochs, not the script's ep=10, at which the methods have "
                   "not yet separated (the paper's curves are smoothed over 20 epochs, so its runs "
                   "were far longer): --epochs 10 reproduces the script literally")
    options = (
        Option("drivers", int, 2, "number of drivers", at_least(1)),
        Option("evaders", int, 4, "number of evaders", at_least(1)),
        Option("target_x", float, 0.0, "x of the point the evaders are herded to"),
        Option("target_y", float, 0.0, "y of the point the evaders are herded to"),
    )
    # GuidanceByRepulsion/Runs/01/01.sh: its sweep runs rho in {1, 0.1, 0.01, 0.001}; 0.01 is the
    # default of a single run. Same --zero quirk: the output kernel starts at zero.
    # Length: the script says ep=10, but its own plot script smooths over 30 epochs and the
    # paper's Figure 3 over 20, so the paper's runs were far longer; at 10 epochs the methods have
    # not separated; at 400 they have (README, Results). --epochs 10 reproduces the script.
    preset = dict(rho=0.01, time=4.0, n_steps=60, loss_mode="CONTINUOUS", zero_last=True,
                  epochs=400)
    grid = {"rho": [1.0, 0.1, 0.01, 0.001], "clip": ["value", "norm", "none"],
            "mode": ["R", "M", "C", "S"]}
    panel_title = "Regularization: {:g}"
    panels_descending = True
    figure_name = "figure3_guidance"
    figure_yrange = (0.4, 6.0)  # the paper's Figure 3
    gradcheck_settings = ({"drivers": 2, "evaders": 4, "rho": 0.1},
                          {"drivers": 1, "evaders": 1, "rho": 0.1},
                          {"drivers": 3, "evaders": 2, "rho": 0.1})

    def simulator(self, config):
        from ..sims import Guidance

        return Guidance(drivers=config.drivers, evaders=config.evaders, dt=config.dt,
                        target=(config.target_x, config.target_y))

    def system_name(self, config):
        name = f"d{config.drivers}e{config.evaders}_rho{format_number(config.rho)}"
        if (config.target_x, config.target_y) != (0.0, 0.0):
            name += f"_target{format_number(config.target_x)},{format_number(config.target_y)}"
        return name

    def named_settings(self):
        return ("drivers", "evaders", "rho", "target_x", "target_y")

    def gradcheck_inputs(self, sim, batch, rng):
        """Moving agents, and a batch with two agents nearly on top of each other."""
        (label, x, c), = super().gradcheck_inputs(sim, batch, rng)
        inputs = [(label, x, c)]
        if sim.drivers + sim.evaders > 1:
            close = x.copy()
            close[:, 4:6] = close[:, 0:2] + 0.02 * rng.standard_normal((batch, 2))
            inputs.append(("close pair", close, c))
        return inputs

    def draw_trajectories(self, figure, sim, states, controls, dt):
        """Drivers (red) and evaders (blue) over time: earlier positions smaller and fainter."""
        from matplotlib.colors import to_rgb

        k = states.shape[1]
        figure.set_size_inches(3.2 * k, 3.4)
        axes = figure.subplots(1, k, squeeze=False)[0]
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
                rgba[:, :3] = to_rgb(colour)
                rgba[:, 3] = fade
                ax.scatter(path[:, 0], path[:, 1], s=size, c=rgba, edgecolors="none")
            ax.plot(*sim.target, marker="x", color="k", ms=8)
            ax.set_aspect("equal")
            ax.set_title(f"test state {s}: drivers red, evaders blue", fontsize=7)
            ax.tick_params(labelsize=6)

    def animation(self, ax, sim, states):
        """Drivers and evaders; the view follows the herd and the target, so that a driver that
        runs away leaves the picture (marked at the edge) instead of shrinking the herd."""
        positions = sim.positions(states)
        herd = np.concatenate([positions[:, sim.drivers:].reshape(-1, 2),
                               np.reshape(sim.target, (1, 2))])
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
