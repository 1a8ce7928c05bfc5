"""The task registry and the public extension path: an outside task (examples/pendulum.py) goes
through every command without touching the package; malformed tasks are one-line errors."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from stablebptt.contract import ContractError
from stablebptt import RunConfig, build_task, preset, read_run
from stablebptt.cli import main
from stablebptt.train.config import ConfigError
from stablebptt.train.gradcheck import format_table, gradcheck_task
from stablebptt.tasks import BUILTIN, Option, Task, TaskError, get_task, register

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PENDULUM = "examples.pendulum:Pendulum"
TINY = ["--epochs", "2", "--n-data", "8", "--width", "4", "--steps", "10", "--quiet"]


@pytest.fixture(autouse=True)
def repository_on_path(monkeypatch):
    """The example is imported as ``examples.pendulum``, as a user's module beside them."""
    monkeypatch.syspath_prepend(ROOT)


def _cli(*args, cwd=ROOT):
    """The command line in ``cwd``; the example is importable (on PYTHONPATH) from anywhere."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "stablebptt", *args], capture_output=True,
                          text=True, cwd=cwd, env=env)


@pytest.mark.parametrize("name", list(BUILTIN))
def test_every_builtin_task_builds_from_its_preset(name):
    task = get_task(name)
    config = preset(name, n_data=4, batch_size=4, epochs=1)
    built = build_task(config)
    assert built.train.shape == (4, built.problem.sim.state_dim)
    assert config.task_def is task and RunConfig.from_dict(config.to_dict()) == config
    assert config.run_name().startswith(name + "_")
    for axis in task.grid:
        assert axis in config.settings()


def test_preset_run_names_are_unchanged():
    """Sweep folders made before the registry continue: the preset names are the same."""
    assert preset("cartpole").run_name() == "cartpole_p1_C_clip-norm_lr0.001_bs8_s42"
    assert preset("guidance").run_name() == "guidance_d2e4_rho0.01_C_clip-norm_lr0.001_bs8_s42"
    assert preset("quantum").run_name() == "quantum_ts3_w1-1_nx32_C_clip-norm_lr0.001_bs8_s42"
    assert preset("cartpole", poles=3, width=32).run_name() == \
        "cartpole_p3_C_clip-norm_lr0.001_bs8_s42_width32"


def test_options_read_as_attributes_and_survive_pickling():
    import pickle

    config = preset("guidance", drivers=3, target_x=0.5)
    assert (config.drivers, config.target_x) == (3, 0.5)
    assert pickle.loads(pickle.dumps(config)) == config
    with pytest.raises(AttributeError, match="no setting 'poles'"):
        config.poles


def test_outside_task_through_every_command(tmp_path):
    out = tmp_path / "runs"
    done = _cli("run", PENDULUM, *TINY, "--damping", "0.2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    path = out / "pendulum_damp0.2_C_clip-norm_lr0.003_bs8_s42_n-data8_width4_steps10.h5"
    record = read_run(path)
    assert record.config.task_source == PENDULUM and record.config.damping == 0.2
    assert _cli("inspect", str(path), cwd=tmp_path).returncode == 0  # needs no task code
    for args in (("trajectories", str(path)), ("animate", str(path), "--fps", "5"),
                 ("run", "--resume", str(path), "--epochs", "3", "--quiet")):
        # the file says where its task comes from, but that module is imported only when named
        refused = _cli(*args, cwd=tmp_path)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert f"--task-code {PENDULUM}" in refused.stderr and "Traceback" not in refused.stderr
        done = _cli(*args, "--task-code", PENDULUM, cwd=tmp_path)
        assert done.returncode == 0, (args, done.stderr)
    assert read_run(path).epochs_done == 3
    assert (tmp_path / "runs" / (path.stem + "_trajectories_final.png")).exists()
    assert (tmp_path / "runs" / (path.stem + "_final.gif")).exists()


def test_outside_task_sweep_in_worker_processes_and_plot(tmp_path):
    folder = tmp_path / "sweep"
    done = _cli("sweep", PENDULUM, "--modes", "R,C", "--seeds", "0,1", "--workers", "2",
                *TINY, "--out", str(folder))
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(list(folder.glob("pendulum_*.h5"))) == 4
    done = _cli("plot", str(folder))
    assert done.returncode == 0, done.stderr
    assert (folder / "figure_pendulum.png").exists() and (folder / "summary.csv").exists()


def test_outside_task_gradcheck_passes():
    from examples.pendulum import Pendulum

    results = gradcheck_task(register(Pendulum), np.random.default_rng(0))
    assert results and all(r.ok for r in results), format_table(results)
    names = " ".join(r.name for r in results)
    for kernel in ("step_vjp dx", "step_vjp dc", "loss_grad", "vjp dx", "mode M", "mode C",
                   "per-sample step_one", "per-sample backward_one"):
        assert kernel in names


def _gradcheck_pendulum_with(name, **kernels):
    """gradcheck of the example pendulum with some of its simulator's kernels replaced."""
    from examples import pendulum

    changed_sim = type(f"{name}Sim", (pendulum.PendulumSim,),
                       {kernel: staticmethod(func) for kernel, func in kernels.items()})

    class Changed(pendulum.Pendulum):
        def simulator(self, config):
            return changed_sim(dt=config.dt)

    Changed.name = name
    return gradcheck_task(register(Changed), np.random.default_rng(0))


