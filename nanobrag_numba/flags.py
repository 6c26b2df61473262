"""nanoBragg's flags: one table from which the parser, ``-h`` and docs/flags.md are derived.

Each :class:`Flag` row holds a flag's canonical name, the documented other
spellings, C's match rule (``strstr`` substring, ``strstr`` plus a
``strlen`` condition, or exact ``strcmp``), the number of words it reads,
how many words must follow it for C to apply it, the unit conversion, the
:class:`~nanobrag_numba.config.Config` field(s) it sets with any side
effect (pivot, convention, output switches) and its help line.  The rows
are in the order of the checks in nanoBragg.c's argument loop.

The parser works as C's does: every word that starts with ``-`` is checked
against EVERY row, in C's order, and every row whose rule the word satisfies
is applied (a row with C's ``continue`` ends the checks of that word).  A
value is never "consumed": C just reads the words after the flag.  What we
do differently, all reported as one ``note:`` line each (``-strict`` makes
every such note an error):

* a spelling that is not a flag's name or documented alias but that C
  matches (``-matrix`` is ``-mat``, ``-adcoffset`` is ``-adc``) is applied
  as C applies it, with a note naming the flag(s) it was read as;
* a word C ignores (``-hdiv``, ``-dispstep``, a flag at the end of the line
  without its value) and a stray word that is no flag's value (the ``0`` of
  ``-oversample_thick 0``) has no effect, with a note;
* a value C reads with atof/atoi must be a number (C reads ``abc`` as 0);
* the two collisions that change images are corrected unless
  ``-c_quirks`` is given: ``-twotheta_axis`` also setting ``-twotheta`` and
  ``-misset_seed N a b`` also setting ``-misset a b c`` (recorded in
  ``Config.quirk_hits``);
* ``-pix0_vector_mm X Y Z`` takes millimetres (C reads metres: ``-c_quirks``).

``python -m nanobrag_numba.flags --markdown`` prints docs/flags.md;
``python -m nanobrag_numba.flags`` prints the help text.  This module
imports no Numba code.
"""
from __future__ import annotations

import difflib
import math
import re
import shlex
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from .config import RTD, Config
from .errors import NanoBraggError

PROG = "nanobrag-numba"
HELP_WORDS = ("-h", "-help", "--help")

# ------------------------------------------------------------------ values


def _num(flag, text):
    try:
        v = float(text)
    except ValueError:
        raise NanoBraggError("%s expects a number, got %r" % (flag, text)) from None
    if math.isnan(v):
        raise NanoBraggError("%s expects a number, got %r" % (flag, text))
    return v


def _int(flag, text):
    if re.fullmatch(r"\s*[-+]?\d+\s*", text):
        return int(text)                # exact, however many digits (messages quote what was typed)
    v = _num(flag, text)
    if not v.is_integer():
        raise NanoBraggError("%s expects a whole number, got %r" % (flag, text))
    return int(v)


def _show(word):
    """A command-line word as messages show it: as is, or quoted when it has odd characters."""
    return word if word.isprintable() and word.strip() == word and word else repr(word)


def _atof(text):
    """C's atof: the longest numeric prefix, 0.0 when there is none."""
    m = re.match(r"\s*[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?|inf|nan)", text, re.I)
    return float(m.group(0)) if m else 0.0


def _atoi(text):
    m = re.match(r"\s*[-+]?\d+", text)
    return int(m.group(0)) if m else 0


@dataclass
class Ctx:
    """What an apply function knows besides the values."""

    word: str                 # the spelling on the command line
    lenient: bool = False     # C's atof/atoi (an emulated -c_quirks collision)
    notes: list = field(default_factory=list)   # notes found while applying (a value C ignores)

    def num(self, text):
        return _atof(text) if self.lenient else _num(_show(self.word), text)

    def int(self, text):
        return _atoi(text) if self.lenient else _int(_show(self.word), text)


def _convert(conv: str, v: float) -> float:
    """Apply a conversion written as in the table ("/1000", "*1e-6", "/RTD")."""
    if not conv:
        return v
    op, const = conv[0], conv[1:]
    c = RTD if const == "RTD" else float(const)
    return v / c if op == "/" else v * c


# ------------------------------------------------------------------ the table


@dataclass
class Flag:
    """One row of the flag table (see the module docstring)."""

    name: str
    group: str
    help: str
    aliases: Tuple[str, ...] = ()
    match: str = ""            # C's rule: "-x" strstr, "-x/7" strstr and strlen == 7, "-x>7" strlen > 7, "=-x" strcmp
    nargs: object = 1          # words read: an int, "cell" (1..6, up to a word starting with '-'), "misset"
    need: Optional[int] = None  # words that must follow for C to apply it (default: nargs)
    kind: str = "float"        # float | int | str (how each value is read)
    fields: Tuple[str, ...] = ()
    conv: str = ""             # unit conversion of each value, C's operation: "/1000", "*1e-6", "/RTD"
    sets: Tuple[Tuple[str, object], ...] = ()   # side effects: (field, constant)
    apply: Optional[Callable] = None            # custom: apply(cfg, vals, ctx)
    doc: str = ""              # what it sets, for the docs, when apply is custom
    stop: bool = False         # C's `continue`: no later check sees this word
    past_end: bool = False     # C reads past the end of argv without the value (it crashes)
    metavar: str = "X"
    c_flag: bool = True        # False: this port's own flag (matched exactly)
    prescan: bool = False      # read before every other flag (-img, -mask headers)
    rules: Tuple[Tuple[str, str, int], ...] = field(default=(), repr=False)

    def __post_init__(self):
        self.aliases = tuple(self.aliases.split()) if isinstance(self.aliases, str) else tuple(self.aliases)
        if self.need is None:
            self.need = self.nargs if isinstance(self.nargs, int) else 1
        spec = self.match or (self.name if self.c_flag else "=" + self.name)
        rules = []
        for tok in spec.split():
            if tok.startswith("="):
                rules.append(("==", tok[1:], 0))
            elif "/" in tok:
                s, n = tok.split("/")
                rules.append(("len", s, int(n)))
            elif ">" in tok:
                s, n = tok.split(">")
                rules.append(("longer", s, int(n)))
            else:
                rules.append(("in", tok, 0))
        self.rules = tuple(rules)

    @property
    def names(self):
        return (self.name,) + self.aliases

    def matches(self, word: str) -> bool:
        """C's test for this flag (strstr/strlen/strcmp) on one command-line word."""
        for how, s, n in self.rules:
            if how == "==" and word == s:
                return True
            if how == "in" and s in word:
                return True
            if how == "len" and s in word and len(word) == n:
                return True
            if how == "longer" and s in word and len(word) > n:
                return True
        return False

    def c_rule(self) -> str:
        """The match rule as C writes it (for the docs)."""
        out = []
        for how, s, n in self.rules:
            if how == "==":
                out.append('strcmp == "%s"' % s if self.c_flag else "exactly %s" % s)
            elif how == "in":
                out.append('strstr "%s"' % s)
            elif how == "len":
                out.append('strstr "%s" && strlen == %d' % (s, n))
            else:
                out.append('strstr "%s" && strlen > %d' % (s, n))
        return " or ".join(out)

    def sets_doc(self) -> str:
        """What the flag sets, in Config fields and units (for the docs)."""
        if self.doc:
            return self.doc
        parts = []
        if self.fields:
            val = self.metavar if self.nargs in (0, 1) else "(%s)" % " ".join([self.metavar] * self.nargs)
            if self.conv:
                val = "%s %s %s" % (val, self.conv[0], self.conv[1:])
            parts.append("%s = %s" % (" = ".join(self.fields), val))
        parts += ["%s = %r" % (k, v) for k, v in self.sets]
        return "; ".join(parts)

    def values_doc(self) -> str:
        if self.nargs == 0:
            return ""
        if self.nargs == "cell":
            return "a [b c alpha beta gamma]"
        if self.nargs == "misset":
            return "X Y Z | random"
        return " ".join([self.metavar] * self.nargs)


