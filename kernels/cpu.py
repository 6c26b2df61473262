"""CPU kernel: hands the pixels of the image to every core with ``prange``.

The physics is :func:`nanobrag_numba.kernels.physics.render_pixel`; this
module only decides which pixels to compute (ROI, mask) and where the
results go.  Compiled once and cached on disk (``cache=True``), so later
runs start without compiling.

Compile-time variants (``variants.py``): the common runs get a kernel whose
physics has their options fixed (no dead branches in the loop):
:data:`CPU_COMMON` (square crystal, nothing else switched on) and
:data:`CPU_COMMON_INTERP` (the same with tricubic interpolation, e.g. every
run with N <= 2); every other run uses the generic kernel
:func:`render_cpu`, which decides each option at run time.  The ROI and mask
stay a run-time test in every CPU kernel (one comparison per pixel), so that
a one-pixel ``-roi`` run loads the kernel of the whole image.  Each variant
is the code of :func:`render_cpu` with the globals of its physics, under its
own qualified name ``render_cpu__<tag>`` (its own on-disk cache entry);
:func:`kernel` builds it at first use (only the variant a run needs
compiles), ``kernel_name`` gives the name the start-up note checks.
"""
import math
import re
import sys
import types

import numba
import numpy as np
from numba import njit, prange

#: pixels per work item handed to a thread (a block): the cost of a pixel
#: varies across the detector (the upper half of B1 takes 1.4x longer than
#: the lower), so small dynamic blocks balance the threads
CHUNK_PIXELS = 64

from .physics import (ANY, ON, TRACE_FIELDS, clear_result, dmin_skips, pixel_is_rendered, render_pixel,
                      render_pixel_inline,
                      store_result, subpixel_position, unitize3)
from .variants import COMMON, GENERIC, describe, physics as variant_physics, variant_of

#: the specialised CPU kernels: the common case, and with tricubic interpolation; mask/ROI at run time
CPU_COMMON = COMMON._replace(mask=ANY)
CPU_COMMON_INTERP = CPU_COMMON._replace(interpolate=ON)
CPU_VARIANTS = (CPU_COMMON, CPU_COMMON_INTERP)


def cpu_variant(p):
    """The CPU kernel variant of a run with these ``KParams``: a specialised one, or ``GENERIC``."""
    v = variant_of(p)._replace(mask=ANY)
    return v if v in CPU_VARIANTS else GENERIC


def kernel_name(variant):
    """Attribute name of a variant's kernel in this module (``render_cpu`` for the generic one)."""
    if variant == GENERIC:
        return "render_cpu"
    return "render_cpu__" + re.sub(r"[^A-Za-z0-9]+", "_", describe(variant))


def render(p, sources, rot, phi_map, phi_map_first, Fhkl, mask, out, out_oob, first, last, variant=None):
    """Run the kernel of ``variant`` (default: :func:`cpu_variant` of ``p``) with dynamic chunks."""
    k = kernel(cpu_variant(p) if variant is None else variant)
    previous = numba.set_parallel_chunksize(1)      # a work item is a block of CHUNK_PIXELS pixels
    try:
        k(p, sources, rot, phi_map, phi_map_first, Fhkl, mask, out, out_oob, first, last)
    finally:
        numba.set_parallel_chunksize(previous)


@njit(parallel=True, cache=True)
def render_cpu(p, sources, rot, phi_map, phi_map_first, Fhkl, mask, out, out_oob, first, last):
    """Render pixels ``first <= index < last`` (raster order) on all CPU cores.

    Parameters
    ----------
    p, sources, rot, phi_map, phi_map_first, Fhkl
        See :mod:`nanobrag_numba.kernels.physics`.
    mask : uint16[npix]
        Pixel mask (used when ``p.use_mask``).
    out : float64[6, npix]
        Rows: I, capture factor, polar factor, omega factor, background
        factor, omega sum (see ``render_pixel``).  Pixels that are not
        rendered get zeros.
    out_oob : int64[npix]
        First interpolation evaluation out of the hkl table, -1 if none.
    first, last : int
        The range of pixel indices to render (the whole image, or one chunk
        of it when a progress meter is shown).
    """
    trace = np.zeros((1, TRACE_FIELDS))
    rot_t = transposed_rotations(p, rot)
    nblocks = (last - first + CHUNK_PIXELS - 1) // CHUNK_PIXELS
    for block in prange(nblocks):
        start = first + block * CHUNK_PIXELS
        render_block(p, sources, rot, phi_map, phi_map_first, Fhkl, mask, out, out_oob, trace, rot_t, start,
                     min(start + CHUNK_PIXELS, last))


