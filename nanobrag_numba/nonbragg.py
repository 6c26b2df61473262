"""``nanobrag-numba nonbragg`` / ``nonBragg``: nonBragg.c's amorphous-scattering simulator.

Takes nonBragg.c's flags (same names, values, units and defaults, matched by
substring as its parser matches them: the rows of :data:`TABLE` are in the
order of its checks) and writes its files: ``floatimage.bin`` (photons per
pixel), ``intimage.img`` and ``noiseimage.img`` (SMV) and ``image.pgm``, and
with ``-img`` the F-vs-stol table ``output.stol`` of that image.

The detector is placed by the main simulator's code
(:func:`nanobrag_numba.geometry._orient`), the sources by
:func:`nanobrag_numba.sources.build_sources`, the pixels by the background
kernel (``kernels/background.py``, shared with :func:`nanobrag_numba.amorphous.background`)
and the noise image by the same bit-exact ran1/poidev port as nanoBragg's
(:class:`nanobrag_numba.crand.CRandom`).

Where nonBragg.c has defects (docs/differences.md, the ``c_quirks`` of the
golden suite) the default is corrected and ``-c_quirks`` reproduces C, with
a ``note:`` line when an input touches one: ``-odet_vector`` and
``-pix0_vector`` are honoured, ``-curved_det`` works as the last word,
``-nopgm`` suppresses the PGM, negative pixels are black in the PGM (C wraps
them modulo 256), the mean/rms statistics (and so the default PGM scale)
count the image's pixels with ``-img`` too, and ``output.stol`` columns 4-5
hold each bin's median and median absolute deviation (C prints
uninitialised values).  Heap bytes C writes after the PGM are never written.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import shlex
import sys
import time
import types
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from .config import RTD
from .errors import NanoBraggError
from .flags import TABLE as _NANOBRAGG_TABLE
from .flags import Flag, _apply, _apply_pivot, _show, scan

PROG = "nanobrag-numba"
BANNER = "nonBragg amorphous material diffraction simulator - James Holton and Ken Frankel 3-19-16"
HELP_WORDS = ("-h", "-help", "--help")

Vec3 = Tuple[float, float, float]

QUIRK_NOTES = {
    "odet_vector_ignored": "-odet_vector sets the detector normal (C replaces it by fdet x sdet)",
    "pix0_vector_ignored": "-pix0_vector sets the detector origin (C ignores the vector)",
    "curved_det_needs_arg": "-curved_det is honoured as the last word (C ignores it unless another word follows)",
    "nopgm_ignored": "-nopgm: no PGM is written (C writes it anyway)",
    "pgm_negative_wrap": "negative pixels are 0 in the PGM (C wraps them modulo 256)",
    "img_stats_count": "the mean and rms (and the default PGM scale) count the image's pixels (with -img C "
                       "divides by the pixel count of the last output.stol bin)",
    "stolout_uninitialised_columns": "output.stol columns 4-5 hold each bin's median and median absolute "
                                     "deviation (C prints uninitialised values)",
    "twotheta_axis_substring": "-twotheta_axis only sets the axis (C's parser also reads it as -twotheta)",
}


@dataclass
class NonBraggConfig:
    """All settings of one nonBragg run, in nonBragg.c's units (m, rad, g/m^3) and with its defaults."""

    # input files
    stolfile: Optional[str] = None
    stol_flag: str = "-stol"               # -stol, -4stol or -Q: the unit of the first column
    stol_mult: float = 1e10
    imgfile: Optional[str] = None
    sourcefile: Optional[str] = None
    # outputs
    floatfile: Optional[str] = "floatimage.bin"
    intfile: Optional[str] = "intimage.img"
    pgmfile: Optional[str] = "image.pgm"
    noisefile: Optional[str] = "noiseimage.img"
    stoloutfile: Optional[str] = "output.stol"
    calculate_noise: bool = True
    nopgm: bool = False
    # sample
    sample_x: float = 1e-4                 # along the beam (thickness)
    sample_y: float = 1e-4
    sample_z: float = 1e-4
    density: float = 1.0e6                 # g/m^3
    molecules: float = 0.0
    molecular_weight: float = 18.0
    # beam
    lambda0: float = 1.0e-10
    dispersion: float = 0.0
    dispsteps: int = -1
    hdivrange: float = -1.0
    vdivrange: float = -1.0
    hdivstep: float = -1.0
    vdivstep: float = -1.0
    hdivsteps: int = -1
    vdivsteps: int = -1
    round_div: bool = True
    source_distance: float = 10.0
    fluence: float = 125932015286227086360700780544.0
    flux: float = 0.0
    exposure: float = 1.0
    beamsize: float = 1e-4
    polarization: float = 0.0
    nopolar: bool = False
    beam_vector: Vec3 = (1.0, 0.0, 0.0)
    polar_vector: Vec3 = (0.0, 0.0, 1.0)
    spindle_vector: Vec3 = (0.0, 0.0, 1.0)
    # header only
    phi0: float = 0.0
    osc: float = -1.0
    phistep: float = -1.0
    phisteps: int = -1
    # detector
    pivot: str = "BEAM"
    distance: float = 100.0e-3
    close_distance: Optional[float] = None
    pixel_size: float = 0.1e-3
    detsize_f: float = 102.4e-3
    detsize_s: float = 102.4e-3
    fpixels: int = 0
    spixels: int = 0
    Xbeam: Optional[float] = None
    Ybeam: Optional[float] = None
    Xclose: Optional[float] = None
    Yclose: Optional[float] = None
    ORGX: Optional[float] = None
    ORGY: Optional[float] = None
    fdet_vector: Vec3 = (0.0, 0.0, 1.0)
    sdet_vector: Vec3 = (0.0, -1.0, 0.0)
    odet_vector: Optional[Vec3] = None     # given with -odet_vector
    twotheta_axis: Vec3 = (0.0, 1.0, 0.0)       # C: {0,0,1,0} (element 0 is the length)
    pix0_vector: Optional[Vec3] = None     # given with -pix0_vector
    detector_twotheta: float = 0.0
    detector_rotx: float = 0.0
    detector_roty: float = 0.0
    detector_rotz: float = 0.0
    curved_detector: bool = False
    point_pixel: bool = False
    Fmap: bool = False
    roi: Optional[Tuple[int, int, int, int]] = None
    oversample: int = -1
    # output scaling
    intfile_scale: float = 0.0
    pgm_scale: float = 0.0
    adc_offset: float = 40.0
    quantum_gain: float = 1.0
    ignore_values: Tuple[int, ...] = ()
    # reporting, seeds
    seed: Optional[int] = None
    progress: bool = True
    printout: bool = False
    printout_pixel: Optional[Tuple[int, int]] = None
    # this port
    c_quirks: bool = False
    device: str = "cpu"
    noop_flags: Tuple[str, ...] = ()
    quirk_hits: Tuple[str, ...] = ()
    parse_notes: Tuple[str, ...] = ()

    def replace(self, **changes) -> "NonBraggConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise NanoBraggError("unknown setting(s) %s (see nanobrag_numba.nonbragg.NonBraggConfig)"
                                 % ", ".join(sorted(unknown)))
        return dataclasses.replace(self, **changes)


