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
import re
import sys
import types

import numba
import numpy as np
from numba import njit, prange

#: pixels per work item handed to a thread (a block): the cost of a pixel
#: varies across the detector (the upper half of B1 takes 1.4x longer than
#: the lower), so small dynamic blocks balance the threads
CHUNK_PIXELS = 256

#: a run of at most this many inner evaluations (pixels x sub-pixels x layers x sources x phi steps x
#: mosaic domains) renders on the calling thread: it takes about 3 ms there (about 100 ns per
#: evaluation), less than starting the thread pool, and its first run compiles no parallel loop
#: (about 5 s of CPU less); the pixels are the same function either way, so the images are identical
SERIAL_EVALUATIONS = 1 << 15

from .physics import (ANY, ON, PANEL_COLUMNS, TRACE_FIELDS, clear_result, dmin_skips, panel_geometry, panel_position,
                      pixel_is_rendered, render_pixel, render_pixel_inline, source_scattering, store_result,
                      unitize3)
from .variants import COMMON, GENERIC, describe, physics as variant_physics, variant_of

#: the specialised CPU kernels: the common case, and with tricubic interpolation; mask/ROI at run time
CPU_COMMON = COMMON._replace(mask=ANY)
CPU_COMMON_INTERP = CPU_COMMON._replace(interpolate=ON)
CPU_VARIANTS = (CPU_COMMON, CPU_COMMON_INTERP)


def cpu_variant(p):
    """The CPU kernel variant of a run with these ``KParams``: a specialised one, or ``GENERIC``."""
    v = variant_of(p)._replace(mask=ANY)
    return v if v in CPU_VARIANTS else GENERIC


def evaluations(p):
    """The number of inner evaluations of a whole image with these ``KParams``."""
    return (p.fpixels * p.spixels * p.oversample * p.oversample * p.thicksteps * p.nsources * p.phisteps
            * p.mosaic_domains)


def serial_run(p):
    """Whether a run renders on the calling thread (:data:`SERIAL_EVALUATIONS`)."""
    return evaluations(p) <= SERIAL_EVALUATIONS


def kernel_name(variant, many=False, serial=False):
    """Attribute name of a variant's kernel in this module (``render_cpu`` for the generic one).

    ``many``: the kernel of ``render_many`` (``render_many_cpu``, ``render_many_cpu__<tag>``);
    ``serial``: the one-thread kernel of small runs (``render_serial_cpu``, ``render_serial_cpu__<tag>``:
    :func:`render_block` compiled as a kernel of its own).
    """
    base = "render_many_cpu" if many else ("render_serial_cpu" if serial else "render_cpu")
    if variant == GENERIC:
        return base
    return base + "__" + re.sub(r"[^A-Za-z0-9]+", "_", describe(variant))


def _panel_table(panels):
    """The panel table, or a dummy row where a caller has none (a one-panel run never reads it)."""
    if panels is None:
        return np.zeros((1, len(PANEL_COLUMNS)))
    return panels


def transposed_rotations(p, rot):
    """``rot[phi step, domain, c]`` as ``[c, phi step * mosaic_domains + domain]`` (the SIMD pass's table).

    ``rot``: one image's table ``[nrot, domains, 9]``, or K images' stacked ``[K, nrot, domains, 9]`` (then
    ``[K, 9, ...]``).  Made here for every CPU kernel (one copy of the values, before the launch).
    """
    n = p.phisteps * p.mosaic_domains
    lead = rot.shape[:-3]
    rot_t = np.zeros(lead + (9, max(1, n)))
    rot_t[..., :n] = np.swapaxes(rot[..., :p.phisteps, :p.mosaic_domains, :].reshape(lead + (n, 9)), -1, -2)
    return rot_t


def render(p, sources, rot, phi_map, phi_map_first, Fhkl, mask, panels, out, out_oob, first, last, variant=None):
    """Run the kernel of ``variant`` (default: :func:`cpu_variant` of ``p``) with dynamic chunks, or on
    this thread for a small run (:func:`serial_run`)."""
    serial = serial_run(p)
    k = kernel(cpu_variant(p) if variant is None else variant, serial=serial)
    panels = _panel_table(panels)
    rot_t = transposed_rotations(p, rot)
    if serial:          # no thread pool started: the block function itself, over all the pixels
        trace = np.zeros((1, TRACE_FIELDS))
        k(p, sources, rot, phi_map, phi_map_first, Fhkl, mask, panels, out, out_oob, trace, rot_t, first, last, 0)
        return
    previous = numba.set_parallel_chunksize(1)      # a work item is a block of CHUNK_PIXELS pixels
    try:
        k(p, sources, rot, phi_map, phi_map_first, Fhkl, mask, panels, out, out_oob, rot_t, first, last)
    finally:
        numba.set_parallel_chunksize(previous)