TABLE: List[Flag] = []
GROUPS = ("crystal", "beam", "motion", "detector", "output", "accepted by C, no effect on the images",
          "this port")


def _f(name, group, helptext, **kw):
    TABLE.append(Flag(name, group, helptext, **kw))


# --- custom appliers ---------------------------------------------------------

def _apply_cell(cfg, vals, ctx):
    # C keeps the values a previous -cell set for positions this one does not give
    cur = list(cfg.cell) if cfg.cell is not None else [0.0] * 6
    for k, text in enumerate(vals):
        v = ctx.num(text)
        cur[k] = v / RTD if k >= 3 else v
    cfg.cell = tuple(cur)


def _apply_misset(cfg, vals, ctx):
    if len(vals) == 1:                 # 'rand' in the word after the flag
        cfg.misset_random = True
    else:
        cfg.misset = tuple(ctx.num(x) / RTD for x in vals)
        cfg.misset_random = False


def _apply_pivot(cfg, vals, ctx):
    word = vals[0]
    if "sample" not in word and "beam" not in word:
        # C looks for the lower-case words only; anything else leaves the pivot as it was
        ctx.notes.append("%s %s has no effect: C sets the pivot only for a word containing 'beam' or 'sample' "
                         "(lower case)" % (_show(ctx.word), _show(word)))
        return
    if "sample" in word:
        cfg.pivot = "SAMPLE"
    if "beam" in word:
        cfg.pivot = "BEAM"


def _vector(field_name):
    def apply(cfg, vals, ctx):
        setattr(cfg, field_name, tuple(ctx.num(x) for x in vals))
        cfg.convention = "CUSTOM"
    return apply


def _apply_pix0(cfg, vals, ctx):
    vec = tuple(ctx.num(x) for x in vals)
    if ctx.word == "-pix0_vector_mm" and not cfg.c_quirks:
        vec = tuple(v / 1000.0 for v in vec)
    cfg.pix0_vector = vec
    cfg.convention = "CUSTOM"


def _apply_detector_abs(cfg, vals, ctx):
    text = vals[0]
    if "inf" in text or ctx.num(text) == 0.0:
        cfg.detector_thick = 0.0
        cfg.detector_mu = 0.0
        cfg.noop_flags = cfg.noop_flags + ("%s %s" % (_show(ctx.word), _show(text)),)
    else:
        depth = ctx.num(text) * 1e-6
        if depth == 0.0 or not math.isfinite(1.0 / depth):
            raise NanoBraggError("%s %s: the attenuation depth is too small to use (microns)" % (_show(ctx.word), text))
        cfg.detector_mu = 1.0 / depth


def _apply_energy(cfg, vals, ctx):
    e = ctx.num(vals[0])
    if e == 0.0:
        raise NanoBraggError("-energy must be non-zero (eV)")
    cfg.lambda0 = (12398.42 / e) / 1.0e10


def _noop(check_number):
    def apply(cfg, vals, ctx):
        if check_number:
            ctx.num(vals[0])
        cfg.noop_flags = cfg.noop_flags + (_show(ctx.word),)
    return apply


def _apply_stol(cfg, vals, ctx):
    cfg.stolfile = vals[0]
    cfg.noop_flags = cfg.noop_flags + (ctx.word,)


def _lower(field_name):
    def apply(cfg, vals, ctx):
        setattr(cfg, field_name, vals[0].lower())
    return apply


def _pixel_pair(field_name, also_printout):
    def apply(cfg, vals, ctx):
        setattr(cfg, field_name, (ctx.int(vals[0]), ctx.int(vals[1])))
        if also_printout:
            cfg.printout = True
    return apply


def _header(cfg, vals, ctx):
    pass  # read before every other flag, see parse_args


# --- the rows, in the order of nanoBragg.c's checks -----------------------------
C_, B_, M_, D_, O_, N_, P_ = GROUPS

_f("-Na", C_, "number of unit cells along a", kind="int", fields=("Na",), stop=True, metavar="N")
_f("-Nb", C_, "number of unit cells along b", kind="int", fields=("Nb",), stop=True, metavar="N")
_f("-Nc", C_, "number of unit cells along c", kind="int", fields=("Nc",), stop=True, metavar="N")
_f("-N", C_, "number of unit cells along a, b and c", match="=-N", kind="int", fields=("Na", "Nb", "Nc"),
   stop=True, metavar="N")
_f("-cell", C_, "unit cell a b c alpha beta gamma (A, degrees); missing values default",
   nargs="cell", apply=_apply_cell, metavar="A",
   doc="cell = (a, b, c, alpha/RTD, beta/RTD, gamma/RTD), the values given (up to 6, up to the next word "
       "starting with '-'); the others keep their value")
_f("-misset", C_, "crystal rotations about x y z (degrees), or 'random'", nargs="misset",
   apply=_apply_misset, metavar="X",
   doc="'rand' in the next word: misset_random = True (and C's continue); else 3 words: "
       "misset = (X/RTD, Y/RTD, Z/RTD)")
_f("-samplesize", C_, "same as -xtalsize", aliases="-sample_size", match="-samplesize -sample_size",
   fields=("sample_x", "sample_y", "sample_z"), conv="/1000", metavar="MM")
