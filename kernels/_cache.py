"""Numba's on-disk cache, invalidated when ANY kernel source file changes.

Numba keys a cached function on the text of its own file only, so a kernel
in ``cpu.py`` would keep running old code after a change in ``physics.py``.
Here the source stamp of every function defined in ``kernels/`` is the hash
of all ``kernels/*.py`` files together.  The cache stays where Numba puts it
(``__pycache__`` beside the file, or the user-wide cache when that is not
writable; ``NUMBA_CACHE_DIR`` still wins).  When none of them is writable (a
read-only install and no writable home) the kernels are compiled in memory
for this process, with one ``note:`` line, instead of failing with Numba's
"cannot cache function".  Loading a cached kernel skips Numba's refresh of
every typing and lowering registry, which only a compilation needs
(:func:`_load_without_refresh`).

:func:`announce_compile` prints one line to stderr before the first
compilation when the on-disk cache will not be hit (so that the 30-40 s of
a first run are not silent), and nothing when it will.
"""
import glob
import hashlib
import inspect
import os
import sys
import types

from . import _inline

#: what a first run costs on a 2-core machine: a run with the parallel kernel (a cold 256x256 render: 24-26 s of
#: CPU), and a small one that runs on one thread (B4 cold: 16-22 s over a day of runs on the shared machine;
#: 16.2 s in bench/results/startup-2core-final.md)
COMPILE_SECONDS = 25
COMPILE_SECONDS_SMALL = 20

#: kernel functions that could not be cached (compiled in memory in this process)
UNCACHED = []
_announced = False

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
    _install_in_memory_fallback()


def _load_without_refresh(cache, sig, target_context):
    """Numba's ``Cache.load_overload`` without its ``target_context.refresh()``.

    That refresh imports and registers every lowering and typing registry of
    Numba (0.25-0.45 s of CPU and 12 MB on a 2-core machine) so that a
    *compilation* can follow; rebuilding a cached kernel needs only the
    runtime (NRT) symbols, which are initialised here.  On a miss Numba's
    compiler refreshes both contexts itself before compiling.
    """
    _init_runtime(target_context, getattr(cache, "_cache_path", None))
    with cache._guard_against_spurious_io_errors():
        cres = cache._load_overload(sig, target_context)
    if cres is None:
        _memoize_ufunc_loops()      # a compilation follows
        _inline.apply_cpu()
    return cres


_ufunc_loops_memoized = False


def _memoize_ufunc_loops():
    """Remember Numba's choice of NumPy ufunc loop per (ufunc, argument types) while compiling.

    Typing the kernels asks ``ufunc_find_matching_loop`` about 20 000 times
    for some 70 different questions (every scalar ``np.float32``/``np.float64``
    operation), about 1 s of a first run's CPU time.  The answer depends only
    on the ufunc's fixed loop table and the argument types, so it is kept for
    NumPy's own ufuncs (whose loops never change); Numba's dynamic ufuncs
    (DUFunc) are always asked.  Installed at the first compilation only, so
    runs that load cached kernels do not import Numba's typing modules.
    """
    global _ufunc_loops_memoized
    if _ufunc_loops_memoized:
        return
    _ufunc_loops_memoized = True
    try:
        import numpy as np
        from numba.core.typing import npydecl
        from numba.np import npyimpl, numpy_support
        original = numpy_support.ufunc_find_matching_loop
        if getattr(original, "_nanobrag_memo", False):
            return
        memo = {}

        def ufunc_find_matching_loop(ufunc, arg_types):
            if type(ufunc) is not np.ufunc:
                return original(ufunc, arg_types)
            try:
                key = (ufunc, tuple(arg_types))
                hit = memo.get(key)
            except TypeError:            # an unhashable type: just ask
                return original(ufunc, arg_types)
            if hit is None:
                hit = memo[key] = original(ufunc, arg_types)
            return hit

        ufunc_find_matching_loop._nanobrag_memo = True
        for module in (numpy_support, npydecl, npyimpl):
            if getattr(module, "ufunc_find_matching_loop", None) is original:
                module.ufunc_find_matching_loop = ufunc_find_matching_loop
    except Exception:  # pragma: no cover - only with an unsupported Numba
        pass


def _nrt_cache_file(cache_dir, codegen):
    """The file of the runtime's compiled object: one per Numba, llvmlite and target CPU."""
    import llvmlite
    import numba
    key = repr((numba.__version__, llvmlite.__version__, codegen.magic_tuple()))
    return os.path.join(cache_dir, "numba-nrt-%s.nrtobj" % hashlib.sha256(key.encode()).hexdigest()[:16])