@njit(parallel=True, cache=True)
def render_cpu(p, sources, rot, phi_map, phi_map_first, Fhkl, mask, panels, out, out_oob, rot_t, first, last):
    """Render pixels ``first <= index < last`` (raster order) on all CPU cores.

    Parameters
    ----------
    p, sources, rot, phi_map, phi_map_first, Fhkl
        See :mod:`nanobrag_numba.kernels.physics`.
    mask : uint16[npix]
        Pixel mask (used when ``p.use_mask``).
    panels : float64[npanels, len(PANEL_COLUMNS)]
        The geometry of each detector panel (read when ``p.npanels > 1``).
    out : float64[6, npix]
        Rows: I, capture factor, polar factor, omega factor, background
        factor, omega sum (see ``render_pixel``).  Pixels that are not
        rendered get zeros.
    out_oob : int64[npix]
        First interpolation evaluation out of the hkl table, -1 if none.
    rot_t : float64[9, phisteps * mosaic_domains]
        ``rot`` transposed for the SIMD pass (:func:`transposed_rotations`).
    first, last : int
        The range of pixel indices to render (the whole image, or one chunk
        of it when a progress meter is shown).
    """
    trace = np.zeros((1, TRACE_FIELDS))
    nblocks = (last - first + CHUNK_PIXELS - 1) // CHUNK_PIXELS
    for block in prange(nblocks):
        start = first + block * CHUNK_PIXELS
        render_block(p, sources, rot, phi_map, phi_map_first, Fhkl, mask, panels, out, out_oob, trace, rot_t, start,
                     min(start + CHUNK_PIXELS, last), 0)


@njit(inline="never")
def render_block(p, sources, rot, phi_map, phi_map_first, Fhkl, mask, panels, out, out_oob, trace, rot_t, start,
                 stop, base):
    """Pixels ``start <= index < stop`` of an image on one thread, written to columns ``base + index``
    of ``out``: the physics inlined into this loop, so a pixel costs no call (the ~90 scalars of ``p``
    would be passed one by one)."""
    scratch = np.empty(rot_t.shape[1])          # one per block of pixels, not per pixel
    for idx in range(start, stop):
        spixel = idx // p.fpixels
        fpixel = idx - spixel * p.fpixels
        if not pixel_is_rendered(p, mask, spixel, fpixel):
            clear_result(out, out_oob, base + idx)
            continue
        store_result(out, out_oob, base + idx,
                     render_pixel_inline(p, spixel, fpixel, sources, rot, phi_map, phi_map_first, Fhkl, trace,
                                         panels, rot_t, scratch))


def render_many(p, sources, rot, phi_map, phi_map_first, Fhkl, mask, panels, out, out_oob, nimages, variant=None):
    """Run the many-image kernel of ``variant`` (default: :func:`cpu_variant` of ``p``) with dynamic chunks."""
    k = kernel(cpu_variant(p) if variant is None else variant, many=True)
    panels = _panel_table(panels)
    previous = numba.set_parallel_chunksize(1)      # a work item is a block of CHUNK_PIXELS pixels of one image
    try:
        k(p, sources, rot, phi_map, phi_map_first, Fhkl, mask, panels, out, out_oob, transposed_rotations(p, rot),
          nimages)
    finally:
        numba.set_parallel_chunksize(previous)


@njit(parallel=True, cache=True)
def render_many_cpu(p, sources, rot, phi_map, phi_map_first, Fhkl, mask, panels, out, out_oob, rot_t, nimages):
    """Render ``nimages`` images that differ only in their rotation tables, in one parallel loop.

    The loop runs over (image, block of ``CHUNK_PIXELS`` pixels), so the
    threads stay busy across image boundaries; every block is the same
    :func:`render_block` as in :func:`render_cpu`, with image ``k``'s tables
    (and the same compile-time variants, :func:`kernel`).

    Parameters
    ----------
    p, sources, Fhkl, mask, panels
        Shared by every image (see :func:`render_cpu`).
    rot : float64[nimages, nrot, mosaic_domains, 9]
        The rotation table of each image, stacked.
    phi_map, phi_map_first : int32[nimages, phisteps]
        The phi maps of each image.
    out : float64[6, nimages * npix]
        Rows as in :func:`render_cpu`; image ``k`` is columns ``k*npix .. (k+1)*npix - 1``.
    out_oob : int64[nimages * npix]
    rot_t : float64[nimages, 9, phisteps * mosaic_domains]
        Each image's ``rot`` transposed (:func:`transposed_rotations`).
    nimages : int
    """
    trace = np.zeros((1, TRACE_FIELDS))
    npix = p.fpixels * p.spixels
    per_image = (npix + CHUNK_PIXELS - 1) // CHUNK_PIXELS
    for block in prange(nimages * per_image):
        k = block // per_image
        start = (block - k * per_image) * CHUNK_PIXELS
        render_block(p, sources, rot[k], phi_map[k], phi_map_first[k], Fhkl, mask, panels, out, out_oob, trace,
                     rot_t[k], start, min(start + CHUNK_PIXELS, npix), k * npix)