_f("-sample_thick", C_, "same as -xtal_thick", aliases="-sample_x", match="-sample_thick -sample_x",
   fields=("sample_x",), conv="/1000", metavar="MM")
_f("-sample_width", C_, "same as -xtal_width", aliases="-sample_y -width", match="-sample_width -sample_y -width",
   fields=("sample_y",), conv="/1000", metavar="MM")
_f("-sample_height", C_, "same as -xtal_height", aliases="-sample_heigh -sample_z -height -heigh",
   match="-sample_heigh -sample_z -heigh", fields=("sample_z",), conv="/1000", metavar="MM")
_f("-xtalsize", C_, "crystal size along a, b and c (mm), instead of -N", aliases="-xtal_size",
   match="-xtalsize -xtal_size", fields=("sample_x", "sample_y", "sample_z"), conv="/1000", metavar="MM")
_f("-xtal_thick", C_, "crystal size along a (mm)", aliases="-xtal_x", match="-xtal_thick -xtal_x",
   fields=("sample_x",), conv="/1000", metavar="MM")
_f("-xtal_width", C_, "crystal size along b (mm)", aliases="-xtal_y", match="-xtal_width -xtal_y -width",
   fields=("sample_y",), conv="/1000", metavar="MM")
_f("-xtal_height", C_, "crystal size along c (mm)", aliases="-xtal_heigh -xtal_z",
   match="-xtal_heigh -xtal_z -heigh", fields=("sample_z",), conv="/1000", metavar="MM")
_f("-density", N_, "accepted, no effect (as in C)", aliases="-sample_density -sample_den",
   match="-density -sample_den", apply=_noop(True), doc="nothing (noted)")
_f("-MW", N_, "accepted, no effect (as in C)", aliases="-molecular_weight -molec", match="=-MW -molec",
   apply=_noop(True), doc="nothing (noted)")
_f("-Xbeam", D_, "direct beam position (mm), convention's X", fields=("Xbeam",), conv="/1000.0",
   sets=(("pivot", "BEAM"),), metavar="MM")
_f("-Ybeam", D_, "direct beam position (mm), convention's Y", fields=("Ybeam",), conv="/1000.0",
   sets=(("pivot", "BEAM"),), metavar="MM")
_f("-Xclose", D_, "near point (mm), convention's X", fields=("Xclose",), conv="/1000.0",
   sets=(("pivot", "SAMPLE"),), metavar="MM")
_f("-Yclose", D_, "near point (mm), convention's Y", fields=("Yclose",), conv="/1000.0",
   sets=(("pivot", "SAMPLE"),), metavar="MM")
_f("-ORGX", D_, "XDS origin along fast (pixels)", fields=("ORGX",), sets=(("pivot", "SAMPLE"),), metavar="PIX")
_f("-ORGY", D_, "XDS origin along slow (pixels)", fields=("ORGY",), sets=(("pivot", "SAMPLE"),), metavar="PIX")
_f("-pivot", D_, "detector pivot: beam or sample", kind="str", apply=_apply_pivot, metavar="WHERE",
   doc="pivot = SAMPLE if 'sample' is in the word, then BEAM if 'beam' is (anything else: no effect, a note)")
_f("-mosflm", D_, "MOSFLM convention (the default)", nargs=0, sets=(("convention", "MOSFLM"), ("pivot", "BEAM")))
_f("-xds", D_, "XDS convention", nargs=0, sets=(("convention", "XDS"), ("pivot", "SAMPLE")))
_f("-adxv", D_, "ADXV convention", nargs=0, sets=(("convention", "ADXV"), ("pivot", "BEAM")))
_f("-denzo", D_, "DENZO convention", nargs=0, sets=(("convention", "DENZO"), ("pivot", "BEAM")))
_f("-dials", D_, "DIALS convention", nargs=0, sets=(("convention", "DIALS"), ("pivot", "BEAM")))
for _name, _field, _help in (("-fdet_vector", "fdet_vector", "fast detector axis"),
                             ("-sdet_vector", "sdet_vector", "slow detector axis"),
                             ("-odet_vector", "odet_vector", "detector normal"),
                             ("-beam_vector", "beam_vector", "beam direction"),
                             ("-polar_vector", "polar_vector", "E-vector of the beam"),
                             ("-spindle_axis", "spindle_vector", "spindle axis"),
                             ("-twotheta_axis", "twotheta_axis", "two-theta axis")):
    _f(_name, D_, _help + " (custom convention)", nargs=3, apply=_vector(_field),
       doc="%s = (X, Y, Z); convention = 'CUSTOM'" % _field)
_f("-pix0_vector", D_, "vector from sample to the first pixel (m) (custom convention); "
   "-pix0_vector_mm takes mm", nargs=3, apply=_apply_pix0, metavar="M",
   doc="pix0_vector = (X, Y, Z) in m (spelt -pix0_vector_mm: in mm, divided by 1000; "
       "with -c_quirks in m as C reads it); convention = 'CUSTOM'")
_f("-distance", D_, "sample to beam spot distance (mm, default 100)", fields=("distance",), conv="/1000.0",
   sets=(("pivot", "BEAM"),), metavar="MM")
_f("-close_distance", D_, "sample to detector plane distance (mm)", fields=("close_distance",), conv="/1000.0",
   sets=(("pivot", "SAMPLE"),), metavar="MM")
_f("-detector_abs", D_, "sensor attenuation depth (microns) or inf",
   aliases="-detector_absorb -detector_absorption", apply=_apply_detector_abs, past_end=True, metavar="UM",
   doc="'inf' in the word or 0: detector_thick = detector_mu = 0; else detector_mu = 1/(UM * 1e-6)")
_f("-detector_thick", D_, "sensor thickness (microns)", match="-detector_thick/15", fields=("detector_thick",),
   conv="*1e-6", past_end=True, metavar="UM")
_f("-detector_thicksteps", D_, "number of sensor layers", aliases="-thicksteps",
   match="-detector_thicksteps -thicksteps", kind="int", fields=("detector_thicksteps",), past_end=True,
   metavar="N")
_f("-twotheta", D_, "detector two-theta swing (degrees)", fields=("detector_twotheta",), conv="/RTD",
   sets=(("pivot", "SAMPLE"),), metavar="DEG")
_f("-detector_rotx", D_, "detector rotation about x (degrees)", fields=("detector_rotx",), conv="/RTD",
   metavar="DEG")
_f("-detector_roty", D_, "detector rotation about y (degrees)", fields=("detector_roty",), conv="/RTD",
   metavar="DEG")
