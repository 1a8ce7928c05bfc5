"""Run files as shared files: one writer at a time, a file locked elsewhere, picture paths."""

import os
import subprocess
import sys

import pytest

from stablebptt import read_run
from stablebptt.cli import main
from stablebptt.train.runfile import RunFileError

from cli_helpers import SLOW, _cli, _start, _wait_for, _epochs_in


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
