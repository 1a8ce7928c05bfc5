"""What a task is: one object that knows its settings, how to build its simulator, controller and
data, its sweep grid, how its results are drawn, and how its kernels are checked.

A task is a subclass of :class:`Task` registered by name (:func:`stablebptt.tasks.register`, the
``stablebptt.tasks`` entry point of an installed package, or ``module:Class`` on the command line).
Only :attr:`Task.name`, :meth:`Task.simulator` and the settings that differ from the common
defaults are required; every other hook has a default that works for any simulator.
"""

import math
import numbers
import re
from dataclasses import dataclass

import numpy as np

from ..contract import ContractError

# Defaults of the settings every task has (training, network, horizon, bookkeeping); a task's
# ``preset`` overrides any of them. The order is the order of a run file's configuration.
COMMON_DEFAULTS = dict(
    rho=0.0, mode="C", clip="norm", clip_value=1.0, optimizer="adam", lr=1e-3, momentum=0.0,
    batch_size=8, epochs=1000, n_data=256, width=100, depth=2, bias=True, zero_last=True,
    time=1.0, n_steps=100, loss_mode="FINAL", seed=42, dtype="float32", checkpoint_every=10,
    device="cpu",
)
SETTING_TYPES = (int, float, str, bool)
_NAME = re.compile(r"[a-z][a-z0-9_]*")


class TaskError(ValueError):
    """A malformed task definition, or an unknown task; the message names what is wrong."""


@dataclass(frozen=True)
class Option:
    """A setting of one task (e.g. cart-pole's ``poles``): a command-line option ``--poles``,
    a sweep axis, part of the run name and of every run file's configuration.

    ``check(value, settings)`` returns ``None`` when ``value`` is fine, else why it is not (e.g.
    ``"must be >= 1"``); ``settings`` holds every setting of the run. ``short`` is the option's
    tag in run names (``p`` makes ``p3`` of ``poles=3``); options without one appear there as
    ``_NAMEVALUE`` only when they differ from the task's preset.
    """

    name: str
    type: type
    default: object
    help: str = ""
    check: object = None
    short: str = None

    def convert(self, value):
        """``value`` (a string from the command line, or a value) as this option's type, or
        :class:`ValueError` with the reason."""
        if isinstance(value, str) and self.type is not str:
            if self.type is bool:
                if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
                    raise ValueError("must be true or false")
                return value.lower() in ("true", "yes", "1")
            try:
                return self.type(value)
            except ValueError:
                raise ValueError(f"must be {_TYPE_WORDS[self.type]}") from None
        return value

    def problem(self, value, settings):
        """Why ``value`` is not a valid setting, or ``None``."""
        why = type_problem(self.type, value)
        if why is None and self.check is not None:
            why = self.check(value, settings)
        return why


_TYPE_WORDS = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}


def type_problem(kind, value):
    """Why ``value`` is not a valid setting of type ``kind``, or ``None``."""
    if kind is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    elif kind is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    elif kind is bool:
        ok = isinstance(value, (bool, np.bool_))
    else:
        ok = isinstance(value, str)
    return None if ok else f"must be {_TYPE_WORDS[kind]}"


def at_least(low):
    """An :attr:`Option.check`: the value must be ``>= low``."""
    return lambda value, settings: None if value >= low else f"must be >= {low}"


def one_of(*choices):
    """An :attr:`Option.check`: the value must be one of ``choices``."""
    return lambda value, settings: (None if value in choices
                                    else f"must be one of {', '.join(map(str, choices))}")


