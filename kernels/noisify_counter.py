"""noisify's detector noise models driven by the counter-based generator, per pixel, for the CPU and CUDA.

C's noisify draws flicker, calibration error, the Poisson counts and the
read-out noise from serial streams (one ``ran1`` shuffle table, one spare
Gaussian deviate: :mod:`kernels.noisify`), which stay the default and the
only way to C's numbers.  Here every random number of a pixel is a function
of (key, pixel index, stream) only -- Philox4x32-10 as in
:mod:`kernels.noise_counter` -- so every pixel can be drawn on its own, by a
CPU thread or a GPU thread, in any order, with the same result.

Streams (Philox counter = (pixel mod 2^32, pixel div 2^32, n, stream))
----------------------------------------------------------------------
=============  ==========================  ======  ==============================
model          key                          stream  draws
=============  ==========================  ======  ==============================
Poisson        seed mod 2^64                0       n = 0, 1, ... (``poisson_deviate``;
                                                    the same stream as ``batch
                                                    --noise-generator counter``)
flicker        seed mod 2^64                1       n = 0: one Gaussian deviate
calibration    calib_seed mod 2^64          2       n = 0: one Gaussian deviate
read-out       seed mod 2^64                3       n = 0: one Gaussian deviate
=============  ==========================  ======  ==============================

The pixel index is ``slow * fpixels + fast`` of the image given
(``noise_models.counter_pipeline``'s ``origin``/``stride`` place a
sub-image on a larger detector; the main command's and the batch's
detector model use the ROI rectangle, as C's loops run over it).  The calibration error
has its own key, so it is a property of the detector (the same for every
image with the same ``calib_seed``), as C's separate ``-calib_seed`` stream
intends.

Gaussian deviates: Box-Muller, cosine branch only, on the block's two
52-bit uniforms (``uniform52``, strictly inside (0, 1)):
``z = sqrt(-2 log U1) * cos(2 pi U2)``; the sine branch is not used (no
spare deviate, no state).

Per pixel, as noisify.c's loops but with these numbers:
``p = photons; p *= 1 + flicker*z_flicker; p *= 1 + calibration*z_calib;
counts = Poisson((float)p)``; the PSF on the counts (:func:`kernels.noisify.psf_gather_pixel`,
per output pixel); ``adu = counts*gain + adc + readout*z_readout``, clipped
and converted as :func:`kernels.noisify.adu_images`.

Every function below is ``@njit(inline="always")`` and compiled twice: for
the CPU (the ``*_cpu`` drivers here, ``prange``) and for numba.cuda
(``cuda_noisify.py``); the CPU and numba's CUDA simulator give identical
integers.  Sums that are reported (lost PSF photons, photon totals) are
summed per row (sequentially) and the row sums in row order on the host,
the same on both devices.
"""
import math

import numpy as np
from numba import njit, prange

from .noise_counter import _S32, _U32, _ZERO, philox4x32_10, poisson_deviate, uniform52
from .noisify import _c_to_uint16, _c_to_uint32, psf_gather_pixel, psf_pixel_radius

STREAM_POISSON = 0
STREAM_FLICKER = 1
STREAM_CALIBRATION = 2
STREAM_READOUT = 3
_SF = np.uint64(STREAM_FLICKER)
_SC = np.uint64(STREAM_CALIBRATION)
_SR = np.uint64(STREAM_READOUT)
_TWO_PI = 6.283185307179586

#: bits of the per-pixel flags written by :func:`adu_pixel`
FLAG_OVER16 = 1
FLAG_OVER32 = 2
FLAG_NEGATIVE = 4


@njit(inline="always")
def gauss_deviate(k0, k1, pixel, stream):
    """A standard normal deviate of ``pixel`` (uint64) in ``stream`` (uint64) under key (k0, k1): Box-Muller."""
    w0, w1, w2, w3 = philox4x32_10(pixel & _U32, pixel >> _S32, _ZERO, stream, k0, k1)
    u1 = uniform52(w0, w1)
    u2 = uniform52(w2, w3)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(_TWO_PI * u2)


@njit(inline="always")
def pixel_index(i, xpixels, ox, oy, stride):
    """The detector pixel index (uint64) of element ``i`` of a ``xpixels``-wide image placed at (ox, oy)."""
    y = i // xpixels
    return np.uint64((oy + y) * stride + ox + (i - y * xpixels))


@njit(inline="always")
def counts_pixel(photons, counts, i, pixel, flicker, calibration, k0, k1, c0, c1):
    """Flicker, calibration error and the Poisson draw of element ``i`` (noisify's noise loop)."""
    p = np.float64(photons[i])
    if flicker > 0.0:
        p *= 1.0 + flicker * gauss_deviate(k0, k1, pixel, _SF)
    if calibration > 0.0:
        p *= 1.0 + calibration * gauss_deviate(c0, c1, pixel, _SC)
    counts[i] = np.float32(poisson_deviate(np.float64(np.float32(p)), k0, k1, pixel))


@njit(inline="always")
def psf_setup_pixel(image, radii, lost, i, kind, fwhm_pixels, user_radius, maxwidth):
    """Rendering radius and lost photons of element ``i`` (``psf_pixel_radius``)."""
    r, lo = psf_pixel_radius(np.float64(image[i]), kind, fwhm_pixels, user_radius, maxwidth)
    radii[i] = r
    lost[i] = lo


