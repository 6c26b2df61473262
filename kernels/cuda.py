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

Many images per launch (``Simulator.render_many``): :func:`render_many_cuda`
runs one thread per (image, pixel) of K images that share everything but
their rotation tables and phi maps, which are stacked into one device array
each (``rot[K, nrot, domains, 9]``); sources, HKL table and mask are shared.
:func:`noise_images_cuda` draws the counter-based Poisson noise
(``noise_counter.py``) of a stack of images on the device.
"""
import hashlib
import os
import types

import numpy as np
from numba import cuda

from . import _inline, noise_counter as _nc
from ._cache import SOURCES_HASH
from .physics import TRACE_FIELDS
from .variants import GENERIC, physics as variant_physics, variant_of

#: threads per block; 128 keeps enough blocks in flight for 64x64 images too
THREADS_PER_BLOCK = int(os.environ.get("NANOBRAGG_CUDA_TPB", "128"))


# The kernels' bodies are written once, below, as plain functions whose physics functions
# (render_pixel, pixel_is_rendered, store_result, clear_result) are free names; each variant gets
# a copy of the function with those names bound to its own physics (``_bind``), named for its
# variant, precision and the kernels' sources, so that numba-cuda caches every variant on disk
# under its own name, like the CPU kernels (no closure: the cache key of a closure would pickle
# the physics dispatchers, which differ from process to process).

def _render_kernel(p, sources, rot, phi_map, phi_map_first, Fhkl, mask, panels, out, out_oob, trace, first,
                   last):
    idx = first + cuda.grid(1)
    if idx >= last:
        return
    spixel = idx // p.fpixels
    fpixel = idx - spixel * p.fpixels
    if not pixel_is_rendered(p, mask, spixel, fpixel):  # noqa: F821 (bound per variant)
        clear_result(out, out_oob, idx)  # noqa: F821
        return
    store_result(out, out_oob, idx,  # noqa: F821
                 render_pixel(p, spixel, fpixel, sources, rot, phi_map, phi_map_first, Fhkl, trace,  # noqa: F821
                              panels, trace, trace[0]))


def _render_many_kernel(p, sources, rot, phi_map, phi_map_first, Fhkl, mask, panels, out, out_oob, trace,
                        nimages):
    j = cuda.grid(1)
    npix = p.fpixels * p.spixels
    if j >= nimages * npix:
        return
    k = j // npix
    idx = j - k * npix
    spixel = idx // p.fpixels
    fpixel = idx - spixel * p.fpixels
    if not pixel_is_rendered(p, mask, spixel, fpixel):  # noqa: F821 (bound per variant)
        clear_result(out, out_oob, j)  # noqa: F821
        return
    store_result(out, out_oob, j,  # noqa: F821
                 render_pixel(p, spixel, fpixel, sources, rot[k], phi_map[k], phi_map_first[k], Fhkl,  # noqa: F821
                              trace, panels, trace, trace[0]))


def cache_tag(kind, precision, variant):
    """The name suffix of a kernel in the on-disk cache: kind, precision, variant and the kernels' sources."""
    key = repr((kind, precision, tuple(int(x) for x in variant))).encode() + SOURCES_HASH
    return "%s_%s" % (precision, hashlib.sha256(key).hexdigest()[:16])


def _bind(template, phys, tag):
    """``template`` with its physics names bound to ``phys`` and its qualified name made unique for the cache."""
    glob = dict(template.__globals__)
    glob.update(render_pixel=phys.render_pixel_inline, pixel_is_rendered=phys.pixel_is_rendered,
                store_result=phys.store_result, clear_result=phys.clear_result)
    fn = types.FunctionType(template.__code__, glob, template.__name__.lstrip("_"))
    fn.__qualname__ = "%s_%s" % (fn.__name__, tag)
    return fn


def _jit(fn):
    """``cuda.jit`` with the on-disk cache, or without it where no cache directory is writable."""
    _inline.apply_cuda()        # a compilation may follow: without the inliner's copies (kernels/_inline.py)
    try:
        return cuda.jit(cache=True)(fn)
    except RuntimeError as exc:          # numba-cuda: "cannot cache function ...: no locator available"
        if "cannot cache" not in str(exc):
            raise
        return cuda.jit(fn)


#: kernels built in this process, by (kind, precision, variant); numba-cuda keeps each one's
#: compiled code on disk (beside this file, or the user cache) under its :func:`cache_tag`
_KERNELS = {}

#: the variant of the latest launch (for tests and logs)
last_variant = None


def _built(kind, template, precision, variant):
    key = (kind, precision, tuple(int(x) for x in variant))
    if key not in _KERNELS:
        phys = variant_physics(variant, single=(precision == "single"))
        _KERNELS[key] = _jit(_bind(template, phys, cache_tag(kind, precision, variant)))
    return _KERNELS[key]


def kernel(precision="double", variant=GENERIC):
    """The CUDA kernel of a precision (``double`` or ``single``) and a compile-time variant, built once.

    ``variant`` is a :class:`~.variants.Variant` (``variants.variant_of(params)``
    picks the one of a run); ``GENERIC`` decides every option at run time.
    """
    return _built("one", _render_kernel, precision, variant)


def many_kernel(precision="double", variant=GENERIC):
    """The many-images kernel of a precision and variant (:func:`render_many_cuda`), built once."""
    return _built("many", _render_many_kernel, precision, variant)


def device_hkl(Fhkl, precision="double"):
    """The HKL table on the device (upload it once and reuse it for many images)."""
    return cuda.to_device(np.ascontiguousarray(Fhkl, dtype=np.float32 if precision == "single" else np.float64))


