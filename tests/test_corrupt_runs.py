"""Run files as untrusted input: every command that reads one refuses a damaged file in one line.

Each case copies a good run file and damages it with h5py; every command must then exit 2 with
one line naming the file, write nothing, and leave the input unchanged.
"""

import hashlib
import json
import os
import shutil

import h5py
import numpy as np
import pytest

from cli_helpers import _tree
from stablebptt.cli import main


def _metric_as_text(f):
    del f["metrics/test_loss"]
    f["metrics/test_loss"] = np.array([b"a", b"b"])


def _config_value(key, value):
    def damage(f):
        config = json.loads(f.attrs["config"])
        config[key] = value
        f.attrs["config"] = json.dumps(config)
    return damage


def _replace(key, value):
    def damage(f):
        del f[key]
        f[key] = value
    return damage


def _set_attr(group, name, value):
    def damage(f):
        f[group].attrs[name] = value
    return damage


def _scaled(key, factor):
    def damage(f):
        f[key][...] = f[key][()] * factor
    return damage


def _longer_checkpoint(f):  # as if from a run with another controller
    g = f["checkpoint"]
    for key in ["theta"] + [f"optimizer/{k}" for k in g["optimizer"]]:
        value = g[key][()]
        del g[key]
        g[key] = np.concatenate([value, value[:5]])


CASES = {
    "metric of text": (_metric_as_text, "metrics/test_loss"),
    "no params group": (lambda f: f.__delitem__("params"), "params/initial"),
    "no checkpoint group": (lambda f: f.__delitem__("checkpoint"), "checkpoint"),
    "checkpoint of another size": (_longer_checkpoint, "checkpoint/theta"),
    "checkpoint of ints": (lambda f: _replace("checkpoint/theta", f["checkpoint/theta"][()]
                                              .astype(np.int32))(f), "checkpoint/theta"),
    "checkpoint of float64 in a float32 run": (
        lambda f: _replace("checkpoint/theta", f["checkpoint/theta"][()].astype(np.float64))(f),
        "float64"),
    "poles of text": (_config_value("poles", "three"), "poles"),
    "config not an object": (lambda f: f.attrs.__setitem__("config", "[1, 2]"), "config"),
    "config not JSON": (lambda f: f.attrs.__setitem__("config", "{oops"), "config"),
    "newer format": (lambda f: f.attrs.__setitem__("format_version", 99), "version 99"),
    "NaN parameters": (_scaled("params/final/dense_0/kernel", np.nan), "params/final"),
    "infinite data": (_scaled("data/train", np.inf), "data/train"),
    "negative epochs_done": (lambda f: f.attrs.__setitem__("epochs_done", -1), "epochs_done"),
    "epochs_done beyond the metrics": (lambda f: f.attrs.__setitem__("epochs_done", 50),
                                       "epochs_done"),
    "unknown status": (lambda f: f.attrs.__setitem__("status", "happy"), "status"),
    "bad rng state": (_set_attr("checkpoint", "rng_state", '{"bit_generator": "MT"}'), "rng_state"),
    "checkpoint epoch beyond the run": (_set_attr("checkpoint", "epoch", 7), "epoch 7"),
}

