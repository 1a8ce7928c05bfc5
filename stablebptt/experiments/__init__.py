"""Presets, the training loop, optimisers and clipping, HDF5 run files and the command line.

Names are imported on first use, so that the command line starts without loading Numba.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["ConfigError", "RunConfig"], ".config"),
    **dict.fromkeys(["SGD", "Adam", "clip_gradient", "make_optimizer"], ".optim"),
    **dict.fromkeys(["BuiltTask", "build_task", "preset", "preset_config"], ".presets"),
    **dict.fromkeys(["METRICS", "RunFileError", "RunRecord", "read_run", "write_run"], ".results"),
    **dict.fromkeys(["Trainer"], ".training"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
