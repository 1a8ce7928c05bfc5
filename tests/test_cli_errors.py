"""Bad input on the command line: exit 2, one line naming the value, no traceback, nothing
written; and a command line that answers before it loads Numba."""

import logging
import subprocess
import sys
import time

import numpy as np
import pytest

from stablebptt import Trainer, preset, read_run
from stablebptt.cli import main

from cli_helpers import _cli, _tree, _one_line_error


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
    code = ("import sys; from stablebptt.cli import main; code = main(['run', 'cartpole', '--epochs', "
            "'x']); print(code, 'numba' in sys.modules, 'matplotlib' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["2", "False", "False"], done.stderr


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


@pytest.mark.parametrize("argv, named", [
    (["sweep", "cartpole", "--poles", "1,,2"], "empty item"),
    (["sweep", "cartpole", "--modes", "R,,C"], "empty item"),
    (["run", "cartpole", "--name", "a\nb"], "control character"),
    (["run", "cartpole", "--name", "a\tb"], "control character"),
])
def test_what_was_silently_accepted_is_one_line(argv, named, capsys):
    from stablebptt.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err, err


def test_more_threads_than_cores_is_capped_and_said(tmp_path, capsys):
    from cli_helpers import TINY
    from stablebptt.cli import main
    from stablebptt.train.sweep import available_cores

    assert main(["run", "cartpole", *TINY, "--epochs", "1", "--threads", "1000",
                 "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert f"--threads 1000 is more than the {available_cores()} cores" in err, err


def test_plot_of_one_run_file_draws_that_run_beside_it(run_file, tmp_path, capsys):
    import shutil

    from stablebptt.cli import main

    path = tmp_path / "r.h5"
    shutil.copy(run_file, path)
    assert main(["plot", str(path)]) == 0, capsys.readouterr().err
    written = capsys.readouterr().out.split()
    assert str(tmp_path / "summary.csv") in written and any(p.endswith(".png") for p in written)
