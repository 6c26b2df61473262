"""The command line: nanoBragg's flags, in order, onto a :class:`Config`.

``nanobrag-numba`` (alias ``nanoBragg``, or ``python -m nanobrag_numba``)
accepts the C program's flags with the same meanings, defaults and aliases.
argparse tokenises the command line; every flag is recorded as an event in
command-line order and then applied to a Config exactly as the C parser
would apply it (later flags win, ``-Xbeam`` chooses the beam pivot,
``-pgmfile`` switches PGM output back on, and so on).

Differences from C's parser: flag names must match exactly (C uses substring
matching), a value that is not a number is an error, and an unknown flag is
an error that names it.  With ``-c_quirks`` the two substring collisions that
change images are emulated (``-twotheta_axis`` also setting ``-twotheta``,
``-misset_seed N a b`` also setting ``-misset``).

``nanobrag-numba compare ...`` runs the comparison tool (see ``compare.py``),
``nanobrag-numba example`` renders a built-in example (``example.py``) and
``nanobrag-numba batch ...`` renders many images (``batch.py``).
This module imports no Numba code, so ``--help`` and input errors are fast.
"""
from __future__ import annotations

import argparse
import difflib
import math
import re
import sys

from .config import RTD, Config
from .errors import NanoBraggError

PROG = "nanobrag-numba"

# canonical flag -> (aliases, nargs, metavar, help)
# nargs: 0, an int, "+" (1..6 numbers for -cell), "misset" (random | 3 numbers)
FLAGS = {}


def _flag(names, nargs, metavar, helptext):
    names = names.split()
    FLAGS[names[0]] = (tuple(names[1:]), nargs, metavar, helptext)


