"""The command line: a working run / inspect / gradcheck, and one-line errors with exit status 2."""

import os
import subprocess
import sys

import h5py
import pytest

from stablebptt.cli import main

SMALL = ["--poles", "1", "--width", "8", "--steps", "10", "--n-data", "16", "--batch-size", "8",
         "--epochs", "2", "--quiet"]


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "stablebptt", *args], capture_output=True,
                          text=True, cwd=cwd)


def test_run_then_inspect(tmp_path):
    out = tmp_path / "runs"
    done = _run("run", "cartpole", *SMALL, "--mode", "combined", "--clip", "norm", "--out", str(out))
    assert done.returncode == 0, done.stderr
    files = os.listdir(out)
    # settings that differ from the preset are part of the name
    assert files == ["cartpole_p1_C_clip-norm_lr0.001_bs8_s42_n-data16_width8_steps10.h5"]
    shown = _run("inspect", str(out / files[0]), "--metrics")
    assert shown.returncode == 0, shown.stderr
    assert "status:   finished, 2 of 2 epochs" in shown.stdout
    assert "mode=C" in shown.stdout and "test_loss" in shown.stdout
    again = _run("run", "cartpole", *SMALL, "--mode", "C", "--out", str(out))
    assert again.returncode == 2 and "exists" in again.stderr


def test_gradcheck_toy_passes():
    done = _run("gradcheck", "toy")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 failed" in done.stdout and "toy: mode R vs closed form" in done.stdout


BAD = [
    (["run", "pendulum"], "'pendulum'"),
    (["run", "cartpole", "--mode", "Q"], "'Q'"),
    (["run", "cartpole", "--poles", "0"], "poles=0"),
    (["run", "cartpole", "--lr", "0"], "lr=0"),
    (["run", "cartpole", "--lr=-1e-3"], "lr=-0.001"),
    (["run", "cartpole", "--epochs", "0"], "epochs=0"),
    (["run", "cartpole", "--batch-size", "0"], "batch_size=0"),
    (["run", "cartpole", "--batch-size", "300"], "batch_size=300"),
    (["run", "cartpole", "--clip", "sideways"], "'sideways'"),
    (["run", "cartpole", "--poles", "two"], "'two'"),
    (["run", "cartpole", "--threads", "0"], "--threads must be >= 1, got 0"),
    (["run"], "TASK"),
    (["gradcheck", "pendulum"], "'pendulum'"),
    (["frobnicate"], "frobnicate"),
]


@pytest.mark.parametrize("args,named", BAD)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, named, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(args + ["--out", str(out)] if args[0] == "run" else args)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("stablebptt: error:"), err
    assert named in err
    assert not out.exists()


def test_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code = main(["run", "cartpole", *SMALL, "--out", str(blocker / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "output folder" in err


def _bad_files(tmp_path):
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 100)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = [1, 2, 3]
    return {"missing": (tmp_path / "nope.h5", "no such run file"),
            "corrupt": (corrupt, "not a readable HDF5 file"),
            "foreign": (foreign, "not a stablebptt run file")}


@pytest.mark.parametrize("kind", ["missing", "corrupt", "foreign"])
@pytest.mark.parametrize("command", ["inspect", "resume"])
def test_bad_run_files(kind, command, tmp_path, capsys):
    path, message = _bad_files(tmp_path)[kind]
    before = sorted(os.listdir(tmp_path))
    args = ["inspect", str(path)] if command == "inspect" else ["run", "--resume", str(path)]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert sorted(os.listdir(tmp_path)) == before


def test_resume_of_a_finished_run_is_a_no_op(tmp_path):
    out = tmp_path / "runs"
    assert _run("run", "cartpole", *SMALL, "--out", str(out), "--name", "r").returncode == 0
    path = out / "r.h5"
    stamp = path.stat().st_mtime_ns
    done = _run("run", "--resume", str(path))
    assert done.returncode == 0 and "already finished" in done.stdout
    assert path.stat().st_mtime_ns == stamp


def test_help_states_every_tasks_default_from_the_registry():
    """The defaults in --help are the registry's, so they cannot drift from what a run uses."""
    from stablebptt.cli.commands import SETTINGS, build_parser
    from stablebptt.tasks import all_tasks

    run = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "run")[1]
    helps = {a.dest: a.help for a in run._actions}
    assert "quantum 60" in helps["width"] and "default 100" in helps["width"]
    for task in all_tasks():
        config = __import__("stablebptt").preset(task.name)
        for name in SETTINGS:
            value = getattr(config, name)
            if name in task.ignores or name == "device":
                continue
            shown = ("yes" if value else "no") if isinstance(value, bool) else str(value)
            said = f"{task.name} {shown}" in helps[name] or f"default {shown}" in helps[name]
            assert said, (task.name, name, helps[name])