class Task:
    """Base class of a task. Subclass it, set the class attributes, implement :meth:`simulator`.

    Attributes (class level):

    - ``name``: the registry key and the first part of run names (lower case, ``[a-z0-9_]``).
    - ``description``: one line for ``--help``.
    - ``options``: the task's own settings, a tuple of :class:`Option`.
    - ``preset``: common settings that differ from :data:`COMMON_DEFAULTS` (horizon, network,
      loss mode, epochs, ...): with the option defaults, the run ``stablebptt run NAME`` makes.
    - ``ignores``: common settings that mean nothing here (quantum's CNN has no ``depth``);
      giving one is an error, not a silent no-op.
    - ``grid``: the sweep's axes in loop order, ``{setting: [values]}``.
    - ``panel``, ``panel_title``, ``panels_descending``: the setting that tells the panels of
      the ``plot`` figure apart (default: the first grid axis that is not mode or clip), its
      title format, and the panel order.
    - ``figure_name``: file stem of the ``plot`` figure (default ``figure_NAME``).
    - ``figure_yrange``: a y-range used when every curve fits in it (the paper's).
    - ``figure_extra``: metrics drawn in an extra panel (quantum: ``grad_size``).
    - ``figure_columns``: panels per row (default: all in one row).
    """

    name = None
    description = ""
    options = ()
    preset = {}
    ignores = ()
    grid = {"mode": ["R", "M", "C", "S"], "clip": ["value", "norm", "none"]}
    panel = None
    panel_title = None
    panels_descending = False
    figure_name = None
    figure_yrange = None
    figure_extra = ()
    figure_columns = None

    # set by the registry: "module:attribute" of a task loaded from outside the package
    source = ""

    # -- what a run is built from ------------------------------------------------------------

    def simulator(self, config):
        """The simulator of a run (``config`` a validated :class:`RunConfig`; ``config.dt`` is
        the time step and every option is an attribute, e.g. ``config.poles``)."""
        raise NotImplementedError

    def controller(self, config, sim):
        """The controller of a run: by default the MLP of ``width`` x ``depth`` tanh layers
        (``depth=0``: linear) with the simulator's state and control sizes."""
        from ..controllers import MLP

        return MLP(sim.state_dim, sim.control_dim, config.width, config.depth, config.bias,
                   config.zero_last)

    def datasets(self, config, sim, rng):
        """``(train, test)`` initial states, ``n_data`` each, drawn from the legacy
        ``RandomState`` ``rng`` (seeded with the run's seed). Default: the simulator's own
        ``datasets(n, rng)`` if it has one, else two calls of ``sample``."""
        if hasattr(sim, "datasets"):
            return sim.datasets(config.n_data, rng)
        return sim.sample(config.n_data, rng), sim.sample(config.n_data, rng)

    # -- names and figures -------------------------------------------------------------------

    def system_name(self, config):
        """The run name's part after the task name: the options with a ``short`` tag."""
        parts = [f"{o.short}{_format(getattr(config, o.name))}" for o in self.options if o.short]
        return "_".join(parts)

    def named_settings(self):
        """Settings that :meth:`system_name` shows (not repeated as ``_KEYVALUE`` suffixes)."""
        return tuple(o.name for o in self.options if o.short)

    def panel_setting(self):
        """The setting that tells the ``plot`` panels apart, or ``None`` (one panel)."""
        if self.panel is not None:
            return self.panel
        return next((axis for axis in self.grid if axis not in ("mode", "clip", "optimizer")), None)

    def draw_trajectories(self, figure, sim, states, controls, dt):
        """Draw controlled trajectories on ``figure``: ``states (N+1, K, S)`` and ``controls
        (N, K, C)`` of ``K`` test states. Default: every state component over time, one column
        per test state, the controls below."""
        k = states.shape[1]
        figure.set_size_inches(3.2 * k, 4.6)
        axes = figure.subplots(2, k, squeeze=False, sharex=True,
                               gridspec_kw={"height_ratios": [3, 1]})
        t = np.arange(states.shape[0]) * dt
        for s in range(k):
            axes[0, s].plot(t, states[:, s], lw=0.8)
            axes[0, s].set_title(f"test state {s}: state components", fontsize=7)
            axes[1, s].plot(t[:len(controls)], controls[:, s], lw=0.8)
            axes[1, s].set_ylabel("c(t)", fontsize=7)
            axes[1, s].set_xlabel("t", fontsize=7)
            for ax in axes[:, s]:
                ax.tick_params(labelsize=6)

    def animation(self, ax, sim, states):
        """Set up ``ax`` for an animation of ``states (N+1, S)`` of one sample; returns
        ``draw(t)``, which updates the artists for frame ``t`` and returns them. Default: the
        state vector as a line over its component index."""
        index = np.arange(states.shape[1])
        finite = states[np.isfinite(states)]
        low, high = (finite.min(), finite.max()) if finite.size else (-1.0, 1.0)
        pad = 0.05 * (high - low) + 1e-9
        ax.set_xlim(-0.5, states.shape[1] - 0.5)
        ax.set_ylim(low - pad, high + pad)
        ax.set_xlabel("state component", fontsize=8)
        line, = ax.plot([], [], "-o", color="#073b4c", ms=3)

        def draw(t):
            line.set_data(index, states[t])
            return [line]

        return draw

    # -- gradient checks ---------------------------------------------------------------------

    gradcheck_settings = ({},)  # one small run per entry: option values to check at
    gradcheck_steps = 15

    def gradcheck_inputs(self, sim, batch, rng):
        """``[(label, states, controls)]`` at which the simulator's kernels are checked (float64):
        by default sampled states moved off the sampler's manifold, and random controls."""
        x = sim.sample(batch, np.random.RandomState(int(rng.integers(2**31)))).astype(np.float64)
        x += 0.1 * rng.standard_normal(x.shape)
        return [("", x, rng.standard_normal((batch, sim.control_dim)))]

    def extra_checks(self, rng):
        """Task-specific checks beyond the generic ones (a closed form, a special state)."""
        return []