# crystal
_flag("-hkl", 1, "FILE", "structure factors, lines of 'h k l F' (P1, no symmetry applied)")
_flag("-mat", 1, "FILE", "MOSFLM-style orientation matrix (reciprocal vectors x wavelength)")
_flag("-cell", "+", "A", "unit cell a b c alpha beta gamma (A, degrees); missing values default")
_flag("-misset", "misset", "X", "crystal rotations about x y z (degrees), or 'random'")
_flag("-misset_seed", 1, "N", "seed of -misset random (default: time)")
_flag("-default_F", 1, "F", "structure factor of every hkl not in the table (default 0)")
_flag("-dump", 1, "FILE", "binary structure-factor cache written after -hkl, read without it (Fdump.bin)")
_flag("-N", 1, "N", "number of unit cells along a, b and c")
_flag("-Na", 1, "N", "number of unit cells along a")
_flag("-Nb", 1, "N", "number of unit cells along b")
_flag("-Nc", 1, "N", "number of unit cells along c")
_flag("-xtalsize -xtal_size", 1, "MM", "crystal size along a, b and c (mm), instead of -N")
_flag("-xtal_thick -xtal_x", 1, "MM", "crystal size along a (mm)")
_flag("-xtal_width -xtal_y", 1, "MM", "crystal size along b (mm)")
_flag("-xtal_height -xtal_heigh -xtal_z", 1, "MM", "crystal size along c (mm)")
_flag("-samplesize -sample_size", 1, "MM", "same as -xtalsize")
_flag("-sample_thick -sample_x", 1, "MM", "same as -xtal_thick")
_flag("-sample_width -sample_y -width", 1, "MM", "same as -xtal_width")
_flag("-sample_height -sample_heigh -sample_z -height -heigh", 1, "MM", "same as -xtal_height")
_flag("-square_xtal", 0, None, "parallelepiped crystal: sincg lattice transform (default)")
_flag("-round_xtal", 0, None, "ellipsoidal crystal: sinc3 lattice transform")
_flag("-gauss_xtal", 0, None, "Gaussian spots, no inter-Bragg maxima")
_flag("-tophat_spots -binary_spots", 0, None, "flat-top spots clipped at the FWHM")
_flag("-fudge", 1, "X", "scale of the spot radius for -round_xtal/-gauss_xtal/-tophat_spots")
_flag("-interpolate", 0, None, "tricubic interpolation of F between hkl (default: on when N <= 2)")
_flag("-nointerpolate", 0, None, "nearest-hkl structure factors")
# beam
_flag("-lambda -wave -wavelength", 1, "A", "wavelength (A, default 1)")
_flag("-energy", 1, "EV", "photon energy (eV), instead of -lambda")
_flag("-dispersion", 1, "PCT", "spectral width delta-lambda/lambda (percent)")
_flag("-dispsteps", 1, "N", "number of wavelengths")
_flag("-divergence", 1, "MRAD", "horizontal and vertical divergence range (mrad)")
_flag("-hdivrange", 1, "MRAD", "horizontal divergence range (mrad)")
_flag("-vdivrange", 1, "MRAD", "vertical divergence range (mrad)")
_flag("-hdivstep", 1, "MRAD", "horizontal divergence step (mrad)")
_flag("-vdivstep", 1, "MRAD", "vertical divergence step (mrad)")
_flag("-hdivsteps", 1, "N", "number of horizontal divergence steps")
_flag("-vdivsteps", 1, "N", "number of vertical divergence steps")
_flag("-divsteps", 1, "N", "number of divergence steps, both directions")
_flag("-round_div", 0, None, "clip the divergence grid to an ellipse (default)")
_flag("-square_div", 0, None, "use the full divergence grid")
_flag("-sourcefile", 1, "FILE", "sources, lines of 'X Y Z weight lambda(m)' (weights are not used, as in C)")
_flag("-fluence", 1, "PH/M2", "integrated incident fluence (photons/m^2)")
_flag("-flux", 1, "PH/S", "incident flux (photons/s), with -exposure and -beamsize")
_flag("-exposure", 1, "S", "exposure time (s)")
_flag("-beamsize", 1, "MM", "beam size (mm)")
_flag("-polar", 1, "K", "Kahn polarization factor (default 0)")
_flag("-nopolar", 0, None, "no polarization correction")
_flag("-dmin", 1, "A", "skip contributions with resolution finer than this (A)")
_flag("-water", 1, "UM", "thickness of water around the crystal for the background (microns)")
# motion
_flag("-phi", 1, "DEG", "starting spindle angle (degrees)")
_flag("-osc", 1, "DEG", "oscillation range (degrees)")
_flag("-phistep", 1, "DEG", "spindle step (degrees)")
_flag("-phisteps", 1, "N", "number of spindle steps")
_flag("-mosaic -mosaicity -mosaic_spread", 1, "DEG", "isotropic mosaic spread (degrees)")
_flag("-mosaic_domains -mosaic_dom", 1, "N", "number of mosaic domains")
_flag("-mosaic_seed", 1, "N", "seed of the mosaic domains (default 12345678)")
# detector
_flag("-distance", 1, "MM", "sample to beam spot distance (mm, default 100)")
_flag("-close_distance", 1, "MM", "sample to detector plane distance (mm)")
_flag("-pixel", 1, "MM", "pixel size (mm, default 0.1)")
_flag("-detsize", 1, "MM", "detector size, both directions (mm)")
_flag("-detsize_f", 1, "MM", "detector size along fast (mm)")
_flag("-detsize_s", 1, "MM", "detector size along slow (mm)")
_flag("-detpixels", 1, "N", "detector size in pixels, both directions")
_flag("-detpixels_f -detpixels_x", 1, "N", "detector pixels along fast")
_flag("-detpixels_s -detpixels_y", 1, "N", "detector pixels along slow")
_flag("-Xbeam", 1, "MM", "direct beam position (mm), convention's X")
_flag("-Ybeam", 1, "MM", "direct beam position (mm), convention's Y")
_flag("-Xclose", 1, "MM", "near point (mm), convention's X")
_flag("-Yclose", 1, "MM", "near point (mm), convention's Y")
_flag("-ORGX", 1, "PIX", "XDS origin along fast (pixels)")
_flag("-ORGY", 1, "PIX", "XDS origin along slow (pixels)")
_flag("-mosflm", 0, None, "MOSFLM convention (the default)")
_flag("-denzo", 0, None, "DENZO convention")
_flag("-adxv", 0, None, "ADXV convention")
_flag("-xds", 0, None, "XDS convention")
_flag("-dials", 0, None, "DIALS convention")
_flag("-fdet_vector", 3, "X", "fast detector axis (custom convention)")
_flag("-sdet_vector", 3, "X", "slow detector axis (custom convention)")
_flag("-odet_vector", 3, "X", "detector normal (custom convention)")
_flag("-beam_vector", 3, "X", "beam direction (custom convention)")
_flag("-polar_vector", 3, "X", "E-vector of the beam (custom convention)")
_flag("-spindle_axis", 3, "X", "spindle axis (custom convention)")
_flag("-twotheta_axis", 3, "X", "two-theta axis (custom convention)")
_flag("-pix0_vector", 3, "M", "vector from sample to the first pixel (m) (custom convention)")
_flag("-pivot", 1, "WHERE", "detector pivot: beam or sample")
_flag("-twotheta", 1, "DEG", "detector two-theta swing (degrees)")
_flag("-detector_rotx", 1, "DEG", "detector rotation about x (degrees)")
_flag("-detector_roty", 1, "DEG", "detector rotation about y (degrees)")
_flag("-detector_rotz", 1, "DEG", "detector rotation about z (degrees)")
_flag("-curved_det", 0, None, "spherical detector: every pixel at the same distance")
_flag("-point_pixel", 0, None, "solid angle 1/R^2, no obliquity")
_flag("-detector_thick", 1, "UM", "sensor thickness (microns)")
_flag("-detector_abs -detector_absorb -detector_absorption", 1, "UM", "sensor attenuation depth (microns) or inf")
_flag("-detector_thicksteps -thicksteps", 1, "N", "number of sensor layers")
_flag("-oversample", 1, "N", "sub-pixels per pixel edge (default: automatic)")
_flag("-oversample_thick", 0, None, "capture fraction per sub-pixel")
_flag("-oversample_polar", 0, None, "polarization per sub-pixel and source")
_flag("-oversample_omega", 0, None, "solid angle per sub-pixel")
_flag("-roi", 4, "N", "render only xmin xmax ymin ymax (pixels, inclusive)")
_flag("-mask", 1, "FILE", "SMV mask: render only non-zero pixels; its header sets defaults")
_flag("-img", 1, "FILE", "SMV image whose header sets the detector defaults")
# output
_flag("-floatfile -floatimage", 1, "FILE", "raw float32 image (floatimage.bin)")
_flag("-intfile -intimage", 1, "FILE", "SMV image without noise (intimage.img)")
_flag("-noisefile -noiseimage", 1, "FILE", "SMV image with Poisson noise (noiseimage.img)")
_flag("-pgmfile -pgmimage", 1, "FILE", "8-bit PGM image (image.pgm)")
_flag("-nonoise", 0, None, "do not write the noise image")
_flag("-nopgm", 0, None, "do not write the PGM image")
_flag("-scale", 1, "X", "scale of the int image (default: 55000/max)")
_flag("-pgmscale", 1, "X", "scale of the PGM image (default: 250/(5 rmsd))")
_flag("-adc", 1, "X", "offset added to int and noise pixels (default 40)")
_flag("-seed", 1, "N", "seed of the noise image (default: time)")
_flag("-printout", 0, None, "print pixel values")
_flag("-printout_pixel", 2, "N", "print only pixel FAST SLOW (implies -printout)")
_flag("-noprogress", 0, None, "no progress meter")
_flag("-progress", 0, None, "progress meter (default)")
# accepted by C, no effect on any image
_flag("-coherent", 0, None, "accepted, no effect (as in C)")
_flag("-density -sample_density -sample_den", 1, "X", "accepted, no effect (as in C)")
_flag("-MW -molecular_weight -molec", 1, "X", "accepted, no effect (as in C)")
_flag("-stol", 1, "FILE", "read, no effect on the images (as in C)")
_flag("-4stol", 1, "FILE", "read, no effect on the images (as in C)")
_flag("-Q", 1, "FILE", "read, no effect on the images (as in C)")
_flag("-stolout", 1, "FILE", "accepted, no effect (as in C)")
# this port
_flag("-c_quirks", 0, None, "reproduce the C program's defects exactly (see docs/differences.md)")
_flag("-device", 1, "DEV", "cpu, cuda or auto (default auto: CUDA when a GPU is usable)")
_flag("-precision", 1, "P", "double (default, C parity) or single (GPU speed)")
_flag("-trace_pixel", 2, "N", "print every factor of pixel SLOW FAST as TRACE_PY lines")

