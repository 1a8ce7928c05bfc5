"""``stablebptt diagnose`` against brute force on tiny problems, and its command and figure."""

import h5py
import numpy as np
import pytest

from stablebptt.adjoint.engine import Problem
from stablebptt.adjoint.flow import GradientFlow, log_spaced_horizons
from stablebptt import Trainer, preset, read_run
from stablebptt.cli import main
from stablebptt.train.diagnose import diagnose, read_diagnosis, reading
from stablebptt.train.gradcheck import small_runs
from stablebptt.tasks import all_tasks, get_task

EPS = 1e-6
TASKS = ["cartpole", "guidance", "quantum", "toy"]


def _tiny_flow(name, rng, loss_mode="CONTINUOUS", rho=0.3, n_steps=5, batch=2):
    """A flow over a short float64 trajectory of a task's first gradcheck setting, with
    parameters away from the initialisation (so the network path is not zero)."""
    _, config, sim, ctrl = next(small_runs(get_task(name), batch=batch, width=6))
    problem = Problem(sim, ctrl, n_steps, loss_mode, rho=rho)
    theta = ctrl.init(rng, np.float64) + 0.3 * rng.standard_normal(ctrl.n_params)
    x0 = get_task(name).gradcheck_inputs(sim, batch, rng)[0][1]
    return GradientFlow(problem, theta, x0)


def _step(flow, x, c):
    out = np.zeros_like(x)
    flow.problem.sim.step(flow.problem.params, np.ascontiguousarray(x), np.ascontiguousarray(c), out)
    return out


def _control(flow, x):
    ctrl = flow.problem.controller
    c = np.zeros((len(x), flow.problem.sim.control_dim))
    ctrl.forward(flow.theta, ctrl.spec, np.ascontiguousarray(x), np.zeros(ctrl.acts_size(len(x))),
                 0, 1, c)
    return c


def _columns(func, x):
    """``(B, out, in)`` Jacobians of a row-wise map by central differences, one input at a time
    (rows are independent samples, so every row is perturbed at once)."""
    cols = []
    for i in range(x.shape[1]):
        e = np.zeros_like(x)
        e[:, i] = EPS
        cols.append((func(x + e) - func(x - e)) / (2 * EPS))
    return np.stack(cols, axis=2)


def _dense_jacobians(flow, n):
    """Physics, control and controller-input Jacobians at step ``n`` by finite differences."""
    x, c = flow.states[n], flow.controls[n]
    jx = _columns(lambda z: _step(flow, z, c), x)
    jc = _columns(lambda u: _step(flow, x, u), c)
    fx = _columns(lambda z: _control(flow, z), x)
    return jx, jc, fx


def _loss_gradient(flow, x, weight):
    """``weight * d loss / dx`` of the batch-mean stage loss, one entry at a time."""
    sim, p = flow.problem.sim, flow.problem.params
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = EPS
        g[idx] = weight * (sim.loss(p, x + e) - sim.loss(p, x - e)) / (2 * EPS)
    return g


@pytest.mark.parametrize("name", TASKS)
def test_adjoint_norms_equal_products_of_dense_jacobians(name, rng):
    flow = _tiny_flow(name, rng)
    n_steps, batch = flow.n_steps, flow.batch
    rho, cs = flow.problem.rho, flow.controls
    reduction = getattr(flow.problem.sim, "continuous_reduction", "sum")
    weight = 1.0 / n_steps if reduction == "mean" else 1.0  # CONTINUOUS: every stage 1..N
    jacobians = [_dense_jacobians(flow, n) for n in range(n_steps)]
    for path, (a, b) in {"regular": (1, 1), "physics": (1, 0), "network": (0, 1)}.items():
        lam = _loss_gradient(flow, flow.states[n_steps], weight)
        expected = [np.linalg.norm(lam, axis=1).mean() * batch]
        for n in range(n_steps - 1, -1, -1):
            jx, jc, fx = jacobians[n]
            mu = np.einsum("bsc,bs->bc", jc, lam) + 2 * rho * cs[n] / cs[:n_steps].size
            lam = a * np.einsum("bst,bs->bt", jx, lam) + b * np.einsum("bct,bc->bt", fx, mu)
            if n > 0:
                lam = lam + _loss_gradient(flow, flow.states[n], weight)
            expected.append(np.linalg.norm(lam, axis=1).mean() * batch)
        got = flow.sweep(path).adjoint_norms
        np.testing.assert_allclose(got, expected[::-1], rtol=1e-6, atol=1e-9 * max(expected),
                                   err_msg=f"{name} {path} path")


