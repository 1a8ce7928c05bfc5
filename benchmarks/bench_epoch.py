"""Epoch timings per task: modes R M C S, float32 and float64, one thread.

``--task cartpole`` times 1 and 4 poles, ``--task guidance`` 2 drivers and 4 evaders,
``--task quantum`` the CNN on Nx = 32 over 128 steps.

Epoch times are the best of ``--repeats`` epochs per config, configs timed in turns. An epoch is
the reference's: 32 updates of batch 8 and the loss of the 256 train
and 256 test states. The "roofline ratio" is the epoch time over the time numpy needs for the
epoch's matrix products, each timed at its own shape on one thread (what the controller's dense
algebra alone would cost). "% peak" is the epoch's matrix-product FLOPs per second as a fraction
of the core's GEMM peak, measured as one large single-thread product of the same dtype.
``--threads 1,2`` also times R epochs on each thread count (one run, the batch split in fixed
chunks) and prints the speed-up over one thread. ``--cold-start`` also times a first
``stablebptt run TASK --epochs 1`` with an empty Numba cache (what a fresh install meets).
Run by hand: ``python benchmarks/bench_epoch.py [--repeats 5] [--threads 1,2]``.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from threadpoolctl import threadpool_limits

from stablebptt import Trainer, preset
from stablebptt.train.build import build_task

MODES = ("R", "M", "C", "S")
VARIANTS = {"cartpole": [("1 pole", dict(poles=1)), ("4 poles", dict(poles=4))],
            "guidance": [("2d/4e", dict(drivers=2, evaders=4))],
            "quantum": [("Nx=32", dict(nx=32))]}


def matmul_shapes(config, task):
    """``(count, (m, k, n))`` of every matrix product in one epoch of ``config`` (its built
    ``task``): forward, vector-Jacobian and parameter-gradient products of the updates, and the
    forward products of the two evaluations. C has two parameter gradients, and two
    vector-Jacobian products unless the engine scales one of unit cotangents for both sweeps
    (a scalar control: ``Problem.unit_widths``)."""
    b, n = config.batch_size, config.n_steps
    updates = -(-config.n_data // b)
    combined = config.mode == "C"
    grad_sweeps = 2 if combined else 1
    vjp_sweeps = 2 if combined and not task.problem.unit_widths.size else 1
    shapes = []
    for r, k, m in task.controller.forward_products():
        shapes.append((updates * n, (b * r, k, m)))                     # forward
        shapes.append((updates * n * vjp_sweeps, (b * r, m, k)))        # vjp
        shapes.append((updates * grad_sweeps, (k, n * b * r, m)))       # parameter gradient
        shapes.append((2 * n, (config.n_data * r, k, m)))               # train + test loss
    return shapes


def time_matmul(m, k, n, dtype, min_time=0.1):
    a = np.random.rand(m, k).astype(dtype)
    bmat = np.random.rand(k, n).astype(dtype)
    out = np.empty((m, n), dtype)
    best, spent = np.inf, 0.0
    while spent < min_time:  # best of several batches of 50 calls, like the epochs
        start = time.perf_counter()
        for _ in range(50):
            np.matmul(a, bmat, out=out)
        batch = time.perf_counter() - start
        best, spent = min(best, batch / 50), spent + batch
    return best


def gemm_peak(dtype, size=2048, repeats=3):
    """FLOP/s of one large single-thread ``size``-cube product: the core's practical peak."""
    a = np.random.rand(size, size).astype(dtype)
    bmat = np.random.rand(size, size).astype(dtype)
    out = np.empty((size, size), dtype)
    np.matmul(a, bmat, out=out)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, bmat, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def cold_start_seconds(task):
    """Wall time of ``stablebptt run TASK --epochs 1`` with an empty Numba cache (a fresh install)."""
    with tempfile.TemporaryDirectory() as folder:
        env = dict(os.environ, NUMBA_CACHE_DIR=os.path.join(folder, "numba"))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "stablebptt", "run", task, "--epochs", "1", "--quiet",
                        "--out", os.path.join(folder, "runs")], check=True, env=env,
                       capture_output=True)
        return time.perf_counter() - start


def time_epochs(configs, repeats, folder, threads=None):
    """Best epoch time of each config; the configs take turns so that machine noise hits all alike.
    ``threads``: ``{key: thread count}`` (default one thread each)."""
    threads = threads or {}
    trainers = {key: Trainer.new(config, os.path.join(folder, f"{key}.h5"),
                                 threads=threads.get(key, 1))
                for key, config in configs.items()}
    for trainer in trainers.values():
        trainer.train_epoch()  # compile / warm up
    times = {key: [] for key in configs}
    for _ in range(repeats):
        for key, trainer in trainers.items():
            t0 = time.perf_counter()
            trainer.train_epoch()
            times[key].append(time.perf_counter() - t0)
    for trainer in trainers.values():
        trainer.close()
    return {key: min(t) for key, t in times.items()}


