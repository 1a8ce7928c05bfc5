"""The paper's toy examples (Figures 1 and 2), computed with the library's own engine and Adam
(drawn by :mod:`stablebptt.plots.toy`).

Figure 2: Adam from (2, 4) for 200 iterations on L = t1^2 + t2^2 following (a) the gradient field,
(b) the gradient plus its rotation by 90 degrees, (c) their combination by the C rule (keep each
component of (b) where its sign agrees with (a)). The gradient comes from the engine: a one-step
``Shift`` in 2-D driven by a ``Constant`` control, whose loss is |t|^2 / 2 (so the field is twice
the engine's gradient).

Figure 1: the unrolled toy f = t1 x^2 + t2 x, s = x + c, x0 = -0.3, y = 2, 4 steps: its loss
landscape and the regular (R), modified (M) and combined (C) gradient fields from the engine.
"""

import numpy as np

from ..adjoint.engine import Problem
from ..adjoint.modes import combine_gradients
from ..controllers import Constant, Quadratic
from ..sims import Shift
from .optim import Adam

ROTATION = 2.0  # weight of the rotated component in field (b)
# Figure 1's point for the gradient-flow view: there the network path explodes over 4 steps
DIAGNOSIS_POINT = (-1.0, 2.0)
START = (2.0, 4.0)
FIELDS = ("gradient", "rotation", "combination")


class RotationToy:
    """The three fields of Figure 2 at a point ``theta``."""

    def __init__(self, rotation=ROTATION):
        self.rotation = rotation
        self.problem = Problem(Shift(target=(0.0, 0.0)), Constant(2, 2), 1)
        self._x0 = np.zeros((1, 2))

    def loss(self, theta):
        return 2.0 * self.problem.loss(np.asarray(theta, dtype=np.float64), self._x0)

    def field(self, theta, kind):
        g = 2.0 * self.problem.gradient(np.asarray(theta, dtype=np.float64), self._x0, "R").grad
        if kind == "gradient":
            return g
        rotated = g + self.rotation * np.array([-g[1], g[0]])
        if kind == "rotation":
            return rotated
        if kind == "combination":
            return combine_gradients(rotated, g)
        raise ValueError(f"unknown field {kind!r}")

    def adam(self, kind, start=START, iterations=200, lr=0.1):
        """Adam's path ``(iterations+1, 2)`` following ``kind`` and the loss along it."""
        theta = np.array(start, dtype=np.float64)
        optimizer = Adam(lr=lr)
        state = optimizer.init(theta)
        path, losses = [theta.copy()], [self.loss(theta)]
        for _ in range(iterations):
            optimizer.update(theta, self.field(theta, kind), state)
            path.append(theta.copy())
            losses.append(self.loss(theta))
        return np.array(path), np.array(losses)


def unrolled_toy():
    """Figure 1's unrolled toy: the problem and its initial state."""
    return Problem(Shift(target=2.0), Quadratic(), 4), np.array([[-0.3]])


def unrolled_fields(t1, t2):
    """Loss and R, M, C gradients of Figure 1's unrolled toy on a grid (engine, float64)."""
    problem, x0 = unrolled_toy()
    loss = np.zeros(t1.shape)
    fields = {m: np.zeros(t1.shape + (2,)) for m in "RMC"}
    for idx in np.ndindex(t1.shape):
        theta = np.array([t1[idx], t2[idx]])
        result = problem.gradient(theta, x0, "C")
        loss[idx] = result.loss
        fields["R"][idx] = result.grad_regular
        fields["M"][idx] = result.grad_modified
        fields["C"][idx] = result.grad
    return loss, fields
