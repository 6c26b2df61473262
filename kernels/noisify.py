"""Detector-noise kernels: bit-exact ports of the loops of the C program noisify.

The C program (noisify.c, 6-28-21) turns an ideal photons/pixel image into
integer detector images.  Its random loops are strictly sequential (every
pixel consumes draws from streams that share one ``ran1`` shuffle table and
one ``gaussdev`` spare deviate, :mod:`kernels.crand`), so they are written
here as plain raster-order Numba loops:

* :func:`noise_photons` -- flicker, calibration error and the Poisson draw;
* :func:`adu_images` -- gain, ADC offset and read-out noise into the 16- and
  32-bit integer images;
* :func:`psf_kernel_table`, :func:`psf_radii` and :func:`psf_scatter` -- the
  point-spread function (``apply_psf``), with C's bounds test as an option
  (``edge_wrap``, the ``psf_edge_wrap`` quirk) and :func:`psf_gather`, the
  same sums in the same order per output pixel, parallel over rows, for the
  corrected bounds.

Generator state (``idum`` words, ``tab``, ``fst``) is the explicit state of
:mod:`kernels.crand`.  No I/O here.
"""
import math

import numpy as np
from numba import njit, prange

from .crand import gaussdev, poidev

#: PSF kinds (C's psf_type enum values)
PSF_GAUSS = 2
PSF_FIBER = 1

_LOG16 = math.log(16.0)
_LOG4 = math.log(4.0)


@njit(cache=True)
def noise_photons(photons, flicker, calibration, seed_idum, calib_idum, tab, fst):
    """Poisson photon counts of every pixel, in raster order, as noisify's noise loop.

    Per pixel: ``p = photons[i]`` (double); if ``flicker > 0``:
    ``p *= 1 + flicker*gaussdev(seed)``; if ``calibration > 0``:
    ``p *= 1 + calibration*gaussdev(calib_seed)``; ``out[i] = poidev((float)p, seed)``.

    Parameters
    ----------
    photons : numpy.ndarray
        float32 1-D expected photons per pixel.
    flicker, calibration : float
        Fractional source flicker and per-pixel calibration error (0: off).
    seed_idum, calib_idum : numpy.ndarray
        int64 ``(1,)`` seed words of the ``-seed`` and ``-calib_seed`` streams.
    tab, fst : numpy.ndarray
        Shared ran1 table and deviate statics.

    Returns
    -------
    out : numpy.ndarray
        float32 1-D photon counts.
    total : float
        Their sum (double, C's ``sum``).
    """
    n = photons.shape[0]
    out = np.empty(n, dtype=np.float32)
    total = 0.0
    for i in range(n):
        p = np.float64(photons[i])
        if flicker > 0.0:
            p *= 1.0 + flicker * np.float64(gaussdev(seed_idum, tab, fst))
        if calibration > 0.0:
            p *= 1.0 + calibration * np.float64(gaussdev(calib_idum, tab, fst))
        v = poidev(np.float32(p), seed_idum, tab, fst)
        out[i] = v
        total += np.float64(v)
    return out, total


@njit(cache=True, inline="always")
def _c_to_uint32(x):
    """``(unsigned int) x`` as gcc emits it on x86-64 (through a 64-bit cvttsd2si)."""
    if not (x > -9.2e18 and x < 9.2e18):
        return np.uint32(0)
    return np.uint32(np.int64(x) & 0xFFFFFFFF)


@njit(cache=True, inline="always")
def _c_to_uint16(x):
    """``(unsigned short) x`` as gcc emits it on x86-64 (through a 32-bit cvttsd2si)."""
    if not (x > -2147483649.0 and x < 2147483648.0):
        return np.uint16(0)
    return np.uint16(np.int64(x) & 0xFFFF)


