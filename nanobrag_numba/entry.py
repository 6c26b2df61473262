"""The error handling every console command shares (``nanobrag-numba``, ``noisify``, ``nonBragg``, ``batch``).

Each command's body runs inside :func:`guarded`, which turns the ways a run
can end early into one line on stderr and the exit status the project
promises: bad input (``NanoBraggError``) and out of memory 2, Ctrl-C 130,
SIGTERM 143 (where the command asks for it), a closed stdout pipe 2.  This
module imports no Numba code.
"""

from __future__ import annotations

import os
import sys

from .errors import NanoBraggError

BROKEN_PIPE_TEXT = "standard output was closed before the run finished (broken pipe)"


def silence_broken_stdout(prog):
    """stdout went to a pipe whose reader left (e.g. ``| head``): point it at /dev/null and say so once.

    Without this Python reports a second error when it flushes stdout at exit.
    """
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    print("%s: error: %s" % (prog, BROKEN_PIPE_TEXT), file=sys.stderr)


def guarded(prog, body, *, oom_hint, sigterm=False, broken_pipe=True, stop_hint="",
            help_exit=False) -> int:
    """Run ``body()`` and return its exit status, or the status of the way it ended early.

    ``oom_hint`` is the advice after "out of memory"; ``sigterm`` makes SIGTERM
    end the run as :class:`~nanobrag_numba.io.atomic.Terminated` (status 143);
    ``stop_hint`` follows "interrupted"/"terminated" (e.g. how to resume);
    ``help_exit`` turns a ``SystemExit`` (argparse's --help) into its status.
    """
    hint = " (%s)" % stop_hint if stop_hint else ""
    if sigterm:
        from .io.atomic import Terminated, sigterm_as_exception
    else:
        class Terminated(BaseException):   # never raised: SIGTERM keeps Python's default
            pass
    try:
        if sigterm:
            with sigterm_as_exception():
                return body()
        return body()
    except NanoBraggError as exc:
        sys.stdout.flush()
        print("%s: error: %s" % (prog, exc), file=sys.stderr)
        return 2
    except MemoryError:
        sys.stdout.flush()
        print("%s: error: out of memory (%s)" % (prog, oom_hint), file=sys.stderr)
        return 2
    except Terminated:
        sys.stdout.flush()
        print("%s: terminated%s" % (prog, hint), file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("%s: interrupted%s" % (prog, hint), file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not broken_pipe:
            raise
        silence_broken_stdout(prog)
        return 2
    except SystemExit as exc:
        if not help_exit:
            raise
        return exc.code if isinstance(exc.code, int) else 0
