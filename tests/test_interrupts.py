"""Interrupting runs and sweeps with real processes and signals: every completed epoch is kept,
a repeated command continues, no worker outlives its sweep, start-up interrupts are one line."""

import os
import signal
import sys
import time

import pytest

from stablebptt import read_run

from cli_helpers import TINY, SLOW, _cli, _start, _wait_for, _epochs_in


# ---- 3: interrupting runs and sweeps ----------------------------------------------------------

def test_ctrl_c_stops_a_run_keeping_its_epochs(tmp_path):
    run = _start("run", "cartpole", *SLOW, "--epochs", "100000", "--out", str(tmp_path), "--name", "x")
    _wait_for(lambda: _epochs_in(tmp_path / "x.h5") >= 2, what="two epochs")
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=20)
    assert run.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err and "--resume" in err
    record = read_run(tmp_path / "x.h5")
    assert record.status == "running" and record.checkpoint.epoch == record.epochs_done >= 2
    assert sorted(os.listdir(tmp_path)) == ["x.h5"]


def _children(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry))
    return kids


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


SWEEP = ["sweep", "cartpole", "--poles", "1,2", "--modes", "R,C", "--clips", "norm", "--workers", "2",
         *SLOW]


def _start_sweep(folder):
    """A sweep of four long runs on two workers, once both workers train."""
    sweep = _start(*SWEEP, "--epochs", "100000", "--out", str(folder))
    _wait_for(lambda: len([p for p in folder.glob("*.h5") if _epochs_in(p) >= 1]) == 2,
              what="two running runs")
    return sweep


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_stops_a_sweep_and_repeating_it_continues(tmp_path):
    folder = tmp_path / "sweep"
    sweep = _start_sweep(folder)
    workers = _children(sweep.pid)
    sweep.send_signal(signal.SIGINT)
    out, err = sweep.communicate(timeout=30)
    assert sweep.returncode == 130, err
    assert "Traceback" not in err and "sweep interrupted" in err
    assert "2 interrupted, 2 not started" in out
    _wait_for(lambda: not any(_alive(p) for p in workers), timeout=10, what="the workers to end")
    files = sorted(folder.glob("*.h5"))
    assert len(files) == 2  # the queued runs never started
    kept = {p.name: read_run(p).checkpoint.epoch for p in files}
    assert all(e >= 1 for e in kept.values())
    assert not list(folder.glob("*.lock")) and not list(folder.glob("*.tmp-*"))
    again = _cli(*SWEEP, "--epochs", str(max(kept.values()) + 1), "--out", str(folder))
    assert again.returncode == 0, again.stderr
    assert len(list(folder.glob("*.h5"))) == 4
    for path in folder.glob("*.h5"):
        assert read_run(path).status == "finished"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_a_sweep_leaves_no_orphan_workers(tmp_path):
    folder = tmp_path / "sweep"
    sweep = _start_sweep(folder)
    workers = [p for p in _children(sweep.pid) if _alive(p)]
    assert len(workers) >= 2
    sweep.kill()
    # the pipes close when the last worker holding them ends: a timeout here is an orphan
    sweep.communicate(timeout=60)
    _wait_for(lambda: not any(_alive(p) for p in workers), timeout=10, what="the workers to die")
    stamps = {p: p.stat().st_mtime_ns for p in folder.glob("*.h5")}
    time.sleep(0.5)
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*.h5")} == stamps  # nobody writes
    for path in stamps:
        assert read_run(path).status == "running"
    # the workers ended cleanly: no half-written temporary file, no lock left behind
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in stamps)


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    """Ctrl-C while the command starts (imports, kernels) ends it without a traceback."""
    for delay in (0.2, 1.0):
        run = _start("run", "cartpole", *TINY, "--epochs", "1000", "--out", str(tmp_path / str(delay)))
        time.sleep(delay)
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=60)
        assert run.returncode in (130, -signal.SIGINT), err
        assert "Traceback" not in err and len(err.splitlines()) <= 2, err
        assert not list((tmp_path / str(delay)).glob("*.lock"))


def test_a_dropped_start_up_interrupt_stops_the_run_before_its_first_update():
    """CPython drops a KeyboardInterrupt raised inside some callbacks (an import lock's): the
    command line's start-up handler records each Ctrl-C, and a run checks the record on entry."""
    from stablebptt import cli
    from stablebptt.train.trainer import stop_requests

    previous = signal.signal(signal.SIGINT, cli._interrupt)
    try:
        cli._interrupt.requested = True  # as if the KeyboardInterrupt had been dropped
        with pytest.raises(KeyboardInterrupt):
            with stop_requests("stopping"):
                pytest.fail("a recorded start-up Ctrl-C must not let the run start")
        assert signal.getsignal(signal.SIGINT) is cli._interrupt  # handler restored
        cli._interrupt.requested = False
        with stop_requests("stopping") as stop:
            assert not stop()
    finally:
        cli._interrupt.requested = False
        signal.signal(signal.SIGINT, previous)
