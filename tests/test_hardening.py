"""What a user meets besides the numbers: bad input, interrupts, concurrent writers, diverged runs.

Defects are reproduced with real processes and signals where they are about processes.
"""

import csv
import io
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from stablebptt import Trainer, preset, read_run
from stablebptt.cli import main
from stablebptt.train.runfile import RunFileError, write_run
from stablebptt.train.sweep import SweepDisplay

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


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    """A small finished cart-pole run file, shared by the tests that only read it."""
    folder = tmp_path_factory.mktemp("run")
    assert main(["run", "cartpole", *TINY, "--epochs", "2", "--out", str(folder), "--name", "r"]) == 0
    return folder / "r.h5"


# ---- 7: a bad-input table: exit 2, one line, no traceback, nothing written -------------------

BAD_RUNS = [
    (["--seed", "-1"], "seed=-1"),
    (["--seed", str(2**70)], "seed=1180591620717411303424"),
    (["--name", "x" * 300], "too long"),
    (["--name", "sub/x"], "folder"),
    (["--name", "../x"], "folder"),
    (["--name", ".hidden"], "plain file name"),
    (["--steps", "1000000000"], "memory"),
    (["--width", "1000000"], "memory"),
    (["--n-data", "1000000000"], "memory"),
    (["--lr", "inf"], "lr=inf"),
    (["--lr", "nan"], "lr=nan"),
    (["--clip-value", "-1"], "clip_value=-1"),
    (["--time", "inf"], "time=inf"),
    (["--drivers", "3"], "drivers=3 does not apply to task 'cartpole'"),
    (["--target-state", "4"], "target_state=4 does not apply"),
    (["--mode", "Q"], "'Q'"),
    (["--poles", "0"], "poles=0"),
    (["--width", "0"], "width=0"),
    (["--steps", "0"], "n_steps=0"),
    (["--n-data", "0"], "n_data=0"),
    (["--epochs", "0"], "epochs=0"),
    (["--batch-size", "0"], "batch_size=0"),
    (["--depth", "-1"], "depth=-1"),
    (["--loss-mode", "SOMETIMES"], "loss_mode='SOMETIMES'"),
    (["--dtype", "float16"], "dtype='float16'"),
    (["--optimizer", "lbfgs"], "optimizer='lbfgs'"),
    (["--momentum", "1"], "momentum=1"),
    (["--steps", "1e9"], "'1e9'"),
]


@pytest.mark.parametrize("args,named", BAD_RUNS, ids=[" ".join(a)[:30] for a, _ in BAD_RUNS])
def test_bad_run_options(args, named, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["run", "cartpole", *args])
    _one_line_error(code, capsys.readouterr().err, named)
    assert _tree(tmp_path) == []


BAD_OTHER = [
    (["run", "guidance", "--target-x", "nan"], "target_x=nan"),
    (["run", "pendulum"], "'pendulum'"),
    (["run", "quantum", "--depth", "3"], "depth=3 does not apply"),
    (["sweep", "cartpole", "--scheduler", "notaurl"], "notaurl"),
    (["sweep", "cartpole", "--seeds", ""], "empty list"),
    (["sweep", "cartpole", "--modes", ","], "empty list"),
    (["sweep", "cartpole", "--workers", "0"], "--workers"),
    (["sweep", "cartpole", "--log-every", "0"], "--log-every"),
    (["sweep", "guidance", "--poles", "2"], "poles=2 does not apply"),
    (["sweep", "pendulum"], "'pendulum'"),
    (["sweep", "cartpole", "--optimizer", "sgd", "--optimizers", "adam"], "not both"),
    (["run", "cartpole", "--optimizer", "rmsprop", "--momentum", "0.9"], "sgd optimizer only"),
    (["gradcheck", "pendulum"], "'pendulum'"),
    (["inspect", "nope.h5"], "no such run file"),
    (["plot", "nowhere"], "no such folder"),
    (["frobnicate"], "frobnicate"),
]


