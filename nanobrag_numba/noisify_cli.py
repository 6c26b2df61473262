"""``nanobrag-numba noisify`` / ``noisify``: the C program noisify's command line.

Flags, defaults and output files are noisify.c's (6-28-21); the images come
from :func:`nanobrag_numba.noise_models.noisify`.  The parser follows C's
argument loop, which differs from nanoBragg's:

* a word that contains ``floatimage.bin`` anywhere is the input image (C's
  first test, before the flags);
* every other word starting with ``-`` is tested against EVERY flag with
  ``strstr`` (``-psf``, ``-detsize`` and ``-detpixels`` only when the word
  has exactly that length); every flag that matches and has a word after
  it is applied; values are never consumed;
* a flag at the end of the line is ignored (C needs ``argc > i+1``), except
  ``-psf``, where C reads past the end and crashes: an error here.

As in the main command, a spelling that is not a flag's name or documented
alias but that C matches prints a ``note:`` naming the flag it was read as,
an ignored word prints a ``note:``, ``-strict`` makes those errors, values
must be numbers, and ``-c_quirks`` reproduces the C defects listed in
docs/differences.md.  This module imports no Numba code until a run starts.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import List, Optional

from .errors import NanoBraggError

PROG = "nanobrag-numba"


@dataclass(frozen=True)
class NFlag:
    name: str
    patterns: tuple           # C's strstr needles
    kind: str                 # float, int, trunc (atof stored in an int), str, psf, switch
    exact: bool = False       # C's strlen(word) == len(name) condition
    aliases: tuple = ()       # other documented spellings (no note)
    help: str = ""
    noop: str = ""            # why the flag changes nothing

    def matches(self, word: str) -> bool:
        if self.exact:
            return word == self.name
        return any(p in word for p in self.patterns)


def _f(name, kind, help, patterns=None, **kw):
    return NFlag(name, tuple(patterns or (name,)), kind, help=help, **kw)


#: the flags in the order of C's checks
TABLE = (
    _f("-lambda", "float", "wavelength in Angstrom (header only)"),
    _f("-Xbeam", "float", "direct-beam X in mm (header only)"),
    _f("-Ybeam", "float", "direct-beam Y in mm (header BEAM_CENTER_Y = detsize_y - Ybeam)"),
    _f("-distance", "float", "detector distance in mm (header only)"),
    _f("-detsize", "float", "detector size in mm", exact=True,
       noop="noisify always recomputes the detector size from -pixel and the pixel counts"),
    _f("-detsize_x", "float", "detector width in mm",
       noop="noisify always recomputes the detector size from -pixel and the pixel counts"),
    _f("-detsize_y", "float", "detector height in mm",
       noop="noisify always recomputes the detector size from -pixel and the pixel counts"),
    _f("-detpixels", "int", "pixels along both sides", exact=True),
    _f("-detpixels_x", "int", "fast pixels (width)"),
    _f("-detpixels_y", "int", "slow pixels (height)"),
    _f("-pixel", "float", "pixel size in mm (converts -psf_fwhm to pixels; header)"),
    _f("-psf", "psf", "point-spread function: gauss or fiber", exact=True),
    _f("-psf_radius", "trunc", "PSF rendering radius in pixels (0: automatic)", patterns=("-psf_rad",)),
    _f("-psf_fwhm", "float", "PSF full width at half maximum in um (default 46)",
       patterns=("-psf_si", "-psf_fw", "-psf_wi"), aliases=("-psf_width",)),
    _f("-fluence", "float", "photons/m^2: photons = fluence*r_e^2*scale*value"),
    _f("-floatfile", "str", "input image: raw float32 photons/pixel (any word containing floatimage.bin too)",
       patterns=("-floatfile", "-floatimage", "-bin"), aliases=("-floatimage", "-bin")),
    _f("-header", "str", "copy the SMV header of this file (its size, pixel, distance, wavelength, beam)"),
    _f("-pgmfile", "str", "8-bit PGM output (default image.pgm)", patterns=("-pgmfile", "-pgmimage"),
       aliases=("-pgmimage",)),
    _f("-intfile", "str", "noiseless SMV output (default intimage.img)", patterns=("-intfile", "-intimage"),
       aliases=("-intimage",)),
    _f("-bits", "int", "16 (unsigned_short, default) or 32 (long_integer) output pixels"),
    _f("-noisefile", "str", "SMV output with noise (default noiseimage.img)",
       patterns=("-noisefile", "-noiseimage"), aliases=("-noiseimage",)),
    _f("-nonoise", "switch", "no noise: only the noiseless image and the PGM (PSF applied to them)"),
    _f("-nopgm", "switch", "do not write the PGM"),
    _f("-readout_noise", "float", "Gaussian read-out noise rms in ADU", patterns=("-readout", "-readnoi"),
       aliases=("-readout", "-readnoise")),
    _f("-flicker", "float", "fractional source flicker (per pixel)"),
    _f("-calibration", "float", "fractional per-pixel calibration error (default 0.03)"),
    _f("-scale", "float", "multiplies every input value before the noise"),
    _f("-seed", "int", "seed of flicker, Poisson and read-out noise (default: the clock)"),
    _f("-calib_seed", "int", "seed of the calibration error (default 123456789)"),
    _f("-badpix_seed", "int", "(parsed by C, no effect)", noop="noisify makes no bad pixels"),
    _f("-hotpix_seed", "int", "(parsed by C, no effect)", noop="noisify makes no hot pixels"),
    _f("-adc", "float", "ADC offset in ADU (default 40)"),
    _f("-gain", "float", "ADU per photon (default 1)"),
    _f("-phi", "float", "PHI/OSC_START of the header (degrees)"),
    _f("-osc", "float", "OSC_RANGE of the header (degrees)"),
)
PORT_FLAGS = {"-c_quirks": "reproduce C's defects (docs/differences.md)",
              "-strict": "make every note about the command line an error"}
HELP_WORDS = ("-h", "-help", "--help")
ALIASES = {a for f in TABLE for a in (f.name,) + f.aliases}


@dataclass
class Settings:
    floatfile: Optional[str] = None
    headerfile: Optional[str] = None
    intfile: str = "intimage.img"
    pgmfile: str = "image.pgm"
    noisefile: str = "noiseimage.img"
    lambda_A: float = 1.0
    xbeam_mm: Optional[float] = None
    ybeam_mm: Optional[float] = None
    distance_mm: float = 100.0
    xpixels: int = 0
    ypixels: int = 0
    pixel_mm: float = 0.1
    psf: Optional[str] = None
    psf_radius: int = 0
    psf_fwhm_um: float = 46.0
    fluence: float = 125932015286227086360700780544.0
    bits: int = 16
    noise: bool = True
    pgm: bool = True
    readout: float = 0.0
    flicker: float = 0.0
    calibration: float = 0.03
    scale: float = 1.0
    seed: Optional[int] = None
    calib_seed: Optional[int] = None
    adc: float = 40.0
    gain: float = 1.0
    phi: float = 0.0
    osc: float = 1.0
    c_quirks: bool = False
    notes: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)


def _show(word):
    return word if word and word.isprintable() and word.strip() == word else repr(word)


def _number(flag, text):
    try:
        v = float(text)
    except ValueError:
        raise NanoBraggError("%s expects a number, got %s" % (flag, _show(text))) from None
    if not math.isfinite(v):
        raise NanoBraggError("%s expects a finite number, got %s" % (flag, _show(text)))
    return v


def _integer(flag, text):
    try:
        return int(text.strip())
    except ValueError:
        pass
    v = _number(flag, text)
    if not v.is_integer():
        raise NanoBraggError("%s expects a whole number, got %s" % (flag, _show(text)))
    return int(v)


_FIELD = {"-lambda": "lambda_A", "-Xbeam": "xbeam_mm", "-Ybeam": "ybeam_mm", "-distance": "distance_mm",
          "-pixel": "pixel_mm", "-psf_radius": "psf_radius", "-psf_fwhm": "psf_fwhm_um", "-fluence": "fluence",
          "-floatfile": "floatfile", "-header": "headerfile", "-pgmfile": "pgmfile", "-intfile": "intfile",
          "-bits": "bits", "-noisefile": "noisefile", "-readout_noise": "readout", "-flicker": "flicker",
          "-calibration": "calibration", "-scale": "scale", "-seed": "seed", "-calib_seed": "calib_seed",
          "-adc": "adc", "-gain": "gain", "-phi": "phi", "-osc": "osc", "-detpixels_x": "xpixels",
          "-detpixels_y": "ypixels"}


def parse(argv) -> Settings:
    """noisify.c's argument loop over ``argv`` (without the program name).

    Raises
    ------
    NanoBraggError
        A value that is not a number where C reads one, ``-psf`` without a
        value, an impossible setting, and with ``-strict`` anything a note reports.
    """
    argv = [str(w) for w in argv]
    s = Settings()
    s.c_quirks = "-c_quirks" in argv
    strict = "-strict" in argv
    notes = []
    used = set()
    argc = len(argv)
    for i, word in enumerate(argv):
        if "floatimage.bin" in word:
            s.floatfile = word
            used.add(i)
            continue
        if not word.startswith("-") or word in PORT_FLAGS:
            continue
        matched = [f for f in TABLE if f.matches(word)]
        fired = []
        for f in matched:
            if f.kind == "switch":
                if f.name == "-nonoise":
                    s.noise = False
                else:
                    s.pgm = False
                fired.append(f)
                continue
            if f.kind == "psf":
                if i + 1 >= argc:
                    raise NanoBraggError("-psf needs a value (gauss or fiber); C reads past the end of "
                                         "the command line and crashes")
                v = argv[i + 1]
                used.add(i + 1)
                kind = None
                if "gauss" in v:
                    kind = "gauss"
                if "fiber" in v:
                    kind = "fiber"
                if kind is None:
                    s.warnings.append("WARNING: unknown psf type: %s" % v)
                    notes.append("-psf %s: unknown PSF type (gauss or fiber), no PSF is applied, as in C"
                                 % _show(v))
                elif v != kind:
                    notes.append("-psf %s read as -psf %s (C looks for 'gauss' or 'fiber' in the word)"
                                 % (_show(v), kind))
                s.psf = kind
                fired.append(f)
                continue
            if i + 1 >= argc:
                notes.append("%s needs a value but the command line ends: C ignores it, no effect" % _show(word))
                continue
            v = argv[i + 1]
            used.add(i + 1)
            fired.append(f)
            if f.kind == "str":
                value = v
            elif f.kind == "int":
                value = _integer(_show(word), v)
            elif f.kind == "trunc":
                value = int(_number(_show(word), v))
            else:
                value = _number(_show(word), v)
            if f.noop:
                notes.append("%s has no effect (%s)" % (f.name, f.noop))
                continue
            if f.name == "-detpixels":
                s.xpixels = s.ypixels = value
            elif f.name == "-floatfile":
                s.floatfile = value
            elif f.name in ("-seed", "-calib_seed"):
                if abs(value) > 2147483647:
                    raise NanoBraggError("%s must fit in 32 bits (C reads it with atoi), got %s" % (f.name, v))
                setattr(s, _FIELD[f.name], value)
            else:
                setattr(s, _FIELD[f.name], value)
        if fired and word not in ALIASES:
            notes.append("%s read as %s (C matches flag names by substring)"
                         % (_show(word), " and ".join(f.name for f in fired)))
        elif not matched and i not in used:
            notes.append("unknown flag %s has no effect (C ignores it)" % _show(word))
    for i, word in enumerate(argv):
        if not word.startswith("-") and i not in used:
            notes.append("%s is not the value of any flag: C skips it, no effect" % _show(word))
    if strict and notes:
        raise NanoBraggError("%s (refused under -strict)" % notes[0])
    s.notes = notes
    _validate(s)
    return s


def _validate(s: Settings):
    if s.floatfile is None:
        raise NanoBraggError("no input image: give -floatfile FILE (raw float32 photons/pixel)")
    if s.bits not in (16, 32):
        raise NanoBraggError("-bits must be 16 or 32, got %d" % s.bits)
    if s.xpixels < 0 or s.ypixels < 0:
        raise NanoBraggError("-detpixels must not be negative, got %d x %d" % (s.xpixels, s.ypixels))
    if s.pixel_mm <= 0:
        raise NanoBraggError("-pixel must be positive, got %g" % s.pixel_mm)
    if s.psf_radius < 0:
        raise NanoBraggError("-psf_radius must be 0 (automatic) or a positive number of pixels, got %d"
                             % s.psf_radius)
    if s.psf_fwhm_um < 0:
        raise NanoBraggError("-psf_fwhm must not be negative, got %g" % s.psf_fwhm_um)


def _dimensions(s: Settings, nfloats: int, log):
    """C's pixel counts: -header, -detpixels*, else guessed from the file size (guess_dims)."""
    x, y = s.xpixels, s.ypixels
    pixels = nfloats
    if x == 0 and y == 0:
        if pixels == 0:
            raise NanoBraggError("%s is empty: no pixels to read" % s.floatfile)
        log("WARNING: guessing xy pixel dimensions.")
        x = int(math.sqrt(pixels))
        y = pixels // x
        while pixels != x * y and x > 0:
            x -= 1
            y = pixels // x
        if pixels != x * y:
            x, y = pixels, 1
    if x and not y:
        y = pixels // x
    if y and not x:
        x = pixels // y
    if x == 0 or y == 0:
        raise NanoBraggError("%s holds %d floats, fewer than one row of %d pixels"
                             % (s.floatfile, nfloats, max(x, y)))
    return x, y


