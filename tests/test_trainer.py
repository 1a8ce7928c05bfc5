"""Training, HDF5 run files, exact resume, a killed process, and learning."""

import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from stablebptt import METRICS, Trainer, preset, read_run

TINY = dict(poles=1, width=8, depth=2, n_steps=10, time=0.1, n_data=16, batch_size=4, epochs=4,
            checkpoint_every=2, zero_last=False)
CLIP = 1e-4  # below the tiny runs' gradient norms (~3e-3), so clipping acts
DETERMINISTIC = [m for m in METRICS if m not in ("epoch_time", "wall_time")]


def _train(path, **overrides):
    trainer = Trainer.new(preset("cartpole", **{**TINY, **overrides}), str(path))
    trainer.run(quiet=True)
    return read_run(path)


def test_run_file_layout(tmp_path):
    record = _train(tmp_path / "run.h5", mode="C")
    assert record.status == "finished" and record.epochs_done == 4
    for name in METRICS:
        assert record.metrics[name].shape == (4,) and np.all(np.isfinite(record.metrics[name]))
    assert np.all((record.metrics["kept_fraction"] > 0) & (record.metrics["kept_fraction"] <= 1))
    assert np.all(record.metrics["cosine_similarity"] != 0)
    assert record.params_final["dense_0/kernel"].shape == (4, 8)
    assert record.params_initial["dense_2/bias"].shape == (1,)
    assert not np.array_equal(record.params_initial["dense_1/kernel"], record.params_final["dense_1/kernel"])
    assert record.train.shape == (16, 4) and record.checkpoint.epoch == 4
    with h5py.File(tmp_path / "run.h5") as f:
        assert f.attrs["format"] == "stablebptt-run"
        assert f.attrs["config.mode"] == "C" and f.attrs["config.poles"] == 1
        assert {"version.numpy", "version.numba", "version.stablebptt"} <= set(f.attrs)
        assert f["metrics/test_loss"].maxshape == (None,)


@pytest.mark.parametrize("mode,clip", [("C", "norm"), ("R", "value"), ("M", "none")])
def test_gradient_flow_metrics(mode, clip, tmp_path):
    """|g| before and after clipping, how often clipping acted, and the kept fraction of C,
    recomputed from the updates of a replayed epoch."""
    from stablebptt.adjoint.modes import parse_mode
    from stablebptt.train.optim import clip_gradient
    from stablebptt.train.trainer import _batches

    config = preset("cartpole", **{**TINY, "mode": mode, "clip": clip, "clip_value": CLIP, "epochs": 1})
    trainer = Trainer.new(config, str(tmp_path / "run.h5"))
    theta = trainer.theta.copy()
    values = trainer.train_epoch()
    trainer.close()
    replay = Trainer.new(config, str(tmp_path / "replay.h5"))
    assert np.array_equal(replay.theta, theta)
    norms, clipped, changed, kept = [], [], [], []
    for batch in _batches(replay.task.train, config.batch_size):
        result = replay.task.problem.gradient(replay.theta, batch, parse_mode(mode))
        g = result.grad.astype(np.float64)
        c = clip_gradient(result.grad, clip, CLIP).astype(np.float64)
        norms.append(np.linalg.norm(g))
        clipped.append(np.linalg.norm(c))
        changed.append(not np.array_equal(g, c))
        if mode == "C":
            kept.append(np.mean(np.sign(result.grad_modified) == np.sign(result.grad_regular)))
        replay.optimizer.update(replay.theta, clip_gradient(result.grad, clip, CLIP), replay.opt_state)
    replay.close()
    np.testing.assert_allclose(values["grad_norm"], np.mean(norms), rtol=1e-12)
    np.testing.assert_allclose(values["clipped_grad_norm"], np.mean(clipped), rtol=1e-12)
    assert values["clip_active"] == np.mean(changed)
    if mode == "C":
        assert values["kept_fraction"] == np.mean(kept) and 0 < values["kept_fraction"] <= 1
    else:
        assert np.isnan(values["kept_fraction"])
    if clip == "none":
        assert values["clip_active"] == 0 and values["clipped_grad_norm"] == values["grad_norm"]
    else:
        assert values["clip_active"] > 0  # the threshold is below this run's gradients
    if clip == "norm":
        assert values["clipped_grad_norm"] <= CLIP * (1 + 1e-6)