# ------------------------------------------------------------------ the flag table

TABLE: List[Flag] = []
GROUPS = ("sample", "beam", "detector", "output", "accepted by C, no effect", "this port")
S_, B_, D_, O_, N_, P_ = GROUPS
_NANOBRAGG_ROWS = {f.name: f for f in _NANOBRAGG_TABLE}


def _f(name, group, helptext, **kw):
    TABLE.append(Flag(name, group, helptext, **kw))


def _same_as_nanobragg(*names):
    """Rows nonBragg.c parses exactly as nanoBragg.c does (match rule, words, conversion, meaning,
    group and help): nanoBragg's row (``flags.TABLE``), here at this point of nonBragg's order."""
    for name in names:
        TABLE.append(copy.copy(_NANOBRAGG_ROWS[name]))


def _vec(field_name, noop=False):
    def apply(cfg, vals, ctx):
        setattr(cfg, field_name, tuple(ctx.num(x) for x in vals))
        if noop:
            cfg.noop_flags = cfg.noop_flags + (_show(ctx.word),)
    return apply


def _apply_pix0(cfg, vals, ctx):
    vec = tuple(ctx.num(x) for x in vals)
    if ctx.word == "-pix0_vector_mm" and not cfg.c_quirks:
        vec = tuple(v / 1000.0 for v in vec)
    cfg.pix0_vector = vec


def _stol(mult_flag):
    def apply(cfg, vals, ctx):
        cfg.stolfile = vals[0]
        cfg.stol_flag = mult_flag
        from .amorphous import STOL_MULT
        cfg.stol_mult = STOL_MULT[mult_flag]
    return apply


def _apply_ignore(cfg, vals, ctx):
    v = ctx.num(vals[0])
    cfg.ignore_values = cfg.ignore_values + (int(math.trunc(v)) & 0xFFFF,)   # C: (unsigned short) atof


def _noop(cfg, vals, ctx):
    cfg.noop_flags = cfg.noop_flags + (_show(ctx.word),)


def _apply_printout_pixel(cfg, vals, ctx):
    cfg.printout_pixel = (ctx.int(vals[0]), ctx.int(vals[1]))
    cfg.printout = True


def _img(cfg, vals, ctx):
    pass  # read before every other flag (see parse_args)


_f("-samplesize", S_, "edge of the (cube) sample (mm)", aliases="-sample_size", match="-samplesize -sample_size",
   fields=("sample_x", "sample_y", "sample_z"), conv="/1000", metavar="MM")
_f("-thickness", S_, "sample thickness along the beam (mm, default 0.1)", aliases="-sample_thick -sample_x -thick",
   match="-sample_thick -sample_x -thick", fields=("sample_x",), conv="/1000", metavar="MM")
_f("-sample_width", S_, "sample width (mm, default 0.1; clipped to the beam)", aliases="-sample_y -width",
   match="-sample_width -sample_y -width", fields=("sample_y",), conv="/1000", metavar="MM")
_f("-sample_height", S_, "sample height (mm, default 0.1; clipped to the beam)",
   aliases="-sample_heigh -sample_z -height -heigh", match="-sample_heigh -sample_z -heigh",
   fields=("sample_z",), conv="/1000", metavar="MM")
_f("-density", S_, "sample density (g/cm^3, default 1)", aliases="-sample_density -sample_den",
   match="-density -sample_den", fields=("density",), conv="*1e6", metavar="G/CM3")
_f("-molecules", S_, "number of molecules (instead of the density)", aliases="-sample_molecules",
   fields=("molecules",), metavar="N")
_f("-MW", S_, "molecular weight (g/mol, default 18)", aliases="-molecular_weight -molecular",
   match="=-MW -molecular", fields=("molecular_weight",), metavar="G/MOL")
_f("-Xbeam", D_, "direct beam position along fast (mm)", fields=("Xbeam",), conv="/1000.0",
   sets=(("pivot", "BEAM"),), metavar="MM")
_f("-Ybeam", D_, "direct beam position along slow (mm)", fields=("Ybeam",), conv="/1000.0",
   sets=(("pivot", "BEAM"),), metavar="MM")
_f("-Xclose", D_, "near point along fast (mm)", fields=("Xclose",), conv="/1000.0", sets=(("pivot", "SAMPLE"),),
   metavar="MM")
_f("-Yclose", D_, "near point along slow (mm)", fields=("Yclose",), conv="/1000.0", sets=(("pivot", "SAMPLE"),),
   metavar="MM")
_f("-ORGX", D_, "near point along fast (pixels)", fields=("ORGX",), sets=(("pivot", "SAMPLE"),), metavar="PIX")
_f("-ORGY", D_, "near point along slow (pixels)", fields=("ORGY",), sets=(("pivot", "SAMPLE"),), metavar="PIX")
_f("-pivot", D_, "detector pivot: beam or sample", kind="str", apply=_apply_pivot, metavar="WHERE",
   doc="pivot = SAMPLE if 'sample' is in the word, then BEAM if 'beam' is")
for _name, _field, _help, _noop_vec in (("-fdet_vector", "fdet_vector", "fast detector axis", False),
                                        ("-sdet_vector", "sdet_vector", "slow detector axis", False),
                                        ("-odet_vector", "odet_vector", "detector normal", False),
                                        ("-beam_vector", "beam_vector", "beam direction", False),
                                        ("-polar_vector", "polar_vector", "E-vector of the beam", False),
                                        ("-spindle_axis", "spindle_vector", "spindle axis (no effect)", True),
                                        ("-twotheta_axis", "twotheta_axis", "two-theta axis", False)):
    _f(_name, N_ if _noop_vec else D_, _help, nargs=3, apply=_vec(_field, _noop_vec),
       doc="%s = (X, Y, Z)" % _field)
_f("-pix0_vector", D_, "vector from the sample to the first pixel (m; -pix0_vector_mm: mm)", nargs=3,
   apply=_apply_pix0, metavar="M", doc="pix0_vector = (X, Y, Z)")
