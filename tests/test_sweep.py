"""Sweeps: grids, naming, skip and resume, failure isolation, worker-count independence, Dask."""

import numpy as np
import pytest

from stablebptt import Trainer, read_run
from stablebptt.cli import main
from stablebptt.train.config import ConfigError
from stablebptt.train.sweep import expand_grid, run_sweep

SMALL = dict(epochs=2, n_data=16, width=8, n_steps=10, checkpoint_every=1)


def test_reference_grids():
    cart = expand_grid("cartpole")
    assert len(cart) == 48 and len(expand_grid("guidance")) == 48 and len(expand_grid("quantum")) == 36
    assert {(c.poles, c.mode, c.clip) for c in cart} == {
        (p, m, k) for p in (1, 2, 3, 4) for m in "RMCS" for k in ("value", "norm", "none")}
    assert all(c.epochs == 1000 for c in cart)
    assert {c.rho for c in expand_grid("guidance")} == {1.0, 0.1, 0.01, 0.001}
    assert {c.target_state for c in expand_grid("quantum")} == {3, 4, 5}


def test_grid_narrowing_widening_and_names():
    configs = expand_grid("cartpole", {"mode": ["R", "C"], "poles": [3, 4]}, seeds=(0, 1, 2), epochs=200)
    assert len(configs) == 2 * 2 * 3 * 3
    assert {c.seed for c in configs} == {0, 1, 2} and all(c.epochs == 200 for c in configs)
    names = [c.run_name() for c in configs]
    assert len(set(names)) == len(names)
    assert "cartpole_p3_C_clip-value_lr0.001_bs8_s2" in names
    with pytest.raises(ConfigError, match="'pendulum'"):
        expand_grid("pendulum")
    with pytest.raises(ConfigError, match="poles=0"):
        expand_grid("cartpole", {"poles": [0]})


def _final_thetas(folder, configs):
    return {c.run_name(): read_run(folder / (c.run_name() + ".h5")).checkpoint.theta for c in configs}


def test_skip_resume_and_worker_count_independence(tmp_path):
    configs = expand_grid("cartpole", {"mode": ["R", "C"], "clip": ["norm"]}, poles=1, **SMALL)
    # one run interrupted after its first epoch: the sweep must resume it, not restart it
    (tmp_path / "two").mkdir()
    partial = Trainer.new(configs[0], str(tmp_path / "two" / (configs[0].run_name() + ".h5")))
    partial.train_epoch()
    partial.write("running")
    partial.close()  # release the run file for the sweep's worker
    two = run_sweep(configs, tmp_path / "two", workers=2, quiet=True)
    assert [o.status for o in two] == ["finished", "finished"]
    run_sweep(configs, tmp_path / "one", workers=1, quiet=True)
    a, b = _final_thetas(tmp_path / "one", configs), _final_thetas(tmp_path / "two", configs)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    again = run_sweep(configs, tmp_path / "one", workers=2, quiet=True)
    assert [o.status for o in again] == ["skipped", "skipped"]
    longer = expand_grid("cartpole", {"mode": ["R"], "clip": ["norm"]}, poles=1, **{**SMALL, "epochs": 3})
    assert [o.status for o in run_sweep(longer, tmp_path / "one", workers=1, quiet=True)] == ["finished"]
    assert read_run(tmp_path / "one" / (longer[0].run_name() + ".h5")).epochs_done == 3


def test_a_diverging_run_does_not_stop_the_others(tmp_path, capsys):
    code = main(["sweep", "cartpole", "--poles", "1", "--modes", "R,C", "--clips", "none",
                 "--optimizer", "sgd", "--lr", "1e38", "--epochs", "2", "--n-data", "16", "--width", "8",
                 "--steps", "10", "--out", str(tmp_path), "--workers", "2", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "2 diverged" in out
    record = read_run(tmp_path / "cartpole_p1_R_clip-none_lr1e+38_bs8_s42_sgd_n-data16_width8_steps10.h5")
    assert record.status == "diverged" and record.attrs["diverged_epoch"] == 1
    healthy = main(["sweep", "cartpole", "--poles", "1", "--modes", "R", "--clips", "norm", "--epochs",
                    "1", "--n-data", "16", "--width", "8", "--steps", "10", "--out", str(tmp_path),
                    "--workers", "1", "--quiet"])
    assert healthy == 0 and "1 finished" in capsys.readouterr().out


def test_bad_sweep_input(tmp_path, capsys):
    assert main(["sweep", "cartpole", "--poles", "x,2", "--out", str(tmp_path / "s")]) == 2
    assert "poles='x' must be an integer" in capsys.readouterr().err
    assert main(["sweep", "cartpole", "--workers", "0", "--out", str(tmp_path / "s")]) == 2
    assert "--workers" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_dask_local_cluster(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    configs = expand_grid("guidance", {"mode": ["R", "M"], "clip": ["norm"], "rho": [0.1]},
                          drivers=1, evaders=2, **SMALL)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        outcomes = run_sweep(configs, tmp_path / "dask", scheduler=cluster.scheduler_address, quiet=True)
    assert [o.status for o in outcomes] == ["finished", "finished"]
    local = run_sweep(configs, tmp_path / "local", workers=1, quiet=True)
    assert [o.final_test_loss for o in outcomes] == [o.final_test_loss for o in local]
    a, b = _final_thetas(tmp_path / "dask", configs), _final_thetas(tmp_path / "local", configs)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
