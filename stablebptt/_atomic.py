"""Files that appear whole or not at all: written under a temporary name in the target's folder,
synced, then renamed over the target (``os.replace``), so a killed process, a full disk or an
error leaves the previous file as it was."""

import errno
import os
import secrets
from contextlib import contextmanager


class OutputError(OSError):
    """A file that could not be written (full disk, read-only folder, ...): one line naming the
    file and why; nothing of it is left behind."""

    def __str__(self):
        return self.strerror


def output_error(err, path):
    """The :class:`OutputError` of an ``OSError`` met writing ``path``."""
    if err.errno == errno.ENOSPC:
        device = _mount_point(os.path.dirname(os.path.abspath(path)))
        return OutputError(err.errno, f"no space left on {device} writing {path}")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(err.errno, f"cannot write {path}: {err.strerror} (a read-only folder?)")
    return OutputError(err.errno, f"cannot write {path}: {err.strerror or err}")


def _mount_point(folder):
    while not os.path.ismount(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    return folder


def write_bytes(path, data):
    """Write ``data`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path, keep_suffix=False) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


@contextmanager
def atomic_path(path, keep_suffix=True):
    """A temporary path beside ``path`` that is renamed to ``path`` when the block completes; an
    error or interrupt in the block removes it (an ``OSError`` becomes an
    :class:`OutputError`). ``keep_suffix``: the temporary name ends in the
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
    except OutputError:
        raise
    except OSError as err:  # a full disk, a read-only folder: one line, not h5py's or PIL's
        raise output_error(err, path) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
