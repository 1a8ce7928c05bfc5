"""Diverged runs in figures, summaries and animations, and the pictures' proportions."""

import csv

import numpy as np
import pytest

from stablebptt import Trainer, preset, read_run
from stablebptt.cli import main
from stablebptt.train.runfile import write_run

from cli_helpers import TINY


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
