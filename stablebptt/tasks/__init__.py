"""The task registry: every command finds what a task is here, by name.

Built-in tasks (``cartpole``, ``guidance``, ``quantum``, ``toy``) live in this package, one
module each. A task from outside the package is registered by

- calling :func:`register` on a :class:`Task` subclass (in a script or a notebook),
- naming it on the command line as ``module:Class`` (``stablebptt run mypkg.tasks:Pendulum``),
- or an entry point of an installed package, in ``pyproject.toml``::

      [project.entry-points."stablebptt.tasks"]
      pendulum = "mypkg.tasks:Pendulum"

A run file records where its task came from (``config.task_source``), but reading a file never
imports that module: run files are shared, and opening one must not run code its author chose.
A task resolves only from the built-ins, installed entry points, tasks registered in this
process, and a ``module:Class`` the user names (on the command line as the TASK or with
``--task-code MODULE:CLASS``; in Python by :func:`load_task` or :func:`register`). A file whose
task is none of these still reads (``inspect`` and ``plot`` need no task code: its config's
task is an :class:`UnloadedTask`); what needs the task's code (resuming, drawing trajectories,
``diagnose``) says in one line how to name it.
Nothing here imports Numba: the command line builds its options from the registry at once.
"""

import functools
import importlib
import os
import re
import sys
from typing import Union

from .base import (COMMON_DEFAULTS, Option, Task, TaskError, at_least, check_states,
                   format_number, one_of, validate_task)

ENTRY_POINT_GROUP = "stablebptt.tasks"
BUILTIN = {
    "cartpole": "stablebptt.tasks.cartpole:CartPoleTask",
    "guidance": "stablebptt.tasks.guidance:GuidanceTask",
    "quantum": "stablebptt.tasks.quantum:QuantumTask",
    "toy": "stablebptt.tasks.toy:ToyTask",
}
SOURCE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")

_registry = {}  # name -> Task instance


def register(task: "Union[type, Task]", source: str = "") -> Task:
    """Register a :class:`Task` subclass (or instance) under its ``name``; returns the instance.

    Registering the same class again is a no-op; another task under a taken name is an error.
    ``source`` ("module:Class") is how other processes find it again (sweep workers, run files).
    """
    instance = task() if isinstance(task, type) else task
    if not isinstance(instance, Task):
        raise TaskError(f"{task!r} is not a stablebptt.tasks.Task subclass")
    validate_task(instance, COMMON_DEFAULTS)
    known = _registry.get(instance.name)
    if known is not None:
        if type(known) is type(instance):
            return known
        raise TaskError(f"task name {instance.name!r} is taken by {type(known).__module__}."
                        f"{type(known).__name__}")
    if source and not instance.source:
        instance.source = source
    _registry[instance.name] = instance
    return instance


def load_task(source):
    """Import ``module:Class`` and register the task it names; :class:`TaskError` if it fails."""
    if not SOURCE.fullmatch(source):
        raise TaskError(f"task {source!r} is not a registered name or a module:Class reference")
    module_name, _, attribute = source.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # as `python -m`: a module beside the user is found
    try:
        obj = importlib.import_module(module_name)
    except SyntaxError as err:
        raise TaskError(f"cannot import task module {module_name!r}: {err.msg} in {err.filename} "
                        f"line {err.lineno}") from None
    except Exception as err:  # the module's own code failed: say where, in one line
        raise TaskError(f"cannot import task module {module_name!r}: {type(err).__name__}: "
                        f"{err}{_where(err, module_name)}") from None
    try:
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise TaskError(f"module {module_name!r} has no task {attribute!r}") from None
    builtin = source in BUILTIN.values()
    return register(obj, source="" if builtin else source)


def _where(err, module_name):
    """`` (file line N)`` of the innermost frame of ``err`` in the task's own module, if any."""
    import traceback

    frames = traceback.extract_tb(err.__traceback__)
    module_file = module_name.replace(".", os.sep)
    own = [f for f in frames if module_file in f.filename]
    frame = (own or frames[-1:] or [None])[-1]
    return f" ({frame.filename} line {frame.lineno})" if frame is not None else ""


class UnloadedTask(Task):
    """The task of a run file that names an outside task nobody loaded (see the module's rule):
    the file's settings read and show, its figures use the default layout, and building a run
    (simulator, controller, data) is a :class:`TaskError` saying how to load the code."""

    def __init__(self, name, source, values=()):
        self.name, self.source = name, source
        self.options = tuple(Option(key, type(value), value, "") for key, value in values)
        self.description = f"the outside task {source}, not loaded"

    def unavailable(self, *args, **kwargs):
        raise TaskError(f"task {self.name!r} comes from {self.source}, which stablebptt does not "
                        f"import from a file: name it to use it (on the command line "
                        f"--task-code {self.source}; in Python stablebptt.load_task("
                        f"{self.source!r}))")

    simulator = controller = datasets = unavailable


def unloaded_task(name, source, values=()):
    """An :class:`UnloadedTask` for a file's outside task, with ``values`` ``((option, value),
    ...)`` as its options (not registered)."""
    return UnloadedTask(name, source, values)


@functools.lru_cache(maxsize=1)
def _entry_points():
    """``{name: "module:Class"}`` of installed tasks (scanning the installed packages takes
    ~0.1 s, so once per process)."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def task_names():
    """Names of every task that can be used: built-in, installed (entry points) and registered."""
    names = list(BUILTIN)
    for name in list(_entry_points()) + list(_registry):
        if name not in names:
            names.append(name)
    return names


def get_task(name: str, source: str = "") -> Task:
    """The registered task ``name`` (or a ``module:Class`` reference the caller names), loading
    a built-in or an installed one on first use; :class:`TaskError` if none. ``source`` (what a
    run file records) is never imported here: only a task already registered from it serves."""
    if name in _registry:
        return _registry[name]
    if name in BUILTIN:
        return load_task(BUILTIN[name])
    installed = _entry_points()
    if name in installed:
        return load_task(installed[name])
    if source:
        unloaded_task(name, source).unavailable()
    if ":" in name:
        return load_task(name)
    raise TaskError(f"unknown task {name!r}: choose from {', '.join(task_names())}, or name "
                    "an outside task as module:Class")


def all_tasks():
    """Every usable task, loaded (built-in, installed, registered). An installed task that fails
    to load is left out here, and reported when it is used by name."""
    tasks = []
    for name in task_names():
        try:
            tasks.append(get_task(name))
        except TaskError:
            continue
    return tasks


__all__ = ["BUILTIN", "COMMON_DEFAULTS", "Option", "Task", "TaskError", "all_tasks", "at_least",
           "check_states", "format_number", "get_task", "load_task", "one_of", "register",
           "task_names", "UnloadedTask", "unloaded_task"]