_same_as_nanobragg("-distance", "-close_distance")
_f("-source_distance", B_, "distance of the sources (mm; only their directions matter)",
   fields=("source_distance",), conv="/1000.0", metavar="MM")
_same_as_nanobragg("-twotheta", "-detector_rotx", "-detector_roty", "-detector_rotz", "-detsize")
_f("-detsize_x", D_, "detector size along fast (mm)", fields=("detsize_f",), conv="/1000.0", metavar="MM")
_f("-detsize_y", D_, "detector size along slow (mm)", fields=("detsize_s",), conv="/1000.0", metavar="MM")
_f("-detpixels", D_, "detector pixels, both directions", match="-detpixels/10", kind="int",
   fields=("fpixels", "spixels"), metavar="N")
_f("-detpixels_x", D_, "detector pixels along fast", aliases="-detpixels_f", match="-detpixels_f -detpixels_x",
   kind="int", fields=("fpixels",), metavar="N")
_f("-detpixels_y", D_, "detector pixels along slow", aliases="-detpixels_s", match="-detpixels_s -detpixels_y",
   kind="int", fields=("spixels",), metavar="N")
_f("-curved_det", D_, "spherical detector: every pixel at the same distance", nargs=0, need=0,
   sets=(("curved_detector", True),))
_same_as_nanobragg("-pixel", "-point_pixel")
_f("-Fmap", O_, "store the interpolated F of each pixel instead of photons", nargs=0, sets=(("Fmap", True),))
_same_as_nanobragg("-polar", "-nopolar")
_f("-oversample", D_, "sub-pixels per pixel edge (default 1)", kind="int", fields=("oversample",), metavar="N")
_same_as_nanobragg("-roi", "-lambda", "-energy", "-fluence", "-flux", "-exposure")
_f("-beamsize", B_, "beam size (mm, default 0.1)", fields=("beamsize",), conv="/1000", metavar="MM")
_same_as_nanobragg("-dispersion", "-dispsteps", "-divergence", "-hdivrange", "-vdivrange", "-hdivstep",
                   "-hdivsteps", "-vdivstep", "-vdivsteps", "-divsteps", "-round_div", "-square_div", "-adc")
_f("-gain", O_, "ADU per photon of the -img image (default 1)", fields=("quantum_gain",))
_f("-phi", O_, "spindle angle for the header (degrees)", match="-phi/4", fields=("phi0",), conv="/RTD",
   metavar="DEG")
_f("-osc", O_, "oscillation range for the header (degrees)", fields=("osc",), conv="/RTD", metavar="DEG")
_f("-phistep", O_, "spindle step (degrees; the header's range)", match="-phistep/8", fields=("phistep",),
   conv="/RTD", metavar="DEG")
_f("-phisteps", O_, "number of spindle steps (the header's range)", kind="int", fields=("phisteps",), metavar="N")
_f("-img", D_, "SMV image: its header sets the detector, its pixels give output.stol", kind="str", apply=_img,
   prescan=True, metavar="FILE", doc="imgfile; its header (read before every other flag) sets defaults")
_f("-ignore", O_, "-img pixel value to leave out of output.stol (repeatable)", apply=_apply_ignore, metavar="V",
   doc="ignore_values += (unsigned short) V")
_f("-stolout", O_, "F-vs-stol table written with -img (default output.stol)", match="-stolout>7", kind="str",
   fields=("stoloutfile",), metavar="FILE")
_f("-stol", S_, "structure factor table: sin(theta)/lambda (1/A) and F per line", match="-stol/5", kind="str",
   apply=_stol("-stol"), metavar="FILE", doc="stolfile; stol in 1/A")
_f("-4stol", S_, "the same with 4*sin(theta)/lambda in the first column", match="-4stol/6", kind="str",
   apply=_stol("-4stol"), metavar="FILE", doc="stolfile; first column 4 stol")
_f("-Q", S_, "the same with Q = 4 pi sin(theta)/lambda in the first column", match="-Q/2", kind="str",
   apply=_stol("-Q"), metavar="FILE", doc="stolfile; first column Q")
_f("-sourcefile", B_, "sources, lines of 'X Y Z weight lambda(m)' (weights multiply the intensity)",
   kind="str", fields=("sourcefile",), metavar="FILE")
_same_as_nanobragg("-floatfile", "-intfile")
_f("-pgmfile", O_, "8-bit PGM image (image.pgm)", aliases="-pgmimage", match="-pgmfile -pgmimage", kind="str",
   fields=("pgmfile",), metavar="FILE")
_f("-noisefile", O_, "SMV image with Poisson noise (noiseimage.img); turns the noise back on",
   aliases="-noiseimage", match="-noisefile -noiseimage", kind="str", fields=("noisefile",),
   sets=(("calculate_noise", True),), metavar="FILE")
_same_as_nanobragg("-nonoise")
_f("-nopgm", O_, "do not write the PGM image (C writes it anyway: -c_quirks)", nargs=0, sets=(("nopgm", True),))
_f("-noreject", N_, "accepted, no effect (as in C)", nargs=0, apply=_noop, doc="nothing (noted)")
_same_as_nanobragg("-scale")
_f("-pgmscale", O_, "scale of the PGM image (default: 250/(5 rmsd))", fields=("pgm_scale",))
_f("-coherent", N_, "accepted, no effect (as in C)", nargs=0, apply=_noop, doc="nothing (noted)")
_same_as_nanobragg("-printout", "-noprogress", "-progress")
_f("-printout_pixel", O_, "print only pixel FAST SLOW (implies -printout)", nargs=2,
   apply=_apply_printout_pixel, metavar="N", doc="printout_pixel = (FAST, SLOW); printout = True")
_same_as_nanobragg("-seed")
_f("-c_quirks", P_, "reproduce nonBragg.c's defects exactly (see docs/differences.md)", nargs=0, c_flag=False,
   sets=(("c_quirks", True),))
_f("-strict", P_, "refuse what C would ignore or read by substring", nargs=0, c_flag=False,
   doc="(parser setting: notes become errors)")
_f("-device", P_, "cpu (default) or cuda", kind="str", c_flag=False, metavar="DEV",
   apply=lambda cfg, vals, ctx: setattr(cfg, "device", vals[0].lower()), doc="device = DEV")

ALIASES = {}
for _row in TABLE:
    for _n in _row.names:
        ALIASES.setdefault(_n, _row.name)
COLLISIONS = {("-twotheta_axis", "-twotheta"): "twotheta_axis_substring"}