ALIASES = {}
for _canon, (_aliases, *_rest) in FLAGS.items():
    ALIASES[_canon] = _canon
    for _a in _aliases:
        ALIASES[_a] = _canon

NOOP = {"-coherent", "-density", "-MW", "-stol", "-4stol", "-Q", "-stolout"}


class _Record(argparse.Action):
    """Append (canonical flag, values) to one ordered event list."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.events.append((ALIASES[option_string], option_string, values))


class _Parser(argparse.ArgumentParser):
    """argparse that raises NanoBraggError instead of printing usage."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        # negative numbers with exponents (-1e-5) are values, not flags
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-inf$")

    def _get_option_tuples(self, option_string):
        # no abbreviations and no "-Xvalue" forms: flag names match exactly
        # (otherwise "-4" would be read as an abbreviation of "-4stol")
        return []

    def error(self, message):
        raise NanoBraggError(message)


def build_parser():
    """The argparse parser (tokenising and help only; meanings are in apply_flag)."""
    p = _Parser(prog=PROG, add_help=False, allow_abbrev=False,
                description="nanoBragg-compatible diffraction simulator (Numba CPU / CUDA). "
                            "Writes floatimage.bin, intimage.img, noiseimage.img and image.pgm.",
                epilog="Flags take the same values and units as the C program nanoBragg. "
                       "'%s compare -h' describes the comparison tool." % PROG)
    p.add_argument("-h", "-help", "--help", action="help", help="show this help and exit")
    p.add_argument("--version", action="version", version="%(prog)s " + _version())
    for canon, (aliases, nargs, metavar, helptext) in FLAGS.items():
        names = [canon] + list(aliases)
        if nargs == 0:
            p.add_argument(*names, nargs=0, action=_Record, help=helptext)
        elif nargs in ("+", "misset"):
            p.add_argument(*names, nargs="+", action=_Record, metavar=metavar, help=helptext)
        else:
            p.add_argument(*names, nargs=nargs, action=_Record, metavar=metavar, help=helptext)
    return p