def test_broken_adjoint_is_caught_and_named():
    """The usual first failure of a hand-written adjoint: one wrong partial derivative."""
    from examples import pendulum
    from stablebptt.contract import kernel, step_vjp_sig

    @kernel(step_vjp_sig, cache=False)
    def wrong_step_vjp(p, x, c, lam_next, dx, dc):
        pendulum.pendulum_step_vjp(p, x, c, lam_next, dx, dc)
        for b in range(x.shape[0]):
            dx[b, 1] *= 1.01  # d omega'/d omega off by 1 %

    results = _gradcheck_pendulum_with("broken_pendulum", step_vjp=wrong_step_vjp)
    failed = [r for r in results if not r.ok]
    assert failed[0].name.startswith("step_vjp dx (x_next wrt x)"), failed[0].name
    assert "/ d x[" in failed[0].detail and ", 1]" in failed[0].detail, failed[0].detail
    assert not any(r.name.startswith("step_vjp dc") and not r.ok for r in results)
    table = format_table(results)
    assert "FAIL" in table and "worst entry d x_next[" in table


def test_a_per_sample_twin_that_drifted_is_caught():
    """The GPU's per-sample kernels are checked against the CPU's batch kernels, kernel by kernel."""
    from examples import pendulum
    from stablebptt.contract import sample_kernel

    @sample_kernel
    def drifted_step_vjp_one(p, x, c, lam_next, dx, dc, work):
        pendulum.pendulum_step_vjp_one(p, x, c, lam_next, dx, dc, work)
        dc[0] *= 1.001

    results = _gradcheck_pendulum_with("drifted_pendulum", step_vjp_one=drifted_step_vjp_one)
    failed = [r.name for r in results if not r.ok]
    assert failed == ["per-sample step_vjp_one (dc) = batch kernel"], failed


class _Base(Task):
    preset = dict(n_steps=5, n_data=4, batch_size=4)

    def simulator(self, config):
        from examples.pendulum import PendulumSim

        return PendulumSim(dt=config.dt)


def test_malformed_tasks_are_named():
    class NoSimulator(Task):
        name = "no_simulator"

    class BadOption(_Base):
        name = "bad_option"
        options = (Option("lr", float, 1.0),)

    class BadGrid(_Base):
        name = "bad_grid"
        grid = {"poles": [1, 2]}

    class BadName(_Base):
        name = "Bad Name"

    for cls, words in ((NoSimulator, "does not define simulator"), (BadOption, "'lr'"),
                       (BadGrid, "axis 'poles'"), (BadName, "lower-case identifier")):
        with pytest.raises(TaskError, match=words):
            register(cls)
    register(_Base.__class__("taken", (_Base,), {"name": "taken"}))
    with pytest.raises(TaskError, match="is taken"):
        register(_Base.__class__("other", (_Base,), {"name": "taken"}))


def test_kernel_and_size_mismatches_are_one_line_errors():
    from examples.pendulum import PendulumSim

    from stablebptt.controllers import MLP

    def no_kernel(p, x):  # a step with the wrong number of arguments
        pass

    class WrongStep(PendulumSim):
        step = staticmethod(no_kernel)

    class WrongKernel(_Base):
        name = "wrong_kernel"

        def simulator(self, config):
            return WrongStep(dt=config.dt)

    class WrongController(_Base):
        name = "wrong_controller"

        def controller(self, config, sim):
            return MLP(3, 1, 4, 1)

    class WrongSampler(_Base):
        name = "wrong_sampler"

        def datasets(self, config, sim, rng):
            return np.zeros((4, 3)), np.zeros((4, 3))

    with pytest.raises(ContractError, match=r"kernel WrongStep\.step does not compile as "
                       r"step\(p, x, c, x_next\)"):
        build_task(preset(register(WrongKernel))).problem.compile("float64")
    with pytest.raises(ContractError, match="maps 3 -> 1 but simulator PendulumSim has state_dim=2"):
        build_task(preset(register(WrongController)))
    with pytest.raises(ContractError, match=r"datasets\(\) returned shape \(4, 3\), expected \(n, 2\)"):
        build_task(preset(register(WrongSampler)))


