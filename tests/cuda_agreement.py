"""Run under NUMBA_ENABLE_CUDASIM=1 (or on a GPU): the CUDA engine against the CPU engine."""

import sys

import numpy as np

from stablebptt.adjoint import Problem
from stablebptt.controllers import MLP
from stablebptt.cuda.engine import CudaProblem
from stablebptt.sims import CartPole


def main():
    rng = np.random.default_rng(0)
    worst = 0.0
    for poles, dtype, tol in ((2, np.float64, 1e-12), (1, np.float32, 2e-5)):
        sim = CartPole(poles=poles)
        ctrl = MLP(sim.state_dim, 1, width=4, depth=2)
        theta = (ctrl.init(rng, np.float64) + 0.1 * rng.standard_normal(ctrl.n_params)).astype(dtype)
        x0 = sim.sample(3, np.random.RandomState(poles)).astype(dtype)
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
                assert error <= tol, (poles, dtype, loss_mode, mode, error)
                worst = max(worst, error / tol)
            assert np.allclose(cpu.losses(theta, x0), gpu.losses(theta, x0), rtol=tol)
    print(f"CUDA agrees with CPU; worst error {worst:.2g} of tolerance")


if __name__ == "__main__":
    sys.exit(main())