def _version():
    try:
        from importlib.metadata import version
        return version("nanobrag-numba")
    except Exception:  # not installed (running from a checkout)
        return "0.1.0"


def _num(flag, text):
    try:
        v = float(text)
    except ValueError:
        raise NanoBraggError("%s expects a number, got %r" % (flag, text)) from None
    if math.isnan(v):
        raise NanoBraggError("%s expects a number, got %r" % (flag, text))
    return v


def _int(flag, text):
    v = _num(flag, text)
    if not v.is_integer():
        raise NanoBraggError("%s expects a whole number, got %r" % (flag, text))
    return int(v)


def _atof(text):
    """C's atof: the longest numeric prefix, 0.0 when there is none."""
    m = re.match(r"\s*[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?|inf|nan)", text, re.I)
    return float(m.group(0)) if m else 0.0


def apply_flag(cfg, flag, given, vals, quirk_tail=None):
    """Apply one flag to ``cfg`` the way nanoBragg's parser does.

    Parameters
    ----------
    cfg : Config
        Modified in place.
    flag : str
        Canonical flag name (see ``FLAGS``).
    given : str
        The spelling on the command line (for messages).
    vals : list of str
        The flag's values.
    quirk_tail : list of str, optional
        With ``-c_quirks``, the command-line words after the flag (C's
        parser looks past the flag's own values).
    """
    v = vals
    f = given
    mm = lambda i=0: _num(f, v[i]) / 1000.0  # noqa: E731
    if flag == "-N":
        cfg.Na = cfg.Nb = cfg.Nc = _int(f, v[0])
    elif flag in ("-Na", "-Nb", "-Nc"):
        setattr(cfg, flag[1:], _int(f, v[0]))
    elif flag == "-cell":
        if len(v) > 6:
            raise NanoBraggError("-cell takes at most 6 numbers (a b c alpha beta gamma), got %d" % len(v))
        nums = [_num(f, x) for x in v] + [0.0] * (6 - len(v))
        cfg.cell = (nums[0], nums[1], nums[2], nums[3] / RTD, nums[4] / RTD, nums[5] / RTD)
    elif flag == "-misset":
        if len(v) == 1 and "rand" in v[0]:
            cfg.misset_random = True
        elif len(v) == 3:
            cfg.misset = tuple(_num(f, x) / RTD for x in v)
            cfg.misset_random = False
        else:
            raise NanoBraggError("-misset takes three angles (degrees) or 'random', got %r" % " ".join(v))
    elif flag == "-misset_seed":
        cfg.misset_seed = _int(f, v[0])
        if quirk_tail is not None and len(quirk_tail) >= 3:
            # C: "-misset_seed" also matches "-misset" when three words follow
            cfg.quirk_hits = cfg.quirk_hits + ("misset_seed_substring",)
            if cfg.c_quirks:
                cfg.misset = (_atof(quirk_tail[0]) / RTD, _atof(quirk_tail[1]) / RTD,
                              _atof(quirk_tail[2]) / RTD)
                cfg.misset_random = False
    elif flag in ("-samplesize", "-xtalsize"):
        cfg.sample_x = cfg.sample_y = cfg.sample_z = mm()
    elif flag in ("-sample_thick", "-xtal_thick"):
        cfg.sample_x = mm()
    elif flag in ("-sample_width", "-xtal_width"):
        cfg.sample_y = mm()
    elif flag in ("-sample_height", "-xtal_height"):
        cfg.sample_z = mm()
    elif flag in ("-density", "-MW", "-coherent", "-stolout"):
        if v:
            _num(f, v[0]) if flag in ("-density", "-MW") else None
        cfg.noop_flags = cfg.noop_flags + (given,)
    elif flag in ("-stol", "-4stol", "-Q"):
        cfg.stolfile = v[0]
        cfg.noop_flags = cfg.noop_flags + (given,)
    elif flag == "-Xbeam":
        cfg.Xbeam = mm(); cfg.pivot = "BEAM"
    elif flag == "-Ybeam":
        cfg.Ybeam = mm(); cfg.pivot = "BEAM"
    elif flag == "-Xclose":
        cfg.Xclose = mm(); cfg.pivot = "SAMPLE"
    elif flag == "-Yclose":
        cfg.Yclose = mm(); cfg.pivot = "SAMPLE"
    elif flag == "-ORGX":
        cfg.ORGX = _num(f, v[0]); cfg.pivot = "SAMPLE"
    elif flag == "-ORGY":
        cfg.ORGY = _num(f, v[0]); cfg.pivot = "SAMPLE"
    elif flag == "-pivot":
        word = v[0].lower()
        if "sample" in word:
            cfg.pivot = "SAMPLE"
        elif "beam" in word:
            cfg.pivot = "BEAM"
        else:
            raise NanoBraggError("-pivot takes 'beam' or 'sample', got %r" % v[0])
    elif flag in ("-mosflm", "-adxv", "-denzo", "-xds", "-dials"):
        cfg.convention = flag[1:].upper()
        cfg.pivot = "SAMPLE" if flag == "-xds" else "BEAM"
    elif flag in ("-fdet_vector", "-sdet_vector", "-odet_vector", "-beam_vector", "-polar_vector",
                  "-spindle_axis", "-twotheta_axis", "-pix0_vector"):
        vec = tuple(_num(f, x) for x in v)
        cfg.convention = "CUSTOM"
        name = {"-spindle_axis": "spindle_vector"}.get(flag, flag[1:])
        setattr(cfg, name, vec)
        if flag == "-twotheta_axis":
            # C: "-twotheta_axis" also matches "-twotheta"
            cfg.quirk_hits = cfg.quirk_hits + ("twotheta_axis_substring",)
            if cfg.c_quirks:
                cfg.detector_twotheta = _atof(v[0]) / RTD
                cfg.pivot = "SAMPLE"
    elif flag == "-distance":
        cfg.distance = mm(); cfg.pivot = "BEAM"
    elif flag == "-close_distance":
        cfg.close_distance = mm(); cfg.pivot = "SAMPLE"
    elif flag == "-detector_abs":
        if "inf" in v[0] or _num(f, v[0]) == 0.0:
            cfg.detector_thick = 0.0
            cfg.detector_mu = 0.0
            cfg.noop_flags = cfg.noop_flags + ("%s %s" % (given, v[0]),)
        else:
            cfg.detector_mu = 1.0 / (_num(f, v[0]) * 1e-6)
    elif flag == "-detector_thick":
        cfg.detector_thick = _num(f, v[0]) * 1e-6
    elif flag == "-detector_thicksteps":
        cfg.detector_thicksteps = _int(f, v[0])
    elif flag == "-twotheta":
        cfg.detector_twotheta = _num(f, v[0]) / RTD; cfg.pivot = "SAMPLE"
    elif flag in ("-detector_rotx", "-detector_roty", "-detector_rotz"):
        setattr(cfg, flag[1:], _num(f, v[0]) / RTD)
    elif flag == "-detsize":
        cfg.detsize_f = cfg.detsize_s = mm()
    elif flag in ("-detsize_f", "-detsize_s"):
        setattr(cfg, flag[1:], mm())
    elif flag == "-detpixels":
        cfg.fpixels = cfg.spixels = _int(f, v[0])
    elif flag == "-detpixels_f":
        cfg.fpixels = _int(f, v[0])
    elif flag == "-detpixels_s":
        cfg.spixels = _int(f, v[0])
    elif flag == "-curved_det":
        cfg.curved_detector = True
    elif flag == "-pixel":
        cfg.pixel_size = mm()
    elif flag == "-point_pixel":
        cfg.point_pixel = True
    elif flag == "-polar":
        cfg.polarization = _num(f, v[0]); cfg.nopolar = False
    elif flag == "-nopolar":
        cfg.nopolar = True
    elif flag in ("-oversample_thick", "-oversample_polar", "-oversample_omega"):
        setattr(cfg, flag[1:], True)
    elif flag == "-oversample":
        cfg.oversample = _int(f, v[0])
    elif flag == "-roi":
        cfg.roi = tuple(_int(f, x) for x in v)
    elif flag == "-lambda":
        cfg.lambda0 = _num(f, v[0]) / 1.0e10
    elif flag == "-energy":
        e = _num(f, v[0])
        if e == 0.0:
            raise NanoBraggError("-energy must be non-zero (eV)")
        cfg.lambda0 = (12398.42 / e) / 1.0e10
    elif flag in ("-fluence", "-flux", "-exposure"):
        setattr(cfg, flag[1:], _num(f, v[0]))
    elif flag == "-beamsize":
        cfg.beamsize = mm()
    elif flag == "-mosaic":
        cfg.mosaic_spread = _num(f, v[0]) / RTD
    elif flag == "-mosaic_domains":
        cfg.mosaic_domains = _int(f, v[0])
    elif flag == "-dispersion":
        cfg.dispersion = _num(f, v[0]) / 100.0
    elif flag == "-dispsteps":
        cfg.dispsteps = _int(f, v[0])
    elif flag == "-divergence":
        cfg.hdivrange = cfg.vdivrange = mm()
    elif flag in ("-hdivrange", "-vdivrange", "-hdivstep", "-vdivstep"):
        setattr(cfg, flag[1:], mm())
    elif flag in ("-hdivsteps", "-vdivsteps"):
        setattr(cfg, flag[1:], _int(f, v[0]))
    elif flag == "-divsteps":
        cfg.hdivsteps = cfg.vdivsteps = _int(f, v[0])
    elif flag == "-round_div":
        cfg.round_div = True
    elif flag == "-square_div":
        cfg.round_div = False
    elif flag == "-adc":
        cfg.adc_offset = _num(f, v[0])
    elif flag == "-phi":
        cfg.phi0 = _num(f, v[0]) / RTD
    elif flag == "-osc":
        cfg.osc = _num(f, v[0]) / RTD
    elif flag == "-phistep":
        cfg.phistep = _num(f, v[0]) / RTD
    elif flag == "-phisteps":
        cfg.phisteps = _int(f, v[0])
    elif flag == "-dmin":
        cfg.dmin = _num(f, v[0]) * 1e-10
    elif flag in ("-mat", "-hkl", "-sourcefile"):
        setattr(cfg, {"-mat": "matfile", "-hkl": "hklfile", "-sourcefile": "sourcefile"}[flag], v[0])
    elif flag == "-dump":
        cfg.dumpfile = v[0]
    elif flag == "-default_F":
        cfg.default_F = _num(f, v[0])
    elif flag in ("-img", "-mask"):
        pass  # read before every other flag (see parse_args)
    elif flag == "-floatfile":
        cfg.floatfile = v[0]
    elif flag == "-intfile":
        cfg.intfile = v[0]
    elif flag == "-pgmfile":
        cfg.pgmfile = v[0]; cfg.write_pgm = True
    elif flag == "-noisefile":
        cfg.noisefile = v[0]; cfg.calculate_noise = True
    elif flag == "-nonoise":
        cfg.calculate_noise = False
    elif flag == "-nopgm":
        cfg.write_pgm = False
    elif flag == "-scale":
        cfg.intfile_scale = _num(f, v[0])
    elif flag == "-pgmscale":
        cfg.pgm_scale = _num(f, v[0]); cfg.write_pgm = True
    elif flag == "-printout":
        cfg.printout = True
    elif flag == "-printout_pixel":
        cfg.printout_pixel = (_int(f, v[0]), _int(f, v[1]))
        cfg.printout = True
    elif flag == "-noprogress":
        cfg.progress = False
    elif flag == "-progress":
        cfg.progress = True
    elif flag == "-interpolate":
        cfg.interpolate = True
    elif flag == "-nointerpolate":
        cfg.interpolate = False
    elif flag in ("-round_xtal", "-square_xtal", "-gauss_xtal", "-tophat_spots"):
        cfg.xtal_shape = {"-round_xtal": "ROUND", "-square_xtal": "SQUARE",
                          "-gauss_xtal": "GAUSS", "-tophat_spots": "TOPHAT"}[flag]
    elif flag == "-fudge":
        cfg.fudge = _num(f, v[0])
    elif flag == "-seed":
        cfg.seed = _int(f, v[0])
    elif flag == "-mosaic_seed":
        cfg.mosaic_seed = _int(f, v[0])
    elif flag == "-water":
        cfg.water_size = _num(f, v[0]) / 1e6
    elif flag == "-c_quirks":
        pass  # applied before every other flag
    elif flag == "-device":
        cfg.device = v[0].lower()
    elif flag == "-precision":
        cfg.precision = v[0].lower()
    elif flag == "-trace_pixel":
        cfg.trace_pixel = (_int(f, v[0]), _int(f, v[1]))
    else:  # pragma: no cover - every FLAGS entry is handled above
        raise AssertionError("unhandled flag " + flag)


