import numpy as np
import pytest


@pytest.fixture(autouse=True)
def strict_numerics():
    """Floating-point errors in numpy code under test raise instead of passing silently."""
    with np.errstate(all="raise", under="ignore"):
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def task_registry():
    """A task registered by one test (an outside task, read back from a run file) stays there."""
    from stablebptt import tasks

    saved = dict(tasks._registry)
    yield
    tasks._registry.clear()
    tasks._registry.update(saved)


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    """A small finished cart-pole run file, shared by the tests that only read it."""
    folder = tmp_path_factory.mktemp("run")
    from cli_helpers import TINY
    from stablebptt.cli import main

    assert main(["run", "cartpole", *TINY, "--epochs", "2", "--out", str(folder), "--name", "r"]) == 0
    return folder / "r.h5"
