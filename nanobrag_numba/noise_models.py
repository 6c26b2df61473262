"""Detector noise models of the C program noisify, as package functions.

One implementation for every caller: the ``nanobrag-numba noisify`` command
(``noisify_cli.py``) and the Python API (``nanobrag_numba.noisify(...)``)
both call :func:`noisify`, which follows noisify.c (6-28-21) step by step:

1. photons = ``(fluence * r_e^2) * scale * value`` (float32);
2. with ``noise=False`` the PSF (if any) is applied to these photons;
3. the noiseless integer images: ``(unsigned)(photons*gain + adc)``,
   truncated, clipped at 65535 (16 bit) / 2147483647 (32 bit);
4. the 8-bit PGM: ``min(255, noiseless 16-bit pixel)``;
5. with noise: per pixel in raster order flicker (``gaussdev(seed)``),
   calibration error (``gaussdev(calib_seed)``) and the Poisson draw
   (``poidev(seed)``); the PSF on the photon counts; then gain, offset and
   read-out noise (``gaussdev(seed)``) into the integer images.

The random streams are C's own (``kernels/crand.py``: ran1 with ONE shuffle
table and gaussdev with ONE spare deviate shared by both seeds), so the same
seeds give the same images as the C program.  The per-pixel sequential loops
are Numba kernels (``kernels/noisify.py``); nothing loops over pixels in Python.

C defects corrected by default and reproduced with ``c_quirks=True``
(``-c_quirks``): ``psf_edge_wrap`` (PSF light one column past the right edge
lands in column 0 of the next row) and ``noiseless_int32_clipped`` (the
noiseless 32-bit image clipped at 65535).  A negative ADU (``-adc 0`` with
read-out noise, negative input) is 0 by default; C's conversion is undefined
and ``c_quirks`` reproduces what gcc on x86-64 makes of it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from .errors import NanoBraggError

#: noise generators of :func:`noisify` (see its ``generator``)
GENERATORS = ("c", "counter")
#: per-pixel flags of the counter pipeline (``kernels/noisify_counter.py``)
FLAG_OVER16, FLAG_OVER32, FLAG_NEGATIVE = 1, 2, 4

__all__ = ["NoisifyResult", "noisify", "photon_image", "apply_psf", "psf_fwhm_pixels",
           "R_E_SQR", "DEFAULT_FLUENCE", "DEFAULT_CALIB_SEED_WORD"]

#: Thomson cross section (m^2), C's ``r_e_sqr``
R_E_SQR = 7.94079248018965e-30
#: C's default fluence: with it, photons = scale * value
DEFAULT_FLUENCE = 125932015286227086360700780544.0
#: C's ``calib_seed = 123456789``: a raw (positive) seed WORD, not ``-N``
DEFAULT_CALIB_SEED_WORD = 123456789

_PSF_KINDS = {"gauss": 2, "fiber": 1}


@dataclass
class NoisifyResult:
    """The images noisify.c writes, and what it reports.

    Attributes
    ----------
    photons : numpy.ndarray
        float32 ``(slow, fast)`` ideal photons/pixel (after the PSF when
        ``noise=False``), the input of the noiseless image.
    int_image : numpy.ndarray
        Noiseless image: uint16, or uint32 with ``bits=32`` (``-intfile``).
    pgm : numpy.ndarray
        uint8 ``min(255, noiseless 16-bit pixel)`` (``-pgmfile``).
    noise_image : numpy.ndarray or None
        Image with noise, uint16 or uint32 (``-noisefile``); None with ``noise=False``.
    counts : numpy.ndarray or None
        float32 photon counts after the Poisson draw and the PSF (what the
        noise image is made of); None with ``noise=False``.
    photons_before_psf, photons_total : float
        C's two printed sums (Poisson counts before the PSF; signal of the noise image).
    overloads : int
        Noise-image pixels clipped (at 65535 for 16 bit, 2147483647 for 32 bit).
    seed : int
        The ``-seed`` used (the clock's when none was given, as C).
    notes : list of str
        One line per corrected C behaviour this input touched (none under ``c_quirks``).
    log : list of str
        What the C program prints about the run (radius chosen, lost photons, ...).
    """

    photons: np.ndarray
    int_image: np.ndarray
    pgm: np.ndarray
    noise_image: Optional[np.ndarray] = None
    counts: Optional[np.ndarray] = None
    photons_before_psf: float = 0.0
    photons_total: float = 0.0
    overloads: int = 0
    seed: int = 0
    notes: List[str] = field(default_factory=list)
    log: List[str] = field(default_factory=list)


def _kernels():
    from .kernels import crand as kc
    from .kernels import noisify as kn
    return kc, kn


def photon_image(values, scale: float = 1.0, fluence: float = DEFAULT_FLUENCE) -> np.ndarray:
    """``(float)((fluence*r_e^2) * scale * value)``: the input on the photon scale.

    Parameters
    ----------
    values : array_like
        Ideal image (photons/pixel at the default fluence).
    scale : float
        ``-scale``.
    fluence : float
        ``-fluence`` (photons/m^2); the default makes the factor ~1.

    Returns
    -------
    numpy.ndarray
        float32, same shape.
    """
    v = np.asarray(values, dtype=np.float32).astype(np.float64)
    return (((fluence * R_E_SQR) * scale) * v).astype(np.float32)


def psf_fwhm_pixels(psf_fwhm_um: float, pixel_mm: float) -> float:
    """C's ``psf_fwhm/pixel``: the FWHM held as a float32 in metres, divided by the pixel (m)."""
    return float(np.float32(float(psf_fwhm_um) / 1e6)) / (float(pixel_mm) / 1000.0)


def apply_psf(photons, psf: str, fwhm_pixels: float, radius: int = 0, c_quirks: bool = False,
              log: Optional[list] = None):
    """Blur a photon image with noisify's point-spread function.

    Each pixel with I > 0 spreads its photons over the pixels within its
    rendering radius with weights = the PSF integrated over each pixel
    (Gaussian: erf form; fiber: ``g/(2 pi (g^2+r^2)^1.5)``, g = 0.652383 FWHM);
    the photons beyond the radius (computed analytically) are added back
    evenly over the whole image.  ``radius=0`` chooses the radius per pixel
    from its intensity, as C does.  Light that falls off the image is lost.

    Parameters
    ----------
    photons : numpy.ndarray
        ``(slow, fast)`` photons per pixel (float32 arithmetic, as C).
    psf : {"gauss", "fiber"}
        PSF shape.
    fwhm_pixels : float
        FWHM in pixels (see :func:`psf_fwhm_pixels`).
    radius : int
        Rendering radius in pixels, 0 = automatic; capped at the larger image dimension.
    c_quirks : bool
        Reproduce C's bounds test (``psf_edge_wrap``).
    log : list, optional
        Receives C's messages (radius chosen, lost photons) and, without
        ``c_quirks``, a note when the edge correction changed the result.

    Returns
    -------
    numpy.ndarray
        float32 ``(slow, fast)``.
    """
    kc, kn = _kernels()
    img = np.ascontiguousarray(photons, dtype=np.float32)
    if img.ndim != 2:
        raise NanoBraggError("the PSF needs a 2-D (slow, fast) image, got shape %r" % (img.shape,))
    if psf not in _PSF_KINDS:
        raise NanoBraggError("unknown PSF type %r (gauss or fiber)" % (psf,))
    radius = int(radius)
    if radius < 0:
        raise NanoBraggError("the PSF radius must be 0 (automatic) or a positive number of pixels, got %d" % radius)
    if not (fwhm_pixels > 0 and math.isfinite(fwhm_pixels)):
        raise NanoBraggError("the PSF FWHM must be a positive number, got %r" % (fwhm_pixels,))
    log = [] if log is None else log
    kind = _PSF_KINDS[psf]
    ypixels, xpixels = img.shape
    flat = img.ravel()
    maxwidth = max(xpixels, ypixels)
    max_i = None
    if radius <= 0:
        max_i = float(np.max(flat)) if flat.size else 0.0
        if not math.isfinite(max_i):
            max_i = float(np.nanmax(flat))
    table = _psf_table(kind, fwhm_pixels, radius, maxwidth, max_i, log)
    if table is None:
        return np.zeros_like(img)
    radii, total_lost = kn.psf_radii(flat, kind, float(fwhm_pixels), radius, maxwidth)
    if c_quirks:
        out, _wrapped = kn.psf_scatter(flat, xpixels, ypixels, table, radii, True)
    else:
        # the same sums either way (bit for bit): per output pixel in parallel when the radii are
        # similar, per source when a few bright pixels have much larger discs than the rest
        rmax = int(radii.max()) if radii.size else 0
        r = radii[radii > 0].astype(np.float64)
        scatter_cost = float(np.sum((2 * r + 1) ** 2))
        import numba
        gather_cost = flat.size * (2.0 * rmax + 1) ** 2 / max(1, numba.get_num_threads())
        if gather_cost < scatter_cost:
            out = kn.psf_gather(flat, xpixels, ypixels, table, radii, rmax)
        else:
            out, _wrapped = kn.psf_scatter(flat, xpixels, ypixels, table, radii, False)
        # count what C's bounds test would have moved (cheap: only the last column's sources matter)
        wrapped = _edge_wrap_touched(img, radii.reshape(img.shape), table)
        if wrapped:
            log.append("note: PSF light falling one column past the right edge is dropped; C adds it to "
                       "column 0 of the next row (psf_edge_wrap; -c_quirks restores C's behaviour)")
    kn.add_uniform(out, total_lost / (xpixels * ypixels))
    log.append("adding back %g lost photons" % total_lost)
    return out.reshape(img.shape)


def _psf_table(kind, fwhm_pixels, radius, maxwidth, max_i, log):
    """noisify.c's PSF kernel table: ``radius`` pixels, or (``radius`` 0) chosen from the
    brightest pixel ``max_i``, printing C's lines; None when there are no photons (no PSF)."""
    from .kernels import noisify as kn
    if radius <= 0:
        log.append("  maximum input photon/pixel: %g" % max_i)
        if max_i <= 0.0:
            log.append("WARNING: no photons, PSF skipped")
            return None
        table_r = int(kn.auto_radius(kind, max_i, float(fwhm_pixels), False))
        log.append("  auto-selected psf_radius = %d pixels" % table_r)
        if table_r == 0:
            table_r = 1
    else:
        table_r = radius
    table_r = min(table_r, maxwidth)
    return kn.psf_kernel_table(kind, float(fwhm_pixels), table_r)


def _edge_wrap_touched(img, radii, table) -> bool:
    """Whether C's ``x > xpixels`` test would move light (a source within its radius of the right edge)."""
    ypixels, xpixels = img.shape
    tr = table.shape[0] // 2
    cols = np.arange(xpixels)
    reach = radii >= (xpixels - cols)[None, :]            # x0 + r >= xpixels
    reach &= img > 0
    if not reach.any():
        return False
    ys, xs = np.nonzero(reach)
    for y0, x0 in zip(ys, xs):
        dx = xpixels - x0
        r = int(radii[y0, x0])
        for dy in range(-r, r + 1):
            y = y0 + dy
            if y < 0 or y >= ypixels - 1 or dx * dx + dy * dy > r * r:
                continue
            if abs(dy) <= tr and dx <= tr and table[tr + dy, tr + dx] != 0.0:
                return True
    return False


def _seed_word(seed, name) -> int:
    s = int(seed)
    if abs(s) > 2147483647:
        raise NanoBraggError("%s must fit in 32 bits (C reads it with atoi), got %d" % (name, s))
    return -s


def _as_image(image):
    """A ``Result`` of the simulator or an array: the float image and the pixel size (mm) if known."""
    pixel_mm = None
    if hasattr(image, "floatimage") and hasattr(image, "prep"):
        try:
            pixel_mm = float(image.prep.cfg.pixel_size) * 1000.0
        except AttributeError:
            pixel_mm = None
        image = image.floatimage
    arr = np.asarray(image)
    if arr.dtype.kind not in "fiu":
        raise NanoBraggError("noisify needs a numeric image, got dtype %s" % arr.dtype)
    if arr.ndim != 2 or arr.size == 0:
        raise NanoBraggError("noisify needs a non-empty 2-D (slow, fast) image, got shape %r" % (arr.shape,))
    return arr, pixel_mm


def noisify(image, *, scale: float = 1.0, fluence: float = DEFAULT_FLUENCE, gain: float = 1.0,
            adc: float = 40.0, readout: float = 0.0, flicker: float = 0.0, calibration: float = 0.03,
            psf: Optional[str] = None, psf_fwhm_um: float = 46.0, psf_radius: int = 0,
            pixel_mm: Optional[float] = None, bits: int = 16, seed: Optional[int] = None,
            calib_seed: Optional[int] = None, noise: bool = True, c_quirks: bool = False,
            generator: str = "c", device: str = "cpu") -> NoisifyResult:
    """Detector noise on an ideal image, as the C program noisify computes it.

    Parameters
    ----------
    image : numpy.ndarray or Result
        ``(slow, fast)`` photons/pixel, or a :class:`~nanobrag_numba.api.Result`
        of ``simulate``/``Simulator.render`` (its float image and pixel size).
    scale : float
        ``-scale``: multiplies every value before the noise.
    fluence : float
        ``-fluence`` (photons/m^2); photons = fluence * r_e^2 * scale * value.
    gain : float
        ``-gain``: ADU per photon.
    adc : float
        ``-adc``: offset added to every pixel (ADU).
    readout : float
        ``-readout_noise``: Gaussian read-out noise rms (ADU).
    flicker : float
        ``-flicker``: fractional source intensity noise, per pixel.
    calibration : float
        ``-calibration``: fractional per-pixel gain error (default 3 %, from ``calib_seed``).
    psf : {"gauss", "fiber"} or None
        ``-psf``: point-spread function applied to the photon counts.
    psf_fwhm_um : float
        ``-psf_fwhm`` in micrometres (default 46).
    psf_radius : int
        ``-psf_radius`` in pixels (0: automatic per pixel).
    pixel_mm : float, optional
        ``-pixel`` (mm), converts the PSF FWHM to pixels; default: the
        Result's pixel size, else 0.1 mm.
    bits : {16, 32}
        ``-bits``: unsigned 16-bit or 32-bit integer images.
    seed : int, optional
        ``-seed`` of flicker, Poisson and read-out noise (default: the clock, as C).
    calib_seed : int, optional
        ``-calib_seed`` (default: C's 123456789 seed word).
    noise : bool
        False is ``-nonoise``: only the noiseless image (PSF applied to it).
    c_quirks : bool
        Reproduce the C defects listed in the module docstring.
    generator : {"c", "counter"}
        ``c`` (default): C's serial generators, the C program's images bit
        for bit, on the CPU.  ``counter``: every random number of a pixel
        from Philox4x32-10 keyed by (seed, pixel index, stream) -- one
        stream per model, Box-Muller Gaussians (``kernels/noisify_counter.py``,
        docs/differences.md) -- so the pixels are drawn in parallel, on all
        CPU cores or on the GPU, with the same integers on both; not C's numbers.
    device : {"cpu", "cuda"}
        Where the counter generator's noise runs (``cuda``: numba.cuda
        kernels, the PSF as a per-output-pixel gather).  The noiseless
        images draw no random numbers and are computed on the CPU.

    Returns
    -------
    NoisifyResult

    Raises
    ------
    NanoBraggError
        For an impossible setting (bits other than 16/32, negative PSF
        radius or FWHM, non-finite numbers, an empty image, an unknown
        generator or device, ``device="cuda"`` with C's serial generator or
        without a usable GPU).
    """
    kc, kn = _kernels()
    values, res_pixel = _as_image(image)
    for name, v in (("scale", scale), ("fluence", fluence), ("gain", gain), ("adc", adc), ("readout", readout),
                    ("flicker", flicker), ("calibration", calibration), ("psf_fwhm_um", psf_fwhm_um)):
        if not math.isfinite(float(v)):
            raise NanoBraggError("%s must be a finite number, got %r" % (name, v))
    if int(bits) not in (16, 32):
        raise NanoBraggError("bits must be 16 or 32, got %r" % (bits,))
    if psf is not None and psf not in _PSF_KINDS:
        raise NanoBraggError("unknown PSF type %r (gauss or fiber)" % (psf,))
    if int(psf_radius) < 0:
        raise NanoBraggError("psf_radius must be 0 (automatic) or positive, got %r" % (psf_radius,))
    if float(psf_fwhm_um) < 0:
        raise NanoBraggError("psf_fwhm_um must not be negative, got %r" % (psf_fwhm_um,))
    if generator not in GENERATORS:
        raise NanoBraggError("unknown noise generator %r (use %s)" % (generator, " or ".join(GENERATORS)))
    if device not in ("cpu", "cuda"):
        raise NanoBraggError("unknown device %r (use cpu or cuda)" % (device,))
    if device == "cuda" and generator != "counter":
        raise NanoBraggError("C's noise generator is serial and runs on the CPU: device='cuda' needs "
                             "generator='counter'")
    if pixel_mm is None:
        pixel_mm = res_pixel if res_pixel is not None else 0.1
    if not (float(pixel_mm) > 0 and math.isfinite(float(pixel_mm))):
        raise NanoBraggError("pixel_mm must be a positive number, got %r" % (pixel_mm,))
    if not np.all(np.isfinite(values)):
        raise NanoBraggError("the image holds %d values that are not finite (NaN or infinity)"
                             % int(np.count_nonzero(~np.isfinite(values))))
    if seed is None:
        seed = int(time.time())
    seed_word = _seed_word(seed, "seed")
    calib_word = DEFAULT_CALIB_SEED_WORD if calib_seed is None else _seed_word(calib_seed, "calib_seed")
    bits = int(bits)

    res = NoisifyResult(photons=None, int_image=None, pgm=None, seed=int(seed))
    log = res.log
    if not noise:
        calibration = readout = flicker = 0.0
    fwhm_pixels = psf_fwhm_pixels(psf_fwhm_um, pixel_mm)
    do_psf = psf is not None and float(np.float32(float(psf_fwhm_um) / 1e6)) > 0.0

    photons = photon_image(values, scale, fluence)
    shape = photons.shape
    if not noise and do_psf:
        log.append("  applying PSF to noiseless image width = %g pixels" % fwhm_pixels)
        photons = apply_psf(photons, psf, fwhm_pixels, int(psf_radius), c_quirks, log)
    res.photons = photons

    # the generator state of one C process: one shuffle table, one spare deviate
    tab = kc.new_table()
    fst = kc.new_fstate()
    seed_idum = np.array([seed_word], dtype=np.int64)
    calib_idum = np.array([calib_word], dtype=np.int64)

    flat = np.ascontiguousarray(photons.ravel())
    i16, i32, _tot, _o16, _o32, neg = kn.adu_images(flat, float(gain), float(adc), 0.0, bool(c_quirks),
                                                    bool(c_quirks), seed_idum, tab, fst)
    if bits == 32 and not c_quirks and np.any(i32 > 65535):
        res.notes.append("the noiseless 32-bit image keeps values above 65535; C clips them at 65535 "
                         "(noiseless_int32_clipped; -c_quirks restores C's behaviour)")
    if neg and not c_quirks:
        res.notes.append("%d noiseless pixels have a negative ADU and are 0; C's conversion is undefined "
                         "(-c_quirks gives what gcc makes of it)" % neg)
    res.int_image = (i16 if bits == 16 else i32).reshape(shape)
    res.pgm = np.minimum(i16, 255).astype(np.uint8).reshape(shape)
    if not noise:
        res.notes.extend(n[len("note: "):] for n in log if n.startswith("note: "))
        res.log = [n for n in log if not n.startswith("note: ")]
        return res

    if generator == "counter":
        ops = counter_ops(device)
        out = counter_pipeline(
            ops, ops.asarray(flat, np.float32), shape[1], shape[0], seed=int(seed),
            calib_seed=DEFAULT_CALIB_SEED_WORD if calib_seed is None else int(calib_seed),
            flicker=float(flicker), calibration=float(calibration), psf=psf if do_psf else None,
            fwhm_pixels=fwhm_pixels, psf_radius=int(psf_radius), gain=float(gain), adc=float(adc),
            readout=float(readout), c_quirks=bool(c_quirks), psf_fwhm_um=float(psf_fwhm_um), log=log)
        res.photons_before_psf = out["before"]
        res.photons_total = out["total"]
        flags = ops.to_host(out["flags"])
        res.overloads = int(np.count_nonzero(flags & (FLAG_OVER16 if bits == 16 else FLAG_OVER32)))
        neg = int(np.count_nonzero(flags & FLAG_NEGATIVE))
        if neg and not c_quirks:
            res.notes.append("%d noise-image pixels have a negative ADU and are 0; C's conversion is undefined "
                             "(-c_quirks gives what gcc makes of it)" % neg)
        res.noise_image = ops.to_host(out["n16"] if bits == 16 else out["n32"]).reshape(shape)
        res.counts = ops.to_host(out["counts"]).reshape(shape)
        res.notes.extend(n[len("note: "):] for n in log if n.startswith("note: "))
        res.log = [n for n in log if not n.startswith("note: ")]
        return res

    counts, before = kn.noise_photons(flat, float(flicker), float(calibration), seed_idum, calib_idum, tab, fst)
    res.photons_before_psf = float(before)
    if do_psf:
        log.append("%.0f photons on noise image before PSF" % before)
        log.append("  applying PSF width = %g um" % (float(np.float32(float(psf_fwhm_um) / 1e6)) * 1e6))
        counts = apply_psf(counts.reshape(shape), psf, fwhm_pixels, int(psf_radius), c_quirks, log).ravel()
    n16, n32, total, o16, o32, neg = kn.adu_images(counts, float(gain), float(adc), float(readout), False,
                                                   bool(c_quirks), seed_idum, tab, fst)
    res.photons_total = float(total)
    res.overloads = int(o16 if bits == 16 else o32)
    if neg and not c_quirks:
        res.notes.append("%d noise-image pixels have a negative ADU and are 0; C's conversion is undefined "
                         "(-c_quirks gives what gcc makes of it)" % neg)
    res.noise_image = (n16 if bits == 16 else n32).reshape(shape)
    res.counts = counts.reshape(shape)
    res.notes.extend(n[len("note: "):] for n in log if n.startswith("note: "))
    res.log = [n for n in log if not n.startswith("note: ")]
    return res


# ---------------------------------------------------------------- the counter generator's pipeline


class CpuOps:
    """The steps of :func:`counter_pipeline` on all CPU cores (numpy arrays; ``kernels/noisify_counter.py``)."""

    name = "cpu"

    def __init__(self):
        from .kernels import noisify_counter as K
        self.K = K

    def asarray(self, a, dtype=None):
        return np.ascontiguousarray(a, dtype=dtype)

    def empty(self, n, dtype):
        return np.empty(n, dtype=dtype)

    def to_host(self, a):
        return a

    def counts(self, *args):
        self.K.counts_cpu(*args)

    def psf_setup(self, *args):
        self.K.psf_setup_cpu(*args)

    def edge_wrap(self, *args):
        self.K.edge_wrap_cpu(*args)

    def row_stats(self, values, xpixels, ypixels):
        sums = np.empty(ypixels)
        maxima = np.empty(ypixels)
        self.K.row_stats_cpu(values, xpixels, sums, maxima)
        return sums, maxima

    def psf(self, *args):
        self.K.psf_cpu(*args)

    def adu(self, *args):
        self.K.adu_cpu(*args)

    def synchronize(self):
        pass


def counter_ops(device: str):
    """The step runner of :func:`counter_pipeline` for ``cpu`` or ``cuda`` (a usable GPU, or NanoBraggError)."""
    if device == "cuda":
        from .backends import choose
        choose("cuda")
        from .kernels.cuda_noisify import CudaOps
        return CudaOps()
    return CpuOps()


def _ordered_sum(values) -> float:
    """Row sums added in row order (the same on every device)."""
    total = 0.0
    for v in np.asarray(values, dtype=np.float64).tolist():
        total += v
    return total


def counter_pipeline(ops, photons, xpixels: int, ypixels: int, *, seed: int, calib_seed: int = DEFAULT_CALIB_SEED_WORD,
                     flicker: float = 0.0, calibration: float = 0.0, psf: Optional[str] = None,
                     fwhm_pixels: float = 1.0, psf_radius: int = 0, gain: float = 1.0, adc: float = 40.0,
                     readout: float = 0.0, c_quirks: bool = False, origin=(0, 0), stride: Optional[int] = None,
                     psf_fwhm_um: Optional[float] = None, log: Optional[list] = None) -> dict:
    """noisify's noise image with the counter generator, every step one parallel pass (CPU or device).

    Parameters
    ----------
    ops : CpuOps or kernels.cuda_noisify.CudaOps
        Where the passes run (:func:`counter_ops`).
    photons : array
        float32 flat ``ypixels*xpixels`` photons/pixel, on that device.
    seed, calib_seed : int
        Keys of the Poisson/flicker/read-out streams and of the calibration stream.
    origin, stride : optional
        The image's place on the detector: pixel (x, y) is detector pixel
        ``(origin[1] + y) * stride + origin[0] + x`` (default: the image is the detector).
    log : list, optional
        Receives the PSF's lines, as :func:`apply_psf` writes them.

    Returns
    -------
    dict
        ``counts`` (float32, after the PSF), ``n16``, ``n32``, ``flags``
        (device arrays of ``ops``), ``before`` and ``total`` (photons before
        and after the PSF, double, rows summed in order).
    """
    from .kernels.noisify_counter import key_words
    log = [] if log is None else log
    n = xpixels * ypixels
    ox, oy = (int(v) for v in origin)
    stride = xpixels if stride is None else int(stride)
    k0, k1 = key_words(seed)
    c0, c1 = key_words(calib_seed)
    counts = ops.empty(n, np.float32)
    ops.counts(photons, counts, xpixels, ox, oy, stride, float(flicker), float(calibration), k0, k1, c0, c1)
    sums, _m = ops.row_stats(counts, xpixels, ypixels)
    before = _ordered_sum(sums)
    if psf is not None:
        log.append("%.0f photons on noise image before PSF" % before)
        if psf_fwhm_um is not None:
            log.append("  applying PSF width = %g um" % (float(np.float32(float(psf_fwhm_um) / 1e6)) * 1e6))
        counts = _counter_psf(ops, counts, xpixels, ypixels, psf, fwhm_pixels, int(psf_radius), c_quirks, log)
    n16 = ops.empty(n, np.uint16)
    n32 = ops.empty(n, np.uint32)
    flags = ops.empty(n, np.uint8)
    ops.adu(counts, xpixels, ox, oy, stride, float(gain), float(adc), float(readout), k0, k1, bool(c_quirks),
            n16, n32, flags)
    sums, _m = ops.row_stats(counts, xpixels, ypixels)
    return {"counts": counts, "n16": n16, "n32": n32, "flags": flags, "before": before,
            "total": _ordered_sum(sums)}


def _scatter_is_cheaper(radii, rmax, npix) -> bool:
    """Whether C's per-source loop (one core) beats the per-output-pixel gather (all cores), as in :func:`apply_psf`."""
    import numba
    r = radii[radii > 0].astype(np.float64)
    return npix * (2.0 * rmax + 1) ** 2 / max(1, numba.get_num_threads()) > float(np.sum((2 * r + 1) ** 2))


def _counter_psf(ops, image, xpixels, ypixels, psf, fwhm_pixels, radius, c_quirks, log):
    """:func:`apply_psf` as parallel passes: per-pixel radii, per-output-pixel gather (same sums as C's loop)."""
    from .kernels import noisify as kn
    kind = _PSF_KINDS[psf]
    maxwidth = max(xpixels, ypixels)
    n = xpixels * ypixels
    max_i = None
    if radius <= 0:
        _s, maxima = ops.row_stats(image, xpixels, ypixels)
        max_i = float(np.max(maxima))
    table = _psf_table(kind, fwhm_pixels, radius, maxwidth, max_i, log)
    if table is None:
        return ops.asarray(np.zeros(n, dtype=np.float32))
    radii = ops.empty(n, np.int32)
    lost = ops.empty(n, np.float64)
    ops.psf_setup(image, radii, lost, kind, float(fwhm_pixels), int(radius), maxwidth)
    lsums, _m = ops.row_stats(lost, xpixels, ypixels)
    total_lost = _ordered_sum(lsums)
    _s, rmaxes = ops.row_stats(radii, xpixels, ypixels)
    rmax = int(np.max(rmaxes))
    if ops.name == "cpu" and _scatter_is_cheaper(radii, rmax, n):
        # a few bright pixels with much larger discs than the rest: C's per-source loop, the same bits
        out, _w = kn.psf_scatter(image, xpixels, ypixels, table, radii, bool(c_quirks))
        kn.add_uniform(out, total_lost / n)
    else:
        out = ops.empty(n, np.float32)
        ops.psf(image, out, xpixels, ypixels, table, radii, rmax, bool(c_quirks), total_lost / n)
    if not c_quirks:
        touched = ops.empty(n, np.uint8)
        ops.edge_wrap(image, radii, table, xpixels, ypixels, touched)
        _s, tmax = ops.row_stats(touched, xpixels, ypixels)
        if np.max(tmax) > 0:
            log.append("note: PSF light falling one column past the right edge is dropped; C adds it to "
                       "column 0 of the next row (psf_edge_wrap; -c_quirks restores C's behaviour)")
    log.append("adding back %g lost photons" % total_lost)
    return out


# ---------------------------------------------------------------- the main command's noise image


def detector_model_on(cfg) -> bool:
    """Whether a nanoBragg Config asks for noisify's detector model (any of its flags given)."""
    return bool(cfg.readout_noise > 0 or cfg.flicker_noise > 0 or cfg.calibration_noise > 0 or cfg.psf)


def detector_noise(floatimage, cfg, roi, pixel_size_m: float, seed: int, generator: str = "c",
                   device: str = "cpu"):
    """The main command's noise image with noisify's detector model (``-readout_noise``, ``-psf``...).

    The region of interest is the detector: noisify's loops run over the ROI
    rectangle (raster order, C's generators from a fresh state, as a separate
    noisify run on the float image would), pixels outside it are 0.  Gain 1
    and ``-adc`` as for nanoBragg's own noise image; the calibration error is
    off unless ``-calibration`` is given.  Without any of these flags the
    caller keeps nanoBragg's Poisson noise loop (C's image).  ``generator``
    and ``device`` as in :func:`noisify` (``batch --noise-generator counter``
    uses the counter generator; its pixel index is that of the ROI rectangle).

    Returns
    -------
    image : numpy.ndarray
        uint16 ``(slow, fast)``.
    photons : float
        Sum of the Poisson counts.
    overloads : int
        Pixels clipped at 65535.
    notes : list of str
        Corrected-behaviour notes (see :func:`noisify`).
    """
    img = np.asarray(floatimage, dtype=np.float32)
    xmin, xmax, ymin, ymax = (int(v) for v in roi)
    sub = np.ascontiguousarray(img[ymin:ymax + 1, xmin:xmax + 1])
    out = np.zeros(img.shape, dtype=np.uint16)
    if sub.size == 0:
        return out, 0.0, 0, []
    res = noisify(sub, adc=float(cfg.adc_offset), readout=float(cfg.readout_noise),
                  flicker=float(cfg.flicker_noise), calibration=float(cfg.calibration_noise), psf=cfg.psf,
                  psf_fwhm_um=float(cfg.psf_fwhm_um), psf_radius=int(cfg.psf_radius),
                  pixel_mm=float(pixel_size_m) * 1000.0, seed=int(seed), calib_seed=cfg.calib_seed,
                  c_quirks=bool(cfg.c_quirks), generator=generator, device=device)
    out[ymin:ymax + 1, xmin:xmax + 1] = res.noise_image
    return out, res.photons_before_psf, res.overloads, list(res.notes)