#: fields that must be finite numbers: (field, flag, factor from SI to the flag's unit)
FINITE = (("sample_x", "-thickness", 1e3), ("sample_y", "-sample_width", 1e3), ("sample_z", "-sample_height", 1e3),
          ("density", "-density", 1e-6), ("molecules", "-molecules", 1.0), ("molecular_weight", "-MW", 1.0),
          ("lambda0", "-lambda", 1e10), ("dispersion", "-dispersion", 100.0), ("fluence", "-fluence", 1.0),
          ("flux", "-flux", 1.0), ("exposure", "-exposure", 1.0), ("beamsize", "-beamsize", 1e3),
          ("polarization", "-polar", 1.0), ("distance", "-distance", 1e3), ("pixel_size", "-pixel", 1e3),
          ("detsize_f", "-detsize_x", 1e3), ("detsize_s", "-detsize_y", 1e3),
          ("detector_twotheta", "-twotheta", RTD), ("detector_rotx", "-detector_rotx", RTD),
          ("detector_roty", "-detector_roty", RTD), ("detector_rotz", "-detector_rotz", RTD),
          ("intfile_scale", "-scale", 1.0), ("pgm_scale", "-pgmscale", 1.0), ("adc_offset", "-adc", 1.0),
          ("quantum_gain", "-gain", 1.0), ("phi0", "-phi", RTD), ("osc", "-osc", RTD))


def flag_words(flags) -> list:
    """A list of words from a string (shell rules) or a list of strings."""
    if isinstance(flags, str):
        try:
            return shlex.split(flags)
        except ValueError as exc:
            raise NanoBraggError("cannot split the flags %r: %s" % (flags, exc)) from None
    if isinstance(flags, (list, tuple)) and all(isinstance(w, str) for w in flags):
        return list(flags)
    raise NanoBraggError("nonBragg flags must be one string or a list of strings, got %s" % type(flags).__name__)


def _apply_img_header(cfg: NonBraggConfig, path: str):
    """nonBragg.c's -img pre-scan: detector defaults from the SMV header (before every flag)."""
    from .io.smv import header_value, read_smv
    smv = read_smv(path)
    hv = lambda key: header_value(smv.header_text, key)  # noqa: E731
    cfg.fpixels, cfg.spixels = smv.width, smv.height
    v = hv("PIXEL_SIZE")
    if not math.isnan(v):
        cfg.pixel_size = v / 1000.0
    cfg.detsize_f = cfg.pixel_size * cfg.fpixels
    cfg.detsize_s = cfg.pixel_size * cfg.spixels
    for key, name, divisor in (("DISTANCE", "distance", 1000.0), ("CLOSE_DISTANCE", "close_distance", 1000.0),
                               ("WAVELENGTH", "lambda0", 1e10), ("BEAM_CENTER_X", "Xbeam", 1000.0),
                               ("ORGX", "ORGX", None), ("ORGY", "ORGY", None), ("PHI", "phi0", RTD),
                               ("OSC_RANGE", "osc", RTD)):
        v = hv(key)
        if not math.isnan(v):
            setattr(cfg, name, v if divisor is None else v / divisor)
    v = hv("BEAM_CENTER_Y")
    if not math.isnan(v):
        cfg.Ybeam = cfg.detsize_s - v / 1000.0
    cfg.imgfile = path
    return smv


def parse_args(argv, need_stol: bool = True, open_files: bool = True) -> NonBraggConfig:
    """A :class:`NonBraggConfig` from nonBragg's flags, matched as nonBragg.c matches them.

    Every word that starts with ``-`` is checked against every row of
    :data:`TABLE` in C's order and every row it satisfies is applied (C's
    ``strstr``/``strlen``/``strcmp`` rules); a non-canonical spelling, an
    ignored word and a stray word print ``note:`` lines (``-strict``: errors).
    """
    argv = [str(w) for w in argv]
    for w in argv:
        if w in HELP_WORDS or w == "--version":
            raise NanoBraggError("%s is a command-line flag" % w)
    quirks = "-c_quirks" in argv
    strict = "-strict" in argv
    events, notes, hits = scan(argv, quirks, table=TABLE, collisions=COLLISIONS, aliases=ALIASES)
    cfg = NonBraggConfig()
    cfg.c_quirks = quirks
    quirk_hits = list(hits)
    # C honours -curved_det only when a word follows it (curved_det_needs_arg)
    last = len(argv) - 1
    kept = []
    for ev in events:
        if ev.flag.name == "-curved_det" and ev.pos == last:
            if quirks:
                notes.append("%s at the end of the command line has no effect (C needs a word after it; "
                             "-c_quirks)" % _show(ev.word))
                continue
            quirk_hits.append("curved_det_needs_arg")
        kept.append(ev)
    events = kept
    if strict and notes:
        raise NanoBraggError("%s (refused under -strict)" % notes[0])
    imgs = [e.vals[0] for e in events if e.flag.name == "-img"]
    if imgs:
        if open_files:
            _apply_img_header(cfg, imgs[-1])
        else:
            cfg.imgfile = imgs[-1]
    value_notes = []
    for ev in events:
        _apply(cfg, ev, value_notes)
    if strict and value_notes:
        raise NanoBraggError("%s (refused under -strict)" % value_notes[0])
    cfg.parse_notes = tuple(notes + value_notes)
    cfg.quirk_hits = tuple(dict.fromkeys(quirk_hits))
    validate(cfg, need_stol)
    return cfg


def validate(cfg: NonBraggConfig, need_stol: bool = True) -> None:
    """Reject settings no image can be made from (one-line messages)."""
    if need_stol and cfg.stolfile is None:
        raise NanoBraggError("no structure factor table: nonBragg needs -stol FILE (lines of sin(theta)/lambda "
                             "in 1/A and F)")
    for name, flag, unit in FINITE:
        v = getattr(cfg, name)
        if v is None:
            continue
        if not math.isfinite(v):
            raise NanoBraggError("%s must be a finite number, got %g" % (flag, v * unit))
    for name, flag, unit in (("pixel_size", "-pixel", 1e3), ("lambda0", "-lambda", 1e10)):
        if not getattr(cfg, name) > 0.0:
            raise NanoBraggError("%s must be a positive number, got %g" % (flag, getattr(cfg, name) * unit))
    if cfg.fpixels < 0 or cfg.spixels < 0:
        raise NanoBraggError("negative detector size: -detpixels %d x %d" % (cfg.fpixels, cfg.spixels))
    if cfg.molecular_weight == 0.0:
        raise NanoBraggError("-MW 0: the molecular weight must not be zero (g/mol)")
    if cfg.quantum_gain == 0.0 and cfg.imgfile is not None:
        raise NanoBraggError("-gain 0: the -img pixels cannot be converted to photons")
    if cfg.oversample > 1000:
        raise NanoBraggError("-oversample %d is unreasonably large (the limit is 1000)" % cfg.oversample)
    if cfg.fluence < 0:
        raise NanoBraggError("-fluence must not be negative, got %g" % cfg.fluence)
    if cfg.device not in ("cpu", "cuda", "auto"):
        raise NanoBraggError("unknown device %r (use cpu, cuda or auto)" % cfg.device)
    if cfg.seed is not None and not -2 ** 31 < int(cfg.seed) < 2 ** 31:
        raise NanoBraggError("-seed %d is outside the range of C's int seeds" % cfg.seed)