def parse_args(argv):
    """Turn a nanoBragg command line into a validated :class:`Config`.

    Raises
    ------
    NanoBraggError
        For an unknown flag, a missing or non-numeric value, or an
        unreadable ``-img``/``-mask`` file.
    """
    parser = build_parser()
    ns = argparse.Namespace(events=[])
    ns, rest = parser.parse_known_args(argv, ns)
    if rest:
        bad = rest[0]
        if bad.startswith("-"):
            close = difflib.get_close_matches(bad, list(ALIASES), n=1)
            hint = " (did you mean %s?)" % close[0] if close else ""
            raise NanoBraggError("unknown flag %s%s" % (bad, hint))
        raise NanoBraggError("unexpected argument %r (every value follows its flag)" % bad)
    events = ns.events
    cfg = Config()
    cfg.c_quirks = any(e[0] == "-c_quirks" for e in events)
    # C reads -mask, then -img, before any other flag: their headers are defaults
    from .config import apply_header_defaults
    for kind in ("-mask", "-img"):
        files = [e[2][0] for e in events if e[0] == kind]
        if files:
            apply_header_defaults(cfg, files[-1], mask=(kind == "-mask"))
    positions = _positions(argv)
    for n, (flag, given, vals) in enumerate(events):
        tail = None
        if flag == "-misset_seed":
            tail = argv[positions[n] + 1:]
        apply_flag(cfg, flag, given, list(vals) if vals is not None else [], tail)
    cfg.validate()
    return cfg


