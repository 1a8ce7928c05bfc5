"""Quantum control of a 1-D Schroedinger equation, as QuantumControl/Runs/01/01.sh."""

import numpy as np

from .base import Option, Task


def _weighting_check(value, settings):
    from ..sims.quantum import WEIGHTINGS

    return None if value in WEIGHTINGS else f"must be one of {', '.join(WEIGHTINGS)}"


def _nx_check(value, settings):
    return None if value >= 7 else "must be >= 7 (the CNN's two stride-2 convolutions)"


def _target_check(value, settings):
    nx = settings.get("nx", 32)
    return None if 1 <= value <= nx else f"must be in 1..nx={nx}"


class QuantumTask(Task):
    name = "quantum"
    description = ("quantum control as QuantumControl/Runs/01/01.sh: a 1-D Schrodinger state "
                   "(Nx=32) from superpositions of eigenstates 1 and 2 to eigenstate 3, dt 0.0625 "
                   "x 128 steps, CONTINUOUS loss sum_t 1-|<target,psi_t>|^2, CNN width 60 with a "
                   "random dense kernel (as run), Adam lr 1e-3, batch 8, 1000 epochs")
    options = (
        Option("nx", int, 32, "interior grid points", _nx_check, short="nx"),
        Option("target_state", int, 3, "target eigenstate (the paper: 3, 4, 5)", _target_check,
               short="ts"),
        Option("weighting", str, "1-1", "weights of eigenstates 1-2 in the data: 1-1, 3-1, 7-1 "
               "or 15-1 (the reference's)", _weighting_check, short="w"),
    )
    # Nx 32, dt 0.0625 x 128 steps, target states 3/4/5 in its sweep. Its --zero quirk zeroed
    # only the (already zero) dense bias: the dense kernel stays random.
    preset = dict(width=60, time=8.0, n_steps=128, loss_mode="CONTINUOUS", zero_last=False,
                  epochs=1000)
    ignores = ("depth",)  # the reference's CNN has a fixed depth (its depth option was unused)
    grid = {"target_state": [3, 4, 5], "clip": ["value", "norm", "none"],
            "mode": ["R", "M", "C", "S"]}
    panel_title = "target state {}"
    figure_name = "figure5_quantum"
    figure_extra = ("grad_size",)  # Figure 5 adds the update size
    gradcheck_settings = ({"nx": 32, "target_state": 3, "width": 6},
                          {"nx": 9, "target_state": 3, "width": 6})
    gradcheck_steps = 12

    def system_name(self, config):
        return f"ts{config.target_state}_w{config.weighting}_nx{config.nx}"

    def simulator(self, config):
        from ..sims import Quantum

        return Quantum(nx=config.nx, dt=config.dt, target_state=config.target_state,
                       weighting=config.weighting)

    def controller(self, config, sim):
        from ..controllers import CNN

        return CNN(config.nx, config.width, config.bias, config.zero_last)

    def gradcheck_inputs(self, sim, batch, rng):
        """Off the data manifold (the data are orthogonal to the target: a flat point of the
        loss), with large controls."""
        (label, x, c), = super().gradcheck_inputs(sim, batch, rng)
        return [(label, x, 3.0 * c)]

    def draw_trajectories(self, figure, sim, states, controls, dt):
        """|psi(x, t)|^2 over time and space (the paper's Figure 5a) with the control c(t) below."""
        k = states.shape[1]
        figure.set_size_inches(3.2 * k, 4.6)
        axes = figure.subplots(2, k, squeeze=False, sharex=True,
                               gridspec_kw={"height_ratios": [3, 1]})
        density = np.abs(sim.wavefunction(states)) ** 2  # (N+1, K, Nx)
        t_end = (states.shape[0] - 1) * dt
        for s in range(k):
            axes[0, s].imshow(density[:, s].T, origin="lower", aspect="auto", cmap="magma",
                              extent=(0, t_end, 0, 2))
            axes[0, s].set_title(f"test state {s}: |psi(x,t)|^2, target state "
                                 f"{sim.target_state}", fontsize=7)
            axes[0, s].set_ylabel("x", fontsize=7)
            axes[1, s].plot(np.arange(controls.shape[0]) * dt, controls[:, s, 0], color="k", lw=1)
            axes[1, s].set_ylabel("c(t)", fontsize=7)
            axes[1, s].set_xlabel("t", fontsize=7)
            for ax in axes[:, s]:
                ax.tick_params(labelsize=6)

    def animation(self, ax, sim, states):
        """|psi|^2 over x against the target eigenstate's density."""
        density = np.abs(sim.wavefunction(states)) ** 2
        grid = sim.dx * np.arange(1, sim.nx + 1)
        ax.plot(grid, sim.params[2:] ** 2, color="#06d6a0",
                label=f"target state {sim.target_state}")
        ax.set_ylim(0, density.max() * 1.1)
        line, = ax.plot([], [], color="#073b4c", label="|psi|^2")
        ax.legend(fontsize=8)

        def draw(t):
            line.set_data(grid, density[t])
            return [line]

        return draw
