"""Poisson noise image kernel, a bit-exact port of the noise loop in nanoBragg's ``main()``.

The loop is strictly sequential in raster order (slow index outer, fast index
inner) because every pixel inside the region of interest consumes draws from
one shared random stream (:func:`kernels.crand.poidev`).  Pixels outside the
ROI are skipped and stay 0; masked pixels are *not* skipped (their float
value is 0 and they still consume one ``ran1`` draw).  The ROI bounds are
inclusive on both ends, as in C.

Generator state (``idum``, ``tab``, ``fst``) is the explicit state described
in :mod:`kernels.crand`; :class:`nanobrag_numba.crand.CRandom` owns it.
"""

import numpy as np
from numba import njit

from .crand import poidev


@njit(cache=True, inline="always")
def c_double_to_ushort(x):
    """``(unsigned short) x`` as gcc emits it on x86-64.

    In range (0..65535) this is plain truncation.  Out of range the C
    conversion is undefined; gcc converts through a 32-bit ``cvttsd2si``
    (NaN and out-of-int32 values give INT_MIN) and keeps the low 16 bits, which
    is reproduced here (e.g. -60.0 -> 65476, NaN -> 0).

    Parameters
    ----------
    x : float
        Value to convert.

    Returns
    -------
    numpy.uint16
    """
    if x >= 0.0 and x < 65536.0:
        return np.uint16(np.int64(x))
    if not (x > -2147483649.0 and x < 2147483648.0):
        return np.uint16(0)
    return np.uint16(np.int64(x) & 0xFFFF)


@njit(cache=True)
def noise_image(floatimage, roi_xmin, roi_xmax, roi_ymin, roi_ymax, adc_offset,
                idum, tab, fst):
    """Add Poisson noise to a float image, exactly like the C noise loop.

    For each pixel inside the ROI, in raster order::

        test = poidev(floatimage[s, f]); sum += test; test += adc_offset
        if test > 65535: test = 65535; overloads += 1
        out[s, f] = (unsigned short) test

    Parameters
    ----------
    floatimage : numpy.ndarray
        float32 ``(slow, fast)`` expected photons per pixel.
    roi_xmin, roi_xmax : int
        Inclusive fast-pixel bounds of the region of interest.
    roi_ymin, roi_ymax : int
        Inclusive slow-pixel bounds of the region of interest.
    adc_offset : float
        ADC offset added to every noisy pixel (C ``double adc_offset``).
    idum : numpy.ndarray
        int64 ``(1,)`` seed word of the noise stream (``-seed``), updated.
    tab : numpy.ndarray
        int64 shared ran1 table, updated.
    fst : numpy.ndarray
        float32 poidev/gaussdev statics, updated.

    Returns
    -------
    image : numpy.ndarray
        uint16 ``(slow, fast)`` noise image (0 outside the ROI).
    photons : float
        Sum of all Poisson deviates (C ``sum``, double).
    overloads : int
        Number of pixels clipped at 65535.
    """
    spixels = floatimage.shape[0]
    fpixels = floatimage.shape[1]
    out = np.zeros((spixels, fpixels), dtype=np.uint16)
    total = 0.0
    overloads = 0
    adc = np.float64(adc_offset)
    for spixel in range(spixels):
        if spixel < roi_ymin or spixel > roi_ymax:
            continue
        for fpixel in range(fpixels):
            if fpixel < roi_xmin or fpixel > roi_xmax:
                continue
            test = np.float64(poidev(floatimage[spixel, fpixel], idum, tab, fst))
            total += test
            test += adc
            if test > 65535.0:
                test = 65535.0
                overloads += 1
            out[spixel, fpixel] = c_double_to_ushort(test)
    return out, total, overloads
