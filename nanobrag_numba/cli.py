"""The command line's entry point: ``nanobrag-numba`` / ``nanoBragg``.

``nanobrag-numba FLAGS`` takes the C program nanoBragg's flags (parsed by
``flags.py``, whose flag table is also the source of ``-h`` and
docs/flags.md) and writes the C program's files.  ``nanobrag-numba compare
...`` runs the comparison tool (``compare.py``), ``nanobrag-numba example``
renders a built-in example (``example.py``) and ``nanobrag-numba batch ...``
renders many images (``batch.py``).  This module imports no Numba code, so
``--help`` and input errors are fast.
"""
from __future__ import annotations

import os
import sys

from .entry import guarded, silence_broken_stdout
from .errors import NanoBraggError
from .flags import ALIASES, FLAGS, HELP_WORDS, NOOP, PROG, help_text, parse_args  # noqa: F401 (re-exported)
from .flags import _version


def _skip_numba_blas_probe():
    """Keep Numba from importing SciPy's linear algebra at start-up.

    When SciPy is installed, Numba imports ``scipy.linalg`` (0.2 s) the first
    time a kernel loads, to find a BLAS for ``np.dot`` in jitted code.  The
    simulator uses no BLAS, so the command line (a process of its own) marks
    that module absent; Numba then simply reports no BLAS.  Library users of
    ``nanobrag_numba`` are not affected.
    """
    if "scipy.linalg" not in sys.modules:
        sys.modules["scipy.linalg"] = None


def _one_blas_thread():
    """Start NumPy's OpenBLAS with one thread in the command line's own process.

    OpenBLAS starts a thread per core when NumPy is imported, and those
    threads spin for a while: about 0.18 s of CPU on every 64x64 render on 2
    cores (1.25 -> 1.06 s), more on bigger machines.  The simulator does no
    linear algebra beyond 3x3 matrices.  Only where NumPy is not imported yet
    and the user has not set ``OPENBLAS_NUM_THREADS``; library users of
    ``nanobrag_numba`` are not affected.
    """
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _return_large_blocks_to_the_system():
    """Have glibc's malloc give every large freed block back to the system at once.

    glibc raises its mmap threshold each time a large block is freed, so
    the HKL reader's temporary tables (about 18 MB for 126 000 reflections)
    end up in the heap and stay resident for the rest of the run.  Fixing
    the threshold at its default (128 KiB), as ``MALLOC_MMAP_THRESHOLD_``
    would, keeps them out: 7-8 MB less peak RSS on a 64x64 render.  Only in
    the command line's own process, and only with glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 128 * 1024)      # M_MMAP_THRESHOLD
    except Exception:
        pass


def main(argv=None):
    """Entry point of ``nanobrag-numba`` / ``nanoBragg``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "compare":
        from .compare import main as compare_main
        return compare_main(argv[1:])
    if argv and argv[0] == "example":
        from .example import main as example_main
        return example_main(argv[1:])
    if argv and argv[0] == "noisify":
        from .noisify_cli import main as noisify_main
        return noisify_main(argv[1:])
    if argv and argv[0] == "batch":
        from .batch import main as batch_main
        return batch_main(argv[1:])
    if argv and argv[0] == "nonbragg":
        from .nonbragg import main as nonbragg_main
        return nonbragg_main(argv[1:])
    if any(w in HELP_WORDS for w in argv):
        sys.stdout.write(help_text())
        return 0
    if "--version" in argv:
        print("%s %s" % (PROG, _version()))
        return 0

    def render():
        if not argv:
            sys.stdout.write(help_text())
            raise NanoBraggError("no flags given: at least -hkl FILE (or -default_F) and -cell or -mat are needed")
        cfg = parse_args(argv)
        for text in cfg.parse_notes:
            print("note: %s" % text)
        from .simulator import run_command_line
        return run_command_line(cfg)

    return guarded(PROG, render, oom_hint="make the detector, -oversample or the HKL table smaller")


#: the sub-commands that keep Python's normal interpreter shutdown
SUBCOMMANDS = ("compare", "example", "batch")


def _exit_now(status):
    """End the process at once with ``status``, after flushing output and running atexit handlers.

    A render's process has imported Numba and LLVM; tearing all of that down
    at interpreter shutdown (module by module, then LLVM's own destructors)
    costs about 0.2 s of CPU, a sixth of a small render.  Every output file
    is closed by then (``io/atomic.py`` closes and renames them before
    returning), so the render path skips that teardown with ``os._exit``.
    """
    import atexit
    status = 0 if status is None else status
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        silence_broken_stdout(PROG)
        status = 2
    except (OSError, ValueError):
        status = status or 2
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    atexit._run_exitfuncs()
    os._exit(status if isinstance(status, int) else 1)


def console_main():
    """The installed commands: ``main`` in a process of its own (a render ends with :func:`_exit_now`)."""
    _one_blas_thread()
    _skip_numba_blas_probe()
    _return_large_blocks_to_the_system()
    status = main()
    if sys.argv[1:2] and sys.argv[1] in SUBCOMMANDS:
        return status
    _exit_now(status)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(console_main())