@njit(cache=True)
def trace_cpu(p, spixel, fpixel, sources, rot, phi_map, phi_map_first, Fhkl, trace, panels):
    """One pixel on one core, recording every evaluation into ``trace``.

    ``p.trace_pixel`` must be the pixel's index; returns what
    ``render_pixel`` returns.
    """
    return render_pixel(p, spixel, fpixel, sources, rot, phi_map, phi_map_first, Fhkl, trace, panels, trace,
                        trace[0])


@njit(cache=True)
def first_phi_loop_pixel(p, sources, mask, panels):
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
        g, prow = panel_geometry(p, panels, spixel)
        for thick_tic in range(p.thicksteps):
            Odet = thick_tic * g.thickstep
            for subS in range(p.oversample):
                for subF in range(p.oversample):
                    px, py, pz, Fdet, Sdet = panel_position(p, g, fpixel, prow, subF, subS, Odet)
                    dx, dy, dz, airpath = unitize3(px, py, pz)
                    for source in range(p.nsources):
                        stol = source_scattering(sources, source, dx, dy, dz)[7]
                        if not dmin_skips(p, stol):
                            return idx
    return -1


_KERNELS = {}
_MODULES = {}


def _variant_module(variant):
    """The globals of a variant's kernels: this module's, with the variant's physics (built once).

    A registered module of a stable name, which Numba's cache imports when it
    loads a kernel in a later process; :func:`render_block` is re-made in it so
    that it inlines the variant's physics (one per variant, shared by the
    single- and many-image kernels).
    """
    mod = _MODULES.get(variant)
    if mod is None:
        phys = variant_physics(variant, vector=True)
        mod = types.ModuleType("%s_%s" % (__name__, kernel_name(variant)))
        mod.__dict__.update({k: v for k, v in globals().items() if not k.startswith("__")})
        for name in ("render_pixel", "render_pixel_inline", "pixel_is_rendered", "clear_result", "store_result",
                     "panel_geometry", "panel_position", "dmin_skips"):
            setattr(mod, name, getattr(phys, name))
        blk = getattr(render_block, "py_func", render_block)     # (the plain function under NUMBA_DISABLE_JIT)
        mod.render_block = njit(inline="never")(
            types.FunctionType(blk.__code__, mod.__dict__, blk.__name__, blk.__defaults__, blk.__closure__))
        mod.__file__ = __file__
        sys.modules[mod.__name__] = mod
        _MODULES[variant] = mod
    return mod


def kernel(variant=GENERIC, many=False, serial=False):
    """The CPU kernel (a Numba dispatcher) of a compile-time variant, built once per process.

    ``many``: the kernel of :func:`render_many` (:func:`render_many_cpu`'s code) instead of
    :func:`render_cpu`'s; ``serial``: :func:`render_block` itself as a cached kernel (one thread, small
    runs: :func:`render`).
    """
    serial = serial and not many
    variant = type(GENERIC)(*variant)
    key = (variant, many, serial)
    disp = _KERNELS.get(key)
    if disp is None and variant == GENERIC and not serial:
        disp = render_many_cpu if many else render_cpu
    if disp is None:
        mod = _variant_module(variant) if variant != GENERIC else sys.modules[__name__]
        generic = render_many_cpu if many else (render_block if serial else render_cpu)
        py = getattr(generic, "py_func", generic)
        fn = types.FunctionType(py.__code__, mod.__dict__, py.__name__, py.__defaults__, py.__closure__)
        fn.__qualname__ = kernel_name(variant, many, key[2])      # the on-disk cache entry of this variant
        fn.__doc__ = py.__doc__
        disp = _KERNELS[key] = njit(parallel=not serial, cache=True)(fn)
    return disp


def __getattr__(name):
    """``render_cpu__<tag>``, ``render_many_cpu__<tag>``, ``render_serial_cpu__<tag>``: the kernels of a
    specialised variant (start-up checks of their cache entries)."""
    if name == "render_serial_cpu":
        return kernel(GENERIC, serial=True)
    for v in CPU_VARIANTS:
        for many, serial in ((False, False), (True, False), (False, True)):
            if name == kernel_name(v, many, serial):
                return kernel(v, many, serial)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
