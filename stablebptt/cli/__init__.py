"""The ``stablebptt`` entry point: starts without loading Numba, so that ``--help`` and argument
errors answer at once and Ctrl-C at any moment ends with one line instead of a traceback."""

import os
import signal
import sys


def _interrupt(signum, frame):
    """Start-up Ctrl-C: a KeyboardInterrupt, remembered too, since CPython drops one that
    arrives inside some callbacks (an import lock's); a run checks ``requested`` before its
    first update (:func:`~stablebptt.train.loop.stop_requests`)."""
    _interrupt.requested = True
    raise KeyboardInterrupt


_interrupt.requested = False


def main(argv=None):
    try:
        signal.signal(signal.SIGINT, _interrupt)
        from . import commands

        return commands.dispatch(argv)
    except KeyboardInterrupt:
        print("stablebptt: interrupted; every file written so far is complete (run files "
              "resume from their last checkpoint)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. head: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
