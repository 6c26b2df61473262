"""CPU kernel: hands the pixels of the image to every core with ``prange``.

The physics is :func:`nanobrag_numba.kernels.physics.render_pixel`; this
module only decides which pixels to compute (ROI, mask) and where the
results go.  Compiled once and cached on disk (``cache=True``), so later
runs start without compiling.
"""
import math

import numba
import numpy as np
from numba import njit, prange

#: pixels per work item handed to a thread: the cost of a pixel varies
#: across the detector (the upper half of B1 takes 1.4x longer than the
#: lower), so small dynamic chunks balance the threads
CHUNK_PIXELS = 64

from .physics import (TRACE_FIELDS, clear_result, dmin_skips, panel_geometry, panel_position, pixel_is_rendered,
                      render_pixel, store_result, unitize3)


def render(p, sources, rot, phi_map, phi_map_first, Fhkl, mask, panels, out, out_oob, first, last):
    """Run :func:`render_cpu` with dynamic chunks of ``CHUNK_PIXELS`` pixels."""
    previous = numba.set_parallel_chunksize(CHUNK_PIXELS)
    try:
        render_cpu(p, sources, rot, phi_map, phi_map_first, Fhkl, mask, panels, out, out_oob, first, last)
    finally:
        numba.set_parallel_chunksize(previous)


@njit(parallel=True, cache=True)
def render_cpu(p, sources, rot, phi_map, phi_map_first, Fhkl, mask, panels, out, out_oob, first, last):
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
    first, last : int
        The range of pixel indices to render (the whole image, or one chunk
        of it when a progress meter is shown).
    """
    trace = np.zeros((1, TRACE_FIELDS))
    for idx in prange(first, last):
        spixel = idx // p.fpixels
        fpixel = idx - spixel * p.fpixels
        if not pixel_is_rendered(p, mask, spixel, fpixel):
            clear_result(out, out_oob, idx)
            continue
        store_result(out, out_oob, idx,
                     render_pixel(p, spixel, fpixel, sources, rot, phi_map, phi_map_first, Fhkl, trace, panels))


def render_many(p, sources, rot, phi_map, phi_map_first, Fhkl, mask, panels, out, out_oob, nimages):
    """Run :func:`render_many_cpu` with dynamic chunks of ``CHUNK_PIXELS`` pixels."""
    previous = numba.set_parallel_chunksize(CHUNK_PIXELS)
    try:
        render_many_cpu(p, sources, rot, phi_map, phi_map_first, Fhkl, mask, panels, out, out_oob, nimages)
    finally:
        numba.set_parallel_chunksize(previous)


@njit(parallel=True, cache=True)
def render_many_cpu(p, sources, rot, phi_map, phi_map_first, Fhkl, mask, panels, out, out_oob, nimages):
    """Render ``nimages`` images that differ only in their rotation tables, in one parallel loop.

    The loop runs over image x pixel (``prange(nimages * npix)``), so the
    threads stay busy across image boundaries; every pixel is the same call
    of ``render_pixel`` as in :func:`render_cpu`, with image ``k``'s tables.

    Parameters
    ----------
    p, sources, Fhkl, mask
        Shared by every image (see :func:`render_cpu`).
    rot : float64[nimages, nrot, mosaic_domains, 9]
        The rotation table of each image, stacked.
    phi_map, phi_map_first : int32[nimages, phisteps]
        The phi maps of each image.
    out : float64[6, nimages * npix]
        Rows as in :func:`render_cpu`; image ``k`` is columns ``k*npix .. (k+1)*npix - 1``.
    out_oob : int64[nimages * npix]
    nimages : int
    """
    trace = np.zeros((1, TRACE_FIELDS))
    npix = p.fpixels * p.spixels
    for j in prange(nimages * npix):
        k = j // npix
        idx = j - k * npix
        spixel = idx // p.fpixels
        fpixel = idx - spixel * p.fpixels
        if not pixel_is_rendered(p, mask, spixel, fpixel):
            clear_result(out, out_oob, j)
            continue
        store_result(out, out_oob, j,
                     render_pixel(p, spixel, fpixel, sources, rot[k], phi_map[k], phi_map_first[k], Fhkl, trace, panels))


@njit(cache=True)
def trace_cpu(p, spixel, fpixel, sources, rot, phi_map, phi_map_first, Fhkl, trace, panels):
    """One pixel on one core, recording every evaluation into ``trace``.

    ``p.trace_pixel`` must be the pixel's index; returns what
    ``render_pixel`` returns.
    """
    return render_pixel(p, spixel, fpixel, sources, rot, phi_map, phi_map_first, Fhkl, trace, panels)


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
                        lam = sources[source, 3]
                        sx = (dx + sources[source, 0]) / lam
                        sy = (dy + sources[source, 1]) / lam
                        sz = (dz + sources[source, 2]) / lam
                        stol = 0.5 * math.sqrt(sx * sx + sy * sy + sz * sz)
                        if not dmin_skips(p, stol):
                            return idx
    return -1