# ------------------------------------------------------------------ set-up


@dataclass
class Setup:
    """What the kernel and the outputs need for one run."""

    cfg: NonBraggConfig
    det: object
    sources: np.ndarray
    weights: np.ndarray
    table: object
    fluence: float
    molecules: float
    oversample: int
    steps: int
    osc: float
    sample: Tuple[float, float, float]
    density: float
    notes: list = field(default_factory=list)


def detector_size(cfg: NonBraggConfig):
    """nonBragg.c's pixel counts: ``ceil(detsize / pixel)`` after -detpixels set the size."""
    from .geometry import detector_size as _fill_in_blanks
    fpixels, spixels, detsize_f, detsize_s = _fill_in_blanks(cfg, half=0.0)
    if fpixels * spixels > 2 ** 31 - 1:
        raise NanoBraggError("the detector is too large (%d x %d pixels)" % (fpixels, spixels))
    return fpixels, spixels, detsize_f, detsize_s


def setup_detector(cfg: NonBraggConfig, log, notes):
    """nonBragg.c's detector: its defaults and axes, then the main simulator's rotation and pivot code."""
    from . import vectors as V
    from .geometry import _orient
    fpixels, spixels, detsize_f, detsize_s = detector_size(cfg)
    ps = cfg.pixel_size
    Xclose, Yclose = cfg.Xclose, cfg.Yclose
    if cfg.ORGX is not None and not math.isnan(cfg.ORGX):
        Xclose = cfg.ORGX * ps
    if cfg.ORGY is not None and not math.isnan(cfg.ORGY):
        Yclose = cfg.ORGY * ps
    if Xclose is None or math.isnan(Xclose):
        Xclose = (detsize_f - ps) / 2.0
    if Yclose is None or math.isnan(Yclose):
        Yclose = (detsize_s + ps) / 2.0
    Xbeam = Xclose if cfg.Xbeam is None or math.isnan(cfg.Xbeam) else cfg.Xbeam
    Ybeam = Yclose if cfg.Ybeam is None or math.isnan(cfg.Ybeam) else cfg.Ybeam
    roi = list(cfg.roi) if cfg.roi is not None else [-1, -1, -1, -1]
    for k, default in ((0, 0), (1, fpixels), (2, 0), (3, spixels)):
        if roi[k] < 0:
            roi[k] = default
    beam, blen = V.unitize(cfg.beam_vector)
    if blen == 0.0:
        raise NanoBraggError("-beam_vector 0 0 0 has no direction: the beam needs a non-zero vector")
    fdet, flen = V.unitize(cfg.fdet_vector)
    sdet, slen = V.unitize(cfg.sdet_vector)
    if flen == 0.0 or slen == 0.0:
        raise NanoBraggError("-fdet_vector and -sdet_vector must be non-zero vectors")
    if cfg.odet_vector is not None and not cfg.c_quirks:
        odet, olen = V.unitize(cfg.odet_vector)
        if olen == 0.0:
            raise NanoBraggError("-odet_vector 0 0 0 has no direction")
        notes.append(("odet_vector_ignored", QUIRK_NOTES["odet_vector_ignored"]))
    else:
        odet, _ = V.unitize(V.cross(fdet, sdet))
    polar, _ = V.unitize(cfg.polar_vector)
    spindle, _ = V.unitize(cfg.spindle_vector)
    vert, _ = V.unitize(V.cross(beam, polar))
    tt_axis = cfg.twotheta_axis
    if not cfg.c_quirks:
        tt_unit, tt_len = V.unitize(tt_axis)
        if tt_len != 1.0 and cfg.detector_twotheta != 0.0:
            notes.append(("twotheta_axis_substring", "the two-theta axis %g %g %g is normalised (C rotates "
                          "about it unnormalised)" % tuple(tt_axis)))
        tt_axis = tt_unit
    return _orient(cfg, log, notes, "CUSTOM", cfg.pivot, fpixels, spixels, detsize_f, detsize_s, ps,
                   beam, fdet, sdet, odet, polar, spindle, vert, tt_axis,
                   Xbeam, Ybeam, Xbeam, Ybeam, Xclose, Yclose, Xclose, Yclose, tuple(roi),
                   close_abs=False, announce=False)


def _sampling(cfg: NonBraggConfig, log, notes):
    from .simulator import resolve_sampling
    view = types.SimpleNamespace(
        phisteps=cfg.phisteps, osc=cfg.osc, phistep=cfg.phistep,
        hdivsteps=cfg.hdivsteps, hdivrange=cfg.hdivrange, hdivstep=cfg.hdivstep,
        vdivsteps=cfg.vdivsteps, vdivrange=cfg.vdivrange, vdivstep=cfg.vdivstep,
        dispsteps=cfg.dispsteps, dispersion=cfg.dispersion,
        detector_thick=0.0, detector_mu=-1.0, detector_thicksteps=-1, mosaic_spread=-1.0, mosaic_domains=-1,
        c_quirks=cfg.c_quirks)
    return resolve_sampling(view, log, notes)