def format_number(value):
    """The shortest text that reads back as ``value`` exactly (``1e-3`` -> ``0.001``)."""
    text = f"{value:g}"
    return text if float(text) == value else repr(float(value))


def _format(value):
    return format_number(value) if isinstance(value, float) else str(value)


def validate_task(task, common):
    """:class:`TaskError` naming the first thing wrong with a task definition."""
    label = f"task {type(task).__name__}"
    if not isinstance(task.name, str) or not _NAME.fullmatch(task.name):
        raise TaskError(f"{label}: name={task.name!r} must be a lower-case identifier "
                        "([a-z][a-z0-9_]*)")
    label = f"task {task.name!r}"
    if type(task).simulator is Task.simulator:
        raise TaskError(f"{label} does not define simulator(self, config)")
    names = set()
    for option in task.options:
        if not isinstance(option, Option):
            raise TaskError(f"{label}: options must be Option(...) entries, got {option!r}")
        if not _NAME.fullmatch(option.name) or option.name in common or option.name == "task":
            raise TaskError(f"{label}: option name {option.name!r} is not a lower-case identifier "
                            "or is a common setting")
        if option.name in names:
            raise TaskError(f"{label}: option {option.name!r} is declared twice")
        if option.type not in SETTING_TYPES:
            raise TaskError(f"{label}: option {option.name!r} has type {option.type!r}; use int, "
                            "float, str or bool")
        why = type_problem(option.type, option.default)
        if why:
            raise TaskError(f"{label}: option {option.name}'s default {option.default!r} {why}")
        names.add(option.name)
    settings = set(common) | names
    for key in task.preset:
        if key not in common:
            raise TaskError(f"{label}: preset key {key!r} is not a common setting (give an "
                            "option's default in its Option)")
    for key in task.ignores:
        if key not in common:
            raise TaskError(f"{label}: ignores {key!r}, which is not a common setting")
    for axis, values in task.grid.items():
        if axis not in settings:
            raise TaskError(f"{label}: sweep grid axis {axis!r} is not one of its settings")
        if not isinstance(values, (list, tuple)) or not values:
            raise TaskError(f"{label}: sweep grid axis {axis!r} needs a non-empty list of values")
    panel = task.panel_setting()
    if panel is not None and panel not in settings:
        raise TaskError(f"{label}: panel {panel!r} is not one of its settings")


def check_states(task, sim, states, what):
    """:class:`ContractError` unless ``states`` is a float array ``(n, state_dim)``."""
    shape = np.shape(states)
    if len(shape) != 2 or shape[1] != sim.state_dim:
        raise ContractError(f"task {task.name!r}: {what} returned shape {shape}, expected "
                            f"(n, {sim.state_dim}) (the simulator's state_dim)")
    return states


__all__ = ["COMMON_DEFAULTS", "ContractError", "Option", "Task", "TaskError", "at_least", "one_of",
           "check_states", "format_number", "type_problem", "validate_task"]