def _init_runtime(target_context, cache_dir):
    """``rtsys.initialize`` with its small LLVM module (NRT_incref, ...) kept as object code on disk.

    Numba compiles that module with LLVM in every process (0.03 s, and the
    code generator it wakes up costs about 20 MB of resident memory); the
    kernels only need it linked.  Here its object code is written beside the
    kernel cache on the first run and loaded on later ones, exactly as Numba
    loads a cached kernel.  Anything unexpected falls back to Numba's own
    ``rtsys.initialize``.
    """
    from numba.core.runtime import rtsys
    if rtsys._init:
        return
    try:
        import pickle
        from numba.core import config
        from numba.core.runtime import _nrt_python as _nrt
        from numba.core.runtime import nrtdynmod
        import llvmlite.binding as ll
        codegen = target_context.codegen()
        path = _nrt_cache_file(cache_dir, codegen) if cache_dir else None
        state = None
        if path and os.path.exists(path):
            with open(path, "rb") as fh:
                state = pickle.load(fh)
        if config.NRT_STATS:
            _nrt.memsys_enable_stats()
        for py_name, address in _nrt.c_helpers.items():
            ll.add_symbol(py_name if py_name.startswith("_") else "NRT_" + py_name, address)
        if state is not None:
            library = codegen.unserialize_library(state)
        else:
            ir_mod, library = nrtdynmod.create_nrt_module(target_context)
            library.enable_object_caching()
            library.add_ir_module(ir_mod)
            library.finalize()
            if path:
                _write_quietly(path, pickle.dumps(library.serialize_using_object_code(), protocol=4))
        rtsys._library = library
        rtsys._init = True
    except Exception:
        rtsys.initialize(target_context)


def _write_quietly(path, data):
    """Write ``data`` to ``path`` atomically; a cache that cannot be written is simply not kept."""
    import tempfile
    try:
        fd, tmp = tempfile.mkstemp(prefix=".nrt.", dir=os.path.dirname(path))
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _install_in_memory_fallback():
    """A kernel that no locator can cache is compiled in memory instead of failing."""
    try:
        from numba.core.dispatcher import Dispatcher
    except Exception:  # pragma: no cover - only with an unsupported Numba
        return
    if getattr(Dispatcher.enable_caching, "_nanobrag_fallback", False):
        return
    original = Dispatcher.enable_caching

    def enable_caching(self):
        try:
            original(self)
        except RuntimeError as exc:
            if "cannot cache function" not in str(exc) or not _in_kernels(inspect.getfile(self.py_func)):
                raise
            UNCACHED.append(self.py_func.__qualname__)   # self._cache stays Numba's NullCache
            _inline.apply_cpu()                          # it will compile
            return
        cache = self._cache
        if (hasattr(cache, "_load_overload") and hasattr(cache, "_guard_against_spurious_io_errors")
                and _in_kernels(inspect.getfile(self.py_func))):
            cache.load_overload = types.MethodType(_load_without_refresh, cache)

    enable_caching._nanobrag_fallback = True
    Dispatcher.enable_caching = enable_caching


#: the kernels every plain run compiles (module, function): their cache entries decide
ENTRY_POINTS = (("cpu", "render_cpu"), ("crand", "mosaic_umats_fill"), ("noise", "noise_image"))


def _kernel_dispatchers(entry_points=ENTRY_POINTS):
    """The dispatchers of ``entry_points`` ((module, function) pairs; imported on demand)."""
    import importlib
    return [getattr(importlib.import_module(__package__ + "." + module), name) for module, name in entry_points]


def cache_will_hit(entry_points=None) -> bool:
    """True when the kernels of a run have on-disk cache entries for the current sources.

    ``entry_points``: the (module, function) pairs the run calls; default
    :data:`ENTRY_POINTS`.

    Reads Numba's index file of each kernel (a few small pickles): an entry
    exists only when it was written by this Numba for this ``SOURCES_HASH``.
    Kernels already compiled in this process count as hits.
    """
    for disp in (_kernel_dispatchers() if entry_points is None else _kernel_dispatchers(entry_points)):
        if disp.overloads:
            continue
        cache_file = getattr(disp._cache, "_cache_file", None)
        if cache_file is None:          # NullCache: compiled in memory
            return False
        if not cache_file._load_index():
            return False
    return True


def announce_compile(out=None, entry_points=None, seconds=None) -> None:
    """Print one line to stderr before the kernels compile (at most once per process), nothing when cached.

    ``entry_points``: the kernels this run calls (see :func:`cache_will_hit`); ``seconds``: what the line
    says it takes (default :data:`COMPILE_SECONDS`).
    """
    global _announced
    if _announced:
        return
    out = out or sys.stderr
    try:
        hit = cache_will_hit(entry_points)
    except Exception:  # a Numba without these internals: say nothing rather than guess
        _announced = True
        return
    # a later call (more kernels known) may still have to say it, as long as nothing was said
    _announced = bool(UNCACHED) or not hit
    if UNCACHED:
        print("note: no writable cache directory for the compiled kernels (%s/__pycache__, the user cache, "
              "NUMBA_CACHE_DIR): compiling them in memory for this run, about %d s"
              % (KERNELS_DIR, seconds or COMPILE_SECONDS), file=out)
    elif not hit:
        print("note: compiling kernels, first run only, about %d s" % (seconds or COMPILE_SECONDS), file=out)
    out.flush()
