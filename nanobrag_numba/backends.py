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


def cuda_available() -> bool:
    """True when numba.cuda finds a usable GPU (never raises)."""
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
            return "cuda (%s)" % cuda.get_current_device().name.decode()
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


def run_kernel(backend: str, prep, params, progress=None):
    """Run one kernel pass over the image; returns ``(rows [6, npix], first_oob [npix])``."""
    npix = prep.det.fpixels * prep.det.spixels
    if backend == "cuda":
        from .kernels import cuda as kcuda
        return kcuda.render_cuda_host(params, prep.sources, prep.rot, prep.phi_map, prep.phi_map_first,
                                      prep.Fhkl, prep.mask, precision=prep.cfg.precision)
    from .kernels.cpu import render_cpu
    out, oob = allocate_outputs(npix)
    if progress is None:
        render_cpu(params, prep.sources, prep.rot, prep.phi_map, prep.phi_map_first, prep.Fhkl, prep.mask,
                   out, oob, 0, npix)
        return out, oob
    bounds = np.linspace(0, npix, PROGRESS_CHUNKS + 1).astype(np.int64)
    for n in range(PROGRESS_CHUNKS):
        render_cpu(params, prep.sources, prep.rot, prep.phi_map, prep.phi_map_first, prep.Fhkl, prep.mask,
                   out, oob, int(bounds[n]), int(bounds[n + 1]))
        progress(int(round(100.0 * (n + 1) / PROGRESS_CHUNKS)))
    return out, oob
