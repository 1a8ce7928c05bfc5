"""Gradient checking as a public feature: finite differences and dot-product tests for any kernel
pair, every gradient mode against its frozen-trajectory function, and the closed-form toy.

All checks run in float64. Errors are *relative to the scale of the compared quantity*:
``max|a - b| / max(max|a|, max|b|)``, so tiny entries of a large Jacobian do not dominate.
"""

from dataclasses import dataclass

import numpy as np

from ..contract import capability, prepared_parameters
from .modes import Mode, combine_gradients, parse_mode


def relative_error(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = max(np.max(np.abs(a), initial=0.0), np.max(np.abs(b), initial=0.0))
    if scale == 0.0:
        return 0.0
    return float(np.max(np.abs(a - b)) / scale)


def central_jvp(func, x, v, eps, order=2):
    """Directional derivative of ``func`` at ``x`` along ``v`` by central differences.

    ``order=2``: ``(f(x+h) - f(x-h)) / 2h``. ``order=4``: the five-point stencil, whose O(h^4)
    truncation allows a larger ``h`` and so less round-off, for long rollouts with small gradients.
    """
    def diff(h):
        return np.asarray(func(x + h * v)) - np.asarray(func(x - h * v))
    if order == 2:
        return diff(eps) / (2.0 * eps)
    if order == 4:
        return (8.0 * diff(eps) - diff(2.0 * eps)) / (12.0 * eps)
    raise ValueError(f"order must be 2 or 4, got {order}")


def jacobian_fd(func, x, eps=1e-6):
    """Full Jacobian of ``func`` at ``x`` by central differences, shape ``out.shape + x.shape``."""
    x = np.asarray(x, dtype=np.float64)
    columns = []
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = 1.0
        columns.append(central_jvp(func, x, e.reshape(x.shape), eps).ravel())
    out_shape = np.shape(func(x))
    return np.stack(columns, axis=-1).reshape(out_shape + x.shape)


def jacobian_vjp(vjp, out_shape, in_shape):
    """Full Jacobian assembled row by row from a vector-Jacobian product ``w -> J^T w``."""
    rows = []
    for i in range(int(np.prod(out_shape))):
        w = np.zeros(int(np.prod(out_shape)))
        w[i] = 1.0
        rows.append(np.asarray(vjp(w.reshape(out_shape))).ravel())
    return np.stack(rows, axis=0).reshape(tuple(out_shape) + tuple(in_shape))


@dataclass
class CheckResult:
    """One row of a gradient-check table."""

    name: str
    error: float
    tolerance: float
    detail: str = ""  # where the error is largest (a failing kernel check's first clue)

    @property
    def ok(self):
        return bool(np.isfinite(self.error) and self.error <= self.tolerance)


def check_vjp(name, func, vjp, x, rng, eps=1e-6, tolerance=1e-6, out_name="out", in_name="in"):
    """Finite-difference Jacobian test and dot-product test ``<J v, w> = <v, J^T w>`` for one input.

    ``func(x)`` is the forward map, ``vjp(w)`` returns ``J^T w`` at the fixed point ``x``. The
    finite-difference row's ``detail`` names the Jacobian entry with the largest error as
    ``d out_name[i] / d in_name[j]`` with both values.

    The dot product's error is relative to the sums of its terms' magnitudes,
    ``sum |(J v)_i w_i|`` and ``sum |v_j (J^T w)_j|``, not to its value: random ``v`` and ``w``
    can make the sum cancel to near zero while the differences' error scales with the terms
    (relative to the value, the same correct kernels read 1e-8 for one draw and 4e-6 for another).
    """
    x = np.asarray(x, dtype=np.float64)
    out_shape = np.shape(func(x))
    jac_fd = jacobian_fd(func, x, eps)
    jac_adj = jacobian_vjp(vjp, out_shape, x.shape)
    v = rng.standard_normal(x.shape)
    w = rng.standard_normal(out_shape)
    terms_lhs = central_jvp(func, x, v, eps) * w
    terms_rhs = v * np.asarray(vjp(w))
    lhs, rhs = float(np.sum(terms_lhs)), float(np.sum(terms_rhs))
    scale = max(float(np.sum(np.abs(terms_lhs))), float(np.sum(np.abs(terms_rhs))), 1e-300)
    return [CheckResult(f"{name}: finite differences", relative_error(jac_adj, jac_fd), tolerance,
                        _worst_entry(jac_adj, jac_fd, len(out_shape), out_name, in_name)),
            CheckResult(f"{name}: dot product", abs(lhs - rhs) / scale, tolerance,
                        f"<J v, w> = {lhs:.9g} but <v, J^T w> = {rhs:.9g}")]


def _worst_entry(adjoint, differences, out_ndim, out_name, in_name):
    """``d out[i] / d in[j]: adjoint A, finite differences F`` at the largest disagreement."""
    gap = np.abs(np.asarray(adjoint) - np.asarray(differences))
    if gap.size == 0:
        return ""
    index = np.unravel_index(int(np.argmax(np.where(np.isnan(gap), np.inf, gap))), gap.shape)
    out_index, in_index = index[:out_ndim], index[out_ndim:]

    def at(name, idx):
        return f"{name}[{', '.join(map(str, idx))}]" if idx else name

    return (f"worst entry d {at(out_name, out_index)} / d {at(in_name, in_index)}: adjoint "
            f"{adjoint[index]:.9g}, finite differences {differences[index]:.9g}")


def check_simulator(sim, x, c, rng, eps=1e-6, tolerance=1e-6):
    """Check ``step_vjp`` w.r.t. state and control, and ``loss_grad``, at the batch ``(x, c)``."""
    p = np.ascontiguousarray(sim.params, dtype=np.float64)
    x = np.ascontiguousarray(x, dtype=np.float64)
    c = np.ascontiguousarray(c, dtype=np.float64)

    def step(xx, cc):
        out = np.zeros_like(xx)
        sim.step(p, np.ascontiguousarray(xx), np.ascontiguousarray(cc), out)
        return out

    def step_vjp(w):
        dx, dc = np.zeros_like(x), np.zeros_like(c)
        sim.step_vjp(p, x, c, np.ascontiguousarray(w), dx, dc)
        return dx, dc

    def loss_grad(w):
        g = np.zeros_like(x)
        sim.loss_grad(p, x, float(w), g)
        return g

    results = check_vjp("step_vjp dx (x_next wrt x)", lambda xx: step(xx, c),
                        lambda w: step_vjp(w)[0], x, rng, eps, tolerance, "x_next", "x")
    results += check_vjp("step_vjp dc (x_next wrt c)", lambda cc: step(x, cc),
                         lambda w: step_vjp(w)[1], c, rng, eps, tolerance, "x_next", "c")
    results += check_vjp("loss_grad (loss wrt x)",
                         lambda xx: sim.loss(p, np.ascontiguousarray(xx)), loss_grad, x, rng, eps,
                         tolerance, "loss", "x")
    return results


def check_controller(ctrl, theta, x, rng, eps=1e-6, tolerance=1e-6):
    """Check the controller's adjoint w.r.t. its input and its parameters at ``(theta, x)``."""
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    x = np.ascontiguousarray(x, dtype=np.float64)
    spec = ctrl.spec
    batch = len(x)

    def forward(th, xx):
        acts = np.zeros(ctrl.acts_size(batch))
        c = np.zeros((batch, ctrl.n_outputs))
        ctrl.forward(np.ascontiguousarray(th), spec, np.ascontiguousarray(xx), acts, 0, 1, c)
        return c, acts

    def vjp(w, kernel_theta):
        _, acts = forward(theta, x)
        dx = np.zeros_like(x)
        deltas = np.zeros(ctrl.deltas_size(batch))
        ctrl.vjp(kernel_theta, spec, x, acts, 0, 1, np.ascontiguousarray(w), dx, deltas)
        g = np.zeros_like(theta)
        ctrl.param_grad(kernel_theta, spec, x, acts, deltas, 1, g)
        return dx, g

    # the adjoint with the plain parameters and with the prepared ones the engine passes
    prepared = prepared_parameters(ctrl, theta)
    variants = [("", theta)] + ([(", prepared parameters", prepared)] if prepared is not theta else [])
    name = type(ctrl).__name__
    results = []
    for label, kernel_theta in variants:
        results += check_vjp(f"{name} vjp dx (c wrt x{label})", lambda xx: forward(theta, xx)[0],
                             lambda w: vjp(w, kernel_theta)[0], x, rng, eps, tolerance, "c", "x")
        results += check_vjp(f"{name} vjp+param_grad (c wrt theta{label})",
                             lambda th: forward(th, x)[0], lambda w: vjp(w, kernel_theta)[1],
                             theta, rng, eps, tolerance, "c", "theta")
    if capability(ctrl, "steps_as_rows"):
        results += check_steps_as_rows(ctrl, prepared, x, rng, tolerance)
    if capability(ctrl, "input_cotangent_optional"):
        results += [check_input_cotangent_optional(ctrl, theta, x)]
        if prepared is not theta:
            results += [check_input_cotangent_optional(ctrl, prepared, x)]
    return results


def check_input_cotangent_optional(ctrl, theta, x):
    """What ``input_cotangent_optional = True`` claims (contract.py): ``vjp`` with a ``dx`` of no
    columns stores the same layer cotangents as with a whole one, and writes nowhere else (the
    memory around the empty ``dx`` is left as it was)."""
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    x = np.ascontiguousarray(x, dtype=np.float64)
    spec, batch = ctrl.spec, len(x)
    acts = np.zeros(ctrl.acts_size(batch))
    ctrl.forward(theta, spec, x, acts, 0, 1, np.zeros((batch, ctrl.n_outputs)))
    # its own draws: the caller's generator feeds the finite-difference checks that follow
    mu = np.random.default_rng(0).standard_normal((batch, ctrl.n_outputs))
    whole, empty = np.zeros(ctrl.deltas_size(batch)), np.zeros(ctrl.deltas_size(batch))
    ctrl.vjp(theta, spec, x, acts.copy(), 0, 1, mu, np.zeros_like(x), whole)
    guard = np.full(batch * x.shape[1] + 2, 7.0)  # an empty dx inside memory that must stay
    ctrl.vjp(theta, spec, x, acts.copy(), 0, 1, mu, guard[1:1].reshape(batch, 0), empty)
    error = relative_error(empty, whole)
    if np.any(guard != 7.0):
        error = np.inf
    name = f"{type(ctrl).__name__} input_cotangent_optional (vjp with a dx of no columns)"
    return CheckResult(name, error, 1e-12, "" if error <= 1e-12 else
                       "a dx without columns changes the layer cotangents or memory beyond it: "
                       "remove input_cotangent_optional")


def check_steps_as_rows(ctrl, theta, x, rng, tolerance=1e-6, n_steps=3):
    """What a controller's ``steps_as_rows = True`` claims (contract.py): ``n_steps`` steps of the
    batch ``x`` through ``forward`` and ``vjp`` one step per call, against one call each on all
    their rows, compared in ``dx`` and the parameter gradient."""
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    spec, batch, rows = ctrl.spec, len(x), n_steps * len(x)
    xs = np.ascontiguousarray(np.asarray(x, dtype=np.float64)
                              + 0.1 * rng.standard_normal((n_steps,) + np.shape(x)))
    mus = rng.standard_normal((n_steps, batch, ctrl.n_outputs))
    results = []
    for per_step in (True, False):
        acts, deltas = np.zeros(ctrl.acts_size(rows)), np.zeros(ctrl.deltas_size(rows))
        c, dx, g = np.zeros_like(mus), np.zeros_like(xs), np.zeros(ctrl.n_params)
        if per_step:
            for n in range(n_steps):
                ctrl.forward(theta, spec, xs[n], acts, n, n_steps, c[n])
            for n in range(n_steps):
                ctrl.vjp(theta, spec, xs[n], acts, n, n_steps, mus[n], dx[n], deltas)
        else:
            ctrl.forward(theta, spec, xs.reshape(rows, -1), acts, 0, 1, c.reshape(rows, -1))
            ctrl.vjp(theta, spec, xs.reshape(rows, -1), acts, 0, 1, mus.reshape(rows, -1),
                     dx.reshape(rows, -1), deltas)
        ctrl.param_grad(theta, spec, xs.reshape(rows, -1), acts, deltas, n_steps, g)
        results.append((c, dx, g))
    (c, dx, g), (c_all, dx_all, g_all) = results
    error = max(relative_error(c, c_all), relative_error(dx, dx_all), relative_error(g, g_all))
    checks = [CheckResult(f"{type(ctrl).__name__} steps_as_rows (one call on all steps' rows)", error,
                          tolerance, "" if error <= tolerance else
                          "one call on N x B rows differs from N calls on B rows: a buffer layout "
                          "that is not step-major; remove steps_as_rows")]
    widths = capability(ctrl, "delta_widths")
    if widths is not None and ctrl.n_outputs == 1:
        checks.append(check_delta_widths(ctrl, theta, xs.reshape(rows, -1), mus.reshape(rows, 1),
                                         g, tolerance))
    return checks


def check_delta_widths(ctrl, theta, xs, mus, g, tolerance=1e-6):
    """What ``delta_widths`` claims (contract.py): the cotangents of a unit control cotangent,
    each row scaled by ``mus`` block by block, give the parameter gradient ``g`` of ``mus`` (one
    call on all rows, ``nsteps = 1``: what ``steps_as_rows`` claims is checked on its own)."""
    rows, spec = len(xs), ctrl.spec
    widths = tuple(int(w) for w in ctrl.delta_widths)
    name = f"{type(ctrl).__name__} delta_widths (unit cotangents scaled row by row)"
    if sum(widths) != ctrl.deltas_size(1):
        return CheckResult(name, np.inf, tolerance, f"delta_widths {widths} add up to "
                           f"{sum(widths)}, not deltas_size(1) = {ctrl.deltas_size(1)}")
    acts, deltas = np.zeros(ctrl.acts_size(rows)), np.zeros(ctrl.deltas_size(rows))
    ctrl.forward(theta, spec, xs, acts, 0, 1, np.zeros((rows, 1)))
    ctrl.vjp(theta, spec, xs, acts, 0, 1, np.ones((rows, 1)), np.zeros_like(xs), deltas)
    blocks, start = [], 0
    for width in widths:
        blocks.append(deltas[start:start + rows * width].reshape(rows, width) * mus)
        start += rows * width
    g_scaled = np.zeros(ctrl.n_params)
    ctrl.param_grad(theta, spec, xs, acts, np.concatenate([b.ravel() for b in blocks]), 1, g_scaled)
    error = relative_error(g_scaled, g)
    return CheckResult(name, error, tolerance, "" if error <= tolerance else
                       "scaled unit cotangents give another gradient: the widths do not match the "
                       "deltas buffer's blocks")


def named_outputs(x_next, dx, dc, loss, gx, c, dx_ctrl, g):
    """The outputs of the six per-sample kernels (or their batch twins) by kernel name."""
    return {"step_one (x_next)": x_next, "step_vjp_one (dx)": dx, "step_vjp_one (dc)": dc,
            "loss_one (batch mean)": np.array([loss]), "loss_grad_one (gx)": gx,
            "forward_one (c)": c, "backward_one (dx)": dx_ctrl, "backward_one (g)": g}


def kernel_outputs(sim, ctrl, theta, x, c, lam, mu, scale=0.7):
    """What the batch kernels give at a batch ``(x, c)`` with cotangents ``lam`` (of the next
    state) and ``mu`` (of the control): ``{name: array}`` under the names of the per-sample
    kernels, the reference for :func:`per_sample_outputs` and for the GPU's device functions."""
    p = np.ascontiguousarray(sim.params, dtype=np.float64)
    batch = len(x)
    x_next, dx, dc, gx = (np.zeros_like(x), np.zeros_like(x), np.zeros_like(c), np.zeros_like(x))
    sim.step(p, x, c, x_next)
    sim.step_vjp(p, x, c, lam, dx, dc)
    sim.loss_grad(p, x, scale, gx)
    acts = np.zeros(ctrl.acts_size(batch), x.dtype)
    deltas = np.zeros(ctrl.deltas_size(batch), x.dtype)
    c_out, dx_ctrl, g = np.zeros_like(c), np.zeros_like(x), np.zeros_like(theta)
    ctrl.forward(theta, ctrl.spec, x, acts, 0, 1, c_out)
    ctrl.vjp(theta, ctrl.spec, x, acts, 0, 1, mu, dx_ctrl, deltas)
    ctrl.param_grad(theta, ctrl.spec, x, acts, deltas, 1, g)
    return named_outputs(x_next, dx, dc, sim.loss(p, x), gx, c_out, dx_ctrl, g)


def per_sample_outputs(sim, ctrl, theta, x, c, lam, mu, scale=0.7):
    """:func:`kernel_outputs` from the per-sample kernels, called once per sample (on the CPU)."""
    p = np.ascontiguousarray(sim.params, dtype=np.float64)
    batch = len(x)
    x_next, dx, dc, gx = (np.zeros_like(x), np.zeros_like(x), np.zeros_like(c), np.zeros_like(x))
    c_out, dx_ctrl, g = np.zeros_like(c), np.zeros_like(x), np.zeros_like(theta)
    work = np.zeros(max(1, capability(sim, "work_size"), capability(ctrl, "work_size")))
    acts = np.zeros(max(1, ctrl.acts_size(1)), x.dtype)
    loss = 0.0
    for b in range(batch):
        sim.step_one(p, x[b], c[b], x_next[b], work)
        sim.step_vjp_one(p, x[b], c[b], lam[b], dx[b], dc[b], work)
        loss += sim.loss_one(p, x[b]) / batch
        sim.loss_grad_one(p, x[b], scale / batch, gx[b])
        ctrl.forward_one(theta, ctrl.spec, x[b], acts, c_out[b], work)
        ctrl.backward_one(theta, ctrl.spec, x[b], acts, mu[b], dx_ctrl[b], g, work)
    return named_outputs(x_next, dx, dc, loss, gx, c_out, dx_ctrl, g)


def check_per_sample(sim, ctrl, theta, x, c, rng, tolerance=1e-12):
    """The per-sample kernels against the batch kernels, kernel by kernel, at ``(x, c)`` with
    random cotangents: the check that a twin (a per-sample form beside a batch-vectorised one)
    has not drifted, and that the batch loops call the per-sample code as meant."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    c = np.ascontiguousarray(c, dtype=np.float64)
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    lam, mu = rng.standard_normal(x.shape), rng.standard_normal(c.shape)
    batch = kernel_outputs(sim, ctrl, theta, x, c, lam, mu)
    single = per_sample_outputs(sim, ctrl, theta, x, c, lam, mu)
    return [CheckResult(f"per-sample {name} = batch kernel", relative_error(single[name], batch[name]),
                        tolerance) for name in batch]


def frozen_loss(problem, theta, frozen_states, mode):
    """The function whose exact gradient mode ``mode`` is, for the frozen trajectory ``frozen_states``.

    R: the loss itself. M: open loop, the controller sees the frozen states. N: the simulator steps
    from the frozen states. S: both do, so every step restarts from the frozen trajectory.
    At the parameters that produced ``frozen_states`` every variant reproduces the same trajectory.
    """
    mode = parse_mode(mode)
    if mode is Mode.COMBINED:
        raise ValueError("the combined mode is a rule on two gradients, not the gradient of a function")
    sim, ctrl = problem.sim, problem.controller
    p, spec, w = problem.params, problem.spec, problem.weights
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    batch = frozen_states.shape[1]
    acts = np.zeros(ctrl.acts_size(batch))
    x = np.ascontiguousarray(frozen_states[0], dtype=np.float64)
    total = w[0] * sim.loss(p, x) if w[0] else 0.0
    reg = 0.0
    for n in range(problem.n_steps):
        frozen = np.ascontiguousarray(frozen_states[n], dtype=np.float64)
        ctrl_in = x if mode in (Mode.REGULAR, Mode.NETWORK) else frozen
        sim_in = x if mode in (Mode.REGULAR, Mode.MODIFIED) else frozen
        c = np.zeros((batch, ctrl.n_outputs))
        ctrl.forward(theta, spec, ctrl_in, acts, 0, 1, c)
        x = np.zeros_like(x)
        sim.step(p, sim_in, c, x)
        if w[n + 1]:
            total += w[n + 1] * sim.loss(p, x)
        reg += float(np.sum(c * c))
    n_controls = problem.n_steps * batch * ctrl.n_outputs
    return total + problem.rho * reg / n_controls


def check_modes(problem, theta, x0, rng, n_directions=None, eps=3e-3, tolerance=1e-6,
                modes=("R", "M", "N", "S", "C")):
    """Each mode's adjoint gradient against central differences of its frozen-trajectory function.

    Differences use the fourth-order stencil. With ``n_directions=None`` the full gradient is
    differenced (4P rollouts); otherwise the
    directional derivatives along that many random unit directions are compared. C is checked as
    the sign rule applied to the (separately checked) M and R gradients of the same trajectory.
    """
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    x0 = np.ascontiguousarray(x0, dtype=np.float64)
    _, frozen_states, _ = problem.rollout(theta, x0)
    if n_directions is None:
        directions = np.eye(theta.size)
    else:
        directions = rng.standard_normal((n_directions, theta.size))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    results = []
    for mode in map(parse_mode, modes):
        adjoint = problem.gradient(theta, x0, mode)
        if mode is Mode.COMBINED:
            rule = combine_gradients(adjoint.grad_modified, adjoint.grad_regular)
            g_r = problem.gradient(theta, x0, Mode.REGULAR).grad
            g_m = problem.gradient(theta, x0, Mode.MODIFIED).grad
            error = max(relative_error(adjoint.grad, rule), relative_error(adjoint.grad_regular, g_r),
                        relative_error(adjoint.grad_modified, g_m))
            results.append(CheckResult("mode C = sign rule(M, R), one forward pass", error, tolerance))
            continue
        def frozen(th, mode=mode):
            return frozen_loss(problem, th, frozen_states, mode)

        fd = np.array([central_jvp(frozen, theta, d, eps, order=4) for d in directions])
        results.append(CheckResult(f"mode {mode.letter} vs frozen-trajectory differences",
                                   relative_error(directions @ adjoint.grad, fd), tolerance))
    return results


def toy_problem_gradients(theta, x0=-0.3, target=2.0, n_steps=4):
    """Closed-form R and M gradients of the unrolled toy f = t1 x^2 + t2 x, s = x + c, L = (x_N - y)^2 / 2.

    Derived by hand: with dx_{n+1}/dtheta = (1 + b df/dx_n) dx_n/dtheta + df/dtheta_n, where
    ``b = 1`` for R and ``0`` for M (the physics Jacobian ds/dx is 1).
    """
    t1, t2 = theta
    xs = [x0]
    for _ in range(n_steps):
        xs.append(xs[-1] + t1 * xs[-1] ** 2 + t2 * xs[-1])
    grads = {}
    for label, b in (("R", 1.0), ("M", 0.0)):
        dx = np.zeros(2)
        for x in xs[:-1]:
            dx = (1.0 + b * (2 * t1 * x + t2)) * dx + np.array([x * x, x])
        grads[label] = (xs[-1] - target) * dx
    return 0.5 * (xs[-1] - target) ** 2, grads