def test_resume_continues_bit_identically(tmp_path):
    full = _train(tmp_path / "full.h5", mode="C", epochs=6)
    part = Trainer.new(preset("cartpole", **{**TINY, "mode": "C", "epochs": 3}), str(tmp_path / "part.h5"))
    part.run(quiet=True)
    resumed = Trainer.resume(tmp_path / "part.h5", epochs=6)
    assert resumed.epoch == 3 and resumed.opt_state.step == 12
    resumed.run(quiet=True)
    record = read_run(tmp_path / "part.h5")
    np.testing.assert_array_equal(record.checkpoint.theta, full.checkpoint.theta)
    for name, value in full.checkpoint.optimizer_arrays.items():
        np.testing.assert_array_equal(record.checkpoint.optimizer_arrays[name], value)
    for name in DETERMINISTIC:
        np.testing.assert_array_equal(record.metrics[name], full.metrics[name])
    assert record.checkpoint.rng_state == full.checkpoint.rng_state


def test_same_seed_same_numbers_different_seed_different(tmp_path):
    a = _train(tmp_path / "a.h5")
    b = _train(tmp_path / "b.h5")
    c = _train(tmp_path / "c.h5", seed=7)
    np.testing.assert_array_equal(a.checkpoint.theta, b.checkpoint.theta)
    assert not np.array_equal(a.checkpoint.theta, c.checkpoint.theta)


@pytest.mark.parametrize("mode", ["R", "M", "S", "N"])
def test_every_mode_trains(tmp_path, mode):
    record = _train(tmp_path / f"{mode}.h5", mode=mode, epochs=2, clip="value")
    assert np.all(np.isfinite(record.metrics["test_loss"]))
    assert np.all(record.metrics["cosine_similarity"] == 0)


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "stablebptt", *args], capture_output=True, text=True,
                          **kwargs)


def test_killed_process_leaves_a_file_that_resumes_exactly(tmp_path):
    args = ["run", "cartpole", "--poles", "1", "--width", "16", "--steps", "20", "--n-data", "32",
            "--batch-size", "8", "--mode", "C", "--checkpoint-every", "1", "--quiet", "--no-zero-last"]
    proc = subprocess.Popen([sys.executable, "-m", "stablebptt", *args, "--epochs", "100000",
                             "--out", str(tmp_path / "killed"), "--name", "run"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = tmp_path / "killed" / "run.h5"
    deadline = time.time() + 120
    epochs_seen = 0
    while time.time() < deadline and epochs_seen < 3:
        time.sleep(0.05)
        if path.exists():
            epochs_seen = read_run(path).checkpoint.epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert epochs_seen >= 3, "the run never reached its third checkpoint"
    record = read_run(path)  # readable after SIGKILL, whenever it struck
    assert record.status == "running"
    stopped_at = record.checkpoint.epoch
    assert stopped_at >= 3
    target = stopped_at + 2
    resumed = _cli("run", "--resume", str(path), "--epochs", str(target), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    straight = _cli(*args, "--epochs", str(target), "--out", str(tmp_path / "straight"), "--name", "run")
    assert straight.returncode == 0, straight.stderr
    a, b = read_run(path), read_run(tmp_path / "straight" / "run.h5")
    assert a.status == b.status == "finished" and a.epochs_done == b.epochs_done == target
    np.testing.assert_array_equal(a.checkpoint.theta, b.checkpoint.theta)
    for name in DETERMINISTIC:
        np.testing.assert_array_equal(a.metrics[name], b.metrics[name])


def test_learning_one_pole_combined(tmp_path):
    """The paper's setting, shrunk: 1 pole, combined mode, the test loss falls clearly."""
    record = _train(tmp_path / "learn.h5", mode="C", clip="norm", width=32, n_steps=100, time=1.0,
                    n_data=256, batch_size=8, epochs=12, zero_last=True, checkpoint_every=12)
    test = record.metrics["test_loss"]
    assert test[-1] < 0.7 * test[0], test
    assert np.all(np.diff(test[:4]) < 0), test


def test_a_trainer_holds_its_run_file_until_closed(tmp_path):
    from stablebptt import RunFileError

    config = preset("cartpole", **TINY)
    with Trainer.new(config, tmp_path / "run.h5") as trainer:
        trainer.train_epoch()
        with pytest.raises(RunFileError, match="being written by another process"):
            Trainer.resume(tmp_path / "run.h5")  # refused while the first holds it ...
        assert (tmp_path / "run.h5.lock").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]  # ... lock gone after close
    Trainer.resume(tmp_path / "run.h5").close()
