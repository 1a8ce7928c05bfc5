"""Paper figures, the summary table, the toy examples and animations, from small runs."""

import csv

import matplotlib.image
import numpy as np
import pytest
from PIL import Image

from stablebptt import Trainer, preset
from stablebptt.cli import main
from stablebptt.train.toy import RotationToy

SMALL = {
    "cartpole": dict(n_steps=10, width=8),
    "guidance": dict(n_steps=10, width=8, drivers=1, evaders=2),
    "quantum": dict(n_steps=8, width=4, nx=12),
}


def _small_runs(folder, task, axis, values, modes=("R", "C")):
    for value in values:
        for mode in modes:
            config = preset(task, mode=mode, epochs=3, n_data=16, checkpoint_every=3,
                            **{axis: value}, **SMALL[task])
            Trainer.new(config, str(folder / (config.run_name() + ".h5"))).run(quiet=True)


def _valid_png(path):
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 100
    assert image[..., :3].std() > 0.02


def test_paper_figures_and_summary(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    _small_runs(runs, "cartpole", "poles", [1, 2])
    _small_runs(runs, "guidance", "rho", [1.0, 0.1])
    _small_runs(runs, "quantum", "target_state", [3, 4])
    assert main(["plot", str(runs), "--out", str(tmp_path / "figs"), "--threshold", "10"]) == 0
    out = capsys.readouterr()
    for stem in ("figure3_guidance", "figure4_cartpole", "figure5_quantum", "gradients_guidance",
                 "gradients_cartpole", "gradients_quantum"):
        _valid_png(tmp_path / "figs" / f"{stem}.png")
        assert (tmp_path / "figs" / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
    with open(tmp_path / "figs" / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 and {r["task"] for r in rows} == {"cartpole", "guidance", "quantum"}
    guidance = [r for r in rows if r["task"] == "guidance"]
    assert all(r["epochs_to_threshold"] == "1" for r in guidance)  # guidance losses start below 10
    assert "missing run" not in out.err


def test_plot_reports_unreadable_and_missing_runs(tmp_path, capsys):
    _small_runs(tmp_path, "cartpole", "poles", [1, 2], modes=("R",))
    config = preset("cartpole", poles=1, mode="C", epochs=1, n_data=16, **SMALL["cartpole"])
    Trainer.new(config, str(tmp_path / (config.run_name() + ".h5"))).run(quiet=True)
    (tmp_path / "broken.h5").write_bytes(b"not hdf5 at all")
    assert main(["plot", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "unreadable run broken.h5" in err
    assert "missing run: cartpole: poles=2 mode=C clip=norm seed=42" in err
    _valid_png(tmp_path / "figure4_cartpole.png")
    assert main(["plot", str(tmp_path / "nowhere")]) == 2


def test_toy_adam_converges_on_the_gradient_field_only():
    toy = RotationToy()
    _, gradient = toy.adam("gradient")
    _, rotation = toy.adam("rotation")
    _, combination = toy.adam("combination")
    assert gradient[-1] < 1e-3 * gradient[0]
    assert rotation[-1] > 0.01 * rotation[0] and rotation.min() > 0.1
    assert combination[-1] < 0.1 * rotation[-1]
    np.testing.assert_allclose(toy.field((1.0, 2.0), "gradient"), [2.0, 4.0])
    np.testing.assert_allclose(toy.field((1.0, 2.0), "combination"), [0.0, 8.0])  # x: -6 vs 2


def test_toy_figures(tmp_path):
    from matplotlib.figure import Figure

    from stablebptt.cli.outputs import save_figures
    from stablebptt.plots import toy_figures

    figures = toy_figures(iterations=20, resolution=9)
    assert sorted(figures) == ["figure1_toy", "figure2_toy"]
    assert all(isinstance(fig, Figure) for fig in figures.values())
    paths = save_figures(figures, tmp_path, dpi=60)
    assert len(paths) == 4
    for path in paths:
        if path.endswith(".png"):
            _valid_png(path)


@pytest.mark.parametrize("task", ["cartpole", "guidance", "quantum"])
def test_animation(task, tmp_path):
    config = preset(task, epochs=1, n_data=16, **SMALL[task])
    Trainer.new(config, str(tmp_path / "run.h5")).run(quiet=True)
    assert main(["animate", str(tmp_path / "run.h5"), "--sample", "1", "--out", str(tmp_path / "a.gif")]) == 0
    with Image.open(tmp_path / "a.gif") as gif:
        # one frame per state; Pillow merges identical neighbours (guidance starts at rest)
        assert config.n_steps <= gif.n_frames <= config.n_steps + 1
    assert main(["animate", str(tmp_path / "run.h5"), "--sample", "16"]) == 2


def test_figure3_style_plain_ticks_and_the_papers_range():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stablebptt.plots.paper import _paper_range, _plain_log_ticks
    from stablebptt.tasks import get_task

    guidance = get_task("guidance")
    assert guidance.panel_setting() == "rho"
    assert guidance.panel_title.format(0.01) == "Regularization: 0.01"
    fig, (inside, outside, wide) = plt.subplots(1, 3)
    for ax, top in ((inside, 3.0), (outside, 9.0)):
        ax.plot([1, 2, 3], [0.6, 1.5, top])
        ax.set_yscale("log")
        _paper_range(ax, guidance.figure_yrange)
        _plain_log_ticks(ax)
    assert inside.get_ylim() == (0.4, 6.0)
    assert outside.get_ylim() != (0.4, 6.0)  # a curve outside the paper's range keeps the data's
    fig.canvas.draw()
    labels = [t.get_text() for t in inside.get_yticklabels() if t.get_text()]
    assert {"0.5", "0.7", "1", "2", "3", "5"} <= set(labels), labels
    wide.plot([1, 2], [1e-5, 1.0])
    wide.set_yscale("log")
    _plain_log_ticks(wide)  # five decades: matplotlib's own decade labels stay
    fig.canvas.draw()
    assert "0.7" not in [t.get_text() for t in wide.get_yticklabels()]
    plt.close(fig)


def test_guidance_preset_runs_past_the_scripts_ten_epochs():
    from stablebptt.train.sweep import expand_grid
    from stablebptt.tasks import get_task

    assert preset("guidance").epochs == 400
    assert all(c.epochs == 400 for c in expand_grid("guidance"))
    help_text = get_task("guidance").description
    assert "ep=10" in help_text and "--epochs 10" in help_text
    assert preset("guidance", epochs=10).run_name() == preset("guidance").run_name()


def test_toy_diagnosis_has_the_closed_form_jacobians(tmp_path):
    """s = x + c passes the adjoint on unchanged (physics Jacobian 1); the network path
    multiplies it by df/dx = 2 t1 x + t2 at every step."""
    from stablebptt.train.diagnose import read_diagnosis
    from stablebptt.cli.outputs import toy_diagnosis
    from stablebptt.train.toy import DIAGNOSIS_POINT, unrolled_toy

    paths, text = toy_diagnosis(tmp_path)
    _valid_png(paths[1])
    diag = read_diagnosis(paths[0])
    t1, t2 = DIAGNOSIS_POINT
    problem, x0 = unrolled_toy()
    _, states, _ = problem.rollout(np.array(DIAGNOSIS_POINT), x0)
    x = states[:-1, 0, 0]
    np.testing.assert_array_equal(diag["jacobian_norm"]["physics"][:, 0], 1.0)
    np.testing.assert_allclose(diag["jacobian_norm"]["network"][:, 0], np.abs(2 * t1 * x + t2),
                               rtol=1e-14)
    np.testing.assert_allclose(diag["jacobian_norm"]["closed_loop"][:, 0],
                               np.abs(1 + 2 * t1 * x + t2), rtol=1e-14)
    assert np.ptp(diag["adjoint_norm"]["physics"]) == 0.0
    assert "beyond the physics path" in text and "dominates R" in text


def test_seeds_are_aggregated_into_a_median_line_with_a_band(tmp_path, capsys):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stablebptt.plots.paper import _seed_curve
    from stablebptt.train.summary import load_folder, seed_groups, smooth

    for seed in (0, 1, 2):
        config = preset("cartpole", mode="C", epochs=4, n_data=16, seed=seed, **SMALL["cartpole"])
        Trainer.new(config, str(tmp_path / (config.run_name() + ".h5"))).run(quiet=True)
    config = preset("cartpole", mode="R", epochs=4, n_data=16, seed=0, **SMALL["cartpole"])
    Trainer.new(config, str(tmp_path / (config.run_name() + ".h5"))).run(quiet=True)
    runs, _ = load_folder(tmp_path)
    groups = seed_groups(list(runs.values()))
    assert sorted(len(members) for _, members in groups) == [1, 3]

    members = next(m for _, m in groups if len(m) == 3)
    fig, ax = plt.subplots()
    _seed_curve(ax, members, "test_loss", window=1, lw=1)
    curves = np.stack([smooth(r.metrics["test_loss"], 1) for r in members])
    assert not np.allclose(curves[0], curves[1])  # the seeds differ: the band is not trivial
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_ydata(), np.median(curves, axis=0))
    (band,) = ax.collections
    corners = band.get_paths()[0].vertices[:, 1]
    np.testing.assert_allclose([corners.min(), corners.max()], [curves.min(), curves.max()])
    plt.close(fig)

    assert main(["plot", str(tmp_path), "--threshold", "100"]) == 0
    printed = capsys.readouterr().out
    assert "3 finished" in printed
    with open(tmp_path / "summary.csv") as fh:
        rows = {row["mode"]: row for row in csv.DictReader(fh)}
    finals = [r.metrics["test_loss"][-1] for r in members]
    c = rows["C"]
    assert c["seeds"] == "3" and c["seed_values"] == "0 1 2" and c["status"] == "3 finished"
    assert float(c["final_test_loss"]) == pytest.approx(np.median(finals))
    assert [float(c["final_min"]), float(c["final_max"])] == pytest.approx([min(finals), max(finals)])
    assert c["reached_threshold"] == "3/3" and c["epochs_to_threshold"] == "1"
    assert rows["R"]["seeds"] == "1" and rows["R"]["status"] == "finished"
    with open(tmp_path / "runs.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 4
    _valid_png(tmp_path / "figure4_cartpole.png")