def _smv_header(s: Settings, x, y, detsize_y, xbeam, ybeam) -> bytes:
    order = "little_endian" if sys.byteorder == "little" else "big_endian"
    kind = "unsigned_short" if s.bits == 16 else "long_integer"
    pixel = s.pixel_mm / 1000.0
    distance = s.distance_mm / 1000.0
    text = ("{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=%s;\nTYPE=%s;\n" % (order, kind)
            + "SIZE1=%d;\nSIZE2=%d;\nPIXEL_SIZE=%g;\nDISTANCE=%g;\n" % (x, y, pixel * 1000.0, distance * 1000.0)
            + "WAVELENGTH=%g;\nBEAM_CENTER_X=%g;\nBEAM_CENTER_Y=%g;\n" % (s.lambda_A, xbeam * 1000.0,
                                                                         (detsize_y - ybeam) * 1000)
            + "PHI=%g;\nOSC_START=%g;\nOSC_RANGE=%g;\n" % (s.phi, s.phi, s.osc)
            + "DETECTOR_SN=000;\nBEAMLINE=fake;\n}\f")
    raw = text.encode("ascii")
    return raw + b" " * max(0, 512 - len(raw))


def run(s: Settings, out=print) -> int:
    """Read the input, compute the images, write the files (all or none)."""
    import numpy as np

    from .io import read_input
    from .io.atomic import atomic_write_bytes, check_outputs, output_transaction
    from .io.images import format_pgm_header
    from .noise_models import noisify

    for text in s.warnings:
        out(text)
    out("noisify - add noise to pixels - James Holton 3-19-16")
    for text in s.notes:
        out("note: %s" % text)
    outputs = [("-intfile", s.intfile)]
    if s.pgm:
        outputs.append(("-pgmfile", s.pgmfile))
    if s.noise:
        outputs.append(("-noisefile", s.noisefile))
    inputs = [("-floatfile", s.floatfile)] + ([("-header", s.headerfile)] if s.headerfile else [])
    check_outputs(outputs, inputs)

    path, raw = read_input(s.floatfile, "input image")
    nfloats = len(raw) // 4
    pixel = s.pixel_mm / 1000.0
    header = None
    if s.headerfile is not None:
        from .io.smv import header_value, read_smv
        out("taking header from %s" % s.headerfile)
        frame = read_smv(s.headerfile)
        header = frame.header_text.encode("latin-1")[:frame.header_size]
        s.xpixels, s.ypixels = frame.width, frame.height
        text = frame.header_text
        v = header_value(text, "PIXEL_SIZE")
        if v == v:
            s.pixel_mm = v
            pixel = v / 1000.0
        v = header_value(text, "DISTANCE")
        if v == v:
            s.distance_mm = v
        v = header_value(text, "WAVELENGTH")
        if v == v:
            s.lambda_A = v
        v = header_value(text, "BEAM_CENTER_X")
        if v == v:
            s.xbeam_mm = v
        v = header_value(text, "BEAM_CENTER_Y")
        if v == v:
            s.ybeam_mm = (pixel * s.ypixels - v / 1000.0) * 1000.0
    x, y = _dimensions(s, nfloats, out)
    pixels = x * y
    if nfloats < pixels:
        raise NanoBraggError("%s holds %d floats, fewer than the %d x %d = %d pixels of the image"
                             % (path, nfloats, x, y, pixels))
    if nfloats > pixels:
        out("note: %s holds %d floats; the first %d (%d x %d) are read, as C does" % (path, nfloats, pixels, x, y))
    values = np.frombuffer(raw, dtype="<f4" if sys.byteorder == "little" else ">f4", count=pixels)
    values = values.reshape(y, x)
    if not np.all(np.isfinite(values)):
        raise NanoBraggError("%s holds %d values that are not finite (NaN or infinity)"
                             % (path, int(np.count_nonzero(~np.isfinite(values)))))
    detsize_x = pixel * x
    detsize_y = pixel * y
    xbeam = s.xbeam_mm / 1000.0 if s.xbeam_mm is not None else detsize_x / 2.0
    ybeam = s.ybeam_mm / 1000.0 if s.ybeam_mm is not None else detsize_y / 2.0
    out("importing %d pixel intensites: %s" % (pixels, s.floatfile))
    out("  distance=%g detsize=%gx%g  pixel=%g meters (%dx%d pixels)"
        % (s.distance_mm / 1000.0, detsize_x, detsize_y, pixel, x, y))
    negative = int(np.count_nonzero(values < 0))
    if negative:
        out("WARNING: %d negative intensities in %s (smallest %g)" % (negative, s.floatfile, float(values.min())))
    if s.seed is None:
        import time
        s.seed = int(time.time())
    out("  seed: %d" % -s.seed)
    max_i = float(values.max())
    out("maximum value in input file: %g ( %g on photon scale)"
        % (max_i, max_i * s.scale * s.fluence * 7.94079248018965e-30))

    res = noisify(values, scale=s.scale, fluence=s.fluence, gain=s.gain, adc=s.adc, readout=s.readout,
                  flicker=s.flicker, calibration=s.calibration, psf=s.psf, psf_fwhm_um=s.psf_fwhm_um,
                  psf_radius=s.psf_radius, pixel_mm=s.pixel_mm, bits=s.bits, seed=s.seed,
                  calib_seed=s.calib_seed, noise=s.noise, c_quirks=s.c_quirks)
    for line in res.log:
        out(line)
    for text in res.notes:
        out("note: %s" % text)
    if header is None:
        header = _smv_header(s, x, y, detsize_y, xbeam, ybeam)
    order = "<" if sys.byteorder == "little" else ">"
    dtype = np.dtype(order + ("u2" if s.bits == 16 else "u4"))
    with output_transaction():
        out("writing %s as %d %d-byte integers" % (s.intfile, pixels, dtype.itemsize))
        atomic_write_bytes(s.intfile, (header, np.ascontiguousarray(res.int_image, dtype=dtype)))
        if s.pgm:
            out("writing %s as 1-byte integers" % s.pgmfile)
            atomic_write_bytes(s.pgmfile, (format_pgm_header(x, y, 1.0), np.ascontiguousarray(res.pgm)))
        if s.noise:
            out("%.0f photons on noise image (%d overloads)" % (res.photons_total, res.overloads))
            out("writing %s as %d-byte integers" % (s.noisefile, dtype.itemsize))
            atomic_write_bytes(s.noisefile, (header, np.ascontiguousarray(res.noise_image, dtype=dtype)))
    return 0


