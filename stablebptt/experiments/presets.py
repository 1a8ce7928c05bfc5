"""Task presets from the paper and the objects a run is built from."""

from dataclasses import dataclass

import numpy as np

from ..adjoint.engine import Problem
from ..controllers import CNN, MLP
from ..sims import CartPole, Guidance, Quantum
from .config import ConfigError, RunConfig

# CartPole/Runs/01/01.sh of the reference. It passed ``--zero False`` to an argparse ``type=bool``
# option, which is True for any non-empty string: the paper's runs had a zero-initialised output
# kernel, so ``zero_last=True`` reproduces what was actually run.
PRESETS = {
    "cartpole": dict(task="cartpole", n_data=256, width=100, depth=2, bias=True, zero_last=True,
                     time=1.0, n_steps=100, loss_mode="FINAL", optimizer="adam", lr=1e-3,
                     clip_value=1.0, batch_size=8, epochs=1000, seed=42),
    # GuidanceByRepulsion/Runs/01/01.sh: its sweep runs rho in {1, 0.1, 0.01, 0.001}; 0.01 is the
    # default of a single run. Same --zero quirk: the output kernel starts at zero.
    "guidance": dict(task="guidance", drivers=2, evaders=4, rho=0.01, n_data=256, width=100,
                     depth=2, bias=True, zero_last=True, time=4.0, n_steps=60,
                     loss_mode="CONTINUOUS", optimizer="adam", lr=1e-3, clip_value=1.0,
                     batch_size=8, epochs=10, seed=42),
    # QuantumControl/Runs/01/01.sh: Nx 32, dt 0.0625 x 128 steps, target states 3/4/5 in its sweep.
    # Its --zero quirk zeroed only the (already zero) dense bias: the dense kernel stays random.
    "quantum": dict(task="quantum", nx=32, target_state=3, weighting="1-1", n_data=256, width=60,
                    bias=True, zero_last=False, time=8.0, n_steps=128, loss_mode="CONTINUOUS",
                    optimizer="adam", lr=1e-3, clip_value=1.0, batch_size=8, epochs=1000, seed=42),
}

PRESET_HELP = {
    "cartpole": "cart-pole swing-up as CartPole/Runs/01/01.sh: 256 train/256 test states, MLP 2x100 "
                "tanh, T=1, 100 steps, FINAL loss, Adam lr 1e-3, batch 8, 1000 epochs; the output "
                "kernel starts at zero, as the reference actually ran (its --zero False was true)",
    "guidance": "guidance by repulsion as GuidanceByRepulsion/Runs/01/01.sh: 2 drivers herd 4 "
                "evaders to the origin, T=4 over 60 steps, CONTINUOUS loss mean |x_evader|^2 + "
                "rho mean c^2 (rho 0.01), MLP 2x100 tanh with a zero output kernel, Adam lr 1e-3, "
                "batch 8, 10 epochs",
    "quantum": "quantum control as QuantumControl/Runs/01/01.sh: a 1-D Schrodinger state (Nx=32) "
               "from superpositions of eigenstates 1 and 2 to eigenstate 3, dt 0.0625 x 128 steps, "
               "CONTINUOUS loss sum_t 1-|<target,psi_t>|^2, CNN width 60 with a random dense kernel "
               "(as run), Adam lr 1e-3, batch 8, 1000 epochs",
}


def preset(task, **overrides):
    if task not in PRESETS:
        raise ConfigError(f"unknown task {task!r}: choose from {', '.join(PRESETS)}")
    values = dict(PRESETS[task])
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = RunConfig(**values).validated()
    if config.device == "cuda":
        _require_cuda()
    return config


@dataclass
class Task:
    """Everything built from a config: the problem, the data and a fresh parameter vector."""

    config: RunConfig
    problem: Problem
    train: np.ndarray
    test: np.ndarray

    @property
    def controller(self):
        return self.problem.controller


def build_simulator(config):
    if config.task == "quantum":
        return Quantum(nx=config.nx, dt=config.dt, target_state=config.target_state,
                       weighting=config.weighting)
    if config.task == "guidance":
        return Guidance(drivers=config.drivers, evaders=config.evaders, dt=config.dt,
                        target=(config.target_x, config.target_y))
    return CartPole(poles=config.poles, dt=config.dt)


def build_task(config):
    """The problem and data sets of a validated config; data are drawn from ``seed`` as the reference."""
    sim = build_simulator(config)
    if config.task == "quantum":  # the reference's CNN (its depth option was unused)
        controller = CNN(config.nx, config.width, config.bias, config.zero_last)
    else:
        controller = MLP(sim.state_dim, sim.control_dim, config.width, config.depth, config.bias,
                         config.zero_last)
    problem = Problem(sim, controller, config.n_steps, config.loss_mode, rho=config.rho)
    if config.device == "cuda":
        problem = _cuda_problem(problem)
    train, test = sim.datasets(config.n_data, np.random.RandomState(config.seed))
    dtype = np.dtype(config.dtype)
    return Task(config, problem, train.astype(dtype), test.astype(dtype))


def _require_cuda():
    from ..cuda import cuda_available

    if not cuda_available():
        raise ConfigError("device='cuda' but numba.cuda finds no usable GPU "
                          "(pip install 'stablebptt[cuda]' on a machine with an NVIDIA GPU)")


def _cuda_problem(problem):
    _require_cuda()
    from ..cuda.engine import CudaProblem

    return CudaProblem(problem)
