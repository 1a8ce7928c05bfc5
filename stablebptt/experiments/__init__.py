"""Deprecated: the old home of the training and plotting code, kept importing for one release.

``stablebptt.experiments`` was split into :mod:`stablebptt.train` (configs, building, optimisers,
training, run files, sweeps, gradient checks), :mod:`stablebptt.plots` (figures) and
:mod:`stablebptt.cli` (the command line). Import the public names from ``stablebptt`` itself::

    import stablebptt as sb
    config = sb.preset("cartpole", poles=2)

The old names (``from stablebptt.experiments import Trainer, preset, read_run, ...``) and module
paths (``stablebptt.experiments.presets``, ``.cli``, ...) still resolve to the new modules, with a
:class:`DeprecationWarning`.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from .._lazy import lazy_exports

warnings.warn("stablebptt.experiments is deprecated: import from stablebptt (or stablebptt.train, "
              "stablebptt.plots, stablebptt.cli)", DeprecationWarning, stacklevel=2)

_EXPORTS = {
    **dict.fromkeys(["ConfigError", "RunConfig"], "..train.config"),
    **dict.fromkeys(["SGD", "Adam", "clip_gradient", "make_optimizer"], "..train.optim"),
    **dict.fromkeys(["BuiltTask", "build_task", "preset", "preset_config"], "..train.build"),
    **dict.fromkeys(["METRICS", "RunFileError", "RunRecord", "read_run", "write_run"],
                    "..train.runfile"),
    **dict.fromkeys(["Trainer"], "..train.trainer"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

# old module path -> the module that holds its code now
MOVED = {"config": "stablebptt.train.config", "presets": "stablebptt.train.build",
         "optim": "stablebptt.train.optim", "_optim_kernels": "stablebptt.train._optim_kernels",
         "results": "stablebptt.train.runfile", "training": "stablebptt.train.trainer",
         "sweep": "stablebptt.train.sweep", "gradcheck": "stablebptt.train.gradcheck",
         "diagnose": "stablebptt.train.diagnose", "toy": "stablebptt.train.toy",
         "paper": "stablebptt.plots.paper", "figures": "stablebptt.plots.trajectories",
         "cli": "stablebptt.cli", "commands": "stablebptt.cli.commands"}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``stablebptt.experiments.OLD`` to the module in :data:`MOVED` (the same object)."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package == __name__ and name in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name.rpartition(".")[2]])
        self.real_spec = module.__spec__  # the import system sets the alias's spec on it
        return module

    def exec_module(self, module):
        module.__spec__ = self.real_spec


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())