@njit(cache=True)
def adu_images(photons, gain, adc, readout, clip16_first, wrap_negative, seed_idum, tab, fst):
    """16- and 32-bit detector images from photons, in raster order.

    Per pixel: ``adu = photons[i]*gain + adc``; if ``readout > 0``:
    ``adu += readout*gaussdev(seed)``; clipped at 2147483647 for the 32-bit
    image (or first at 65535 when ``clip16_first``: C's noiseless image) and
    at 65535 for the 16-bit one; converted by truncation.

    Parameters
    ----------
    photons : numpy.ndarray
        float32 1-D photons per pixel.
    gain, adc, readout : float
        ADU per photon, ADC offset, read-out noise rms in ADU (0: none).
    clip16_first : bool
        Clip the 32-bit image at 65535 as well (``noiseless_int32_clipped``).
    wrap_negative : bool
        Convert a negative ADU as gcc does (C's conversion is undefined:
        -3.7 gives 65533 / 4294967293); otherwise negative values give 0.
    seed_idum, tab, fst : numpy.ndarray
        Generator state of the ``-seed`` stream (used only with read-out noise).

    Returns
    -------
    int16 : numpy.ndarray
        uint16 1-D image.
    int32 : numpy.ndarray
        uint32 1-D image.
    total : float
        Sum of ``photons`` (double).
    over16, over32 : int
        Pixels clipped at 65535 / at 2147483647.
    negative : int
        Pixels whose ADU was below 0.
    """
    n = photons.shape[0]
    i16 = np.empty(n, dtype=np.uint16)
    i32 = np.empty(n, dtype=np.uint32)
    total = 0.0
    over16 = 0
    over32 = 0
    negative = 0
    for i in range(n):
        ph = np.float64(photons[i])
        total += ph
        adu = ph * gain + adc
        if readout > 0.0:
            adu += readout * np.float64(gaussdev(seed_idum, tab, fst))
        if adu > 2147483647.0:
            adu = 2147483647.0
            over32 += 1
        if clip16_first and adu > 65535.0:
            adu = 65535.0
        if adu < 0.0:
            negative += 1
            if wrap_negative:
                i32[i] = _c_to_uint32(adu)
                i16[i] = _c_to_uint16(adu)
                continue
            adu = 0.0
        if adu != adu:            # NaN
            i32[i] = 0
            i16[i] = 0
            continue
        i32[i] = np.uint32(adu)
        if adu > 65535.0:
            adu = 65535.0
            over16 += 1
        i16[i] = np.uint16(adu)
    return i16, i32, total, over16, over32, negative


@njit(cache=True)
def _gauss_integ(x, y):
    """Unit-volume Gaussian of FWHM 1 integrated from the origin to (x, y) (C ``ngauss2D_integ``)."""
    return 0.125 * (math.erf(2 * x * math.sqrt(math.log(2.0))) * math.erf(y * math.sqrt(math.log(16.0)))
                    * math.sqrt(math.log(16.0) / math.log(2.0)))


@njit(cache=True)
def _gauss_pixel(x, y, pix):
    return (_gauss_integ(x + pix / 2., y + pix / 2.) - _gauss_integ(x + pix / 2., y - pix / 2.)
            - _gauss_integ(x - pix / 2., y + pix / 2.) + _gauss_integ(x - pix / 2., y - pix / 2.))


@njit(cache=True)
def _fiber_integ(x, y, g):
    return math.atan((x * y) / (g * math.sqrt(g * g + x * x + y * y))) / 2.0 / math.pi


@njit(cache=True)
def _fiber_pixel(x, y, g, pix):
    return (_fiber_integ(x + pix / 2., y + pix / 2., g) - _fiber_integ(x + pix / 2., y - pix / 2., g)
            - _fiber_integ(x - pix / 2., y + pix / 2., g) + _fiber_integ(x - pix / 2., y - pix / 2., g))


@njit(cache=True)
def psf_kernel_table(kind, fwhm_pixels, radius):
    """The PSF integrated over each pixel of a ``(2r+1)^2`` table (0 outside the circle of radius r).

    Parameters
    ----------
    kind : int
        :data:`PSF_GAUSS` or :data:`PSF_FIBER`.
    fwhm_pixels : float
        FWHM in pixels.
    radius : int
        Table radius r.

    Returns
    -------
    numpy.ndarray
        float64 ``(2r+1, 2r+1)``, indexed ``[r+dy, r+dx]``.
    """
    size = 2 * radius + 1
    table = np.zeros((size, size), dtype=np.float64)
    g = fwhm_pixels * 0.652383013252053
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx * dx + dy * dy > radius * radius:
                continue
            if kind == PSF_GAUSS:
                table[radius + dy, radius + dx] = _gauss_pixel(dx / fwhm_pixels, dy / fwhm_pixels, 1.0 / fwhm_pixels)
            else:
                table[radius + dy, radius + dx] = _fiber_pixel(np.float64(dx), np.float64(dy), g, 1.0)
    return table


@njit(cache=True, inline="always")
def auto_radius(kind, intensity, fwhm_pixels, per_pixel):
    """C's automatic rendering radius for a pixel of ``intensity`` photons (before the caps).

    ``per_pixel`` selects the per-pixel formula (``sqrt(-log(lost/I)/log 16)``)
    or the kernel-table one (``sqrt(-log(lost/I)/log 4/2)``); they are the same
    number up to rounding.  Where C takes the square root of a negative number
    (a Gaussian PSF on a pixel with 0 < I < 0.01: the C program crashes) the
    radius is 1, the smallest C ever uses: so little light that none of it
    needs rendering beyond the pixel's neighbours.
    """
    lost = math.sqrt(intensity) / 10.0
    if kind == PSF_GAUSS:
        if per_pixel:
            arg = -math.log(lost / intensity) / _LOG16
        else:
            arg = -math.log(lost / intensity) / _LOG4 / 2
        if not (arg >= 0.0):
            return 1
        return int(1 + math.ceil(math.sqrt(arg) * fwhm_pixels))
    g = fwhm_pixels * 0.652383013252053
    r = 1 + math.ceil(g * (intensity / lost))
    if r > 2147483647.0:
        return 2147483647
    return int(r)