def prepare(cfg: NonBraggConfig, log=print, table=None) -> Setup:
    """Set up one run as nonBragg.c does (printing its lines through ``log``)."""
    from .amorphous import molecule_count, read_stol
    from .simulator import beam_fluence, clip_sample_to_beam, log_polar_and_pixel
    from .sources import build_sources
    notes = []
    if not cfg.c_quirks:
        for q in cfg.quirk_hits:
            notes.append((q, QUIRK_NOTES[q]))
    fluence = beam_fluence(cfg)
    sx = cfg.sample_x
    sy, sz = clip_sample_to_beam(cfg.beamsize, cfg.sample_y, cfg.sample_z, log)
    if cfg.molecules != 0 and sx * sy * sz == 0.0:
        raise NanoBraggError("-molecules needs a sample of non-zero volume")
    molecules = molecule_count(sx, sy, sz, cfg.density, cfg.molecular_weight, cfg.molecules)
    density = cfg.density if cfg.molecules == 0 else cfg.molecules / (sx * sy * sz) / 6.02214179e23 * \
        cfg.molecular_weight
    sampling = _sampling(cfg, log, notes)
    det = setup_detector(cfg, log, notes)
    if table is None:
        log("reading %s" % cfg.stolfile)
        table = read_stol(cfg.stolfile, cfg.stol_mult)
    sources, weights, divsteps = build_sources(
        cfg.sourcefile, det.beam, det.polar, det.vert, cfg.lambda0,
        (sampling.hdivrange, sampling.hdivstep, sampling.hdivsteps,
         sampling.vdivrange, sampling.vdivstep, sampling.vdivsteps),
        (sampling.dispersion, sampling.dispstep, sampling.dispsteps), cfg.round_div, log,
        source_distance=cfg.source_distance)
    if cfg.sourcefile is None:
        weights = np.ones(sources.shape[0])      # nonBragg gives every generated source weight 1
    oversample = cfg.oversample if cfg.oversample > 0 else 1
    steps = sources.shape[0] * oversample * oversample
    log("  %d initialized F points (will cubic-spline interpolate between them)" % table.nstols)
    log("  wave=%g meters +/- %g%% in %d steps" % (cfg.lambda0, sampling.dispersion * 100, sampling.dispsteps))
    log_polar_and_pixel(cfg, log)
    if cfg.Fmap:
        log("  Fmap mode: plotting structure factor at every pixel")
    log("  incident fluence: %g photons/m^2" % fluence)
    log("  sample is %g m thick x %g m high x %g m wide, %g g/cm^3 and %g g/mol (%g molecules)"
        % (sx, sy, sz, density / 1e6, cfg.molecular_weight, molecules))
    log("  distance=%g detsize=%gx%g  pixel=%g meters (%dx%d pixels)"
        % (det.distance, det.detsize_f, det.detsize_s, det.pixel_size, det.fpixels, det.spixels))
    log("  Xbeam=%g Ybeam=%g" % (det.Fbeam, det.Sbeam))
    log("  detector origin: %g %g %g" % det.pix0)
    log("  roi: %d < x < %d && %d < y < %d" % det.roi)
    log("  %d sources" % sources.shape[0])
    log("  %d pixel oversample steps" % oversample)
    return Setup(cfg=cfg, det=det, sources=sources, weights=weights, table=table, fluence=fluence,
                 molecules=molecules, oversample=oversample, steps=steps, osc=sampling.osc,
                 sample=(sx, sy, sz), density=density, notes=notes)


# ------------------------------------------------------------------ outputs


def smv_header(setup: Setup) -> bytes:
    """nonBragg.c's 512-byte SMV header."""
    from .io.smv import native_byte_order
    cfg, det = setup.cfg, setup.det
    ps = det.pixel_size
    text = ("{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=%s;\nTYPE=unsigned_short;\n" % native_byte_order()
            + "SIZE1=%d;\nSIZE2=%d;\nPIXEL_SIZE=%g;\nDISTANCE=%g;\n" % (det.fpixels, det.spixels, ps * 1000.0,
                                                                      det.distance * 1000.0)
            + "WAVELENGTH=%g;\n" % (cfg.lambda0 * 1e10)
            + "BEAM_CENTER_X=%g;\nBEAM_CENTER_Y=%g;\n" % (det.Fbeam * 1000.0, (det.detsize_s - det.Sbeam) * 1000)
            + "ORGX=%g;\nORGY=%g;\n" % (det.Fclose / ps, det.Sclose / ps)
            + "CLOSE_DISTANCE=%g;\n" % (det.close_distance * 1000.0)
            + "PHI=%g;\nOSC_START=%g;\nOSC_RANGE=%g;\n" % (cfg.phi0 * RTD, cfg.phi0 * RTD, setup.osc * RTD)
            + "TWOTHETA=%g;\n" % (cfg.detector_twotheta * RTD)
            + "DETECTOR_SN=000;\nBEAMLINE=fake;\n}\f").encode("ascii")
    size = 512
    while len(text) > size:
        size += 512
    if size != 512:
        text = text.replace(b"HEADER_BYTES=512;", b"HEADER_BYTES=%d;" % size, 1)
    return text + b" " * (size - len(text))


def roi_mask(det) -> np.ndarray:
    xmin, xmax, ymin, ymax = det.roi
    keep = np.zeros((det.spixels, det.fpixels), dtype=bool)
    keep[max(ymin, 0):ymax + 1, max(xmin, 0):xmax + 1] = True
    return keep


def int_image(img, keep, scale, adc):
    """C: ``(unsigned short) floorf(float*scale + adc + 0.5)`` clipped to 0..65535, ROI only."""
    test = np.clip(img.astype(np.float64) * scale + adc, 0.0, 65535.0)
    with np.errstate(invalid="ignore"):
        out = np.floor((test + 0.5).astype(np.float32))
        out = np.where(np.isfinite(out), out, 0.0).astype(np.uint16)
    out[~keep] = 0
    return out


def pgm_bytes(img, keep, pgm_scale, wrap):
    """C: ``(unsigned char) min(float*pgm_scale, 255)``; negative values wrap (``wrap``) or are 0."""
    with np.errstate(invalid="ignore", over="ignore"):
        test = np.minimum(img.astype(np.float64) * pgm_scale, 255.0)
        t = np.trunc(test)
        t = np.where(np.isfinite(t) & (t > -2.0 ** 31) & (t < 2.0 ** 31), t, -2.0 ** 31)
        if wrap:
            out = (t.astype(np.int64) & 0xFF).astype(np.uint8)
        else:
            out = np.maximum(t, 0.0).astype(np.uint8)
    out[~keep] = 0
    return out