_f("-detector_rotz", D_, "detector rotation about z (degrees)", fields=("detector_rotz",), conv="/RTD",
   metavar="DEG")
_f("-detsize", D_, "detector size, both directions (mm)", match="-detsize/8", fields=("detsize_f", "detsize_s"),
   conv="/1000.0", metavar="MM")
_f("-detsize_f", D_, "detector size along fast (mm)", fields=("detsize_f",), conv="/1000.0", metavar="MM")
_f("-detsize_s", D_, "detector size along slow (mm)", fields=("detsize_s",), conv="/1000.0", metavar="MM")
_f("-detpixels", D_, "detector size in pixels, both directions", match="-detpixels/10", kind="int",
   fields=("fpixels", "spixels"), metavar="N")
_f("-detpixels_f", D_, "detector pixels along fast", aliases="-detpixels_x", match="-detpixels_f -detpixels_x",
   kind="int", fields=("fpixels",), metavar="N")
_f("-detpixels_s", D_, "detector pixels along slow", aliases="-detpixels_y", match="-detpixels_s -detpixels_y",
   kind="int", fields=("spixels",), metavar="N")
_f("-curved_det", D_, "spherical detector: every pixel at the same distance", nargs=0, need=1,
   sets=(("curved_detector", True),))
_f("-pixel", D_, "pixel size (mm, default 0.1)", fields=("pixel_size",), conv="/1000.0", metavar="MM")
_f("-point_pixel", D_, "solid angle 1/R^2, no obliquity", nargs=0, sets=(("point_pixel", True),))
_f("-polar", B_, "Kahn polarization factor (default 0)", match="-polar/6", fields=("polarization",),
   sets=(("nopolar", False),), metavar="K")
_f("-nopolar", B_, "no polarization correction", nargs=0, sets=(("nopolar", True),))
_f("-oversample_thick", D_, "capture fraction per sub-pixel", nargs=0, sets=(("oversample_thick", True),),
   stop=True)
_f("-oversample_polar", D_, "polarization per sub-pixel and source", nargs=0,
   sets=(("oversample_polar", True),), stop=True)
_f("-oversample_omega", D_, "solid angle per sub-pixel", nargs=0, sets=(("oversample_omega", True),), stop=True)
_f("-oversample", D_, "sub-pixels per pixel edge (default: automatic)", kind="int", fields=("oversample",),
   metavar="N")
_f("-roi", D_, "render only xmin xmax ymin ymax (pixels, inclusive)", nargs=4, kind="int", fields=("roi",),
   metavar="N")
_f("-lambda", B_, "wavelength (A, default 1)", aliases="-wave -wavelength", match="-lambda -wave",
   fields=("lambda0",), conv="/1.0e10", metavar="A")
_f("-energy", B_, "photon energy (eV), instead of -lambda", apply=_apply_energy, metavar="EV",
   doc="lambda0 = (12398.42 / EV) / 1e10")
_f("-fluence", B_, "integrated incident fluence (photons/m^2)", fields=("fluence",), metavar="PH/M2")
_f("-flux", B_, "incident flux (photons/s), with -exposure and -beamsize", fields=("flux",), metavar="PH/S")
_f("-exposure", B_, "exposure time (s)", fields=("exposure",), metavar="S")
_f("-beamsize", B_, "beam size (mm)", fields=("beamsize",), conv="/1000.0", metavar="MM")
_f("-mosaic", M_, "isotropic mosaic spread (degrees)", aliases="-mosaicity -mosaic_spread",
   match="-mosaic/7 -mosaici -mosaic_spr", fields=("mosaic_spread",), conv="/RTD", metavar="DEG")
_f("-mosaic_domains", M_, "number of mosaic domains", aliases="-mosaic_dom", match="-mosaic_dom", kind="int",
   fields=("mosaic_domains",), metavar="N")
_f("-dispersion", B_, "spectral width delta-lambda/lambda (percent)", fields=("dispersion",), conv="/100.0",
   metavar="PCT")
_f("-dispsteps", B_, "number of wavelengths", kind="int", fields=("dispsteps",), metavar="N")
_f("-divergence", B_, "horizontal and vertical divergence range (mrad)", fields=("hdivrange", "vdivrange"),
   conv="/1000.0", metavar="MRAD")
_f("-hdivrange", B_, "horizontal divergence range (mrad)", fields=("hdivrange",), conv="/1000.0", metavar="MRAD")
_f("-vdivrange", B_, "vertical divergence range (mrad)", fields=("vdivrange",), conv="/1000.0", metavar="MRAD")
_f("-hdivstep", B_, "horizontal divergence step (mrad)", match="-hdivstep/9", fields=("hdivstep",),
   conv="/1000.0", metavar="MRAD")
_f("-hdivsteps", B_, "number of horizontal divergence steps", kind="int", fields=("hdivsteps",), metavar="N")
_f("-vdivstep", B_, "vertical divergence step (mrad)", match="-vdivstep/9", fields=("vdivstep",),
   conv="/1000.0", metavar="MRAD")
_f("-vdivsteps", B_, "number of vertical divergence steps", kind="int", fields=("vdivsteps",), metavar="N")
_f("-divsteps", B_, "number of divergence steps, both directions", kind="int", fields=("hdivsteps", "vdivsteps"),
   metavar="N")
_f("-round_div", B_, "clip the divergence grid to an ellipse (default)", nargs=0, sets=(("round_div", True),))
_f("-square_div", B_, "use the full divergence grid", nargs=0, sets=(("round_div", False),))
_f("-adc", O_, "offset added to int and noise pixels (default 40)", fields=("adc_offset",))
_f("-phi", M_, "starting spindle angle (degrees)", match="-phi/4", fields=("phi0",), conv="/RTD", metavar="DEG")
_f("-osc", M_, "oscillation range (degrees)", fields=("osc",), conv="/RTD", metavar="DEG")
_f("-phistep", M_, "spindle step (degrees)", match="-phistep/8", fields=("phistep",), conv="/RTD", metavar="DEG")
_f("-phisteps", M_, "number of spindle steps", kind="int", fields=("phisteps",), metavar="N")
_f("-dmin", B_, "skip contributions with resolution finer than this (A)", fields=("dmin",), conv="*1e-10",
   metavar="A")
_f("-mat", C_, "MOSFLM-style orientation matrix (reciprocal vectors x wavelength)", kind="str",
   fields=("matfile",), metavar="FILE")
_f("-hkl", C_, "structure factors, lines of 'h k l F' (P1, no symmetry applied)", kind="str",
   fields=("hklfile",), metavar="FILE")
