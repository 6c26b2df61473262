"""CUDA kernel: one GPU thread per pixel, the physics of ``physics.py``.

The per-pixel loop (layers, sub-pixels, sources, phi steps, mosaic domains)
is ``render_pixel`` itself, compiled by numba-cuda as an inlined device
function; this module only hands out pixels, moves the tables to the device
and returns the kernel's rows as device arrays.  ``precision="single"`` uses
the float32 compilation of the same source (``physics32``).

Tables live on the device for the whole render: sources, the rotated cell
vectors of every (phi step, mosaic domain), the HKL table, the mask.  The
driver scales the image on the device (cupy) and copies the float32 image
back once.
"""
import os

import numpy as np
from numba import cuda

from .physics import TRACE_FIELDS
from .variants import GENERIC, physics as variant_physics, variant_of

#: threads per block; 128 keeps enough blocks in flight for 64x64 images too
THREADS_PER_BLOCK = int(os.environ.get("NANOBRAGG_CUDA_TPB", "128"))


def _make_kernel(phys):
    render_pixel = phys.render_pixel_inline
    pixel_is_rendered = phys.pixel_is_rendered
    store_result = phys.store_result
    clear_result = phys.clear_result

    @cuda.jit
    def render_kernel(p, sources, rot, phi_map, phi_map_first, Fhkl, mask, out, out_oob, trace, first, last):
        idx = first + cuda.grid(1)
        if idx >= last:
            return
        spixel = idx // p.fpixels
        fpixel = idx - spixel * p.fpixels
        if not pixel_is_rendered(p, mask, spixel, fpixel):
            clear_result(out, out_oob, idx)
            return
        store_result(out, out_oob, idx,
                     render_pixel(p, spixel, fpixel, sources, rot, phi_map, phi_map_first, Fhkl, trace,
                                  trace, trace[0]))

    return render_kernel


#: kernels built in this process, by (precision, variant); not cached on disk (numba-cuda compiles
#: a variant at its first launch in a process)
_KERNELS = {}

#: the variant of the latest launch (for tests and logs)
last_variant = None


def kernel(precision="double", variant=GENERIC):
    """The CUDA kernel of a precision (``double`` or ``single``) and a compile-time variant, built once.

    ``variant`` is a :class:`~.variants.Variant` (``variants.variant_of(params)``
    picks the one of a run); ``GENERIC`` decides every option at run time.
    """
    key = (precision, variant)
    if key not in _KERNELS:
        _KERNELS[key] = _make_kernel(variant_physics(variant, single=(precision == "single")))
    return _KERNELS[key]


def device_hkl(Fhkl, precision="double"):
    """The HKL table on the device (upload it once and reuse it for many images)."""
    return cuda.to_device(np.ascontiguousarray(Fhkl, dtype=np.float32 if precision == "single" else np.float64))


def device_tables(sources, rot, phi_map, phi_map_first, Fhkl, mask, precision="double"):
    """Copy the per-image tables to the device (float32 ones for single precision).

    ``Fhkl`` may already be a device array (see :func:`device_hkl`).
    """
    dtype = np.float32 if precision == "single" else np.float64
    if isinstance(Fhkl, np.ndarray):
        Fhkl = device_hkl(Fhkl, precision)
    return (cuda.to_device(np.ascontiguousarray(sources, dtype=dtype)),
            cuda.to_device(np.ascontiguousarray(rot, dtype=dtype)),
            cuda.to_device(np.ascontiguousarray(phi_map)),
            cuda.to_device(np.ascontiguousarray(phi_map_first)),
            Fhkl,
            cuda.to_device(np.ascontiguousarray(mask)))


def render_cuda(params, tables, npix, precision="double", threads_per_block=None, variant=None):
    """Launch the kernel over all pixels; returns device arrays (rows [6, npix], first_oob [npix]).

    ``variant`` defaults to the one of ``params`` (:func:`~.variants.variant_of`).
    """
    global last_variant
    if variant is None:
        variant = variant_of(params)
    last_variant = variant
    tpb = threads_per_block or THREADS_PER_BLOCK
    out = cuda.device_array((6, npix), dtype=np.float64)
    oob = cuda.device_array(npix, dtype=np.int64)
    trace = cuda.device_array((1, TRACE_FIELDS), dtype=np.float32 if precision == "single" else np.float64)
    blocks = (npix + tpb - 1) // tpb
    kernel(precision, variant)[blocks, tpb](params, *tables, out, oob, trace, 0, npix)
    cuda.synchronize()
    return out, oob