def _positions(argv):
    """Index in argv of each flag word, in order (to find the words after it)."""
    return [i for i, w in enumerate(argv) if w in ALIASES]


def _skip_numba_blas_probe():
    """Keep Numba from importing SciPy's linear algebra at start-up.

    When SciPy is installed, Numba imports ``scipy.linalg`` (0.2 s) the first
    time a kernel loads, to find a BLAS for ``np.dot`` in jitted code.  The
    simulator uses no BLAS, so the command line (a process of its own) marks
    that module absent; Numba then simply reports no BLAS.  Library users of
    ``nanobrag_numba`` are not affected.
    """
    if "scipy.linalg" not in sys.modules:
        sys.modules["scipy.linalg"] = None


def main(argv=None):
    """Entry point of ``nanobrag-numba`` / ``nanoBragg``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "compare":
        from .compare import main as compare_main
        return compare_main(argv[1:])
    if argv and argv[0] == "example":
        from .example import main as example_main
        return example_main(argv[1:])
    if argv and argv[0] == "batch":
        from .batch import main as batch_main
        return batch_main(argv[1:])
    try:
        if not argv:
            build_parser().print_help()
            raise NanoBraggError("no flags given: at least -hkl FILE (or -default_F) and -cell or -mat are needed")
        cfg = parse_args(argv)
        from .simulator import run_command_line
        return run_command_line(cfg)
    except NanoBraggError as exc:
        sys.stdout.flush()
        print("%s: error: %s" % (PROG, exc), file=sys.stderr)
        return 2
    except MemoryError:
        sys.stdout.flush()
        print("%s: error: out of memory (make the detector, -oversample or the HKL table smaller)" % PROG,
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("%s: interrupted" % PROG, file=sys.stderr)
        return 130


def console_main():
    """The installed commands: ``main`` in a process of its own."""
    _skip_numba_blas_probe()
    return main()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(console_main())