@njit(cache=True)
def psf_radii(image, kind, fwhm_pixels, user_radius, maxwidth):
    """Per-pixel rendering radius and analytically lost photons (C ``apply_psf``'s per-pixel set-up).

    Parameters
    ----------
    image : numpy.ndarray
        float32 1-D input photons.
    kind : int
        :data:`PSF_GAUSS` or :data:`PSF_FIBER`.
    fwhm_pixels : float
        FWHM in pixels.
    user_radius : int
        ``-psf_radius`` (0: automatic per pixel).
    maxwidth : int
        Cap on every radius (the larger image dimension).

    Returns
    -------
    radii : numpy.ndarray
        int32 1-D radius per pixel (0 where the pixel is skipped, I <= 0).
    total_lost : float
        Sum over pixels of the photons beyond their radius.
    """
    n = image.shape[0]
    radii = np.zeros(n, dtype=np.int32)
    total_lost = 0.0
    for i in range(n):
        r, lost = psf_pixel_radius(np.float64(image[i]), kind, fwhm_pixels, user_radius, maxwidth)
        radii[i] = r
        total_lost += lost
    return radii, total_lost


@njit(cache=True, inline="always")
def psf_pixel_radius(inten, kind, fwhm_pixels, user_radius, maxwidth):
    """One pixel of :func:`psf_radii`: its rendering radius (0 when I <= 0) and the photons beyond it.

    Shared by the serial set-up above and the per-pixel one of the counter
    generator (``noisify_counter.py``, CPU and CUDA).
    """
    if not (inten > 0.0):
        return 0, 0.0
    if user_radius != 0:
        r = user_radius
    else:
        r = auto_radius(kind, inten, fwhm_pixels, True)
    if r == 0:
        r = 1
    if r > maxwidth:
        r = maxwidth
    if kind == PSF_GAUSS:
        rsq = np.float64(r)
        rsq = rsq / fwhm_pixels
        rsq = rsq * rsq
        return r, inten * math.exp(-_LOG16 * rsq)
    g = fwhm_pixels * 0.652383013252053
    return r, inten * g / math.sqrt(g * g + np.float64(r) * np.float64(r))


@njit(cache=True)
def psf_scatter(image, xpixels, ypixels, table, radii, edge_wrap):
    """C's PSF loop: every source pixel in raster order spreads its light over its disc.

    Output is accumulated in float32 (``out[j] += in[i]*kernel[k]`` in double,
    stored as float), source by source, dx outer and dy inner, as C does.

    Parameters
    ----------
    image : numpy.ndarray
        float32 1-D input photons (``ypixels*xpixels``).
    xpixels, ypixels : int
        Image size (fast, slow).
    table : numpy.ndarray
        float64 square kernel table from :func:`psf_kernel_table`.
    radii : numpy.ndarray
        int32 per-pixel radius from :func:`psf_radii` (0: skipped).
    edge_wrap : bool
        C's bounds test ``x > xpixels`` / ``y > ypixels``: light at
        ``x == xpixels`` lands in column 0 of the next row, light at
        ``x == 0, y == ypixels`` (and past the last pixel) is lost.  False:
        light outside the image is dropped (``>=``).

    Returns
    -------
    out : numpy.ndarray
        float32 1-D blurred image (before the lost photons are added back).
    wrapped : int
        Number of contributions that C's bounds test moves to column 0 of the
        next row (counted in both modes; with ``edge_wrap=False`` they are
        dropped, like all light that falls off the image).
    """
    pixels = xpixels * ypixels
    out = np.zeros(pixels + 1, dtype=np.float32)
    tsize = table.shape[0]
    tr = tsize // 2
    wrapped = 0
    for i in range(pixels):
        inten = image[i]
        if not (inten > np.float32(0.0)):
            continue
        r = radii[i]
        x0 = i % xpixels
        y0 = i // xpixels
        dinten = np.float64(inten)
        for dx in range(-r, r + 1):
            if dx < -tr or dx > tr:
                continue          # outside the table (C reads a zero entry or past it; no light)
            for dy in range(-r, r + 1):
                if dy < -tr or dy > tr:
                    continue
                kv = table[tr + dy, tr + dx]
                if kv == 0.0:
                    continue
                if dx * dx + dy * dy > r * r:
                    continue
                x = x0 + dx
                y = y0 + dy
                if x < 0 or y < 0 or x > xpixels or y > ypixels:
                    continue
                j = y * xpixels + x
                if x == xpixels or y == ypixels:
                    if x == xpixels and j < pixels:
                        wrapped += 1
                    if not edge_wrap or j > pixels:
                        continue
                out[j] = np.float32(np.float64(out[j]) + dinten * kv)
    return out[:pixels].copy(), wrapped