@pytest.mark.parametrize("args,named", BAD_OTHER, ids=[" ".join(a)[:30] for a, _ in BAD_OTHER])
def test_bad_input_of_every_command(args, named, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(args)
    _one_line_error(code, capsys.readouterr().err, named)
    assert _tree(tmp_path) == []


@pytest.mark.parametrize("args,named", [
    (["plot", "{folder}", "--threshold", "nan", "--out", "new"], "--threshold"),
    (["plot", "{folder}", "--smooth", "0", "--out", "new"], "--smooth"),
    (["animate", "{file}", "--out", "x.mp4"], ".gif"),
    (["animate", "{file}", "--fps", "0"], "--fps"),
    (["animate", "{file}", "--sample", "99"], "--sample=99"),
    (["trajectories", "{file}", "--out", "x.txt"], ".png"),
    (["trajectories", "{file}", "--samples", "0"], "--samples"),
    (["run", "--resume", "{file}", "--lr", "0.5"], "lr=0.5 conflicts with the run file's lr=0.001"),
    (["run", "--resume", "{file}", "--poles", "3"], "poles=3 conflicts"),
    (["run", "--resume", "{file}", "--mode", "R"], "mode='R' conflicts"),
    (["run", "guidance", "--resume", "{file}"], "task 'guidance' conflicts"),
    (["run", "--resume", "{file}", "--out", "elsewhere"], "--out does not apply"),
    (["run", "--resume", "{file}", "--overwrite"], "--overwrite does not apply"),
])
def test_bad_input_about_an_existing_run(args, named, run_file, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "r.h5").write_bytes(run_file.read_bytes())
    monkeypatch.chdir(work)
    before = _tree(work)
    code = main([a.format(folder=".", file="r.h5") for a in args])
    _one_line_error(code, capsys.readouterr().err, named)
    assert _tree(work) == before


def test_resume_accepts_options_that_repeat_the_file(run_file, tmp_path):
    path = tmp_path / "r.h5"
    path.write_bytes(run_file.read_bytes())
    done = _cli("run", "cartpole", "--resume", str(path), "--lr", "0.001", "--mode", "combined",
                "--poles", "1", "--epochs", "3", "--quiet")
    assert done.returncode == 0, done.stderr
    assert read_run(path).epochs_done == 3


def test_no_kernel_is_compiled_before_the_arguments_are_checked(monkeypatch, capsys):
    import stablebptt.contract as contract

    def refuse(*args):
        raise AssertionError("compiled before the arguments were checked")

    monkeypatch.setattr(contract, "compile_variant", refuse)
    assert main(["run", "cartpole", "--poles", "0"]) == 2
    assert "poles=0" in capsys.readouterr().err


def test_the_command_line_starts_without_numba():
    code = "import sys, stablebptt.cli; print('numba' in sys.modules, 'h5py' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["False", "False"], done.stderr
    helped = _cli("--help")
    assert helped.returncode == 0 and "run" in helped.stdout


def test_slow_compilation_is_announced(caplog):
    from stablebptt.adjoint.engine import announce_if_slow

    with caplog.at_level(logging.INFO, logger="stablebptt"):
        with announce_if_slow("compiling kernels for x/float32 (once)", after=0.05):
            time.sleep(0.3)
        with announce_if_slow("quick", after=5.0):
            pass
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "compiling kernels for x/float32 (once)"
    assert messages[1].startswith("compiling kernels for x/float32 (once): done in")
    assert len(messages) == 2  # nothing about the quick block


def test_depth_zero_is_a_linear_controller(tmp_path):
    config = preset("cartpole", depth=0, width=8, n_steps=10, n_data=16, epochs=2, zero_last=False)
    trainer = Trainer.new(config, tmp_path / "linear.h5")
    trainer.run(quiet=True)
    record = read_run(tmp_path / "linear.h5")
    assert sorted(record.params_final) == ["dense_0/bias", "dense_0/kernel"]
    assert record.params_final["dense_0/kernel"].shape == (4, 1)
    assert np.all(np.isfinite(record.metrics["test_loss"]))


# ---- 8: run names ----------------------------------------------------------------------------

def test_runs_with_different_numbers_have_different_names(tmp_path):
    base = preset("cartpole")
    assert base.run_name() == "cartpole_p1_C_clip-norm_lr0.001_bs8_s42"  # the preset: unchanged
    variants = [preset("cartpole", dtype="float64"), preset("cartpole", rho=0.1),
                preset("cartpole", rho=0.2), preset("cartpole", lr=0.0010000001),
                preset("cartpole", zero_last=False), preset("cartpole", optimizer="sgd"),
                preset("cartpole", loss_mode="CONTINUOUS"), preset("cartpole", clip_value=0.5)]
    names = [c.run_name() for c in [base] + variants]
    assert len(set(names)) == len(names), names
    assert "_float64" in names[1] and "_rho0.1" in names[2]
    # settings that do not change the numbers do not change the name
    assert preset("cartpole", epochs=5, checkpoint_every=3).run_name() == base.run_name()
    long = preset("cartpole", width=123456, n_steps=7, n_data=9, time=0.123456789, rho=0.987654321,
                  clip_value=0.31415926535, momentum=0.5, optimizer="sgd", loss_mode="CONTINUOUS",
                  bias=False, zero_last=False, dtype="float64", depth=1, batch_size=3)
    assert len(long.run_name()) <= 180


def test_sweep_over_rho_on_cartpole_and_name_with_suffix(tmp_path):
    from stablebptt.train.sweep import expand_grid

    configs = expand_grid("cartpole", {"rho": [1.0, 2.0], "mode": ["R"], "clip": ["norm"]}, poles=1)
    assert len({c.run_name() for c in configs}) == 2
    assert main(["run", "cartpole", *TINY, "--epochs", "1", "--out", str(tmp_path), "--name", "x.h5"]) == 0
    assert os.listdir(tmp_path) == ["x.h5"]


def test_float64_and_float32_runs_live_side_by_side(tmp_path):
    for dtype in ("float32", "float64"):
        assert main(["run", "cartpole", *TINY, "--epochs", "1", "--dtype", dtype,
                     "--out", str(tmp_path)]) == 0
    assert len(os.listdir(tmp_path)) == 2


# ---- 5 and 9: concurrent writers, locked files, picture paths -----------------------------------

def test_a_second_writer_of_the_same_run_is_refused(tmp_path):
    args = ["run", "cartpole", *SLOW, "--epochs", "100000", "--out", str(tmp_path), "--name", "x",
            "--overwrite"]
    first = _start(*args)
    try:
        _wait_for(lambda: _epochs_in(tmp_path / "x.h5") >= 1, what="the first writer's epochs")
        second = _cli(*args)
        assert second.returncode == 2, second.stderr
        assert "being written by another process" in second.stderr and "Traceback" not in second.stderr
        assert first.poll() is None  # the first run goes on
        epochs = _epochs_in(tmp_path / "x.h5")
        _wait_for(lambda: _epochs_in(tmp_path / "x.h5") > epochs, what="the first run to go on")
    finally:
        first.kill()
        first.communicate()
    resumed = _cli("run", "--resume", str(tmp_path / "x.h5"),
                   "--epochs", str(_epochs_in(tmp_path / "x.h5") + 1), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    # a temporary file that the SIGKILL may have left mid-write is removed by the next writer
    assert sorted(os.listdir(tmp_path)) == ["x.h5"]


def test_a_file_open_for_writing_elsewhere_is_reported_as_locked(run_file, tmp_path):
    path = tmp_path / "r.h5"
    path.write_bytes(run_file.read_bytes())
    holder = subprocess.Popen([sys.executable, "-c",
                               "import h5py, sys, time; f = h5py.File(sys.argv[1], 'a');"
                               " print('open', flush=True); time.sleep(60)", str(path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(RunFileError, match="locked"):
            read_run(path)
    finally:
        holder.kill()
        holder.communicate()


def test_picture_into_a_folder_reports_the_file_written(run_file, tmp_path, capsys):
    folder = tmp_path / "pictures"
    folder.mkdir()
    assert main(["trajectories", str(run_file), "--samples", "1", "--out", str(folder)]) == 0
    written = capsys.readouterr().out.strip()
    assert written == str(folder / "r_trajectories_final.png") and os.path.isfile(written)


# ---- 2 and 11: diverged runs in figures, summaries and animations ------------------------------

def test_diverged_runs_are_plotted_tabled_and_animated(tmp_path, capsys):
    runs = tmp_path / "d"
    code = main(["run", "cartpole", "--optimizer", "sgd", "--lr", "1e6", "--clip", "none", "--epochs", "3",
                 "--out", str(runs), *TINY])
    assert code == 1  # diverged: the file is kept and marked
    # a run that diverged later: finite epochs, then NaN
    config = preset("cartpole", mode="R", width=8, n_steps=10, n_data=16, epochs=4)
    trainer = Trainer.new(config, runs / "late.h5")
    trainer.run(quiet=True)
    record = read_run(runs / "late.h5")
    record.metrics = {k: np.concatenate([v[:3], [np.nan]]) for k, v in record.metrics.items()}
    record.status, record.attrs = "diverged", {"diverged_epoch": 4}
    write_run(runs / "late.h5", record)
    capsys.readouterr()
    assert main(["plot", str(runs)]) == 0
    printed = capsys.readouterr().out
    assert "diverged" in printed
    with open(runs / "runs.csv") as fh:
        rows = {row["file"]: row for row in csv.DictReader(fh)}
    assert {row["status"] for row in rows.values()} == {"diverged"}
    late = rows["late.h5"]
    assert late["diverged_epoch"] == "4" and late["lr"] == "0.001"
    assert float(late["best_test_loss"]) == pytest.approx(np.min(record.metrics["test_loss"][:3]))
    diverged = read_run(next(p for p in runs.glob("cartpole_*.h5")))
    assert np.all(np.isfinite(np.concatenate([v.ravel() for v in diverged.params_final.values()])))
    for command in (["animate", str(runs / "late.h5")], ["animate", str(diverged_path(runs))],
                    ["trajectories", str(diverged_path(runs))]):
        assert main(command) == 0, command


def diverged_path(folder):
    return next(p for p in folder.glob("cartpole_*.h5"))


def test_cartpole_angles_break_at_the_wrap_and_animations_keep_proportions(run_file, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stablebptt.sims import CartPole, Guidance
    from stablebptt.tasks import get_task

    sim = CartPole(poles=1)
    t = np.linspace(0, 4 * np.pi, 50)
    states = np.zeros((50, 1, 4))
    states[:, 0, 2] = t  # the pole turns twice
    fig = plt.figure()
    get_task("cartpole").draw_trajectories(fig, sim, states, np.zeros((49, 1, 1)), 0.1)
    angle = fig.axes[0].get_lines()[0].get_ydata()
    assert np.isnan(angle).sum() >= 2 and np.nanmax(np.abs(np.diff(angle))) < 1.0
    fig, ax = plt.subplots()
    get_task("cartpole").animation(ax, sim, states[:, 0])
    assert ax.get_aspect() == 1.0
    guidance = Guidance(drivers=1, evaders=2)
    flat = np.zeros((10, guidance.state_dim))
    flat[:, 0] = np.linspace(0, 1e3, 10)  # a driver running away along x
    fig, ax = plt.subplots()
    get_task("guidance").animation(ax, guidance, flat)
    assert ax.get_xlim()[1] < 10  # the herd stays in view
    plt.close("all")


# ---- 10: sweep progress in a log file ---------------------------------------------------------

def test_sweep_progress_lines_at_a_steady_pace_in_a_log():
    stream = io.StringIO()  # not a terminal
    display = SweepDisplay(4, stream=stream, log_every=0.2)
    display.epoch("run_a", 3, 100)
    display.tick()
    assert stream.getvalue() == ""  # not due yet
    time.sleep(0.25)
    display.tick()
    display.tick()  # due once only
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "0/4 done" in lines[0] and "run_a 3/100" in lines[0]


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


# ---- 1: the same numbers whatever the caller's BLAS threads -----------------------------------

def test_engine_runs_on_one_blas_thread_and_restores_the_callers_setting():
    from threadpoolctl import threadpool_info, threadpool_limits

    from stablebptt.adjoint.threads import one_blas_thread

    with threadpool_limits(2, user_api="blas"):
        with one_blas_thread():
            inside = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
        after = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    assert inside and set(inside) == {1}
    assert set(after) == {2}



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
