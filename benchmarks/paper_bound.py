"""The whole paper's matrix-product work and the least time it could take on this machine.

Every run of the three sweeps (``cartpole``, ``guidance``, ``quantum``: each task's grid at its
preset's epochs) is counted as its epochs' matrix-product FLOPs (``bench_epoch.matmul_shapes``:
forward, vector-Jacobian and parameter-gradient products of the updates and the two evaluations).
Divided by the core's float32 GEMM peak times ``--cores``, that is the sweeps' wall time if
every product ran at the peak and nothing else took time: the floor under any estimate, and
the fraction of the peak that a given wall time needs. Run by hand:
``python benchmarks/paper_bound.py [--cores 2]``.
"""

import argparse
import itertools

from threadpoolctl import threadpool_limits

from bench_epoch import gemm_peak, matmul_shapes
from stablebptt import preset
from stablebptt.train.build import build_task
from stablebptt.tasks import get_task

PAPER_TASKS = ("cartpole", "guidance", "quantum")


def paper_runs(task_name):
    """The configs of a task's sweep: every combination of its grid at the preset's settings."""
    grid = get_task(task_name).grid
    for values in itertools.product(*grid.values()):
        yield preset(task_name, **dict(zip(grid, values)))


def epoch_flops(config):
    shapes = matmul_shapes(config, build_task(config))
    return sum(count * 2 * m * k * n for count, (m, k, n) in shapes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2, help="sweep workers, one core each")
    args = parser.parse_args()
    with threadpool_limits(limits=1, user_api="blas"):
        peak = gemm_peak("float32")
    print(f"single-thread float32 GEMM peak: {peak / 1e9:.1f} GFLOP/s; {args.cores} cores")
    total = 0.0
    for task_name in PAPER_TASKS:
        runs, flops = 0, 0.0
        for config in paper_runs(task_name):
            runs += 1
            flops += epoch_flops(config) * config.epochs
        total += flops
        print(f"{task_name:>9}: {runs:3d} runs, {flops / 1e15:6.3f} PFLOP, "
              f"{flops / peak / 3600:5.2f} core-hours at the peak")
    hours = total / peak / args.cores / 3600
    print(f"    paper: {total / 1e15:6.3f} PFLOP: {hours:.2f} h on {args.cores} cores at the peak; "
          f"3 h needs {100 * hours / 3:.0f} % of the peak throughout")


if __name__ == "__main__":
    main()
