"""Amorphous (non-Bragg) scattering per pixel: the pixel loop of nonBragg.c, written once.

Scattering of a disordered sample (water, air, ice) described by a table of
sin(theta)/lambda against F: for every sub-pixel and source of a pixel,
``stol = |d - i| / (2 lambda)``, F from the table by C's 4-point Lagrange
polynomial (``polint``) through the rows nearest-1 .. nearest+2, and
``I += sign(F) F^2 * polar * omega * weight``.  The caller applies the final
``r_e^2 * fluence * molecules / steps``.

:func:`background_pixel` is a plain ``@njit(inline="always")`` function of
scalars, tuples and arrays, like ``physics.render_pixel``: the CPU kernels
here compile it into a ``prange`` loop and ``cuda_background.py`` compiles the
same function as a CUDA device function.  The detector position of each
sub-pixel is the main simulator's :func:`physics.subpixel_position`, the
incident beam, scattering vector and stol of a source its
:func:`physics.source_scattering` and the polarization factor its
:func:`physics.polarization_factor`, so both commands place pixels and
scatter with the same code.

Arguments shared by the kernels
-------------------------------
p : BgParams
    Scalars of the detector and beam (built by ``nanobrag_numba.background``).
sources : float64[nsources, 4]
    Unit vector from the sample to each source and its wavelength (m).
weights : float64[nsources]
    Weight of each source (nonBragg multiplies the intensity by it).
stol_of, F_of : float64[nstols + 6]
    The table in C's layout: two sentinel rows at each end (stol -1e99,
    -1e98 ... 1e98, 1e99 holding the first / last F), stol in 1/m, then
    NaN padding as C's over-allocated arrays hold.
"""
import math
from collections import namedtuple

import numpy as np
from numba import njit, prange

from .physics import (DETECTOR_FIELDS, DETECTOR_INTS, polarization_factor, polint, source_scattering,
                      subpixel_position, unitize3)

BGPARAMS_FIELDS = DETECTOR_FIELDS + ("nsources", "nstols", "kahn", "nopolar", "polar_x", "polar_y", "polar_z")
BgParams = namedtuple("BgParams", BGPARAMS_FIELDS)
BGPARAMS_INTS = frozenset(DETECTOR_INTS + ("nsources", "nstols", "nopolar"))

#: rows of the full output: I (before the final scale), then what C keeps of the LAST
#: evaluation of the pixel (F for -Fmap; stol, table row, polar and omega for -img's
#: output.stol), then the sum of the solid angle over the sub-pixels
ROWS = ("I", "F", "stol", "nearest", "polar", "omega", "omega_sum")
ROW_I, ROW_F, ROW_STOL, ROW_NEAREST, ROW_POLAR, ROW_OMEGA, ROW_OMEGA_SUM = range(7)


def make_bgparams(**values):
    """A BgParams with every field cast to its fixed type (int64 or float64)."""
    missing = set(BGPARAMS_FIELDS) - set(values)
    extra = set(values) - set(BGPARAMS_FIELDS)
    if missing or extra:
        raise TypeError("BgParams: missing %s, unknown %s" % (sorted(missing), sorted(extra)))
    return BgParams(**{k: int(v) if k in BGPARAMS_INTS else float(v) for k, v in values.items()})


@njit(inline="always")
def table_row(stol_of, nstols, stol):
    """Largest row whose stol is <= ``stol`` (binary search; the table must increase strictly)."""
    lo = 1
    hi = nstols - 3          # stol_of[nstols - 2] is 1e98
    if not (stol >= stol_of[lo]):
        return lo
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if stol_of[mid] <= stol:
            lo = mid
        else:
            hi = mid - 1
    return lo


@njit(inline="always")
def walk_row(stol_of, nstols, stol, nearest):
    """C's search for the table row, starting from the previous one (``nearest``)."""
    while stol > stol_of[nearest] and nearest <= nstols:
        nearest += 1
    while stol < stol_of[nearest] and nearest >= 2:
        nearest -= 1
    return nearest


@njit(inline="always")
def background_pixel(p, spixel, fpixel, sources, weights, stol_of, F_of, nearest):
    """Unscaled intensity of one pixel, following nonBragg.c's loops and arithmetic.

    ``nearest`` < 0: find the table row by binary search (a strictly
    increasing table: C's walk ends at the same row from any start);
    otherwise walk from that row as C does (any table, pixels in raster order).

    Returns ``(I, F, stol, nearest, polar, omega, omega_sum)``: the sum
    ``sign(F) F^2 polar omega weight`` and C's last values of F, stol, the
    table row, polar and omega, and the sum of omega over the sub-pixels.
    """
    I = 0.0
    Fbg = 0.0
    stol = 0.0
    polar = 1.0
    omega = 0.0
    omega_sum = 0.0
    search = nearest < 0
    if search:
        nearest = 1
    for subS in range(p.oversample):
        for subF in range(p.oversample):
            px, py, pz, Fdet, Sdet = subpixel_position(p, fpixel, spixel, subF, subS, 0.0)
            dx, dy, dz, airpath = unitize3(px, py, pz)
            omega = p.pixel_size * p.pixel_size / airpath / airpath * p.close_distance / airpath
            if p.point_pixel != 0:
                omega = 1.0 / airpath / airpath
            omega_sum += omega
            for source in range(p.nsources):
                ix, iy, iz, _lam, _sx, _sy, _sz, stol = source_scattering(sources, source, dx, dy, dz)
                if search:
                    nearest = table_row(stol_of, p.nstols, stol)
                else:
                    nearest = walk_row(stol_of, p.nstols, stol, nearest)
                n = nearest - 1
                Fbg = polint(stol_of[n], stol_of[n + 1], stol_of[n + 2], stol_of[n + 3],
                             F_of[n], F_of[n + 1], F_of[n + 2], F_of[n + 3], stol)
                sign = 1.0
                if Fbg < 0.0:
                    sign = -1.0
                if p.nopolar == 0:
                    polar, dx, dy, dz = polarization_factor(p.kahn, ix, iy, iz, dx, dy, dz,
                                                            p.polar_x, p.polar_y, p.polar_z)
                else:
                    polar = 1.0
                I += sign * Fbg * Fbg * polar * omega * weights[source]
    return I, Fbg, stol, nearest, polar, omega, omega_sum


