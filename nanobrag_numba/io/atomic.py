"""All-or-nothing file writing shared by every writer in :mod:`nanobrag_numba.io`.

This is the lowest piece of the ``io`` layer.  The SMV, float-image, PGM,
TIFF and Fdump writers build their output as a sequence of byte chunks and hand
them to :func:`atomic_write_bytes`, which writes them to a hidden temporary file
in the destination directory and then renames it over the destination with
:func:`os.replace`.  A reader therefore never sees a half-written image, and an
interrupted or failed run leaves the previous file (or no file) in place instead
of a truncated one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable

from ..errors import NanoBraggError

__all__ = ["atomic_write_bytes"]


def _current_umask() -> int:
    """Return the process umask (it can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once at import: temporary files are created 0600 by mkstemp, but the
# final file should get the same permissions ``fopen(path, "wb")`` would give.
_UMASK = _current_umask()


def atomic_write_bytes(path, chunks: Iterable) -> None:
    """Write byte chunks to ``path`` atomically.

    The chunks are written, in order, to a temporary file created in the same
    directory as ``path``; when all of them have been written the temporary
    file is renamed onto ``path`` with :func:`os.replace`.  If anything fails
    along the way (including an exception raised by ``chunks`` itself while it
    is being iterated) the temporary file is removed and ``path`` is left
    untouched.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.  If it is a symbolic link, the file it points to is
        replaced (as ``fopen`` would write through the link).
    chunks : iterable of bytes-like
        Objects supporting the buffer protocol (``bytes``, ``bytearray``,
        ``memoryview``, C-contiguous NumPy arrays), written in order.  It may
        be a generator; it is consumed exactly once.

    Raises
    ------
    NanoBraggError
        If the temporary file cannot be created, written or renamed (missing
        directory, no permission, disk full, destination is a directory...).
    Exception
        Any exception raised by ``chunks`` is re-raised unchanged after the
        temporary file has been removed.
    """
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if os.path.islink(path):
        path = os.path.realpath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path) or "output"
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + base + ".", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise NanoBraggError(
            f"cannot write {path}: {exc.strerror or exc} (check that the directory exists and is writable)"
        ) from exc
    handle = os.fdopen(fd, "wb")
    try:
        for chunk in chunks:  # exceptions raised by the iterable propagate unchanged
            try:
                handle.write(chunk)
            except OSError as exc:
                raise NanoBraggError(f"cannot write {path}: {exc.strerror or exc}") from exc
        try:
            handle.close()
            os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, path)
        except OSError as exc:
            raise NanoBraggError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        try:
            handle.close()
        except OSError:
            pass
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
