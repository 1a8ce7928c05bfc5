"""Run names: runs with different numbers never share a file name."""

import os


from stablebptt import preset
from stablebptt.cli import main

from cli_helpers import TINY


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
