"""Numba's on-disk cache, invalidated when ANY kernel source file changes.

Numba keys a cached function on the text of its own file only, so a kernel
in ``cpu.py`` would keep running old code after a change in ``physics.py``.
Here the source stamp of every function defined in ``kernels/`` is the hash
of all ``kernels/*.py`` files together.  The cache stays where Numba puts it
(``__pycache__`` beside the file, or the user-wide cache when that is not
writable; ``NUMBA_CACHE_DIR`` still wins).
"""
import glob
import hashlib
import os

KERNELS_DIR = os.path.dirname(os.path.abspath(__file__))


def _sources_hash():
    h = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(KERNELS_DIR, "*.py"))):
        with open(path, "rb") as fh:
            h.update(os.path.basename(path).encode() + b"\0" + fh.read())
    return h.digest()


SOURCES_HASH = _sources_hash()


def _in_kernels(py_file):
    return os.path.dirname(os.path.abspath(py_file)) == KERNELS_DIR


def install():
    """Put the kernel-aware locators in front of Numba's own (idempotent)."""
    try:
        from numba.core import caching
    except Exception:  # pragma: no cover - only with an unsupported Numba
        return

    class KernelsOnly:
        """Stamp with the hash of every kernel file; decline files outside kernels/."""

        def get_source_stamp(self):
            return SOURCES_HASH

        @classmethod
        def from_function(cls, py_func, py_file):
            if not _in_kernels(py_file):
                return None
            return super().from_function(py_func, py_file)

    class KernelsInTreeLocator(KernelsOnly, caching.InTreeCacheLocator):
        pass

    class KernelsUserWideLocator(KernelsOnly, caching.UserWideCacheLocator):
        pass

    classes = caching.CacheImpl._locator_classes
    if any(getattr(c, "__name__", "") == "KernelsInTreeLocator" for c in classes):
        return
    at = 1 if classes and classes[0] is caching.UserProvidedCacheLocator else 0
    classes[at:at] = [KernelsInTreeLocator, KernelsUserWideLocator]