@njit(inline="always")
def edge_wrap_source(image, radii, table, xpixels, ypixels, i, touched):
    """``touched[i]`` = 1 when C's bounds test would move light of source ``i`` to column 0 of the next row.

    The per-source form of ``noise_models._edge_wrap_touched`` (the note of
    the corrected ``psf_edge_wrap``).
    """
    touched[i] = 0
    r = radii[i]
    if r == 0 or not (image[i] > 0.0):
        return
    y0 = i // xpixels
    dx = xpixels - (i - y0 * xpixels)
    tr = table.shape[0] // 2
    if r < dx or dx > tr:
        return
    for dy in range(-r, r + 1):
        y = y0 + dy
        if y < 0 or y >= ypixels - 1 or dx * dx + dy * dy > r * r or dy < -tr or dy > tr:
            continue
        if table[tr + dy, tr + dx] != 0.0:
            touched[i] = 1
            return


@njit(inline="always")
def row_sum_max(values, y, xpixels, sums, maxima):
    """Row ``y``: the sum of its values in double (left to right) and their maximum."""
    s = 0.0
    m = -np.inf
    for x in range(y * xpixels, (y + 1) * xpixels):
        v = np.float64(values[x])
        s += v
        if v > m:
            m = v
    sums[y] = s
    maxima[y] = m


@njit(inline="always")
def psf_pixel(image, out, i, xpixels, ypixels, table, radii, rmax, edge_wrap, add):
    """Output element ``i`` of the PSF: the gather of its sources, plus the lost photons per pixel ``add``."""
    y = i // xpixels
    acc = psf_gather_pixel(image, xpixels, ypixels, table, radii, rmax, i - y * xpixels, y, edge_wrap)
    out[i] = np.float32(np.float64(acc) + add)


@njit(inline="always")
def adu_pixel(counts, i, pixel, gain, adc, readout, k0, k1, wrap_negative, n16, n32, flags):
    """Gain, ADC offset and read-out noise of element ``i`` into the 16- and 32-bit images (``adu_images``)."""
    adu = np.float64(counts[i]) * gain + adc
    if readout > 0.0:
        adu += readout * gauss_deviate(k0, k1, pixel, _SR)
    f = 0
    if adu > 2147483647.0:
        adu = 2147483647.0
        f |= FLAG_OVER32
    if adu < 0.0:
        f |= FLAG_NEGATIVE
        if wrap_negative:
            n32[i] = _c_to_uint32(adu)
            n16[i] = _c_to_uint16(adu)
            flags[i] = f
            return
        adu = 0.0
    if adu != adu:            # NaN
        n32[i] = 0
        n16[i] = 0
        flags[i] = f
        return
    n32[i] = np.uint32(adu)
    if adu > 65535.0:
        adu = 65535.0
        f |= FLAG_OVER16
    n16[i] = np.uint16(adu)
    flags[i] = f


# ---------------------------------------------------------------- the CPU drivers (all cores)


@njit(parallel=True, cache=True)
def counts_cpu(photons, counts, xpixels, ox, oy, stride, flicker, calibration, k0, k1, c0, c1):
    for i in prange(photons.shape[0]):
        counts_pixel(photons, counts, i, pixel_index(i, xpixels, ox, oy, stride), flicker, calibration,
                     k0, k1, c0, c1)


@njit(parallel=True, cache=True)
def psf_setup_cpu(image, radii, lost, kind, fwhm_pixels, user_radius, maxwidth):
    for i in prange(image.shape[0]):
        psf_setup_pixel(image, radii, lost, i, kind, fwhm_pixels, user_radius, maxwidth)


@njit(parallel=True, cache=True)
def edge_wrap_cpu(image, radii, table, xpixels, ypixels, touched):
    for i in prange(image.shape[0]):
        edge_wrap_source(image, radii, table, xpixels, ypixels, i, touched)


@njit(parallel=True, cache=True)
def row_stats_cpu(values, xpixels, sums, maxima):
    for y in prange(sums.shape[0]):
        row_sum_max(values, y, xpixels, sums, maxima)


@njit(parallel=True, cache=True)
def psf_cpu(image, out, xpixels, ypixels, table, radii, rmax, edge_wrap, add):
    for i in prange(image.shape[0]):
        psf_pixel(image, out, i, xpixels, ypixels, table, radii, rmax, edge_wrap, add)


@njit(parallel=True, cache=True)
def adu_cpu(counts, xpixels, ox, oy, stride, gain, adc, readout, k0, k1, wrap_negative, n16, n32, flags):
    for i in prange(counts.shape[0]):
        adu_pixel(counts, i, pixel_index(i, xpixels, ox, oy, stride), gain, adc, readout, k0, k1, wrap_negative,
                  n16, n32, flags)


def key_words(seed):
    """The Philox key of a seed (any Python int): (seed mod 2^64) as two numpy.uint64 32-bit words."""
    s = int(seed) & 0xFFFFFFFFFFFFFFFF
    return np.uint64(s & 0xFFFFFFFF), np.uint64(s >> 32)
