"""Counter-based Poisson noise for many images at once (``batch --noise-generator counter``).

C's noise image (:mod:`kernels.noise`) draws every pixel from ONE serial
stream, so it cannot be split over threads or GPU threads.  This generator
gives every pixel its own numbers: the noise of pixel ``i`` of an image
with noise seed ``s`` is a function of ``(s, i)`` and of the pixel's mean
only, whatever the order, the thread, the device or the number of images
per launch.  It is written once here (``@njit(inline="always")``) and
compiled for the CPU (:func:`noise_images_cpu`, ``prange``) and for CUDA
(``kernels/cuda.py``), so the CPU and the CUDA simulator give the same
integers.  It is NOT C's generator: C's noise image (the command line's
``-noisefile``, ``Result.noise_image``) stays the serial one.

The generator
-------------
* Bits: Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers:
  as easy as 1, 2, 3", SC 2011; the Random123 library's known-answer
  vectors are tested in tests/test_noise_counter.py).  Key = the noise seed
  modulo 2^64, as (low 32 bits, high 32 bits).  Counter = (pixel index
  modulo 2^32, pixel index // 2^32, block n, 0), the pixel index being
  ``slow * fpixels + fast``; block n = 0, 1, ... are the pixel's
  successive draws.
* Uniforms: a block's four words (w0, w1, w2, w3) give two uniforms
  ``U = ((w0 >> 6) * 2^26 + (w1 >> 6) + 0.5) * 2^-52`` and the same of
  (w2, w3): 52 random bits, strictly inside (0, 1), computed exactly.
* Poisson deviate of mean ``lam`` (the float image's pixel value):
  ``lam <= 0`` or NaN gives 0; ``lam < 10``: inversion by sequential
  search with block 0's first uniform (k = smallest integer with
  ``U <= sum_{j<=k} exp(-lam) lam^j / j!``, the terms computed by the
  recursion ``p_j = p_(j-1) * lam / j``); ``10 <= lam < 2^52``:
  Hörmann's transformed rejection with squeeze (PTRS; W. Hörmann, "The
  transformed rejection method for generating Poisson random variables",
  Insurance: Mathematics and Economics 12, 1993), try n using block n's
  two uniforms (U - 0.5, V), log k! from the Stirling series with 10 terms
  (shifted up to k+1 >= 7 and back by the recursion; a candidate k < 0
  or >= 2^52 is rejected); ``lam >= 2^52`` gives ``lam`` itself (a whole
  number there; its relative noise, 1.5e-8, is below float32's
  resolution).  Then, as in C's noise loop: ``+ adc``, clipped at 65535,
  converted as C's ``(unsigned short)``; pixels outside the ROI stay 0
  (masked pixels are not skipped, as in C).
* Exactness: every operation is IEEE double arithmetic, ``floor``,
  ``sqrt``, ``exp`` and ``log``.  The CPU kernel and the CUDA simulator use
  the same exp/log (the C library's), hence the same integers.  A GPU's
  exp/log (libdevice) may differ from the CPU's in the last bit and
  nvcc/NVVM may fuse a multiply-add, which changes a deviate only where a
  uniform lies within that rounding of a CDF step or rejection bound
  (probability about 1e-15 per pixel).
"""
import math

import numpy as np
from numba import njit, prange

from .noise import c_double_to_ushort

_U32 = np.uint64(0xFFFFFFFF)
_M0 = np.uint64(0xD2511F53)          # Philox4x32 multipliers
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)          # Weyl key increments (golden ratio, sqrt(3) - 1)
_W1 = np.uint64(0xBB67AE85)
_S32 = np.uint64(32)
_S6 = np.uint64(6)
_ZERO = np.uint64(0)
_TWO26 = 67108864.0                  # 2^26
_TWO_M52 = 2.220446049250313e-16     # 2^-52
#: below this mean the deviate is drawn by inversion, from it on by PTRS
PTRS_MIN = 10.0
#: from this mean on the deviate is the mean itself (every double there is a whole number)
HUGE_MEAN = 4503599627370496.0       # 2^52
#: PTRS tries before giving up (acceptance is about 0.9 per try: never reached in practice)
MAX_TRIES = 1000
_LOG_2PI = 1.8378770664093453        # log(2 pi)
#: Stirling series of log Gamma: B_2k / (2k (2k-1)), k = 1..10
_ST1, _ST2, _ST3, _ST4, _ST5 = (8.333333333333333e-02, -2.777777777777778e-03, 7.936507936507937e-04,
                                -5.952380952380952e-04, 8.417508417508418e-04)
_ST6, _ST7, _ST8, _ST9, _ST10 = (-1.917526917526918e-03, 6.410256410256410e-03, -2.955065359477124e-02,
                                 1.796443723688307e-01, -1.392432216905900e+00)


@njit(inline="always")
def _round(c0, c1, c2, c3, k0, k1):
    p0 = _M0 * c0
    p1 = _M1 * c2
    return (p1 >> _S32) ^ c1 ^ k0, p1 & _U32, (p0 >> _S32) ^ c3 ^ k1, p0 & _U32


