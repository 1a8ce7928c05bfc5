"""The ``stablebptt`` entry point: starts without loading Numba, so that ``--help`` and argument
errors answer at once and Ctrl-C at any moment ends with one line instead of a traceback."""

import os
import sys


def main(argv=None):
    try:
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