_f("-default_F", C_, "structure factor of every hkl not in the table (default 0)", fields=("default_F",),
   metavar="F")
_f("-dump", C_, "binary structure-factor cache written after -hkl, read without it (Fdump.bin)", kind="str",
   fields=("dumpfile",), metavar="FILE")
_f("-img", D_, "SMV image whose header sets the detector defaults", kind="str", apply=_header, prescan=True,
   metavar="FILE", doc="imgfile; its header (read before every other flag) sets detector defaults")
_f("-mask", D_, "SMV mask: render only non-zero pixels; its header sets defaults", kind="str", apply=_header,
   prescan=True, metavar="FILE",
   doc="maskfile; its header (read before every other flag, before -img's) sets detector defaults")
_f("-detector_json", D_, "multi-panel detector: JSON list of panels (docs/multipanel.md)", kind="str",
   fields=("detector_json",), c_flag=False, metavar="FILE")
_f("-expt", D_, "DIALS experiment list: its detector panels, beam, goniometer and crystal (docs/multipanel.md)",
   kind="str", apply=_header, prescan=True, c_flag=False, metavar="FILE",
   doc="expt; its beam, goniometer and crystal (read before every other flag) are defaults")
_f("-stolout", N_, "accepted, no effect (as in C)", match="-stolout>7", kind="str", apply=_noop(False),
   metavar="FILE", doc="nothing (noted)")
_f("-stol", N_, "read, no effect on the images (as in C)", match="-stol/5", kind="str", apply=_apply_stol,
   metavar="FILE", doc="stolfile (noted: no effect)")
_f("-4stol", N_, "read, no effect on the images (as in C)", match="-4stol/6", kind="str", apply=_apply_stol,
   metavar="FILE", doc="stolfile (noted: no effect)")
_f("-Q", N_, "read, no effect on the images (as in C)", match="-Q/2", kind="str", apply=_apply_stol,
   metavar="FILE", doc="stolfile (noted: no effect)")
_f("-sourcefile", B_, "sources, lines of 'X Y Z weight lambda(m)' (each source counts in proportion to its "
   "weight; -c_quirks: equally, as C)", kind="str", fields=("sourcefile",), metavar="FILE")
_f("-floatfile", O_, "raw float32 image (floatimage.bin)", aliases="-floatimage", match="-floatfile -floatimage",
   kind="str", fields=("floatfile",), metavar="FILE")
_f("-intfile", O_, "SMV image without noise (intimage.img)", aliases="-intimage", match="-intfile -intimage",
   kind="str", fields=("intfile",), metavar="FILE")
_f("-pgmfile", O_, "8-bit PGM image (image.pgm)", aliases="-pgmimage", match="-pgmfile -pgmimage", kind="str",
   fields=("pgmfile",), sets=(("write_pgm", True),), metavar="FILE")
_f("-noisefile", O_, "SMV image with Poisson noise (noiseimage.img)", aliases="-noiseimage",
   match="-noisefile -noiseimage", kind="str", fields=("noisefile",), sets=(("calculate_noise", True),),
   metavar="FILE")
_f("-cbffile", O_, "int image as imgCIF/CBF with full geometry for DIALS (docs/dials.md)", kind="str",
   fields=("cbffile",), c_flag=False, metavar="FILE")
_f("-cbfnoisefile", O_, "noise image as imgCIF/CBF with full geometry (not with -nonoise)", kind="str",
   fields=("cbfnoisefile",), sets=(("calculate_noise", True),), c_flag=False, metavar="FILE")
_f("-nxsfile", O_, "int image (and the float image) as NeXus/NXmx HDF5 with full geometry for DIALS "
   "(docs/dials.md)", kind="str", fields=("nxsfile",), c_flag=False, metavar="FILE")
_f("-nxsnoisefile", O_, "noise image as NeXus/NXmx HDF5 with full geometry (not with -nonoise)", kind="str",
   fields=("nxsnoisefile",), sets=(("calculate_noise", True),), c_flag=False, metavar="FILE")
_f("-nonoise", O_, "do not write the noise image", nargs=0, sets=(("calculate_noise", False),))
_f("-nopgm", O_, "do not write the PGM image", nargs=0, sets=(("write_pgm", False),))
_f("-scale", O_, "scale of the int image (default: 55000/max)", fields=("intfile_scale",))
_f("-pgmscale", O_, "scale of the PGM image (default: 250/(5 rmsd))", fields=("pgm_scale",),
   sets=(("write_pgm", True),))
_f("-coherent", N_, "accepted, no effect (as in C)", nargs=0, apply=_noop(False), doc="nothing (noted)")
_f("-printout", O_, "print pixel values", nargs=0, sets=(("printout", True),))
_f("-noprogress", O_, "no progress meter", nargs=0, sets=(("progress", False),))
_f("-progress", O_, "progress meter (default)", nargs=0, sets=(("progress", True),))
_f("-interpolate", C_, "tricubic interpolation of F between hkl (default: on when N <= 2)", nargs=0,
   sets=(("interpolate", True),))
_f("-nointerpolate", C_, "nearest-hkl structure factors", nargs=0, sets=(("interpolate", False),))
_f("-round_xtal", C_, "ellipsoidal crystal: sinc3 lattice transform", nargs=0, sets=(("xtal_shape", "ROUND"),))
_f("-square_xtal", C_, "parallelepiped crystal: sincg lattice transform (default)", nargs=0,
   sets=(("xtal_shape", "SQUARE"),))
_f("-gauss_xtal", C_, "Gaussian spots, no inter-Bragg maxima", nargs=0, sets=(("xtal_shape", "GAUSS"),))
_f("-tophat_spots", C_, "flat-top spots clipped at the FWHM", aliases="-binary_spots",
   match="-binary_spots -tophat_spots", nargs=0, sets=(("xtal_shape", "TOPHAT"),))
_f("-fudge", C_, "scale of the spot radius for -round_xtal/-gauss_xtal/-tophat_spots", fields=("fudge",))
_f("-printout_pixel", O_, "print only pixel FAST SLOW (implies -printout)", nargs=2,
   apply=_pixel_pair("printout_pixel", True), metavar="N",
   doc="printout_pixel = (FAST, SLOW); printout = True (the word also matches -printout)")
_f("-seed", O_, "seed of the noise image (default: time)", kind="int", fields=("seed",), metavar="N")
_f("-mosaic_seed", M_, "seed of the mosaic domains (default 12345678)", kind="int", fields=("mosaic_seed",),
   metavar="N")