def first_epoch_seconds(task):
    """Process start to the end of the first epoch, with the Numba cache warm (run it twice)."""
    code = ("import time; t=time.perf_counter();"
            "from stablebptt import Trainer, preset;"
            "import os, tempfile; d=tempfile.mkdtemp(); p=os.path.join(d, 'run.h5');"
            f"tr=Trainer.new(preset('{task}', mode='R', epochs=1), p);"
            "tr.train_epoch(); tr.close();"
            "print(time.perf_counter()-t); os.remove(p); os.rmdir(d)")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    start = time.perf_counter()
    inner = float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                 text=True).stdout)
    return time.perf_counter() - start, inner


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="epochs timed per config (best counts)")
    parser.add_argument("--task", choices=tuple(VARIANTS), default="cartpole")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cartpole only)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--n-data", type=int, default=256, help="train and test states each")
    parser.add_argument("--threads", default="", help="thread counts to time R epochs on, e.g. 1,2")
    parser.add_argument("--cold-start", action="store_true",
                        help="also time a first run with an empty Numba cache")
    args = parser.parse_args()
    rows = []
    with threadpool_limits(limits=1, user_api="blas"):  # the numpy matmul baseline, as the engine
        peak = {dtype: gemm_peak(dtype) for dtype in args.dtypes.split(",")}
        print("single-thread GEMM peak: " + ", ".join(f"{dtype} {flops / 1e9:.1f} GFLOP/s"
                                                     for dtype, flops in peak.items()))
        for label, overrides in VARIANTS[args.task]:
            for dtype in args.dtypes.split(","):
                configs = {mode: preset(args.task, mode=mode, dtype=dtype, epochs=10**6,
                                        checkpoint_every=10**6, device=args.device,
                                        batch_size=args.batch_size, n_data=args.n_data,
                                        **overrides) for mode in MODES}
                with tempfile.TemporaryDirectory() as folder:
                    epoch = time_epochs(configs, args.repeats, folder)
                for mode, config in configs.items():
                    shapes = matmul_shapes(config, build_task(config))
                    matmul_time = sum(count * time_matmul(*shape, dtype) for count, shape in shapes)
                    flops = sum(count * 2 * m * k * n for count, (m, k, n) in shapes)
                    rows.append((label, dtype, mode, epoch[mode], matmul_time, flops))
                rows.append((label, dtype, "C/R", epoch["C"] / epoch["R"], None, None))
    print(f"{'setting':>10} {'dtype':>8} {'mode':>4} {'epoch ms':>9} {'matmul ms':>10} "
          f"{'GFLOP':>6} {'roofline':>8} {'% peak':>7}")
    for label, dtype, mode, t, mm, flops in rows:
        if mm is None:
            print(f"{label:>10} {dtype:>8} {mode:>4} {t:9.2f}  (cost ratio)")
        else:
            print(f"{label:>10} {dtype:>8} {mode:>4} {t * 1e3:9.1f} {mm * 1e3:10.1f} "
                  f"{flops / 1e9:6.2f} {t / mm:8.2f} {100 * flops / t / peak[dtype]:7.1f}")
    counts = [int(t) for t in args.threads.split(",") if t]
    if counts:
        print(f"R epochs on {', '.join(map(str, counts))} threads (ms, speed-up over the first):")
    for label, overrides in VARIANTS[args.task] if counts else ():
        for dtype in args.dtypes.split(","):
            config = preset(args.task, mode="R", dtype=dtype, epochs=10**6, checkpoint_every=10**6,
                            batch_size=args.batch_size, n_data=args.n_data, **overrides)
            with tempfile.TemporaryDirectory() as folder:
                epoch = time_epochs({t: config for t in counts}, args.repeats, folder,
                                    threads={t: t for t in counts})
            print(f"{label:>10} {dtype:>8} " + "  ".join(
                f"{t}: {epoch[t] * 1e3:.1f} (x{epoch[counts[0]] / epoch[t]:.2f})" for t in counts))
    outer, inner = first_epoch_seconds(args.task)
    print(f"first epoch incl. start-up with a warm Numba cache: {outer:.2f} s "
          f"(inside Python: {inner:.2f} s)")
    if args.cold_start:
        print(f"first run with an empty Numba cache (stablebptt run {args.task} --epochs 1): "
              f"{cold_start_seconds(args.task):.1f} s")


if __name__ == "__main__":
    main()
