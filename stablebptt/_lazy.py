"""Lazy re-exports for package ``__init__`` modules (PEP 562).

Importing the package stays cheap (no Numba, no h5py) until a name is used: the command line
answers ``--help`` and argument errors at once, and Ctrl-C during start-up needs no traceback.
"""

import importlib


def lazy_exports(package, exports):
    """``(__getattr__, __dir__)`` for ``package`` re-exporting ``{name: submodule}`` on first use."""

    def __getattr__(name):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name], package), name)

    def __dir__():
        return sorted(exports)

    return __getattr__, __dir__