_f("-misset_seed", C_, "seed of -misset random (default: time)", kind="int", fields=("misset_seed",),
   metavar="N")
_f("-water", B_, "thickness of water around the crystal for the background (microns)", fields=("water_size",),
   conv="/1e6", metavar="UM")
# this port's own flags: matched exactly (C ignores them)
_f("-readout_noise", O_, "noise image: Gaussian read-out noise rms in ADU, as noisify (docs/suite.md)",
   c_flag=False, fields=("readout_noise",), metavar="ADU")
_f("-flicker", O_, "noise image: fractional beam flicker per pixel, as noisify", c_flag=False,
   fields=("flicker_noise",))
_f("-calibration", O_, "noise image: fractional per-pixel calibration error, as noisify (default 0 here)",
   c_flag=False, fields=("calibration_noise",))
_f("-calib_seed", O_, "seed of the calibration error (default: noisify's 123456789)", kind="int", c_flag=False,
   fields=("calib_seed",), metavar="N")
_f("-psf", O_, "noise image: point-spread function gauss or fiber, as noisify", kind="str", c_flag=False,
   apply=_lower("psf"), metavar="TYPE", doc="psf = TYPE (lower case)")
_f("-psf_fwhm", O_, "PSF full width at half maximum in um (default 46)", c_flag=False, fields=("psf_fwhm_um",),
   metavar="UM")
_f("-psf_radius", O_, "PSF rendering radius in pixels (default 0: automatic)", kind="int", c_flag=False,
   fields=("psf_radius",), metavar="N")
_f("-c_quirks", P_, "reproduce the C program's defects exactly (see docs/differences.md)", nargs=0,
   c_flag=False, sets=(("c_quirks", True),))
_f("-strict", P_, "refuse what C would ignore or read by substring (every parser note becomes an error)",
   nargs=0, c_flag=False, doc="(parser setting: notes become errors)")
_f("-device", P_, "cpu, cuda or auto (default auto: CUDA when a GPU is usable)", kind="str", c_flag=False,
   apply=_lower("device"), metavar="DEV", doc="device = DEV (lower case)")
_f("-precision", P_, "double (default, C parity) or single (GPU speed)", kind="str", c_flag=False,
   apply=_lower("precision"), metavar="P", doc="precision = P (lower case)")
_f("-trace_pixel", P_, "print every factor of pixel SLOW FAST as TRACE_PY lines", nargs=2, c_flag=False,
   apply=_pixel_pair("trace_pixel", False), metavar="N", doc="trace_pixel = (SLOW, FAST)")
_f("-source_weights", B_, "use the weight column of -sourcefile: each source counts in proportion to its "
   "weight (C, and this port by default, let every source count equally)", nargs=0,
   sets=(("source_weights", True),), c_flag=False)
_f("-spectrum", B_, "wavelengths and weights, lines of 'lambda(A) weight' ('#' comments); replaces "
   "-dispersion, combined with the divergence (docs/differences.md)", kind="str", fields=("spectrumfile",),
   c_flag=False, metavar="FILE")
_f("-background", P_, "add an amorphous background (nonBragg's physics) from a table of sin(theta)/lambda "
   "(1/A) and F", kind="str", fields=("background_stol",), c_flag=False, metavar="FILE")
_f("-background_thick", P_, "thickness of the -background layer along the beam (mm, default 0.1)",
   fields=("background_thick",), conv="/1000", c_flag=False, metavar="MM")
_f("-background_density", P_, "density of the -background material (g/cm^3, default 1)",
   fields=("background_density",), conv="*1e6", c_flag=False, metavar="G/CM3")
_f("-background_MW", P_, "molecular weight of the -background material (g/mol, default 18)",
   fields=("background_MW",), c_flag=False, metavar="G/MOL")

BY_NAME: Dict[str, Flag] = {f.name: f for f in TABLE}
# every documented spelling -> its canonical flag
ALIASES: Dict[str, str] = {}
for _flag_row in TABLE:
    for _n in _flag_row.names:
        ALIASES.setdefault(_n, _flag_row.name)
FLAGS = BY_NAME  # old name
NOOP = {f.name for f in TABLE if f.group == N_}

# the substring collisions that change images: (word's flag, flag it also matches) -> quirk name
COLLISIONS = {("-twotheta_axis", "-twotheta"): "twotheta_axis_substring",
              ("-misset_seed", "-misset"): "misset_seed_substring"}

_TABLE, _COLLISIONS, _ALIASES = TABLE, COLLISIONS, ALIASES

SUBCOMMANDS = (("example", "render a built-in example (writes example.hkl, then C's four files; 'example -h')"),
               ("noisify", "detector noise on a float image, as the C program noisify ('noisify -h', docs/suite.md)"),
               ("batch", "render many images from one base command line ('batch -h', docs/batch.md)"),
               ("compare", "compare our images with another program's or files ('compare -h')"),
               ("nonbragg", "nonBragg.c's amorphous background (water, air, ice) from a -stol table, same flags "
                            "and files ('nonbragg -h'; also installed as nonBragg)"))


# ------------------------------------------------------------------ the parser


@dataclass
class Event:
    pos: int                  # index of the flag word
    word: str
    flag: Flag
    vals: List[str]
    lenient: bool = False


def c_matches(word: str) -> List[str]:
    """The canonical flags whose C check ``word`` satisfies, in C's order, up to C's ``continue``.

    This is the pure match rule (as if enough words followed); collisions are
    included.  Port flags (-c_quirks, -device, ...) match only themselves.
    """
    out = []
    for f in TABLE:
        if f.matches(word):
            out.append(f.name)
            if f.stop:
                break
    return out


def _hint(word, aliases=None):
    close = difflib.get_close_matches(word, list(ALIASES if aliases is None else aliases), n=1)
    return "did you mean %s?" % close[0] if close else ""


