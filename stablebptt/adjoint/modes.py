"""Gradient modes: which paths of the backward sweep carry the adjoint, and the sign-combination rule."""

import enum

import numpy as np


class Mode(enum.Enum):
    """A gradient mode; ``a`` weights the physics path (ds/dx), ``b`` the controller-input path (df/dx)."""

    REGULAR = "R"
    MODIFIED = "M"
    NETWORK = "N"
    STOPPED = "S"
    COMBINED = "C"

    @property
    def letter(self):
        return self.value

    @property
    def reference_letter(self):
        """The letter the reference code uses (F, P, N, S, C)."""
        return {"R": "F", "M": "P"}.get(self.value, self.value)

    @property
    def path_weights(self):
        """``(a, b)`` of the backward recursion; COMBINED runs REGULAR and MODIFIED together."""
        return {"R": (1.0, 1.0), "M": (1.0, 0.0), "N": (0.0, 1.0), "S": (0.0, 0.0),
                "C": (1.0, 1.0)}[self.value]


_ALIASES = {
    "r": Mode.REGULAR, "regular": Mode.REGULAR, "f": Mode.REGULAR, "full": Mode.REGULAR,
    "m": Mode.MODIFIED, "modified": Mode.MODIFIED, "p": Mode.MODIFIED, "physics": Mode.MODIFIED,
    "n": Mode.NETWORK, "network": Mode.NETWORK,
    "s": Mode.STOPPED, "stopped": Mode.STOPPED, "stop": Mode.STOPPED,
    "c": Mode.COMBINED, "combined": Mode.COMBINED,
}


def parse_mode(name):
    """A :class:`Mode` from a paper name (regular, ...), paper letter (R M N S C) or reference
    letter (F P)."""
    if isinstance(name, Mode):
        return name
    try:
        return _ALIASES[str(name).strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown gradient mode {name!r}: use regular/modified/network/stopped/combined "
            "(R M N S C; reference letters F P accepted)") from None


def combine_gradients(g_modified, g_regular):
    """The C rule: keep each component of the modified gradient where its sign agrees with the regular one."""
    return np.where(np.sign(g_modified) == np.sign(g_regular), g_modified, 0).astype(g_modified.dtype)


def kept_fraction(g_modified, g_regular):
    """The fraction of components the C rule keeps: where g_M and g_R agree in sign."""
    if np.size(g_modified) == 0:
        return 1.0
    return float(np.mean(np.sign(g_modified) == np.sign(g_regular)))


def cosine_similarity(u, v):
    """Cosine of the angle between two flat gradients (0 where either is zero), in float64.

    Sums are numpy's (fixed pairwise order), not BLAS dot products, whose threaded variants sum
    in another order: the metric is the same whatever the BLAS thread setting.
    """
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    denom = np.sqrt(np.sum(u * u) * np.sum(v * v))
    return float(np.sum(u * v) / denom) if denom > 0 else 0.0
