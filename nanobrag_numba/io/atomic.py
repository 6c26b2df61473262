"""All-or-nothing file writing shared by every writer in :mod:`nanobrag_numba.io`.

This is the lowest piece of the ``io`` layer.  The SMV, float-image, PGM,
TIFF and Fdump writers build their output as a sequence of byte chunks and hand
them to :func:`atomic_write_bytes`, which writes them to a hidden temporary file
``.NAME.<pid>.<random>.tmp`` in the destination directory and then renames it
over the destination with :func:`os.replace`.  A reader therefore never sees a
half-written image, and an interrupted or failed run leaves the previous file
(or no file) in place instead of a truncated one.

The rules that keep output files from being destructive:

* A destination that exists and is not a regular file (a character or block
  device such as ``/dev/null`` or ``/dev/stdout``, a FIFO, a socket) is written
  in place, as ``fopen(path, "wb")`` would: no temporary file and no rename,
  so the device or pipe stays what it is.
* A symbolic link is followed: the file it points to is replaced (atomically,
  next to the target) and the link stays a link.
* Inside :func:`output_transaction` every regular-file output is only staged;
  the renames happen together when the block ends without an error, so a run
  that fails while writing its third file leaves none of its files behind.
* The temporary name carries the writer's process id, so that
  :func:`remove_stale_temporaries` can remove the temporaries of a process that
  was killed (SIGKILL, power loss) without touching those of a live one.
* :func:`sigterm_as_exception` turns SIGTERM into :class:`Terminated` (a
  :class:`KeyboardInterrupt`), so a terminated run cleans up like an
  interrupted one.
* :func:`check_outputs` refuses, before anything is computed, an output that
  names an input file or another output.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Iterable

from ..errors import NanoBraggError

__all__ = [
    "atomic_write_bytes",
    "output_transaction",
    "OutputTransaction",
    "is_stream",
    "remove_stale_temporaries",
    "temporaries",
    "pid_alive",
    "check_outputs",
    "check_free_space",
    "Terminated",
    "sigterm_as_exception",
]

TEMP_SUFFIX = ".tmp"


def _current_umask() -> int:
    """Return the process umask (it can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once at import: temporary files are created 0600 by mkstemp, but the
# final file should get the same permissions ``fopen(path, "wb")`` would give.
_UMASK = _current_umask()

_TRANSACTION: contextvars.ContextVar = contextvars.ContextVar("nanobrag_output_transaction", default=None)


# ---------------------------------------------------------------- paths


def _fspath(path) -> str:
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return path


def _target(path) -> str:
    """The file that writing ``path`` changes: symbolic links followed."""
    path = _fspath(path)
    if _fd_alias(path) is not None:
        return path
    if os.path.islink(path):
        path = os.path.realpath(path)
    return path


_FD_ALIASES = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}


def _fd_alias(path: str):
    """The open descriptor that ``/dev/stdout``, ``/dev/fd/N`` or ``/proc/self/fd/N`` names, else None."""
    path = os.path.normpath(path)
    if path in _FD_ALIASES:
        return _FD_ALIASES[path]
    for prefix in ("/dev/fd/", "/proc/self/fd/"):
        if path.startswith(prefix) and path[len(prefix):].isdigit():
            return int(path[len(prefix):])
    return None


def is_stream(path) -> bool:
    """Whether ``path`` exists and is neither a regular file nor a directory.

    Such a destination (``/dev/null``, ``/dev/full``, a FIFO, a socket) is
    written in place, never replaced.  ``/dev/stdout``, ``/dev/stderr`` and
    ``/dev/fd/N`` count as streams whatever they lead to: they are written
    through the process's own descriptor (at its position, so a ``>>`` log
    is appended to, not replaced).
    """
    if _fd_alias(_fspath(path)) is not None:
        return True
    try:
        mode = os.stat(_fspath(path)).st_mode
    except (OSError, ValueError):
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _oserror(path, exc: OSError, hint: str = "") -> NanoBraggError:
    return NanoBraggError(f"cannot write {path}: {exc.strerror or exc}{hint}")


