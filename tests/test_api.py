"""The notebook-first Python API: training in memory, saving, resuming, figures as objects."""

import ast
import os
import subprocess
import sys

import numpy as np
import pytest

import stablebptt as sb

TINY = dict(poles=1, width=8, depth=2, n_steps=10, time=0.1, n_data=16, batch_size=4, epochs=4,
            checkpoint_every=2, zero_last=False)
DETERMINISTIC = [m for m in sb.METRICS if m not in ("epoch_time", "wall_time")]


def test_fit_in_memory_matches_the_trainer_bit_for_bit(tmp_path):
    seen = []
    run = sb.fit("cartpole", mode="C", quiet=True, progress_fn=lambda e, m: seen.append((e, m)),
                 **TINY)
    assert run.status == "finished" and run.epochs_done == 4 and run.path == ""
    assert [e for e, _ in seen] == [1, 2, 3, 4]
    assert seen[-1][1]["test_loss"] == run.metrics["test_loss"][-1]
    assert os.listdir(tmp_path) == []  # nothing written
    sb.Trainer.new(sb.preset("cartpole", mode="C", **TINY), tmp_path / "file.h5").run(quiet=True)
    stored = sb.read_run(tmp_path / "file.h5")
    for name in DETERMINISTIC:
        np.testing.assert_array_equal(run.metrics[name], stored.metrics[name], err_msg=name)
    for layer, value in stored.params_final.items():
        np.testing.assert_array_equal(run.params_final[layer], value)


def test_save_then_resume_continues_exactly(tmp_path):
    whole = sb.fit("cartpole", quiet=True, **TINY)
    half = sb.fit("cartpole", quiet=True, **{**TINY, "epochs": 2})
    path = half.save(tmp_path)
    assert path == os.path.join(tmp_path, half.config.run_name() + ".h5")
    with pytest.raises(sb.RunFileError, match="exists"):
        half.save(tmp_path)
    resumed = sb.resume(path, epochs=4, quiet=True)
    record = sb.read_run(path)
    assert record.status == "finished" and resumed.epochs_done == 4
    for name in DETERMINISTIC:
        np.testing.assert_array_equal(whole.metrics[name], record.metrics[name], err_msg=name)
    # and in memory, without touching the file: two more epochs after loading
    before = os.path.getmtime(path)
    more = sb.Run.load(path)
    more.fit(epochs=2, quiet=True)
    assert more.epochs_done == 6 and os.path.getmtime(path) == before


def test_fit_extends_and_reports_divergence_as_a_warning():
    run = sb.fit("cartpole", quiet=True, **{**TINY, "epochs": 1})
    run.fit(epochs=1, quiet=True)
    assert run.epochs_done == 2 and run.config.epochs == 2
    with pytest.warns(UserWarning, match="diverged"):
        bad = sb.fit("cartpole", quiet=True, **{**TINY, "lr": 1e30, "clip": "none"})
    assert bad.status == "diverged"
    assert all(np.all(np.isfinite(v)) for v in bad.params_final.values())


def test_figures_are_objects_and_leave_the_backend_alone(tmp_path):
    code = (
        "import matplotlib; matplotlib.use('svg'); import stablebptt as sb\n"
        "from matplotlib.figure import Figure\n"
        f"kw = dict({', '.join(f'{k}={v!r}' for k, v in TINY.items())})\n"
        "runs = [sb.fit('cartpole', mode=m, quiet=True, **kw) for m in 'RC']\n"
        "figs = [sb.plots.learning_curves(runs), sb.plots.task_figure(runs),\n"
        "        sb.plots.gradient_figure(runs), sb.plots.trajectory_figure(runs[1], samples=2)]\n"
        "assert all(isinstance(f, Figure) for f in figs)\n"
        "labels = [t.get_text() for t in figs[0].axes[0].get_legend().get_texts()]\n"
        "assert labels == ['C, clip norm', 'R, clip norm'], labels\n"
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
        "import sys; assert 'matplotlib.pyplot' not in sys.modules\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_every_public_name_is_documented_and_typed():
    missing = [n for n in sb.__all__ if n != "__version__" and not (getattr(sb, n).__doc__ or "").strip()]
    assert missing == []
    for function in (sb.fit, sb.resume, sb.preset, sb.Run.fit, sb.Run.save, sb.plots.learning_curves,
                     sb.plots.task_figure, sb.plots.trajectory_figure):
        assert "return" in function.__annotations__, function.__qualname__
    assert os.path.exists(os.path.join(os.path.dirname(sb.__file__), "py.typed"))


def test_the_old_module_paths_still_import_with_a_warning():
    code = ("import warnings; warnings.simplefilter('error')\n"
            "try:\n    import stablebptt.experiments\nexcept DeprecationWarning as w:\n    print('warned')\n"
            "warnings.simplefilter('ignore')\n"
            "import stablebptt.experiments as e\n"
            "from stablebptt.experiments.presets import build_task\n"
            "import stablebptt.train.build as b, stablebptt.experiments.cli as c, stablebptt.cli\n"
            "assert build_task is b.build_task and c is stablebptt.cli\n"
            "assert stablebptt.cli.__spec__.name == 'stablebptt.cli'\n"
            "assert e.Trainer is __import__('stablebptt').Trainer\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "warned", out.stderr


def _imports(path, package):
    """The stablebptt modules a module imports, at its top level or inside functions."""
    tree = ast.parse(open(path).read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[:len(package.split(".")) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
            names = [module] if node.module else [f"{module}.{a.name}" for a in node.names]
            found.update(names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("stablebptt"))
    return found


def test_the_import_graph_has_no_circle():
    root = os.path.dirname(sb.__file__)
    graph = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(root))[:-3].replace(os.sep, ".")
                module = rel[:-len(".__init__")] if rel.endswith(".__init__") else rel
                package = module if name == "__init__.py" else module.rpartition(".")[0]
                graph[module] = {m for m in _imports(path, package) if m.startswith("stablebptt")}
    for module in graph:  # an import of a package's name resolves to the module when it is one
        graph[module] = {m if m in graph else m.rpartition(".")[0] for m in graph[module]} - {module}

    def visit(module, stack):
        if module in stack:
            raise AssertionError("import circle: " + " -> ".join(stack[stack.index(module):] + [module]))
        for target in graph.get(module, ()):
            visit(target, stack + [module])

    for module in graph:
        visit(module, [])
    # the layers: the library never imports the command line, training never imports figures
    for module, targets in graph.items():
        if not module.startswith("stablebptt.cli") and module not in ("stablebptt.experiments",
                                                                       "stablebptt.__main__"):
            assert not any(t.startswith("stablebptt.cli") for t in targets), module
        if module.startswith("stablebptt.train"):
            assert not any(t.startswith("stablebptt.plots") for t in targets), module