def stol_rows(setup: Setup, rows, img_in: np.ndarray, keep: np.ndarray, quirks: bool):
    """output.stol: the -img pixels turned back into F, averaged in the bins of the stol table.

    Returns ``(lines, n_last)``: the text lines and the pixel count of the last
    bin (which C's statistics use in place of the image's pixel count).
    """
    from .amorphous import R_E_SQR
    from .kernels.background import bin_stats
    cfg, table = setup.cfg, setup.table
    n = table.nstols
    valid = keep.ravel().copy()
    img_f = img_in.astype(np.float32).ravel()
    for v in cfg.ignore_values:
        valid &= img_f != np.float32(v)
    deviate = ((img_f.astype(np.float64) - cfg.adc_offset) / cfg.quantum_gain).astype(np.float32)
    sign = np.where(deviate < 0.0, -1.0, 1.0)
    deviate = np.abs(deviate).astype(np.float64)
    polar, omega = rows[4], rows[5]
    with np.errstate(divide="ignore", invalid="ignore"):
        F = (sign * np.sqrt(deviate / polar / omega / setup.fluence / R_E_SQR / setup.molecules
                            * setup.steps)).astype(np.float32)
    stol = rows[2]
    nearest = rows[3].astype(np.int64)
    nb = np.clip(nearest, 0, n - 2)
    mid = (table.stol_of[nb] + table.stol_of[nb + 1]) / 2.0
    bins = np.where(stol > mid, nearest + 1, nearest)
    bins = np.where(valid, bins, -1).astype(np.int64)
    mean, rmsd, count = bin_stats(F, bins, n + 2)
    lines = []
    order = np.argsort(bins, kind="stable")
    sorted_bins = bins[order]
    for b in range(2, n - 2):
        c = int(count[b])
        if c <= 100:
            continue
        if quirks:
            med = mad = 0.0
        else:
            lo, hi = np.searchsorted(sorted_bins, [b, b + 1])
            vals = np.sort(F[order[lo:hi]])
            k = (c + 1) // 2 - 1          # C's fmedian: element (n+1)/2 of the sorted values
            med = float(vals[k])
            mad = float(np.sort(np.abs(vals - np.float32(med)))[k])
        lines.append("%g %g %g   %g %g  %d\n" % (table.stol_of[b] / table.mult, float(mean[b]), float(rmsd[b]),
                                                med, mad, c))
    return lines, int(count[n - 3])


def image_stats(img, keep, n_override=None):
    """max, mean, rms and rmsd as nonBragg.c computes them (rmsd over the ROI pixels' right neighbours)."""
    whole = bool(keep.all())
    vals = img.ravel() if whole else img[keep]
    total = float(vals.sum(dtype=np.float64))
    sumsqr = float(np.dot(vals.astype(np.float64), vals.astype(np.float64)))
    top = float(vals.max()) if vals.size else 0.0
    max_I = top if top > 0.0 else 0.0
    n = vals.size if n_override is None else n_override
    n = n if n > 0 else 1
    avg = total / n
    n = n if n > 1 else 2
    rms = math.sqrt(sumsqr / (n - 1))
    right = np.empty(img.size, dtype=np.float64)       # C reads floatimage[j+1] here
    right[:-1] = img.ravel()[1:]
    right[-1] = 0.0
    d = (right if whole else right[keep.ravel()]) - avg
    m = d.size if d.size > 1 else 2
    rmsd = math.sqrt(float(np.dot(d, d)) / (m - 1))
    return max_I, avg, rms, rmsd


def _printout(setup: Setup, rows, img):
    """``-printout`` / ``-printout_pixel F S``: C's lines for every rendered pixel (or that one).

    As C: stol of the pixel's last evaluation (1/m) and the on-axis value
    ``sin(2theta/2)/lambda`` (1/A) of its last sub-pixel, then the summed
    intensity, its share per step, polar, omega and the pixel's photons.  Where
    C prints an uninitialised ``F`` and the last source's weight as ``I`` we
    print the pixel's last F and its summed intensity.
    """
    cfg, det = setup.cfg, setup.det
    ovs = setup.oversample
    sub = det.pixel_size / ovs
    want = cfg.printout_pixel
    keep = roi_mask(det).ravel()
    for idx in np.flatnonzero(keep):
        s, f = divmod(int(idx), det.fpixels)
        if want is not None and want[0] >= 0 and (f, s) != tuple(want):
            continue
        Fd = sub * (f * ovs + ovs - 1) + sub / 2.0
        Sd = sub * (s * ovs + ovs - 1) + sub / 2.0
        pos = [Fd * det.fdet[k] + Sd * det.sdet[k] + det.pix0[k] for k in range(3)]
        twotheta = math.atan2(math.sqrt(pos[1] * pos[1] + pos[2] * pos[2]), pos[0])
        print("%4d %4d : stol = %g or %g" % (f, s, rows[2, idx], math.sin(twotheta / 2.0) / (cfg.lambda0 * 1e10)))
        print(" F=%g    I = %g" % (rows[1, idx], rows[0, idx]))
        print("I/steps %15.10g" % (rows[0, idx] / setup.steps))
        print("polar   %15.10g" % rows[4, idx])
        print("omega   %15.10g" % rows[5, idx])
        print("pixel   %15.10g" % img.ravel()[idx])


def _outputs(cfg: NonBraggConfig):
    outs = [("-floatfile", cfg.floatfile), ("-intfile", cfg.intfile)]
    if not cfg.nopgm or cfg.c_quirks:
        outs.append(("-pgmfile", cfg.pgmfile))
    if cfg.calculate_noise:
        outs.append(("-noisefile", cfg.noisefile))
    if cfg.imgfile is not None and cfg.stoloutfile:
        outs.append(("-stolout", cfg.stoloutfile))
    return [(f, p) for f, p in outs if p]


def _inputs(cfg: NonBraggConfig):
    return [(f, p) for f, p in (("-stol", cfg.stolfile), ("-img", cfg.imgfile), ("-sourcefile", cfg.sourcefile))
            if p]