@njit(inline="always")
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32 with 10 rounds: four 32-bit words (as uint64) of counter (c0..c3) under key (k0, k1).

    Every argument is a ``numpy.uint64`` below 2^32.
    """
    for _ in range(9):
        c0, c1, c2, c3 = _round(c0, c1, c2, c3, k0, k1)
        k0 = (k0 + _W0) & _U32
        k1 = (k1 + _W1) & _U32
    return _round(c0, c1, c2, c3, k0, k1)


@njit(inline="always")
def uniform52(a, b):
    """A uniform in (0, 1) from two 32-bit words: 26 high bits of each, exactly."""
    return (float(a >> _S6) * _TWO26 + float(b >> _S6) + 0.5) * _TWO_M52


@njit(inline="always")
def log_factorial(k):
    """log(k!) for a whole number k >= 0 (a float): the Stirling series of log Gamma(k + 1)."""
    x = k + 1.0
    if x == 1.0 or x == 2.0:
        return 0.0
    n = 0.0
    if x < 7.0:
        n = 7.0 - x
    x0 = x + n
    x2 = (1.0 / x0) * (1.0 / x0)
    s = _ST10
    s = s * x2 + _ST9
    s = s * x2 + _ST8
    s = s * x2 + _ST7
    s = s * x2 + _ST6
    s = s * x2 + _ST5
    s = s * x2 + _ST4
    s = s * x2 + _ST3
    s = s * x2 + _ST2
    s = s * x2 + _ST1
    gl = s / x0 + 0.5 * _LOG_2PI + (x0 - 0.5) * math.log(x0) - x0
    while n > 0.0:
        x0 -= 1.0
        gl -= math.log(x0)
        n -= 1.0
    return gl


@njit(inline="always")
def poisson_deviate(lam, k0, k1, pixel):
    """The Poisson deviate of mean ``lam`` of pixel ``pixel`` (uint64) under key (k0, k1), as a float."""
    if not (lam > 0.0):
        return 0.0
    if lam >= HUGE_MEAN:
        return lam          # already a whole number (or infinite)
    c0 = pixel & _U32
    c1 = pixel >> _S32
    if lam < PTRS_MIN:
        w0, w1, _w2, _w3 = philox4x32_10(c0, c1, _ZERO, _ZERO, k0, k1)
        u = uniform52(w0, w1)
        p = math.exp(-lam)
        cdf = p
        k = 0.0
        while u > cdf:
            k += 1.0
            p = p * lam / k
            if p == 0.0:
                break
            cdf += p
        return k
    slam = math.sqrt(lam)
    loglam = math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    invalpha = 1.1239 + 1.1328 / (b - 3.4)
    vr = 0.9277 - 3.6224 / (b - 2.0)
    for n in range(MAX_TRIES):
        w0, w1, w2, w3 = philox4x32_10(c0, c1, np.uint64(n), _ZERO, k0, k1)
        U = uniform52(w0, w1) - 0.5
        V = uniform52(w2, w3)
        us = 0.5 - abs(U)
        x = (2.0 * a / us + b) * U + lam + 0.43
        if not (x >= 0.0 and x < HUGE_MEAN):
            continue        # k < 0, or a candidate beyond 2^52 (rejected by PTRS's own tests in any case)
        k = float(math.floor(x))
        if us >= 0.07 and V <= vr:
            return k
        if us < 0.013 and V > us:
            continue
        if (math.log(V) + math.log(invalpha) - math.log(a / (us * us) + b)
                <= -lam + k * loglam - log_factorial(k)):
            return k
    return float(math.floor(lam + 0.5))


@njit(inline="always")
def noise_pixel(images, keys, out, j, npix, fpixels, roi_xmin, roi_xmax, roi_ymin, roi_ymax, adc_offset):
    """Element ``j`` of the flat [image, pixel] index: image j // npix, its pixel j % npix."""
    img = j // npix
    idx = j - img * npix
    spixel = idx // fpixels
    fpixel = idx - spixel * fpixels
    if fpixel < roi_xmin or fpixel > roi_xmax or spixel < roi_ymin or spixel > roi_ymax:
        out[img, idx] = 0
        return
    test = poisson_deviate(np.float64(images[img, idx]), keys[img, 0], keys[img, 1], np.uint64(idx))
    test += adc_offset
    if test > 65535.0:
        test = 65535.0
    out[img, idx] = c_double_to_ushort(test)


@njit(parallel=True, cache=True)
def noise_images_cpu(images, keys, fpixels, roi_xmin, roi_xmax, roi_ymin, roi_ymax, adc_offset, out):
    """Noise images of a stack of float images on all CPU cores.

    Parameters
    ----------
    images : float32[nimages, npix]
        The float images (raster order), one per row.
    keys : uint64[nimages, 2]
        Each image's Philox key: its noise seed modulo 2^64 as (low, high) 32-bit words
        (:func:`philox_keys`).
    fpixels : int
        Fast pixels per row (the pixel index is ``slow * fpixels + fast``).
    roi_xmin, roi_xmax, roi_ymin, roi_ymax : int
        Inclusive region of interest; pixels outside stay 0.
    adc_offset : float
    out : uint16[nimages, npix]
    """
    n, npix = images.shape
    for j in prange(n * npix):
        noise_pixel(images, keys, out, j, npix, fpixels, roi_xmin, roi_xmax, roi_ymin, roi_ymax, adc_offset)


def philox_keys(seeds):
    """The Philox keys of noise seeds (Python ints, any sign): uint64[n, 2] = (seed mod 2^64) as (low, high)."""
    keys = np.empty((len(seeds), 2), dtype=np.uint64)
    for i, s in enumerate(seeds):
        s = int(s) & 0xFFFFFFFFFFFFFFFF
        keys[i, 0] = s & 0xFFFFFFFF
        keys[i, 1] = s >> 32
    return keys