def _write_in_place(path: str, chunks: Iterable) -> None:
    """Write to a device or pipe as ``fopen(path, "wb")`` + ``fwrite`` would."""
    alias = _fd_alias(path)
    if alias is not None:
        import sys
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None and stream.fileno() == alias:
                    stream.flush()      # what was printed before comes first
            except (AttributeError, OSError, ValueError):
                pass
        _write_fd(path, alias, chunks)
        return
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _oserror(path, exc) from exc
    try:
        _write_fd(path, fd, chunks)
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


def _write_fd(path: str, fd: int, chunks: Iterable) -> None:
    for chunk in chunks:  # exceptions raised by the iterable propagate unchanged
        view = memoryview(chunk).cast("B")
        while view:
            try:
                n = os.write(fd, view)
            except OSError as exc:
                raise _oserror(path, exc) from exc
            view = view[n:]


def _stage(path: str, chunks: Iterable) -> str:
    """Write ``chunks`` to a new temporary file next to ``path``; returns its name.

    On any failure the temporary file is removed before the exception leaves.
    """
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path) or "output"
    if os.path.isdir(path):
        raise NanoBraggError(f"cannot write {path}: it is a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".%s.%d." % (base, os.getpid()), suffix=TEMP_SUFFIX, dir=directory)
    except OSError as exc:
        raise _oserror(path, exc, " (check that the directory exists and is writable)") from exc
    try:
        handle = os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        _unlink(tmp)
        raise
    try:
        for chunk in chunks:  # exceptions raised by the iterable propagate unchanged
            try:
                handle.write(chunk)
            except OSError as exc:
                raise _oserror(path, exc) from exc
        try:
            handle.close()
            try:
                mode = stat.S_IMODE(os.stat(path).st_mode)   # replacing a file keeps its permissions
            except OSError:
                mode = 0o666 & ~_UMASK
            os.chmod(tmp, mode)
        except OSError as exc:
            raise _oserror(path, exc) from exc
    except BaseException:
        try:
            handle.close()
        except OSError:
            pass
        _unlink(tmp)
        raise
    return tmp


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def atomic_write_bytes(path, chunks: Iterable) -> None:
    """Write byte chunks to ``path`` atomically.

    The chunks are written, in order, to a temporary file created in the same
    directory as ``path``; when all of them have been written the temporary
    file is renamed onto ``path`` with :func:`os.replace`.  If anything fails
    along the way (including an exception raised by ``chunks`` itself while it
    is being iterated) the temporary file is removed and ``path`` is left
    untouched.

    A destination that exists and is not a regular file (device, FIFO,
    socket) is written in place instead.  Inside :func:`output_transaction`
    the rename is postponed to the end of the transaction.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.  If it is a symbolic link, the file it points to is
        replaced (as ``fopen`` would write through the link) and the link is
        kept.
    chunks : iterable of bytes-like
        Objects supporting the buffer protocol (``bytes``, ``bytearray``,
        ``memoryview``, C-contiguous NumPy arrays), written in order.  It may
        be a generator; it is consumed exactly once.

    Raises
    ------
    NanoBraggError
        If the temporary file cannot be created, written or renamed (missing
        directory, no permission, disk full, destination is a directory...),
        or a device cannot be written (``/dev/full``: no space left).
    Exception
        Any exception raised by ``chunks`` is re-raised unchanged after the
        temporary file has been removed.
    """
    tx = _TRANSACTION.get()
    if tx is not None:
        tx.write(path, chunks)
        return
    target = _target(path)
    if is_stream(target):
        _write_in_place(target, chunks)
        return
    tmp = _stage(target, chunks)
    try:
        os.replace(tmp, target)
    except BaseException as exc:
        _unlink(tmp)
        if isinstance(exc, OSError):
            raise _oserror(target, exc) from exc
        raise


# ---------------------------------------------------------------- transactions


class OutputTransaction:
    """Several outputs written all together or not at all.

    :meth:`write` stages a regular file as a temporary next to it (devices and
    pipes are written at once, in order: they cannot be taken back);
    :meth:`commit` renames every staged file onto its destination;
    :meth:`rollback` removes the staged temporaries.  If a rename fails in
    :meth:`commit` (rare: the temporaries sit in the destination folders), the
    files this transaction had already renamed into place are removed too, so
    the run leaves none of its outputs; an older file of the same name that
    such an output had replaced is not restored (C would have overwritten it
    as well).
    """

    def __init__(self):
        self._staged = []     # [target, tmp]
        self.written = []     # every destination written, in order (streams included)

    def write(self, path, chunks: Iterable) -> None:
        """Stage ``chunks`` for ``path`` (see :func:`atomic_write_bytes`)."""
        target = _target(path)
        self.written.append(_fspath(path))
        if is_stream(target):
            _write_in_place(target, chunks)
            return
        tmp = _stage(target, chunks)
        for entry in self._staged:
            if entry[0] == target:            # written twice: the later content wins
                _unlink(entry[1])
                entry[1] = tmp
                return
        self._staged.append([target, tmp])

    def commit(self) -> None:
        """Rename every staged file onto its destination."""
        done = []
        try:
            for target, tmp in self._staged:
                try:
                    os.replace(tmp, target)
                except OSError as exc:
                    raise _oserror(target, exc) from exc
                done.append(target)
        except BaseException:
            for target in done:
                _unlink(target)
            self._staged = [e for e in self._staged if e[0] not in done]
            self.rollback()
            raise
        self._staged = []

    def rollback(self) -> None:
        """Remove every staged temporary file (the destinations are untouched)."""
        for _target_path, tmp in self._staged:
            _unlink(tmp)
        self._staged = []


@contextlib.contextmanager
def output_transaction():
    """Context in which :func:`atomic_write_bytes` (and every writer built on it) only stages.

    The staged files are renamed into place when the block ends normally;
    when it ends with any exception (including :class:`KeyboardInterrupt`
    and :class:`Terminated`) they are removed and no destination changes.

    Yields
    ------
    OutputTransaction
    """
    tx = OutputTransaction()
    token = _TRANSACTION.set(tx)
    try:
        try:
            yield tx
        finally:
            _TRANSACTION.reset(token)
    except BaseException:
        tx.rollback()
        raise
    tx.commit()


# ---------------------------------------------------------------- stale temporaries


def _parse_temporary(entry: str, name: str):
    """``(True, pid)`` if ``entry`` is a temporary of ``name`` (pid None for the old naming), else ``(False, None)``."""
    prefix = "." + name + "."
    if not (entry.startswith(prefix) and entry.endswith(TEMP_SUFFIX)):
        return False, None
    middle = entry[len(prefix):-len(TEMP_SUFFIX)]
    parts = middle.split(".")
    if not middle or len(parts) > 2 or not all(parts):
        return False, None
    if parts[0].isdigit():
        return True, int(parts[0])
    if len(parts) == 1:
        return True, None           # ``.NAME.<random>.tmp``: written before the pid was in the name
    return False, None


def temporaries(directory, names: Iterable[str]):
    """The temporary files of our naming for ``names`` in ``directory``.

    Yields
    ------
    tuple
        ``(path, name, pid)``: ``pid`` is the writer's process id, or None
        for a temporary of the old naming (``.NAME.<random>.tmp``).
    """
    directory = _fspath(directory) or "."
    wanted = set(names)
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        if not entry.startswith(".") or not entry.endswith(TEMP_SUFFIX):
            continue
        for name in wanted:
            ours, pid = _parse_temporary(entry, name)
            if ours:
                yield os.path.join(directory, entry), name, pid
                break


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (another user's counts)."""
    if pid <= 0:
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


def remove_stale_temporaries(directory, names: Iterable[str], only_dead: bool = True) -> int:
    """Remove temporaries ``.NAME.<pid>[.<random>].tmp`` that a killed run left next to ``names``.

    Parameters
    ----------
    directory : str or os.PathLike
        Folder of the outputs.
    names : iterable of str
        Output file names (no folder).
    only_dead : bool
        True (the command line): remove only temporaries whose writer's
        process is gone, so a concurrent run writing the same file keeps its
        own; temporaries of the old naming, which carry no pid, are kept.
        False (a batch holding its folder's lock): remove every temporary of
        these names.

    Returns
    -------
    int
        The number of files removed.
    """
    removed = 0
    for path, _name, pid in list(temporaries(directory, names)):
        if only_dead and (pid is None or pid_alive(pid)):
            continue
        try:
            os.unlink(path)
            removed += 1
        except OSError:
            pass
    return removed


# ---------------------------------------------------------------- checks before any work


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def check_outputs(outputs, inputs=(), warn_only=()) -> None:
    """Refuse outputs that would destroy an input or each other, or cannot be written at all.

    Parameters
    ----------
    outputs : iterable of (str, path)
        ``(flag, path)`` of every file the run will write.
    inputs : iterable of (str, path)
        ``(flag, path)`` of every file the run reads.
    warn_only : iterable of str
        Flags whose folder problems are not errors (C only warns when it
        cannot write ``Fdump.bin``); they are still checked against the
        inputs and the other outputs.

    Raises
    ------
    NanoBraggError
        Naming both flags: an output that is an input file (compared with
        :func:`os.path.samefile` where both exist, else as normalised absolute
        paths, symbolic links resolved) or that is also another output; an
        output that is a directory or lies in a folder that does not exist
        or cannot be written.  Devices and pipes (``/dev/null``...) are
        written in place, so they may be shared and are never refused here.
    """
    outputs = [(flag, _fspath(p)) for flag, p in outputs if p]
    inputs = [(flag, _fspath(p)) for flag, p in inputs if p]
    warn_only = set(warn_only)
    files = [(flag, p) for flag, p in outputs if not is_stream(_target(p))]
    for flag, path in files:
        for in_flag, in_path in inputs:
            if _same_file(path, in_path):
                raise NanoBraggError(f"{flag} {path} would overwrite the {in_flag} input {in_path}: "
                                     f"choose another output file")
    for i, (flag, path) in enumerate(files):
        for flag2, path2 in files[i + 1:]:
            if _same_file(path, path2):
                raise NanoBraggError(f"{flag} and {flag2} both write {path}: give each output its own file")
    for flag, path in files:
        if flag in warn_only:
            continue
        target = _target(path)
        if os.path.isdir(target):
            raise NanoBraggError(f"cannot write {flag} {path}: it is a directory")
        folder = os.path.dirname(os.path.abspath(target))
        if not os.path.isdir(folder):
            raise NanoBraggError(f"cannot write {flag} {path}: the folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise NanoBraggError(f"cannot write {flag} {path}: no permission to write in {folder}")


def check_free_space(sizes) -> None:
    """Refuse outputs that cannot fit on their file systems (before anything is rendered).

    Parameters
    ----------
    sizes : iterable of (str, path, int)
        ``(flag, path, bytes)`` of every regular-file output.  Devices and
        pipes are skipped; a folder that cannot be inspected is not refused
        here (writing it will say why).

    Raises
    ------
    NanoBraggError
        Naming the folder, the bytes needed and the bytes free.
    """
    need = {}
    where = {}
    for flag, path, nbytes in sizes:
        if not path:
            continue
        target = _target(path)
        if is_stream(target):
            continue
        folder = os.path.dirname(os.path.abspath(target))
        try:
            dev = os.stat(folder).st_dev
        except OSError:
            continue
        need[dev] = need.get(dev, 0) + int(nbytes) + 4096
        where.setdefault(dev, folder)
    for dev, nbytes in need.items():
        try:
            st = os.statvfs(where[dev])
        except (OSError, AttributeError):
            continue
        blocks = st.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else st.f_bavail
        free = blocks * st.f_frsize
        if nbytes > free:
            raise NanoBraggError("no space left for the outputs in %s: they need %.1f MB, %.1f MB are free"
                                 % (where[dev], nbytes / 1e6, free / 1e6))


# ---------------------------------------------------------------- SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread while :func:`sigterm_as_exception` is active.

    A subclass of :class:`KeyboardInterrupt`, so every clean-up written for an
    interrupt (temporary files, transactions, Dask clusters) runs for it too,
    and ``except Exception`` does not swallow it.
    """


def _raise_terminated(signum, frame):
    # a second SIGTERM must not interrupt the clean-up of the first
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_exception():
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread.

    Outside the main thread (where handlers cannot be installed) this does
    nothing.  The previous handler is restored at the end.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except (ValueError, OSError):  # pragma: no cover - not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
