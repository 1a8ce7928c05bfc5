"""Compare the epoch times of two checkouts of stablebptt, alternating epochs on one core.

On a shared or virtual machine the same epoch can read 30 % slower from one minute to the next,
so two benchmark runs taken one after the other (or side by side on two cores) compare the
minutes as much as the code. Here one worker process per checkout trains the same configuration,
and the two take turns, one epoch each (the order swapping every pair): both meet the same
machine, and the median of the per-pair ratios new/old is the figure to report.

    git worktree add /tmp/old <revision>
    taskset -c 1 python benchmarks/ab_epochs.py /tmp/old . --pairs 11 \\
        cartpole:1:R:float32 cartpole:1:C:float32 quantum::R:float32

A configuration is ``task:poles:mode:dtype`` (``poles`` empty for tasks without it). Each worker
has its own Numba cache, new for the run (``NUMBA_CACHE_DIR`` in a fresh temporary folder,
removed at the end): neither loads the other's compiled code, nor code an earlier run compiled
from helpers edited since (Numba's cache does not see edits to the files a function calls into).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def worker():
    """Reads ``task poles mode dtype`` lines; trains one epoch of that run (built and warmed up on
    first use) and answers with its time in seconds."""
    from stablebptt import Trainer, preset

    trainers = {}
    folder = tempfile.mkdtemp()
    for line in sys.stdin:
        task, poles, mode, dtype = line.split()
        key = (task, poles, mode, dtype)
        if key not in trainers:
            options = {"poles": int(poles)} if poles != "-" else {}
            config = preset(task, mode=mode, dtype=dtype, epochs=10**6, checkpoint_every=10**6,
                            **options)
            trainer = Trainer.new(config, os.path.join(folder, f"{len(trainers)}.h5"), threads=1)
            trainer.train_epoch()  # compile and warm up
            trainers[key] = trainer
        start = time.perf_counter()
        trainers[key].train_epoch()
        print(f"{time.perf_counter() - start:.6f}", flush=True)


def start_worker(checkout, cache):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout), NUMBA_CACHE_DIR=cache)
    env.setdefault("OPENBLAS_CORETYPE", "Haswell")
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                            cwd=tempfile.gettempdir())


def epoch_time(process, config):
    process.stdin.write(" ".join(config) + "\n")
    process.stdin.flush()
    answer = process.stdout.readline()
    if not answer:
        raise SystemExit(f"ab_epochs: a worker failed on {':'.join(config)}")
    return float(answer)


def parse_config(text):
    parts = text.split(":")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"{text!r}: want task:poles:mode:dtype")
    task, poles, mode, dtype = parts
    return task, poles or "-", mode, dtype


def main():
    if sys.argv[1:] == ["--worker"]:
        return worker()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("old", help="checkout of the version to compare against")
    parser.add_argument("new", help="checkout of the version under test")
    parser.add_argument("configs", nargs="+", type=parse_config, help="task:poles:mode:dtype")
    parser.add_argument("--pairs", type=int, default=11, help="epoch pairs per configuration")
    args = parser.parse_args()
    caches = tempfile.mkdtemp(prefix="stablebptt-ab-")
    old = start_worker(args.old, os.path.join(caches, "old"))
    new = start_worker(args.new, os.path.join(caches, "new"))
    print(f"{'configuration':24s} {'old median':>10s} {'new median':>10s} {'new/old':>8s}  (ms)")
    try:
        for config in args.configs:
            epoch_time(old, config)  # build both before timing
            epoch_time(new, config)
            times = {"old": [], "new": []}
            ratios = []
            for pair in range(args.pairs):
                order = [("old", old), ("new", new)][::1 if pair % 2 == 0 else -1]
                pair_times = {name: epoch_time(process, config) for name, process in order}
                for name, value in pair_times.items():
                    times[name].append(value)
                ratios.append(pair_times["new"] / pair_times["old"])
            print(f"{':'.join(config):24s} {statistics.median(times['old']) * 1e3:10.1f} "
                  f"{statistics.median(times['new']) * 1e3:10.1f} {statistics.median(ratios):8.3f}",
                  flush=True)
    finally:
        for process in (old, new):
            process.stdin.close()
            process.wait()
        shutil.rmtree(caches, ignore_errors=True)


if __name__ == "__main__":
    main()
