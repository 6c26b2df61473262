"""Back-end choice (``-device cpu|cuda|auto``) and the call into a kernel.

The back end is a small validated value: ``choose`` turns the user's word
into ``"cpu"`` or ``"cuda"`` (``auto`` picks CUDA when a usable GPU is
present), and ``run_kernel`` hands the prepared tables to the kernel of that
back end and returns its per-pixel rows as a NumPy array.  GPU code is
imported only when the CUDA back end is used.
"""
from __future__ import annotations

import numpy as np

from .errors import NanoBraggError

PROGRESS_CHUNKS = 20


def nvidia_driver_present() -> bool:
    """False when this machine visibly has no NVIDIA driver (then numba.cuda need not be imported).

    On Linux the driver shows itself as ``/proc/driver/nvidia`` or the
    ``/dev/nvidia*`` device files (``/dev/dxg`` under WSL).  Elsewhere, and
    under Numba's CUDA simulator, the answer is left to numba.cuda.
    """
    import glob
    import os
    import sys
    if not sys.platform.startswith("linux") or os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return True
    return (os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/dxg")
            or bool(glob.glob("/dev/nvidia*")))


def cuda_available() -> bool:
    """True when numba.cuda finds a usable GPU (never raises).

    Importing numba.cuda costs about 0.3 s of CPU time and 20 MB, so a
    machine without an NVIDIA driver is answered without it.
    """
    if not nvidia_driver_present():
        return False
    try:
        from numba import cuda
        return bool(cuda.is_available())
    except Exception:
        return False


def choose(device: str) -> str:
    """Resolve ``cpu``, ``cuda`` or ``auto`` to the back end that will run."""
    device = (device or "auto").lower()
    if device == "cpu":
        return "cpu"
    if device == "cuda":
        if not cuda_available():
            raise NanoBraggError("-device cuda was asked for, but no usable CUDA GPU was found "
                                 "(use -device cpu or -device auto)")
        return "cuda"
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    raise NanoBraggError("unknown device %r (use cpu, cuda or auto)" % device)


def describe(backend: str) -> str:
    """A short description of the back end for the run log."""
    if backend == "cuda":
        try:
            from numba import cuda
            name = cuda.get_current_device().name
            return "cuda (%s)" % (name.decode() if isinstance(name, bytes) else name)
        except Exception:
            return "cuda"
    import numba
    return "cpu (%d threads)" % numba.get_num_threads()


def allocate_outputs(npix: int):
    """The kernel's output rows, with a clear error when they do not fit in memory."""
    try:
        return np.empty((6, npix)), np.empty(npix, dtype=np.int64)
    except MemoryError:
        raise NanoBraggError("a %d-pixel detector does not fit in memory (%.1f GiB of work arrays)"
                             % (npix, npix * 56 / 2 ** 30)) from None


def check_precision(backend: str, precision: str):
    """Single precision exists for the GPU kernel only (the CPU kernel is C's float64)."""
    if precision == "single" and backend != "cuda":
        raise NanoBraggError("-precision single runs on the CUDA back end only (this run uses the CPU; "
                             "use -precision double, the default)")


def array_module(backend: str):
    """numpy, or cupy for CUDA results when cupy is installed (scaling stays on the device)."""
    if backend == "cuda":
        try:
            import cupy
            return cupy
        except Exception:
            return np
    return np


def run_kernel(backend: str, prep, params, progress=None):
    """Run one kernel pass over the image.

    Returns ``(rows [6, npix], first_oob [npix], xp)``: the kernel's rows,
    as numpy arrays, or cupy arrays on the GPU when cupy is installed
    (``xp`` is the module that handles them).
    """
    npix = prep.det.fpixels * prep.det.spixels
    if backend == "cuda":
        from .kernels import cuda as kcuda
        from .kernels.physics import make_kparams
        from .kernels.variants import variant_of
        precision = prep.cfg.precision
        # the compile-time variant of this run's options (the common case is straight-line code)
        variant = variant_of(params)
        if precision == "single":
            params = make_kparams(np.float32, **params._asdict())
        tables = prep.device_tables.get(precision)
        if tables is None:
            # the HKL table is uploaded once per Simulator (prep.hkl_device is shared), the rest per image
            key = (id(prep.Fhkl), precision)
            if key not in prep.hkl_device:
                prep.hkl_device[key] = (prep.Fhkl, kcuda.device_hkl(prep.Fhkl, precision))
            tables = kcuda.device_tables(prep.sources, prep.rot, prep.phi_map, prep.phi_map_first,
                                         prep.hkl_device[key][1], prep.mask, precision, prep.panels)
            prep.device_tables[precision] = tables
        out, oob = kcuda.render_cuda(params, tables, npix, precision, variant=variant)
        xp = array_module(backend)
        if xp is np:
            return out.copy_to_host(), oob.copy_to_host(), np
        return xp.asarray(out), xp.asarray(oob), xp
    from .kernels.cpu import render as render_cpu
    out, oob = allocate_outputs(npix)
    if progress is None:
        render_cpu(params, prep.sources, prep.rot, prep.phi_map, prep.phi_map_first, prep.Fhkl, prep.mask,
                   prep.panels, out, oob, 0, npix)
        return out, oob, np
    bounds = np.linspace(0, npix, PROGRESS_CHUNKS + 1).astype(np.int64)
    for n in range(PROGRESS_CHUNKS):
        render_cpu(params, prep.sources, prep.rot, prep.phi_map, prep.phi_map_first, prep.Fhkl, prep.mask,
                   prep.panels, out, oob, int(bounds[n]), int(bounds[n + 1]))
        progress(int(round(100.0 * (n + 1) / PROGRESS_CHUNKS)))
    return out, oob, np


def run_kernel_many(backend: str, preps, params):
    """One kernel launch for K images that share everything but their rotation tables and phi maps.

    ``preps`` are images of one launch group (``simulator.launch_groups``),
    ``params`` the KParams of the launch (the first image's).  Returns
    ``(rows [6, K*npix], first_oob [K*npix], xp)``; image k is columns
    ``k*npix .. (k+1)*npix - 1``.
    """
    first = preps[0]
    k = len(preps)
    npix = first.det.fpixels * first.det.spixels
    rots = np.stack([p.rot for p in preps])
    maps = np.stack([p.phi_map for p in preps]).astype(np.int32, copy=False)
    maps_first = np.stack([p.phi_map_first for p in preps]).astype(np.int32, copy=False)
    if backend == "cuda":
        from .kernels import cuda as kcuda
        from .kernels.physics import make_kparams
        from .kernels.variants import variant_of
        precision = first.cfg.precision
        variant = variant_of(params)
        if precision == "single":
            params = make_kparams(np.float32, **params._asdict())
        key = (id(first.Fhkl), precision)
        if key not in first.hkl_device:
            first.hkl_device[key] = (first.Fhkl, kcuda.device_hkl(first.Fhkl, precision))
        tables = kcuda.device_tables_many(first.sources, rots, maps, maps_first, first.hkl_device[key][1],
                                          first.mask, precision, first.panels)
        out, oob = kcuda.render_many_cuda(params, tables, npix, k, precision, variant=variant)
        xp = array_module(backend)
        if xp is np:
            return out.copy_to_host(), oob.copy_to_host(), np
        return xp.asarray(out), xp.asarray(oob), xp
    from .kernels.cpu import render_many as render_many_cpu
    out, oob = allocate_outputs(npix * k)
    render_many_cpu(params, first.sources, rots, maps, maps_first, first.Fhkl, first.mask, first.panels, out, oob, k)
    return out, oob, np
