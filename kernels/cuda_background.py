"""CUDA kernel of the amorphous background: one GPU thread per pixel, ``background.background_pixel``.

The per-pixel loop is the CPU kernels' own function, compiled by numba-cuda as
an inlined device function; each thread finds its table rows by binary
search (the table must increase strictly; the caller falls back to the CPU
walk otherwise).  Built on first use in a process.
"""
import os

import numpy as np
from numba import cuda

from .background import background_pixel, clear, in_roi, store

THREADS_PER_BLOCK = int(os.environ.get("NANOBRAGG_CUDA_TPB", "128"))
_KERNEL = []


def kernel():
    """The CUDA kernel, built once per process."""
    if not _KERNEL:
        @cuda.jit
        def background_kernel(p, sources, weights, stol_of, F_of, out):
            idx = cuda.grid(1)
            if idx >= p.fpixels * p.spixels:
                return
            spixel = idx // p.fpixels
            fpixel = idx - spixel * p.fpixels
            if not in_roi(p, spixel, fpixel):
                clear(out, idx)
                return
            store(out, idx, background_pixel(p, spixel, fpixel, sources, weights, stol_of, F_of, -1))
        _KERNEL.append(background_kernel)
    return _KERNEL[0]


def render(params, sources, weights, stol_of, F_of, nrows, threads_per_block=None):
    """Run the kernel over every pixel; returns the rows as a NumPy float64[nrows, npix] array."""
    npix = params.fpixels * params.spixels
    tpb = threads_per_block or THREADS_PER_BLOCK
    out = cuda.device_array((nrows, npix), dtype=np.float64)
    args = [cuda.to_device(np.ascontiguousarray(a, dtype=np.float64)) for a in (sources, weights, stol_of, F_of)]
    kernel()[(npix + tpb - 1) // tpb, tpb](params, *args, out)
    cuda.synchronize()
    return out.copy_to_host()