def test_cli_errors_for_unknown_and_unimportable_tasks(capsys):
    assert main(["run", "nosuchtask"]) == 2
    assert "unknown task 'nosuchtask'" in capsys.readouterr().err
    assert main(["run", "nosuch.module:Task"]) == 2
    assert "cannot import task module 'nosuch.module'" in capsys.readouterr().err
    assert main(["gradcheck", "examples.pendulum:Nothing"]) == 2
    assert "has no task 'Nothing'" in capsys.readouterr().err
    from examples.pendulum import Pendulum

    register(Pendulum)
    assert main(["run", "cartpole", "--damping", "0.1"]) == 2  # another task's option, once loaded
    assert "damping=0.1 does not apply to task 'cartpole' (only to pendulum" in capsys.readouterr().err


def test_installed_entry_point_is_found(monkeypatch):
    import stablebptt.tasks as tasks

    monkeypatch.setattr(tasks, "_entry_points", lambda: {"swing": "examples.pendulum:Swing"})
    import examples.pendulum as module

    class Swing(module.Pendulum):
        name = "swing"

    monkeypatch.setattr(module, "Swing", Swing, raising=False)
    assert "swing" in tasks.task_names()
    task = get_task("swing")
    assert isinstance(task, Swing) and task.source == "examples.pendulum:Swing"
    assert preset("swing").task_source == "examples.pendulum:Swing"


def _rewrite_config(path, **changes):
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["config"])
        config.update(changes)
        f.attrs["config"] = json.dumps(config)
        return f


def test_a_gpu_run_file_is_inspected_drawn_and_resumed_on_the_cpu(tmp_path):
    path = tmp_path / "gpu.h5"
    assert main(["run", "cartpole", "--poles", "1", *TINY, "--name", "gpu", "--out",
                 str(tmp_path)]) == 0
    _rewrite_config(path, device="cuda")  # as a run trained with --device cuda
    assert read_run(path).config.device == "cuda"
    for args in (["inspect", str(path)], ["trajectories", str(path)]):
        assert main(args) == 0
    from stablebptt.cuda import cuda_available

    if not cuda_available():
        assert main(["run", "--resume", str(path), "--epochs", "3"]) == 2
    assert main(["run", "--resume", str(path), "--epochs", "3", "--device", "cpu", "--quiet"]) == 0
    assert read_run(path).epochs_done == 3


def test_resume_uses_the_stored_data_sets(tmp_path):
    path = tmp_path / "run.h5"
    assert main(["run", "cartpole", *TINY, "--name", "run", "--out", str(tmp_path)]) == 0
    with h5py.File(path, "r+") as f:
        f["data/test"][0, 0] = 123.0  # not what the seed draws
    assert main(["run", "--resume", str(path), "--epochs", "3", "--quiet"]) == 0
    assert read_run(path).test[0, 0] == 123.0


def test_format_1_files_with_every_tasks_settings_still_read(tmp_path):
    path = tmp_path / "old.h5"
    assert main(["run", "cartpole", *TINY, "--name", "old", "--out", str(tmp_path)]) == 0
    _rewrite_config(path, drivers=2, evaders=4, target_x=0.0, target_y=0.0, nx=32,
                    target_state=3, weighting="1-1")
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = 1
    assert read_run(path).config.poles == 1
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = 2
    with pytest.raises(Exception, match="unknown configuration keys"):
        read_run(path)


def test_config_errors_name_the_option():
    with pytest.raises(ConfigError, match="poles=0 must be >= 1"):
        preset("cartpole", poles=0)
    with pytest.raises(ConfigError, match="target_state=40 must be in 1..nx=32"):
        preset("quantum", target_state=40)
    with pytest.raises(ConfigError, match="depth=3 does not apply to task 'quantum'"):
        preset("quantum", depth=3)


def test_help_and_bad_input_load_neither_numba_nor_h5py():
    """The parser is built from the registry, yet answers without the heavy imports."""
    code = ("import sys; from stablebptt.cli.commands import dispatch; "
            "code = dispatch(['run', 'cartpole', '--poles', '0']); "
            "print(code, 'numba' in sys.modules, 'h5py' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.split() == ["2", "False", "False"], done.stdout + done.stderr