def device_tables(sources, rot, phi_map, phi_map_first, Fhkl, mask, precision="double", panels=None):
    """Copy the per-image tables to the device (float32 ones for single precision).

    ``Fhkl`` may already be a device array (see :func:`device_hkl`);
    ``panels`` is the panel table (``physics.PANEL_COLUMNS``; a dummy row when None).
    """
    dtype = np.float32 if precision == "single" else np.float64
    if isinstance(Fhkl, np.ndarray):
        Fhkl = device_hkl(Fhkl, precision)
    return (cuda.to_device(np.ascontiguousarray(sources, dtype=dtype)),
            cuda.to_device(np.ascontiguousarray(rot, dtype=dtype)),
            cuda.to_device(np.ascontiguousarray(phi_map)),
            cuda.to_device(np.ascontiguousarray(phi_map_first)),
            Fhkl,
            cuda.to_device(np.ascontiguousarray(mask)),
            cuda.to_device(_panel_table(panels, dtype)))


def _panel_table(panels, dtype):
    from .physics import PANEL_COLUMNS
    if panels is None:
        panels = np.zeros((1, len(PANEL_COLUMNS)))
    return np.ascontiguousarray(panels, dtype=dtype)


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


def device_tables_many(sources, rots, phi_maps, phi_maps_first, Fhkl, mask, precision="double", panels=None):
    """Upload the tables of K images: shared sources, HKL table, mask; stacked rotation tables and phi maps.

    ``rots`` is float[K, nrot, domains, 9], ``phi_maps`` and ``phi_maps_first``
    int32[K, phisteps] (each one array, uploaded in one copy).
    """
    dtype = np.float32 if precision == "single" else np.float64
    if isinstance(Fhkl, np.ndarray):
        Fhkl = device_hkl(Fhkl, precision)
    return (cuda.to_device(np.ascontiguousarray(sources, dtype=dtype)),
            cuda.to_device(np.ascontiguousarray(rots, dtype=dtype)),
            cuda.to_device(np.ascontiguousarray(phi_maps, dtype=np.int32)),
            cuda.to_device(np.ascontiguousarray(phi_maps_first, dtype=np.int32)),
            Fhkl,
            cuda.to_device(np.ascontiguousarray(mask)),
            cuda.to_device(_panel_table(panels, dtype)))


def render_many_cuda(params, tables, npix, nimages, precision="double", threads_per_block=None, variant=None):
    """One launch over ``nimages`` x ``npix`` threads; returns device arrays (rows [6, K*npix], oob [K*npix]).

    Image k is columns ``k*npix .. (k+1)*npix - 1`` (the layout of the CPU's ``render_many_cpu``).
    """
    global last_variant
    if variant is None:
        variant = variant_of(params)
    last_variant = variant
    tpb = threads_per_block or THREADS_PER_BLOCK
    total = npix * nimages
    out = cuda.device_array((6, total), dtype=np.float64)
    oob = cuda.device_array(total, dtype=np.int64)
    trace = cuda.device_array((1, TRACE_FIELDS), dtype=np.float32 if precision == "single" else np.float64)
    blocks = (total + tpb - 1) // tpb
    many_kernel(precision, variant)[blocks, tpb](params, *tables, out, oob, trace, nimages)
    cuda.synchronize()
    return out, oob


def _noise_kernel_body(images, keys, out, npix, fpixels, roi_xmin, roi_xmax, roi_ymin, roi_ymax, adc_offset):
    j = cuda.grid(1)
    if j >= images.shape[0] * npix:
        return
    _nc.noise_pixel(images, keys, out, j, npix, fpixels, roi_xmin, roi_xmax, roi_ymin, roi_ymax, adc_offset)


def _noise_kernel():
    """The counter-based noise kernel, built once (cached on disk under the kernels' source hash)."""
    key = ("noise",)
    if key not in _KERNELS:
        fn = types.FunctionType(_noise_kernel_body.__code__, _noise_kernel_body.__globals__, "noise_kernel")
        fn.__qualname__ = "noise_kernel_%s" % hashlib.sha256(SOURCES_HASH).hexdigest()[:16]
        _KERNELS[key] = _jit(fn)
    return _KERNELS[key]


def noise_images_cuda(images, keys, fpixels, roi, adc_offset, threads_per_block=None):
    """Counter-based noise images (``noise_counter.py``) of a stack of float images, on the device.

    ``images``: float32[K, npix] on the device (a numba device array, a cupy
    array, or a host array, which is uploaded); ``keys``: uint64[K, 2]
    (:func:`~.noise_counter.philox_keys`).  Returns the uint16[K, npix]
    noise images as a device array.
    """
    if isinstance(images, np.ndarray):
        images = cuda.to_device(np.ascontiguousarray(images, dtype=np.float32))
    elif not cuda.is_cuda_array(images) or not hasattr(images, "copy_to_host"):
        images = cuda.as_cuda_array(images)
    n, npix = images.shape
    out = cuda.device_array((n, npix), dtype=np.uint16)
    tpb = threads_per_block or THREADS_PER_BLOCK
    blocks = (n * npix + tpb - 1) // tpb
    if n * npix:
        _noise_kernel()[blocks, tpb](images, cuda.to_device(np.ascontiguousarray(keys, dtype=np.uint64)), out,
                                    npix, fpixels, roi[0], roi[1], roi[2], roi[3], float(adc_offset))
        cuda.synchronize()
    return out
