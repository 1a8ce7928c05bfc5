"""Run under NUMBA_ENABLE_CUDASIM=1 (or on a GPU): the CUDA engine against the CPU engine."""

import sys

import numpy as np

from stablebptt.adjoint import Problem
from stablebptt.controllers import CNN, MLP
from stablebptt.cuda.engine import CudaProblem
from stablebptt.sims import CartPole, Guidance, Quantum


def cases(rng):
    """(label, sim, controller, states) of each simulator, with moving or perturbed states."""
    cart = CartPole(poles=2)
    yield "cartpole", cart, MLP(cart.state_dim, 1, width=4, depth=2), cart.sample(3, np.random.RandomState(1))
    guide = Guidance(drivers=2, evaders=2)
    x = guide.sample(3, np.random.RandomState(2)) + 0.1 * rng.standard_normal((3, guide.state_dim))
    yield "guidance", guide, MLP(guide.state_dim, guide.control_dim, width=4, depth=1), x
    quantum = Quantum(nx=9, target_state=3)
    x = quantum.sample(3, np.random.RandomState(3)) + 0.1 * rng.standard_normal((3, quantum.state_dim))
    yield "quantum", quantum, CNN(9, width=3), x


def main(only=None):
    rng = np.random.default_rng(0)
    worst = 0.0
    for label, sim, ctrl, states in cases(rng):
        if only and label not in only:
            continue
        for dtype, tol in ((np.float64, 1e-11), (np.float32, 3e-5)):
            theta = (ctrl.init(rng, np.float64) + 0.1 * rng.standard_normal(ctrl.n_params)).astype(dtype)
            x0 = states.astype(dtype)
            for loss_mode, rho in (("FINAL", 0.0), ("CONTINUOUS", 0.3)):
                cpu = Problem(sim, ctrl, 4, loss_mode, rho=rho)
                gpu = CudaProblem(cpu)
                for mode in "RMNSC":
                    a, b = cpu.gradient(theta, x0, mode), gpu.gradient(theta, x0, mode)
                    scale = max(np.max(np.abs(a.grad)), 1e-30)
                    error = max(np.max(np.abs(a.grad - b.grad)) / scale, abs(a.loss - b.loss) / abs(a.loss))
                    if mode == "C":
                        error = max(error, np.max(np.abs(a.grad_regular - b.grad_regular)) / scale)
                    assert b.grad.dtype == dtype, b.grad.dtype
                    assert error <= tol, (label, dtype, loss_mode, mode, error)
                    worst = max(worst, error / tol)
                assert np.allclose(cpu.losses(theta, x0), gpu.losses(theta, x0), rtol=tol)
        print(f"{label}: CUDA agrees with CPU")
    print(f"worst error {worst:.2g} of tolerance")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