@njit(cache=True, parallel=True)
def psf_gather(image, xpixels, ypixels, table, radii, rmax):
    """:func:`psf_scatter` without the edge wrap, computed per OUTPUT pixel, rows in parallel.

    Each output pixel sums its sources in raster order, exactly the order in
    which the scatter loop reaches it, so the float32 result is bit-identical
    to ``psf_scatter(..., edge_wrap=False)`` (:func:`psf_gather_pixel`).
    """
    pixels = xpixels * ypixels
    out = np.zeros(pixels, dtype=np.float32)
    for y in prange(ypixels):
        for x in range(xpixels):
            out[y * xpixels + x] = psf_gather_pixel(image, xpixels, ypixels, table, radii, rmax, x, y, False)
    return out


@njit(cache=True, inline="always")
def _gather_one(image, xpixels, table, tr, radii, sx, sy, dx, dy, acc):
    """``acc`` plus the light source (sx, sy) sends at offset (dx, dy), as the scatter loop adds it."""
    if dx < -tr or dx > tr or dy < -tr or dy > tr:
        return acc
    s = sy * xpixels + sx
    r = radii[s]
    if dx * dx + dy * dy > r * r:
        return acc                # also every pixel with I <= 0 (radius 0 and dx, dy not both 0)
    inten = image[s]
    if not (inten > np.float32(0.0)):
        return acc
    kv = table[tr + dy, tr + dx]
    if kv == 0.0:
        return acc
    return np.float32(np.float64(acc) + np.float64(inten) * kv)


@njit(cache=True, inline="always")
def psf_gather_pixel(image, xpixels, ypixels, table, radii, rmax, x, y, edge_wrap):
    """Output pixel (x, y) of :func:`psf_scatter`: its sources summed in the scatter loop's order.

    The sources are visited in raster order; ``edge_wrap`` adds, for column 0
    of rows 1.., the light C's bounds test moves there (sources whose disc
    reaches column ``xpixels`` of the row above), merged in raster order and,
    for a source that sends light both ways, after its direct light (C's dx
    loop runs upwards).  Bit-identical to ``psf_scatter(..., edge_wrap)``.
    Written once for the CPU's parallel loop and the CUDA kernel
    (``cuda_noisify.py``).
    """
    tr = table.shape[0] // 2
    acc = np.float32(0.0)
    wrap = edge_wrap and x == 0 and y >= 1
    y_lo = max(0, y - rmax)
    if wrap:
        y_lo = max(0, y - 1 - rmax)
    y_hi = min(ypixels, y + rmax + 1)
    for sy in range(y_lo, y_hi):
        # direct sources: columns [a1, b1); wrapped sources (offset (xpixels - sx, y - 1 - sy)): [a2, b2)
        a1 = max(0, x - rmax)
        b1 = min(xpixels, x + rmax + 1)
        if sy < y - rmax:
            a1 = 0
            b1 = 0
        a2 = xpixels
        b2 = xpixels
        if wrap and sy <= y - 1 + rmax:
            a2 = max(0, xpixels - rmax)
        if b1 <= a2:
            for sx in range(a1, b1):
                acc = _gather_one(image, xpixels, table, tr, radii, sx, sy, x - sx, y - sy, acc)
            for sx in range(a2, b2):
                acc = _gather_one(image, xpixels, table, tr, radii, sx, sy, xpixels - sx, y - 1 - sy, acc)
        else:
            for sx in range(min(a1, a2), max(b1, b2)):
                if sx >= a1 and sx < b1:
                    acc = _gather_one(image, xpixels, table, tr, radii, sx, sy, x - sx, y - sy, acc)
                if sx >= a2 and sx < b2:
                    acc = _gather_one(image, xpixels, table, tr, radii, sx, sy, xpixels - sx, y - 1 - sy, acc)
    return acc


@njit(cache=True)
def add_uniform(out, value):
    """``out[i] += value`` in float32 per pixel (C adds the lost photons back as a double)."""
    for i in range(out.shape[0]):
        out[i] = np.float32(np.float64(out[i]) + value)