def scan(argv: List[str], quirks: bool, table=None, collisions=None, aliases=None):
    """C's argument loop over ``argv`` (without the program name).

    Returns ``(events, notes, quirk_hits)``: the flags to apply in order, the
    parser notes (strings, without ``note:``) and the collision names that fired.
    ``table``, ``collisions`` and ``aliases`` default to nanoBragg's; the
    nonBragg command (``nonbragg.py``) passes its own flag table.
    """
    TABLE = _TABLE if table is None else table                  # noqa: N806
    COLLISIONS = _COLLISIONS if collisions is None else collisions  # noqa: N806
    ALIASES = _ALIASES if aliases is None else aliases          # noqa: N806
    argv = list(argv)
    argc = len(argv)
    events: List[Event] = []
    notes: List[Tuple[int, str]] = []
    hits: List[str] = []
    used = set()              # indices read as values
    folded = set()            # stray words reported with the unknown flag before them
    for i, word in enumerate(argv):
        if not word.startswith("-"):
            continue
        w = _show(word)
        matched = [f for f in TABLE if f.matches(word)]
        names = {f.name for f in matched}
        fired = []            # rows applied for this word (not counting dropped collisions)
        missing = []
        for f in matched:
            left = argc - i - 1               # words after this one
            collateral = None
            for (owner, other), quirk in COLLISIONS.items():
                if f.name == other and owner in names and word not in f.names:
                    collateral = quirk
            if f.nargs == "misset":
                if left >= 1 and "rand" in argv[i + 1]:
                    vals, stop = [argv[i + 1]], True
                elif left >= 3:
                    vals, stop = argv[i + 1:i + 4], False
                else:
                    if collateral is None:
                        missing.append(f)
                    continue
            elif f.nargs == "cell":
                if left < 1:
                    missing.append(f)
                    continue
                vals = []
                for v in argv[i + 1:i + 7]:
                    if v.startswith("-"):
                        break
                    vals.append(v)
                stop = len(vals) < 6      # C's `continue` when it runs out of values
            else:
                if left < f.need:
                    if f.past_end:
                        raise NanoBraggError("%s needs a value (C reads past the end of the command line)" % w)
                    if collateral is None:
                        missing.append(f)
                    continue
                vals, stop = argv[i + 1:i + 1 + f.nargs], f.stop
            if collateral is not None:
                hits.append(collateral)
                if not quirks:
                    continue
                events.append(Event(i, word, f, list(vals), lenient=True))
            else:
                events.append(Event(i, word, f, list(vals)))
                fired.append(f)
                used.update(range(i + 1, i + 1 + len(vals)))
            if stop:
                break
        if word in HELP_WORDS or word == "--version":
            continue
        for f in missing:
            rest = [k for k in range(i + 1, argc) if not argv[k].startswith("-") and k not in used]
            folded.update(rest)
            skipped = " and skips %s" % " ".join(repr(argv[k]) for k in rest) if rest else ""
            _note(notes, i, "%s needs %s after it but the command line ends: C ignores it%s, no effect"
                  % (w, _values_text(f), skipped))
        if fired and word not in ALIASES:
            shown = [f.name for f in fired]
            if word == "-pix0_vector_mm" and quirks:
                _note(notes, i, "-pix0_vector_mm read as -pix0_vector with the values in metres, as C reads them "
                             "(-c_quirks; without it the values are mm)")
            elif word == "-pix0_vector_mm":
                _note(notes, i, "-pix0_vector_mm read as -pix0_vector with the values in mm (divided by 1000); "
                             "C matches flag names by substring and reads metres (-c_quirks)")
            else:
                _note(notes, i, "%s read as %s (C matches flag names by substring)" % (w, " and ".join(shown)))
        elif not matched and i not in used:
            hint = "; " + _hint(word, ALIASES) if _hint(word, ALIASES) else ""
            if i + 1 < argc and not argv[i + 1].startswith("-") and i + 1 not in used:
                folded.add(i + 1)     # its would-be value: one note for both
                _note(notes, i, "unknown flag %s %s has no effect (C ignores the flag and skips %r%s)"
                      % (w, _show(argv[i + 1]), argv[i + 1], hint))
            else:
                _note(notes, i, "unknown flag %s has no effect (C ignores it%s)" % (w, hint))
    for i, word in enumerate(argv):
        if not word.startswith("-") and i not in used and i not in folded:
            before = "after %s " % _show(argv[i - 1]) if i > 0 else ""
            _note(notes, i, "%r %sis not the value of any flag: C skips it, no effect" % (word, before))
    notes.sort(key=lambda n: n[0])      # in command-line order
    return events, [text for _, text in notes], hits


def _note(notes, pos, text):
    notes.append((pos, text))


def _values_text(f):
    if f.nargs == 0:
        return "a word (any, unused)"
    if f.nargs == "misset":
        return "3 angles or 'random'"
    if f.nargs == "cell":
        return "at least 1 value"
    n = f.need
    return "%d value%s" % (n, "s" if n != 1 else "")


def _apply(cfg: Config, ev: Event, notes: list):
    f, vals = ev.flag, ev.vals
    ctx = Ctx(ev.word, lenient=ev.lenient, notes=notes)
    if f.apply is not None:
        f.apply(cfg, vals, ctx)
    elif f.fields:
        def one(text):
            if f.kind == "str":
                return text
            if f.kind == "int":
                return ctx.int(text)
            return _convert(f.conv, ctx.num(text))
        if isinstance(f.nargs, int) and f.nargs > 1:
            value = tuple(one(t) for t in vals)
        else:
            value = one(vals[0])
        for name in f.fields:
            setattr(cfg, name, value)
    for name, const in f.sets:
        setattr(cfg, name, const)


def parse_args(argv, open_files: bool = True) -> Config:
    """Turn a nanoBragg command line (a list of words) into a validated :class:`Config`.

    Parameters
    ----------
    argv : list of str
        The words after the program name.
    open_files : bool
        Read the headers of -img/-mask files (as C does, before every other
        flag).  False only records their names (for parse-only checks).

    Raises
    ------
    NanoBraggError
        For a value that is not a number where C reads one, an unreadable
        -img/-mask file, an impossible setting, ``-h``/``--version`` (they
        are command-line flags, see :func:`help_text`), and, with ``-strict``,
        for anything a ``note:`` would report.
    """
    argv = [str(w) for w in argv]
    for w in argv:
        if w in HELP_WORDS:
            raise NanoBraggError("%s is a command-line flag: print nanobrag_numba.flags.help_text() "
                                 "for the list of flags" % w)
        if w == "--version":
            raise NanoBraggError("--version is a command-line flag: see nanobrag_numba.__version__")
    quirks = "-c_quirks" in argv
    strict = "-strict" in argv
    events, notes, hits = scan(argv, quirks)
    if strict and notes:
        raise NanoBraggError("%s (refused under -strict)" % notes[0])
    cfg = Config()
    cfg.c_quirks = quirks
    # C reads -mask, then -img, before any other flag: their headers are defaults
    from .config import apply_header_defaults
    expts = [e.vals[0] for e in events if e.flag.name == "-expt"]
    if expts:
        if open_files:
            from .panels import apply_expt_defaults
            apply_expt_defaults(cfg, expts[-1])
        else:
            cfg.expt = expts[-1]
    for kind in ("-mask", "-img"):
        files = [e.vals[0] for e in events if e.flag.name == kind]
        if files:
            if open_files:
                apply_header_defaults(cfg, files[-1], mask=(kind == "-mask"))
            else:
                setattr(cfg, "maskfile" if kind == "-mask" else "imgfile", files[-1])
    value_notes = []
    for ev in events:
        _apply(cfg, ev, value_notes)
    if strict and value_notes:
        raise NanoBraggError("%s (refused under -strict)" % value_notes[0])
    notes = notes + value_notes
    cfg.quirk_hits = cfg.quirk_hits + tuple(hits)
    cfg.parse_notes = tuple(notes)
    cfg.command_line = " ".join(shlex.quote(w) for w in argv)
    cfg.validate()
    return cfg