@njit(inline="always")
def in_roi(p, spixel, fpixel):
    """C's test: inside the (inclusive) region of interest."""
    return not (fpixel < p.roi_xmin or fpixel > p.roi_xmax or spixel < p.roi_ymin or spixel > p.roi_ymax)


@njit(inline="always")
def store(out, idx, res):
    """Write a pixel's result: row 0 (and the last row) always, the others when ``out`` has them."""
    nrows = out.shape[0]
    out[0, idx] = res[0]
    if nrows > 2:
        out[1, idx] = res[1]
        out[2, idx] = res[2]
        out[3, idx] = res[3]
        out[4, idx] = res[4]
        out[5, idx] = res[5]
    out[nrows - 1, idx] = res[6]


@njit(inline="always")
def clear(out, idx):
    for r in range(out.shape[0]):
        out[r, idx] = 0.0


@njit(inline="always")
def render_pixel(p, spixel, fpixel, idx, sources, weights, stol_of, F_of, nearest, out):
    """Pixel ``idx`` into ``out`` (0 outside the ROI); returns the table row the next pixel starts from."""
    if not in_roi(p, spixel, fpixel):
        clear(out, idx)
        return nearest
    res = background_pixel(p, spixel, fpixel, sources, weights, stol_of, F_of, nearest)
    store(out, idx, res)
    return res[3]


@njit(parallel=True, cache=True)
def background_cpu(p, sources, weights, stol_of, F_of, out, row0, row1):
    """Every pixel on all CPU cores (the table must increase strictly).

    ``out`` is float64[7, npix] (the rows of ``ROWS``) or float64[2, npix]
    (I and omega_sum only: what an image needs).  Pixels outside the ROI get 0.
    Each detector row is one work item: its first pixel finds the table row
    by binary search, the next ones walk from their neighbour's row as C
    does (the same row, found in one or two steps).  Only detector rows
    ``row0 <= spixel < row1`` are computed (the progress meter's chunks).
    """
    for spixel in prange(row0, row1):
        nearest = -1
        for fpixel in range(p.fpixels):
            idx = spixel * p.fpixels + fpixel
            nearest = render_pixel(p, spixel, fpixel, idx, sources, weights, stol_of, F_of, nearest, out)


@njit(cache=True)
def background_serial(p, sources, weights, stol_of, F_of, out):
    """Every pixel in raster order on one core, the table row walked as C walks it.

    For tables whose stol column does not increase strictly (unsorted rows,
    repeated values): C's row search then depends on where the previous
    evaluation left it.  Same outputs as :func:`background_cpu`.
    """
    npix = p.fpixels * p.spixels
    nearest = 0
    for idx in range(npix):
        spixel = idx // p.fpixels
        fpixel = idx - spixel * p.fpixels
        nearest = render_pixel(p, spixel, fpixel, idx, sources, weights, stol_of, F_of, nearest, out)


@njit(cache=True)
def bin_stats(values, bins, nbins):
    """C's ``fmean_with_rejection`` with rejection off, per bin: float32 mean and rms deviation.

    ``values`` float32[npix] (the F of each pixel), ``bins`` int64[npix] (its
    bin, -1: not binned).  Sums run in pixel order in float32, as C's
    ``float`` accumulators do.  Returns (mean[nbins], rmsd[nbins], count[nbins]).
    """
    count = np.zeros(nbins, dtype=np.int64)
    total = np.zeros(nbins, dtype=np.float32)
    for j in range(values.shape[0]):
        b = bins[j]
        if b >= 0:
            count[b] += 1
            total[b] = np.float32(total[b] + values[j])
    mean = np.zeros(nbins, dtype=np.float32)
    for b in range(nbins):
        if count[b] > 0:
            mean[b] = np.float32(total[b] / np.float32(count[b]))
    sumd = np.zeros(nbins, dtype=np.float32)
    for j in range(values.shape[0]):
        b = bins[j]
        if b >= 0:
            d = np.float32(abs(np.float32(values[j] - mean[b])))
            sumd[b] = np.float32(sumd[b] + np.float32(d * d))
    rmsd = np.zeros(nbins, dtype=np.float32)
    for b in range(nbins):
        if count[b] > 0:
            rmsd[b] = np.float32(math.sqrt(np.float32(sumd[b] / np.float32(count[b]))))
    return mean, rmsd, count
