"""Training: configs and presets, building a run, optimisers and clipping, the training loop
(in memory or with its run file), run files, sweeps and gradient checks. No matplotlib here.

Names are imported on first use, so that the command line starts without loading Numba.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["ConfigError", "RunConfig", "preset_config"], ".config"),
    **dict.fromkeys(["SGD", "Adam", "clip_gradient", "make_optimizer"], ".optim"),
    **dict.fromkeys(["BuiltTask", "build_task", "preset"], ".build"),
    **dict.fromkeys(["METRICS", "RunFileError", "RunRecord", "read_run", "write_run"], ".runfile"),
    **dict.fromkeys(["Run", "fit"], ".loop"),
    **dict.fromkeys(["Diverged", "Interrupted", "Trainer", "resume"], ".trainer"),
    **dict.fromkeys(["expand_grid", "run_sweep"], ".sweep"),
    **dict.fromkeys(["diagnose", "read_diagnosis", "reading"], ".diagnose"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
