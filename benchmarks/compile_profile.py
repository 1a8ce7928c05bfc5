"""Where a first run's compilation goes: each compiled function's own time, callees excluded.

    NUMBA_CACHE_DIR=$(mktemp -d) python benchmarks/compile_profile.py cartpole [--top 25]

Runs ``stablebptt run TASK --epochs 1`` in this process (give it an empty Numba cache, as a fresh
install has, or it times loading from the cache) and listens to Numba's ``numba:compile`` events.
A function's own time includes optimising the code of the functions it calls that Numba links
into it: Numba optimises a callee again inside every caller, so a deep chain of wrappers around
heavy code shows up as the same cost at each level.
"""

import argparse
import collections
import tempfile
import time

from numba.core import event


class CompileTimes(event.Listener):
    """Own compile time per function and signature; the time of nested compilations goes to the
    function compiled inside, not to the one that asked for it."""

    def __init__(self):
        self.own = collections.Counter()
        self.total = 0.0
        self._open = []  # [start, seconds spent in nested compilations] per compilation under way

    def on_start(self, ev):
        self._open.append([time.perf_counter(), 0.0])

    def on_end(self, ev):
        start, nested = self._open.pop()
        seconds = time.perf_counter() - start
        signature = ", ".join(str(arg) for arg in ev.data["args"])
        name = f"{ev.data['dispatcher'].py_func.__qualname__}({signature})"
        self.own[name] += seconds - nested
        if self._open:
            self._open[-1][1] += seconds
        else:
            self.total += seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", help="a task of `stablebptt run`")
    parser.add_argument("--top", type=int, default=25, help="functions to list (default 25)")
    parser.add_argument("--width", type=int, default=110, help="characters per name")
    args = parser.parse_args()

    from stablebptt.cli import main as cli

    times = CompileTimes()
    event.register("numba:compile", times)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        status = cli(["run", args.task, "--epochs", "1", "--quiet", "--out", folder])
    wall = time.perf_counter() - start
    print(f"stablebptt run {args.task} --epochs 1: {wall:.1f} s, {times.total:.1f} s compiling "
          f"(exit status {status})")
    for name, seconds in times.own.most_common(args.top):
        print(f"{seconds:6.2f} s  {name[:args.width]}")


if __name__ == "__main__":
    main()