@njit(inline="never")
def render_block(p, sources, rot, phi_map, phi_map_first, Fhkl, mask, out, out_oob, trace, rot_t, start, stop):
    """Pixels ``start <= index < stop`` on one thread: the physics inlined into this loop, so a pixel
    costs no call (the ~90 scalars of ``p`` would be passed one by one)."""
    scratch = np.empty(rot_t.shape[1])          # one per block of pixels, not per pixel
    for idx in range(start, stop):
        spixel = idx // p.fpixels
        fpixel = idx - spixel * p.fpixels
        if not pixel_is_rendered(p, mask, spixel, fpixel):
            clear_result(out, out_oob, idx)
            continue
        store_result(out, out_oob, idx,
                     render_pixel_inline(p, spixel, fpixel, sources, rot, phi_map, phi_map_first, Fhkl, trace,
                                         rot_t, scratch))


@njit(inline="always")
def transposed_rotations(p, rot):
    """``rot[phi step, domain, c]`` as ``[c, phi step * mosaic_domains + domain]`` (the SIMD pass's table)."""
    nmos = p.mosaic_domains
    rot_t = np.empty((9, max(1, p.phisteps * nmos)))
    for r in range(p.phisteps):
        for m in range(nmos):
            for c in range(9):
                rot_t[c, r * nmos + m] = rot[r, m, c]
    return rot_t


@njit(cache=True)
def trace_cpu(p, spixel, fpixel, sources, rot, phi_map, phi_map_first, Fhkl, trace):
    """One pixel on one core, recording every evaluation into ``trace``.

    ``p.trace_pixel`` must be the pixel's index; returns what
    ``render_pixel`` returns.
    """
    return render_pixel(p, spixel, fpixel, sources, rot, phi_map, phi_map_first, Fhkl, trace, trace, trace[0])


@njit(cache=True)
def first_phi_loop_pixel(p, sources, mask):
    """Index of the first pixel, in raster order, whose phi loop runs.

    With ``-c_quirks`` the spindle rotation that C skips at phi = 0 carries
    over from the previous evaluation, except in the very first phi loop of
    the image, which uses the unrotated cell.  That loop belongs to the first
    rendered pixel with a (layer, sub-pixel, source) that ``-dmin`` keeps.
    Returns -1 when no pixel runs a phi loop.
    """
    for idx in range(p.fpixels * p.spixels):
        spixel = idx // p.fpixels
        fpixel = idx - spixel * p.fpixels
        if not pixel_is_rendered(p, mask, spixel, fpixel):
            continue
        if p.dmin <= 0.0:
            return idx
        for thick_tic in range(p.thicksteps):
            Odet = thick_tic * p.thickstep
            for subS in range(p.oversample):
                for subF in range(p.oversample):
                    px, py, pz, Fdet, Sdet = subpixel_position(p, fpixel, spixel, subF, subS, Odet)
                    dx, dy, dz, airpath = unitize3(px, py, pz)
                    for source in range(p.nsources):
                        lam = sources[source, 3]
                        sx = (dx + sources[source, 0]) / lam
                        sy = (dy + sources[source, 1]) / lam
                        sz = (dz + sources[source, 2]) / lam
                        stol = 0.5 * math.sqrt(sx * sx + sy * sy + sz * sz)
                        if not dmin_skips(p, stol):
                            return idx
    return -1


_KERNELS = {}


def kernel(variant=GENERIC):
    """The CPU kernel (a Numba dispatcher) of a compile-time variant, built once per process."""
    if variant == GENERIC:
        return render_cpu
    variant = type(GENERIC)(*variant)
    disp = _KERNELS.get(variant)
    if disp is None:
        phys = variant_physics(variant, vector=True)
        # the kernel's globals: this module's, with the variant's physics; a registered module of a
        # stable name, which Numba's cache imports when it loads the kernel in a later process
        mod = types.ModuleType("%s_%s" % (__name__, kernel_name(variant)))
        mod.__dict__.update({k: v for k, v in globals().items() if not k.startswith("__")})
        for name in ("render_pixel", "render_pixel_inline", "pixel_is_rendered", "clear_result", "store_result"):
            setattr(mod, name, getattr(phys, name))
        # render_block too, with the variant's physics (a function object of its own in that module)
        blk = render_block.py_func
        mod.render_block = njit(inline="never")(
            types.FunctionType(blk.__code__, mod.__dict__, blk.__name__, blk.__defaults__, blk.__closure__))
        mod.__file__ = __file__
        sys.modules[mod.__name__] = mod
        py = render_cpu.py_func
        fn = types.FunctionType(py.__code__, mod.__dict__, py.__name__, py.__defaults__, py.__closure__)
        fn.__qualname__ = kernel_name(variant)      # the on-disk cache entry of this variant
        fn.__doc__ = py.__doc__
        disp = _KERNELS[variant] = njit(parallel=True, cache=True)(fn)
    return disp


def __getattr__(name):
    """``render_cpu__<tag>``: the kernel of a specialised variant (start-up checks of its cache entry)."""
    for v in CPU_VARIANTS:
        if name == kernel_name(v):
            return kernel(v)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