def help_text() -> str:
    lines = ["usage: %s noisify -floatfile floatimage.bin [flags]   (also: noisify ...)" % PROG,
             "Adds detector noise to an ideal float image, as James Holton's noisify.c: writes",
             "intimage.img (noiseless SMV), image.pgm and noiseimage.img (SMV with noise).", "", "flags:"]
    for f in TABLE:
        names = ", ".join((f.name,) + f.aliases)
        value = "" if f.kind == "switch" else " X"
        lines.append("  %-34s %s" % (names + value, f.help))
    for name, text in PORT_FLAGS.items():
        lines.append("  %-34s %s" % (name, text))
    return "\n".join(lines) + "\n"


def main(argv=None, prog=PROG) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(w in HELP_WORDS for w in argv):
        sys.stdout.write(help_text())
        return 0

    def noisify():
        if not argv:
            sys.stdout.write(help_text())
            raise NanoBraggError("no flags given: at least -floatfile FILE is needed")
        return run(parse(argv))

    from .entry import guarded
    return guarded(prog, noisify, oom_hint="the image or the PSF radius is too large")


def console_main():
    """The installed ``noisify`` command (ends like the main command's render, see ``cli._exit_now``)."""
    from .cli import _exit_now, _one_blas_thread, _skip_numba_blas_probe
    _one_blas_thread()
    _skip_numba_blas_probe()
    _exit_now(main(prog="noisify"))
