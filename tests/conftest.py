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