COMMANDS = {
    "inspect": lambda f, out: ["inspect", f],
    "inspect --metrics": lambda f, out: ["inspect", f, "--metrics"],
    "trajectories": lambda f, out: ["trajectories", f, "--out", os.path.join(out, "t.png")],
    "animate": lambda f, out: ["animate", f, "--out", os.path.join(out, "a.gif")],
    "diagnose": lambda f, out: ["diagnose", f, "--out", out],
    "run --resume": lambda f, out: ["run", "--resume", f, "--epochs", "3", "--quiet"],
    "plot": lambda f, out: ["plot", os.path.dirname(f), "--out", out],
    "plot FILE": lambda f, out: ["plot", f, "--out", out],
}


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def damaged(run_file, tmp_path_factory):
    """``{case: path}``: a copy of the good run per case, damaged, each in its own folder."""
    paths = {}
    for i, (case, (damage, _)) in enumerate(CASES.items()):
        folder = tmp_path_factory.mktemp(f"case{i}")
        path = str(folder / "r.h5")
        shutil.copy(run_file, path)
        with h5py.File(path, "a") as f:
            damage(f)
        paths[case] = path
    folder = tmp_path_factory.mktemp("truncated")
    path = str(folder / "r.h5")
    data = open(run_file, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])
    paths["truncated"] = path
    return paths


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", list(CASES) + ["truncated"])
def test_a_damaged_run_file_is_one_line_and_nothing_written(damaged, case, command, tmp_path,
                                                            capsys):
    path = damaged[case]
    what = CASES[case][1] if case in CASES else "HDF5"
    before, listing = _digest(path), _tree(os.path.dirname(path))
    out = str(tmp_path / "out")
    os.makedirs(out)
    code = main(COMMANDS[command](path, out))
    err = capsys.readouterr().err
    assert code == 2, (case, command, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert all(line.startswith("stablebptt:") for line in lines), err
    # plot reports the unreadable file, then that the folder has no readable run
    assert len(lines) == (2 if command == "plot" else 1), err
    assert path in lines[0] or os.path.basename(path) in lines[0], err
    assert what in lines[0], err
    assert os.listdir(out) == []
    assert _digest(path) == before and _tree(os.path.dirname(path)) == listing


def test_the_good_file_passes_every_command(run_file, tmp_path, capsys):
    folder = tmp_path / "good"
    folder.mkdir()
    path = str(folder / "r.h5")
    shutil.copy(run_file, path)
    for command in ("inspect", "inspect --metrics", "trajectories", "plot"):
        out = str(tmp_path / command.replace(" ", "_"))
        os.makedirs(out)
        assert main(COMMANDS[command](path, out)) == 0, capsys.readouterr().err


MARKER_MODULE = '''
import pathlib
pathlib.Path("IMPORTED").write_text("a run file made this module run")
'''


@pytest.mark.parametrize("command", ["inspect", "trajectories", "diagnose", "run --resume", "plot"])
def test_a_task_module_a_file_names_is_never_imported(run_file, tmp_path, command):
    """A run file's task_source names a module in the working folder that writes a marker when
    imported: no command that reads the file imports it (inspect and plot read it without)."""
    from cli_helpers import _cli

    (tmp_path / "evil.py").write_text(MARKER_MODULE)
    folder = tmp_path / "runs"
    folder.mkdir()
    path = str(folder / "r.h5")
    shutil.copy(run_file, path)
    with h5py.File(path, "a") as f:
        config = json.loads(f.attrs["config"])
        config.update(task="evil_task", task_source="evil:Task")
        f.attrs["config"] = json.dumps(config)
    out = str(tmp_path / "out")
    os.makedirs(out)
    result = _cli(*COMMANDS[command](path, out), cwd=tmp_path)
    assert not (tmp_path / "IMPORTED").exists(), result.stderr
    assert "Traceback" not in result.stderr
    if command in ("inspect", "plot"):
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "--task-code" in result.stderr, result.stderr


def _full_disk(monkeypatch):
    """Every atomic write fails as on a full disk (at its sync, after the bytes went out)."""
    import errno

    import stablebptt._atomic as atomic

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(atomic.os, "fsync", no_space)


@pytest.mark.parametrize("command", ["run --resume", "plot", "trajectories"])
def test_a_full_disk_is_one_line_and_leaves_the_files_as_they_were(run_file, tmp_path, capsys,
                                                                   monkeypatch, command):
    folder = tmp_path / "runs"
    folder.mkdir()
    path = str(folder / "r.h5")
    shutil.copy(run_file, path)
    out = str(tmp_path / "out")
    os.makedirs(out)
    before, listing = _digest(path), _tree(str(folder))
    _full_disk(monkeypatch)
    code = main(COMMANDS[command](path, out))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "no space left on" in err and "Traceback" not in err, err
    assert _digest(path) == before and _tree(str(folder)) == listing
    assert os.listdir(out) == []


def test_resuming_in_a_read_only_folder_is_one_line(run_file, tmp_path, capsys, monkeypatch):
    """The lock file cannot be created (a read-only folder; as root chmod would not stop us, so
    the error is injected) : one line naming the file; inspect of the same file still works."""
    import errno

    import stablebptt.train.runfile as runfile

    folder = tmp_path / "runs"
    folder.mkdir()
    path = str(folder / "r.h5")
    shutil.copy(run_file, path)
    real_open = os.open

    def read_only(name, flags, *args):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", name)
        return real_open(name, flags, *args)
    monkeypatch.setattr(runfile.os, "open", read_only)
    before = _digest(path)
    assert main(["run", "--resume", path, "--epochs", "3", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "read-only" in err and path + ".lock" in err, err
    assert main(["inspect", path]) == 0
    assert _digest(path) == before and sorted(os.listdir(folder)) == ["r.h5"]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 16 KiB tmpfs (where this machine lets us mount one; skipped otherwise)."""
    import subprocess

    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_run_on_a_real_full_disk_is_one_line_and_leaves_no_partial_file(tiny_disk):
    from cli_helpers import TINY, _cli

    result = _cli("run", "cartpole", *TINY, "--epochs", "2", "--out", str(tiny_disk),
                  "--name", "r")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "no space left on" in result.stderr, result.stderr
    assert os.listdir(tiny_disk) == []