# ------------------------------------------------------------------ help and docs


def _version():
    try:
        from importlib.metadata import version
        return version("nanobrag-numba")
    except Exception:  # not installed (running from a checkout)
        return "0.1.0"


def help_text() -> str:
    """``nanobrag-numba -h``: the flags by group, then the subcommands."""
    lines = ["usage: %s [FLAGS]      (nanoBragg's flags, same values and units)" % PROG,
             "       %s example | batch | compare ..." % PROG, "",
             "nanoBragg-compatible diffraction simulator (Numba CPU / CUDA). "
             "Writes floatimage.bin, intimage.img, noiseimage.img and image.pgm.", ""]
    for group in GROUPS:
        lines.append("%s:" % group)
        for f in TABLE:
            if f.group != group:
                continue
            left = (f.name + " " + f.values_doc()).rstrip()
            text = f.help
            if f.aliases:
                text += " (also %s)" % ", ".join(f.aliases)
            if len(left) <= 24:
                lines.append("  %-24s %s" % (left, text))
            else:
                lines.append("  %s\n  %-24s %s" % (left, "", text))
        lines.append("")
    lines.append("other:")
    lines.append("  %-24s %s" % ("-h, -help, --help", "show this help and exit"))
    lines.append("  %-24s %s" % ("--version", "show the version and exit"))
    lines.append("")
    lines.append("subcommands:")
    for name, text in SUBCOMMANDS:
        lines.append("  %-24s %s" % (name, text))
    lines.append("")
    lines.append("Flags are matched as nanoBragg matches them (by substring): a spelling C reads differently, "
                 "a word C ignores and a stray word each print a 'note:' line; -strict makes them errors "
                 "(docs/flags.md).")
    return "\n".join(lines) + "\n"


def markdown() -> str:
    """docs/flags.md, generated from the table (``python -m nanobrag_numba.flags --markdown``)."""
    out = ["# Command-line flags",
           "",
           "<!-- generated by `python -m nanobrag_numba.flags --markdown > docs/flags.md`: do not edit -->",
           "",
           "`nanobrag-numba` (alias `nanoBragg`) takes nanoBragg's flags with the same values, units and ",
           "defaults. This page is generated from the flag table in `nanobrag_numba/flags.py`, from which ",
           "the parser and `-h` are derived too.",
           "",
           "## How words are matched",
           "",
           "The C program checks every command-line word that starts with `-` against every flag, in the ",
           "order of the table below, and applies every flag whose rule the word satisfies: most rules are ",
           "substrings (`strstr`), some add a length condition, `-N` and `-MW` are exact. A flag reads the ",
           "words after it as its values; a few (`-Na`/`-Nb`/`-Nc`/`-N`, `-misset random`, the three ",
           "`-oversample_*` switches, `-cell` with fewer than 6 values) end the checks of their word ",
           "(C's `continue`). A word that matches ",
           "nothing is ignored, and so is a word that does not start with `-` and is no flag's value.",
           "",
           "Our rule: every argument list C accepts runs and gives C's image. Where C's reading is ",
           "surprising we print one `note:` line on standard output before rendering:",
           "",
           "* a spelling that is not a flag's name or listed alias but that C matches is applied as C ",
           "  applies it: `note: -matrix read as -mat (C matches flag names by substring)`. Examples: ",
           "  `-matrix` is `-mat`, `-adcoffset` is `-adc`, `-mosaici` is `-mosaic`, `-hklfile` is `-hkl`;",
           "* a word C ignores has no effect: `-hdiv`, `-vdiv`, `-dispstep` (unknown flags, with a ",
           "  \"did you mean\" hint), and a flag at the end of the line without its values;",
           "* a stray word that is no flag's value has no effect: the `0` of `-oversample_thick 0`;",
           "* `-pix0_vector_mm X Y Z` takes millimetres, as its name says (divided by 1000). C matches it as ",
           "  `-pix0_vector` and reads metres; `-c_quirks` restores that.",
           "",
           "With `-strict` each of these notes is an error (exit status 2). Values that C reads with ",
           "`atof`/`atoi` must be numbers (C reads `-distance abc` as 0; we refuse it). Negative numbers ",
           "(`-phi -5`, `-1e-5`) are values. The values of `-cell` are the words up to the next one ",
           "starting with `-` (at most 6).",
           "",
           "Two substring collisions change images and are corrected unless `-c_quirks` is given (a note ",
           "says so when they fire): `-twotheta_axis` also matches `-twotheta` (C sets the two-theta angle ",
           "to the axis' first number and the pivot to SAMPLE), and `-misset_seed N a b` also matches ",
           "`-misset` (C sets the misset angles to N, a, b). See docs/differences.md.",
           "",
           "`-h`/`--help` and `--version` are command-line flags; `Config.from_args` refuses them.",
           ""]
    for group in GROUPS:
        out.append("## %s" % group[0].upper() + group[1:])
        out.append("")
        out.append("| flag | values | also spelt | C's match rule | sets (Config, SI units) | description |")
        out.append("|---|---|---|---|---|---|")
        for f in TABLE:
            if f.group != group:
                continue
            extra = []
            if f.stop:
                extra.append("then `continue`")
            if f.need != (f.nargs if isinstance(f.nargs, int) else 1):
                extra.append("needs %d word(s) after it" % f.need)
            rule = f.c_rule() + ("; " + ", ".join(extra) if extra else "")
            cells = ["`%s`" % f.name, f.values_doc(), ", ".join("`%s`" % a for a in f.aliases), rule,
                     f.sets_doc(), f.help]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    out.append("## Subcommands")
    out.append("")
    for name, text in SUBCOMMANDS:
        out.append("* `%s %s`: %s" % (PROG, name, text))
    out.append("")
    return "\n".join(line.rstrip() for line in out)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--markdown"]:
        sys.stdout.write(markdown())
    else:
        sys.stdout.write(help_text())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
