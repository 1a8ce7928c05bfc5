"""The optional CUDA path (numba.cuda): one GPU thread per trajectory of the batch.

Import :mod:`stablebptt.cuda.engine` only when a GPU (or ``NUMBA_ENABLE_CUDASIM=1``) is wanted;
:func:`cuda_available` says whether a GPU can be used without importing the kernels.
"""


def cuda_available():
    """True when numba.cuda finds a usable GPU (or runs its simulator)."""
    try:
        from numba import cuda
    except ImportError:
        return False
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver installation means: no GPU for us
        return False