@pytest.mark.parametrize("name", TASKS)
@pytest.mark.parametrize("loss_mode", ["FINAL", "CONTINUOUS"])
def test_horizon_sweep_equals_separate_problems(name, loss_mode, rng):
    flow = _tiny_flow(name, rng, loss_mode=loss_mode, n_steps=6)
    horizons = [1, 2, 4, 6]
    norms = flow.horizon_gradients(horizons)
    for i, h in enumerate(horizons):
        problem = Problem(flow.problem.sim, flow.problem.controller, h, loss_mode, flow.problem.rho)
        for mode in "RMS":
            g = problem.gradient(flow.theta, flow.x0, mode).grad
            assert g.any(), f"{name} {mode} h={h}: a zero gradient tests nothing"
            np.testing.assert_allclose(norms[mode][i], np.linalg.norm(g), rtol=1e-12)
            np.testing.assert_allclose(flow.sweep(_weights(mode), h).grad, g, rtol=1e-11,
                                       atol=1e-14 * np.abs(g).max())


def _weights(mode):
    return {"R": (1, 1), "M": (1, 0), "S": (0, 0)}[mode]


@pytest.mark.parametrize("name", TASKS)
def test_jacobian_norms_equal_the_svd_of_finite_differences(name, rng):
    flow = _tiny_flow(name, rng, n_steps=3)
    norms = flow.jacobian_norms()
    for n in range(flow.n_steps):
        jx, jc, fx = _dense_jacobians(flow, n)
        closed = _columns(lambda z: _step(flow, z, _control(flow, z)), flow.states[n])
        expected = {"physics": jx, "network": jc @ fx, "closed_loop": closed}
        got = flow.step_jacobians(n)
        for kind, jac in expected.items():
            scale = max(np.abs(jac).max(), 1e-300)
            np.testing.assert_allclose(got[kind], jac, atol=1e-6 * scale, err_msg=f"{name} {kind}")
            svd = np.linalg.svd(jac, compute_uv=False)[:, 0]
            np.testing.assert_allclose(norms[kind][n], svd, rtol=1e-6, atol=1e-7 * scale)


def test_log_spaced_horizons():
    assert list(log_spaced_horizons(100, 12)) == [1, 2, 4, 5, 8, 12, 19, 28, 43, 66, 100]
    assert list(log_spaced_horizons(4, 12)) == [1, 2, 3, 4]
    assert list(log_spaced_horizons(1, 12)) == [1]


def test_reading_names_what_the_numbers_show(rng):
    config = preset("cartpole", n_steps=30, width=8, dtype="float64")
    from stablebptt.train.build import build_task, initial_parameters

    task = build_task(config)
    theta, _ = initial_parameters(config, task.controller)
    zero = diagnose(task.problem, theta, task.test[:4], horizons=4)  # zero output kernel
    assert zero["adjoint_norm"]["network"][0] == 0.0
    assert "exactly zero" in reading(zero)
    config = config.replace(zero_last=False)
    task = build_task(config)
    theta, _ = initial_parameters(config, task.controller)
    live = diagnose(task.problem, theta, task.test[:4], horizons=4)
    text = reading(live)
    assert "exactly zero" not in text and "30 steps" in text and "cos(g_M, g_R)" in text
    assert 0 < live["adjoint_norm"]["network"][0] < live["adjoint_norm"]["physics"][0]


