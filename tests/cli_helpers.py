"""Helpers of the command-line tests: subprocesses of `stablebptt`, waiting, error checks."""

import os
import subprocess
import sys
import time

from stablebptt import read_run
from stablebptt.train.runfile import RunFileError

TINY = ["--poles", "1", "--width", "8", "--steps", "10", "--n-data", "16", "--batch-size", "8",
        "--quiet"]
# long enough to be interrupted: ~20-40 ms per epoch, a checkpoint after every epoch
SLOW = ["--width", "32", "--steps", "100", "--n-data", "64", "--checkpoint-every", "1", "--quiet"]


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "stablebptt", *args], capture_output=True,
                          text=True, **kwargs)


def _start(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "stablebptt", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _wait_for(condition, timeout=120.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _epochs_in(path):
    try:
        return read_run(path).checkpoint.epoch
    except RunFileError:
        return 0


def _tree(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder)
                  for d, dirs, files in os.walk(folder) for f in files + dirs)


def _one_line_error(code, err, named):
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("stablebptt: error:"), err
    assert "Traceback" not in err
    assert named in err, err
