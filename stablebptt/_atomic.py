"""Files that appear whole or not at all: written under a temporary name in the target's folder,
synced, then renamed over the target (``os.replace``), so a killed process, a full disk or an
error leaves the previous file as it was."""

import os
import secrets
from contextlib import contextmanager


@contextmanager
def atomic_path(path, keep_suffix=True):
    """A temporary path beside ``path`` that is renamed to ``path`` when the block completes; an
    error or interrupt in the block removes it. ``keep_suffix``: the temporary name ends in the
    target's suffix (``fig.tmp-PID-XXXX.png``, so writers that go by the suffix pick the format);
    otherwise it is ``path.tmp-PID-XXXX`` (what :class:`~stablebptt.train.runfile.RunLock`
    cleans up)."""
    path = os.fspath(path)
    token = f"tmp-{os.getpid()}-{secrets.token_hex(4)}"
    stem, suffix = os.path.splitext(path)
    tmp = f"{stem}.{token}{suffix}" if keep_suffix else f"{path}.{token}"
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