SMALL = {"cartpole": ["--steps", "12", "--width", "8"],
         "guidance": ["--steps", "12", "--width", "8", "--drivers", "1", "--evaders", "2"],
         "quantum": ["--steps", "8", "--width", "4", "--nx", "12"],
         "toy": []}


@pytest.mark.parametrize("name", sorted(t.name for t in all_tasks()))
def test_diagnose_command_per_task(name, tmp_path, capsys):
    assert main(["diagnose", name, *SMALL[name], "--no-zero-last" if name != "toy" else "--seed=3",
                 "--samples", "3", "--horizons", "4", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    h5, png, pdf = out[:3]
    assert png.endswith(".png") and pdf.endswith(".pdf") and h5.endswith(".h5")
    assert out[3].startswith("Backpropagated over")
    from PIL import Image

    with Image.open(png) as image:
        assert min(image.size) > 300
    assert open(pdf, "rb").read(4) == b"%PDF"
    diag = read_diagnosis(h5)
    n_steps = len(diag["step"]) - 1
    assert set(diag["adjoint_norm"]) == {"regular", "physics", "network"}
    assert all(v.shape == (n_steps + 1,) for v in diag["adjoint_norm"].values())
    assert all(v.shape == (n_steps, 3) for v in diag["jacobian_norm"].values())
    assert set(diag["grad_norm"]) == {"R", "M", "S"} and diag["horizon"][-1] == n_steps
    assert diag["attrs"]["reading"] == out[3] and diag["attrs"]["params"] == "initial"


def test_diagnose_a_run_file(tmp_path, capsys):
    config = preset("cartpole", n_steps=12, width=8, epochs=4, n_data=16, checkpoint_every=2)
    run = str(tmp_path / "run.h5")
    Trainer.new(config, run).run(quiet=True)
    for args, label in ((["--params", "final"], "final"), (["--epoch", "0"], "epoch0"),
                        (["--params", "checkpoint"], "checkpoint"), (["--epoch", "4"], "epoch4")):
        assert main(["diagnose", run, "--samples", "2", "--horizons", "3", *args]) == 0
        first = capsys.readouterr().out.splitlines()[0]
        assert first == str(tmp_path / f"run_diagnose_{label}.h5")
        with h5py.File(first) as f:
            assert f.attrs["params"] == label and f.attrs["task"] == "cartpole"
    trained = read_diagnosis(tmp_path / "run_diagnose_final.h5")
    initial = read_diagnosis(tmp_path / "run_diagnose_epoch0.h5")
    assert trained["adjoint_norm"]["network"][0] > 0 == initial["adjoint_norm"]["network"][0]


@pytest.mark.parametrize("args, message", [
    (["--epoch", "3"], "--epoch 3: the run file keeps parameters only after epochs 0 (initial), "
                       "4 (checkpoint), 4 (final)"),
    (["--poles", "2"], "--poles does not apply to a run file"),
    (["--samples", "17"], "--samples=17 exceeds the 16 test states"),
    (["--params", "final", "--epoch", "0"], "give --params or --epoch, not both"),
])
def test_diagnose_bad_input_is_one_line(args, message, tmp_path, capsys):
    config = preset("cartpole", n_steps=6, width=4, epochs=4, n_data=16, checkpoint_every=2)
    run = str(tmp_path / "run.h5")
    Trainer.new(config, run).run(quiet=True)
    capsys.readouterr()
    assert main(["diagnose", run, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not list(tmp_path.glob("*diagnose*"))


def test_diagnose_preset_rejects_run_file_options(capsys):
    assert main(["diagnose", "cartpole", "--params", "final"]) == 2
    assert "apply to a run file" in capsys.readouterr().err


def _synthetic(physics, regular, network, jac_network=0.1):
    """A diagnosis of 10 steps whose adjoints grow by the given factors from step N to 0."""
    def path(factor):
        values = np.ones(11)
        values[0] = factor  # only the two ends are read
        return values

    return {"step": np.arange(11), "horizon": np.array([1, 10]),
            "adjoint_norm": {"physics": path(physics), "regular": path(regular),
                             "network": path(network)},
            "grad_norm": {"R": np.array([1.0, 2.0]), "M": np.array([1.0, 3.0]),
                          "S": np.array([0.0, 0.0])},
            "jacobian_norm": {"physics": np.ones((10, 2)), "closed_loop": np.ones((10, 2)),
                              "network": np.full((10, 2), jac_network)},
            "cosine_MR": 0.5, "kept_fraction": 0.75}


@pytest.mark.parametrize("factors, says", [
    ((1e3, 1e3, 1e-9), "The physics itself amplifies feedback"),
    ((2.0, 1e4, 1e3), "grow ×5e3 beyond the physics path's: it dominates R's gradient"),
    ((2.0, 1e-3, 1e-9), "damps R's adjoint (×0.0005 of the physics path's)"),
    ((1e-3, 1e-3, 1e-9), "The physics damps feedback"),
    ((2.0, 3.0, 1e-9), "R's adjoint stays within ×1.5 of the physics path's"),
    ((2.0, 22.0, 1e-9), "grow ×11 beyond the physics path's: a large part of R's gradient"),
    ((2.0, 0.2, 1e-9), "shrinks R's adjoint to ×0.1 of the physics path's"),
    ((np.inf, 1.0, 1.0), "leaves the float range"),
])
def test_reading_of_each_case(factors, says):
    text = reading(_synthetic(*factors))
    assert says in text, text
    assert "From horizon 1 to 10 the gradient norm changes by ×2 for R, ×3 for M, from zero for S" in text
    assert "cos(g_M, g_R) = 0.500" in text and "keeps 75%" in text


def test_reading_of_an_exactly_zero_network_path():
    diag = _synthetic(1.0, 1.0, 0.0, jac_network=0.0)  # lam_N, the loss gradient, is not zero
    assert "exactly zero" in reading(diag)


def test_diagnose_a_float64_run_at_its_exact_parameters(tmp_path, capsys):
    from stablebptt.train.build import build_task

    config = preset("cartpole", n_steps=8, width=6, epochs=2, n_data=16, dtype="float64")
    run = str(tmp_path / "run.h5")
    Trainer.new(config, run).run(quiet=True)
    assert main(["diagnose", run, "--samples", "3", "--horizons", "2"]) == 0
    diag = read_diagnosis(capsys.readouterr().out.splitlines()[0])
    record = read_run(run)
    task = build_task(record.config, data=(record.train, record.test))
    theta = task.controller.flatten(record.params_final, np.float64)
    g = task.problem.gradient(theta, record.test[:3], "R").grad
    np.testing.assert_allclose(diag["grad_norm"]["R"][-1], np.linalg.norm(g), rtol=1e-12)


def test_lyapunov_exponent_of_a_neutral_map_is_zero():
    """s(x, c) = x + c without control is the identity: nearby states never separate."""
    from stablebptt.adjoint.flow import lyapunov_exponent, separation_exponent
    from stablebptt.sims import Shift

    sim = Shift(target=(0.0, 0.0))
    x0 = np.array([[0.3, -1.0], [2.0, 0.5]])
    np.testing.assert_allclose(lyapunov_exponent(sim, x0, 50, dt=0.1), 0.0, atol=1e-14)
    np.testing.assert_allclose(separation_exponent(sim, x0, 50, dt=0.1), 0.0, atol=1e-7)


def test_a_diverging_trajectory_is_read_not_raised(tmp_path):
    from stablebptt.cli.outputs import run_diagnosis
    from stablebptt.train.build import build_task, initial_parameters

    config = preset("cartpole", n_steps=30, width=8, zero_last=False, dtype="float64")
    task = build_task(config)
    theta, _ = initial_parameters(config, task.controller)
    paths, text = run_diagnosis(task.problem, theta * 1e100, task.test[:3],
                                str(tmp_path / "d"), {}, "diverging")
    assert "leaves the float range" in text
    diag = read_diagnosis(paths[0])
    assert np.isnan(diag["jacobian_norm"]["closed_loop"]).any()