def run(cfg: NonBraggConfig, log=print) -> int:
    """Everything ``nanobrag-numba nonbragg FLAGS`` does after parsing; returns the exit status."""
    from .amorphous import bg_params, photons, render_rows
    from .crand import CRandom
    from .io.atomic import check_free_space, check_outputs, output_transaction, remove_stale_temporaries
    from .io.images import format_pgm_header
    from .io.smv import read_smv
    check_outputs(_outputs(cfg), _inputs(cfg))
    for _flag, path in _outputs(cfg):
        target = os.path.realpath(path)
        remove_stale_temporaries(os.path.dirname(target), [os.path.basename(target)])
    log(BANNER)
    setup = prepare(cfg, log)
    det = setup.det
    npix = det.fpixels * det.spixels
    img_in = None
    if cfg.imgfile is not None:
        smv = read_smv(cfg.imgfile)
        if (smv.width, smv.height) != (det.fpixels, det.spixels):
            raise NanoBraggError("-img %s is %d x %d pixels but the detector is %d x %d: the image must cover "
                                 "the detector" % (cfg.imgfile, smv.width, smv.height, det.fpixels, det.spixels))
        img_in = smv.data
    check_free_space([(f, p, npix * 4 + 16384) for f, p in _outputs(cfg)])
    seed = cfg.seed if cfg.seed is not None else int(time.time())
    if cfg.calculate_noise:
        log("")
        log("  noise image paramters:")
        log("  seed: %d" % -seed)
    device = cfg.device
    if device != "cpu":
        from . import backends
        device = backends.choose(device)
    full = cfg.Fmap or cfg.imgfile is not None
    params = bg_params(det, setup.oversample, cfg.point_pixel, cfg.curved_detector, cfg.nopolar, cfg.polarization,
                       setup.sources.shape[0], setup.table.nstols)
    from .kernels import _cache
    _cache.announce_compile(entry_points=[("background", "background_cpu" if setup.table.increasing
                                           else "background_serial")])
    progress = None
    if cfg.progress and not cfg.printout:
        progress = lambda pct: (print("%d%% done" % pct), sys.stdout.flush())  # noqa: E731
    rows = render_rows(params, setup.sources, setup.weights, setup.table, full=full or cfg.printout,
                       device=device, progress=progress)
    keep = roi_mask(det)
    if cfg.Fmap:
        img = rows[1].astype(np.float32)
    else:
        img = photons(rows[0], setup.fluence, setup.molecules, setup.steps)
    img = np.where(keep.ravel(), img, np.float32(0.0)).reshape(det.spixels, det.fpixels)
    if cfg.printout:
        _printout(setup, rows, img)
    omega_sum = float(rows[-1].sum())
    log("")
    log("solid angle subtended by detector = %g steradian ( %g%% sphere)" % (omega_sum, 100 * omega_sum / 4 / math.pi))
    notes = list(setup.notes)
    n_override = None
    stol_lines = None
    if img_in is not None and cfg.stoloutfile:
        stol_lines, n_last = stol_rows(setup, rows, img_in, keep, cfg.c_quirks)
        if cfg.c_quirks:
            n_override = n_last
        else:
            notes.append(("img_stats_count", QUIRK_NOTES["img_stats_count"]))
            notes.append(("stolout_uninitialised_columns", QUIRK_NOTES["stolout_uninitialised_columns"]))
    max_I, avg, rms, rmsd = image_stats(img, keep, n_override)
    scale = cfg.intfile_scale
    if scale <= 0.0:
        scale = 1.0
        if max_I > 0.0:
            scale = 55000.0 / max_I
    pgm_scale = cfg.pgm_scale
    if pgm_scale <= 0.0:
        pgm_scale = scale
        if rmsd > 0.0:
            pgm_scale = 250.0 / (5.0 * rmsd)
    write_pgm = not cfg.nopgm or cfg.c_quirks
    if cfg.nopgm and not cfg.c_quirks:
        notes.append(("nopgm_ignored", QUIRK_NOTES["nopgm_ignored"]))
    if write_pgm and not cfg.c_quirks:
        with np.errstate(invalid="ignore"):
            if np.any((img.astype(np.float64) * pgm_scale <= -1.0) & keep):
                notes.append(("pgm_negative_wrap", QUIRK_NOTES["pgm_negative_wrap"]))
    for key, text in notes:
        print("note: %s; -c_quirks restores C's behaviour (%s)" % (text, key))
    for word in cfg.noop_flags:
        print("note: %s has no effect (as in C)" % word)
    with output_transaction() as tx:
        if stol_lines is not None:
            tx.write(cfg.stoloutfile, ["".join(stol_lines).encode("ascii")])
            log("wrote %s as %d lines of text" % (cfg.stoloutfile, len(stol_lines)))
        if cfg.floatfile:
            log("writing %s as %d 4-byte floats" % (cfg.floatfile, npix))
            tx.write(cfg.floatfile, [np.ascontiguousarray(img, dtype=np.dtype("=f4"))])
        log("max_I = %g" % max_I)
        log("mean= %g rms= %g rmsd= %g" % (avg, rms, rmsd))
        log("intfile_scale = %g" % scale)
        header = smv_header(setup)
        if cfg.intfile:
            log("writing %s as 2-byte integers" % cfg.intfile)
            tx.write(cfg.intfile, [header, int_image(img, keep, scale, cfg.adc_offset)])
        if write_pgm and cfg.pgmfile:
            log("pgm_scale = %g" % pgm_scale)
            log("writing %s as 1-byte integers" % cfg.pgmfile)
            data = pgm_bytes(img, keep, pgm_scale, wrap=cfg.c_quirks)
            tx.write(cfg.pgmfile, [format_pgm_header(det.fpixels, det.spixels, pgm_scale), data])
        if cfg.calculate_noise and cfg.noisefile:
            noise, total, overloads = CRandom().noise(img, det.roi, cfg.adc_offset, seed)
            log("%.0f photons on noise image (%d overloads)" % (total, overloads))
            log("writing %s as 2-byte integers" % cfg.noisefile)
            tx.write(cfg.noisefile, [header, noise])
    return 0


def help_text() -> str:
    lines = ["usage: %s nonbragg -stol FILE [FLAGS]   (also: nonBragg; nonBragg.c's flags)" % PROG, "",
             "Scattering of an amorphous sample (water, air, ice) from a sin(theta)/lambda-vs-F table. Writes "
             "floatimage.bin, intimage.img, noiseimage.img, image.pgm (and output.stol with -img).", ""]
    for group in GROUPS:
        lines.append("%s:" % group)
        for f in TABLE:
            if f.group != group:
                continue
            left = (f.name + " " + f.values_doc()).rstrip()
            text = f.help + (" (also %s)" % ", ".join(f.aliases) if f.aliases else "")
            lines.append("  %-24s %s" % (left, text) if len(left) <= 24 else "  %s\n  %-24s %s" % (left, "", text))
        lines.append("")
    lines.append("Flags are matched as nonBragg.c matches them (by substring); a spelling C reads differently, a "
                 "word C ignores and a stray word each print a 'note:' line; -strict makes them errors.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    """``nanobrag-numba nonbragg ...`` / ``nonBragg ...``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(w in HELP_WORDS for w in argv):
        sys.stdout.write(help_text())
        return 0

    def render():
        if not argv:
            sys.stdout.write(help_text())
        cfg = parse_args(argv)
        for text in cfg.parse_notes:
            print("note: %s" % text)
        return run(cfg)

    from .entry import guarded
    return guarded(PROG, render, oom_hint="make the detector or -oversample smaller", sigterm=True,
                   broken_pipe=False)


def console_main():
    """The installed ``nonBragg`` command."""
    from .cli import _exit_now
    _exit_now(main())
