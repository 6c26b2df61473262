"""The typed configuration of one simulated image.

:class:`Config` holds every setting the nanoBragg command line can change, in
the C program's internal units (metres, radians, photons/m^2) and with the C
program's defaults.  Settings that C leaves "unset" until it has read every
flag (and then derives from other settings) are ``None`` here.  The command
line (``cli.py``) fills a Config from flags; the Python API builds one
directly; ``simulator.py`` turns it into the tables the kernels need.

The ``*_deg``/``*_mm`` helpers of the API convert for you; inside a Config
everything is SI, as in ``nanoBragg.c`` after parsing.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Tuple

NAN = float("nan")
RTD = 180.0 * (1.0 / math.pi)  # C: 180.0*M_1_PI

CONVENTIONS = ("CUSTOM", "ADXV", "MOSFLM", "XDS", "DIALS", "DENZO")
SHAPES = ("SQUARE", "ROUND", "GAUSS", "TOPHAT")

Vec3 = Tuple[float, float, float]

#: C reads the seeds with atoi and stores -N: seeds beyond C's int are refused
C_INT_MAX = 2 ** 31 - 1

#: (field, flag, factor from SI to the flag's unit) of every number that must be finite
FINITE_FIELDS = (
    ("Na", "-Na", 1.0), ("Nb", "-Nb", 1.0), ("Nc", "-Nc", 1.0),
    ("sample_x", "-samplesize", 1e3), ("sample_y", "-samplesize", 1e3), ("sample_z", "-samplesize", 1e3),
    ("fudge", "-fudge", 1.0), ("default_F", "-default_F", 1.0),
    ("dispersion", "-dispersion", 100.0), ("hdivrange", "-hdivrange", 1e3), ("vdivrange", "-vdivrange", 1e3),
    ("hdivstep", "-hdivstep", 1e3), ("vdivstep", "-vdivstep", 1e3),
    ("flux", "-flux", 1.0), ("exposure", "-exposure", 1.0), ("beamsize", "-beamsize", 1e3),
    ("polarization", "-polar", 1.0), ("dmin", "-dmin", 1e10), ("water_size", "-water", 1e6),
    ("background_thick", "-background_thick", 1e3), ("background_density", "-background_density", 1e-6),
    ("background_MW", "-background_MW", 1.0),
    ("phi0", "-phi", RTD), ("osc", "-osc", RTD), ("phistep", "-phistep", RTD),
    ("mosaic_spread", "-mosaic", RTD),
    ("distance", "-distance", 1e3), ("close_distance", "-close_distance", 1e3),
    ("Xbeam", "-Xbeam", 1e3), ("Ybeam", "-Ybeam", 1e3), ("Xclose", "-Xclose", 1e3), ("Yclose", "-Yclose", 1e3),
    ("ORGX", "-ORGX", 1.0), ("ORGY", "-ORGY", 1.0),
    ("detector_twotheta", "-twotheta", RTD), ("detector_rotx", "-detector_rotx", RTD),
    ("detector_roty", "-detector_roty", RTD), ("detector_rotz", "-detector_rotz", RTD),
    ("detector_thick", "-detector_thick", 1e6), ("detector_mu", "-detector_abs", 1e6),
    ("detector_thickstep", "-detector_thickstep", 1e6),
    ("intfile_scale", "-scale", 1.0), ("pgm_scale", "-pgmscale", 1.0), ("adc_offset", "-adc", 1.0),
)

#: (field, flag) of every vector
VECTOR_FIELDS = (
    ("beam_vector", "-beam_vector"), ("fdet_vector", "-fdet_vector"), ("sdet_vector", "-sdet_vector"),
    ("odet_vector", "-odet_vector"), ("polar_vector", "-polar_vector"), ("spindle_vector", "-spindle_axis"),
    ("twotheta_axis", "-twotheta_axis"), ("pix0_vector", "-pix0_vector"), ("misset", "-misset"),
)


def np_integer():
    import numpy as np
    return np.integer


def _show(v, unit):
    try:
        return "%g" % (float(v) * unit)
    except (TypeError, ValueError, OverflowError):
        return repr(v)


@dataclass
class Config:
    """All settings of one nanoBragg run (SI units, C defaults).

    Field names follow the C variables, so the C source and REFERENCE.md can
    be read side by side with this class.  ``None`` means "not given": the
    set-up then derives the value as C does.
    """

    # --- input files -----------------------------------------------------
    hklfile: Optional[str] = None
    matfile: Optional[str] = None
    matrix: Optional[Tuple[float, ...]] = None  # the 9 numbers of a -mat file (row-major, A^-1 x lambda)
    dumpfile: str = "Fdump.bin"
    stolfile: Optional[str] = None
    sourcefile: Optional[str] = None
    source_weights: bool = False           # -source_weights: use -sourcefile's weight column (C: ignored)
    spectrumfile: Optional[str] = None     # -spectrum: lines of 'wavelength(A) weight' (this port)
    imgfile: Optional[str] = None
    maskfile: Optional[str] = None

    # --- output files (None: not written) --------------------------------
    floatfile: Optional[str] = "floatimage.bin"
    intfile: Optional[str] = "intimage.img"
    pgmfile: Optional[str] = "image.pgm"
    noisefile: Optional[str] = "noiseimage.img"
    cbffile: Optional[str] = None          # int image as full-geometry imgCIF/CBF (this port)
    cbfnoisefile: Optional[str] = None     # noise image as CBF (this port; needs the noise on)
    nxsfile: Optional[str] = None          # int + float image as NeXus/NXmx HDF5 (this port)
    nxsnoisefile: Optional[str] = None     # noise image as NeXus/NXmx HDF5 (this port; needs the noise on)
    write_pgm: bool = True
    calculate_noise: bool = True

    # --- crystal -----------------------------------------------------------
    cell: Optional[Tuple[float, float, float, float, float, float]] = None  # A, A, A, rad, rad, rad (0: default)
    misset: Optional[Vec3] = None          # radians about x, y, z
    misset_random: bool = False
    dials_A: Optional[Tuple[float, ...]] = None  # crystal A = UB (1/A), DIALS lab frame, row-major (this port)
    Na: float = 1.0
    Nb: float = 1.0
    Nc: float = 1.0
    sample_x: float = 0.0                  # crystal size (m); 0: use N
    sample_y: float = 0.0
    sample_z: float = 0.0
    xtal_shape: str = "SQUARE"
    fudge: float = 1.0
    default_F: float = 0.0
    interpolate: Optional[bool] = None     # None: auto (on when any N <= 2)

    # --- beam ----------------------------------------------------------------
    lambda0: float = 1.0e-10
    dispersion: float = 0.0                # fraction (C divides the % by 100)
    dispsteps: int = -1
    spectrum: Optional[Tuple[Tuple[float, float], ...]] = None  # (wavelength m, weight) pairs (this port)
    hdivrange: float = -1.0                # radians
    vdivrange: float = -1.0
    hdivstep: float = -1.0
    vdivstep: float = -1.0
    hdivsteps: int = -1
    vdivsteps: int = -1
    round_div: bool = True
    fluence: float = 125932015286227086360700780544.0
    flux: float = 0.0
    exposure: float = 1.0
    beamsize: float = 1e-4
    polarization: float = 0.0              # Kahn factor
    nopolar: bool = False
    dmin: float = 0.0                      # m
    water_size: float = 0.0                # m
    # amorphous background from a stol-vs-F table (this port: -background, nonBragg's physics)
    background_stol: Optional[str] = None  # the table: sin(theta)/lambda (1/A) and F per line
    background_thick: float = 1e-4         # m, along the beam (width and height: 0.1 mm clipped to the beam)
    background_density: float = 1.0e6      # g/m^3
    background_MW: float = 18.0            # g/mol

    # --- sample motion -----------------------------------------------------
    phi0: float = 0.0
    osc: float = -1.0
    phistep: float = -1.0
    phisteps: int = -1
    mosaic_spread: float = -1.0
    mosaic_domains: int = -1

    # --- detector ------------------------------------------------------------
    convention: str = "MOSFLM"
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
    beam_vector: Vec3 = (1.0, 0.0, 0.0)
    fdet_vector: Vec3 = (0.0, 0.0, 1.0)
    sdet_vector: Vec3 = (0.0, -1.0, 0.0)
    odet_vector: Vec3 = (1.0, 0.0, 0.0)
    polar_vector: Vec3 = (0.0, 0.0, 1.0)
    spindle_vector: Vec3 = (0.0, 0.0, 1.0)
    twotheta_axis: Vec3 = (0.0, 1.0, 0.0)
    pix0_vector: Optional[Vec3] = None     # given with -pix0_vector
    detector_twotheta: float = 0.0
    detector_rotx: float = 0.0
    detector_roty: float = 0.0
    detector_rotz: float = 0.0
    curved_detector: bool = False
    point_pixel: bool = False
    detector_thick: float = 0.0            # m
    detector_mu: float = -1.0              # 1/m
    detector_thicksteps: int = -1
    detector_thickstep: float = -1.0
    roi: Optional[Tuple[int, int, int, int]] = None  # xmin xmax ymin ymax (inclusive)
    # multi-panel detectors (this port, docs/multipanel.md): the panels replace the flags' detector
    detector_json: Optional[str] = None    # panel description (JSON)
    expt: Optional[str] = None             # DIALS experiment list: its detector panels (and, through
                                           # -expt / Simulator.from_expt, its beam, goniometer, crystal)

    # --- sampling ------------------------------------------------------------
    oversample: int = -1
    oversample_thick: bool = False
    oversample_polar: bool = False
    oversample_omega: bool = False

    # --- output scaling --------------------------------------------------------
    intfile_scale: float = 0.0
    pgm_scale: float = 0.0
    adc_offset: float = 40.0
    # detector noise of the suite's noisify (this port; the noise image follows noisify when any is on)
    readout_noise: float = 0.0             # ADU rms
    flicker_noise: float = 0.0             # fraction
    calibration_noise: float = 0.0         # fraction (noisify's own default is 0.03)
    calib_seed: Optional[int] = None       # None: noisify's default seed word 123456789
    psf: Optional[str] = None              # None | "gauss" | "fiber"
    psf_fwhm_um: float = 46.0              # micrometres
    psf_radius: int = 0                    # pixels, 0: automatic

    # --- random seeds (user-facing numbers; C stores -N) -----------------------
    seed: Optional[int] = None             # None: time-based, as C
    mosaic_seed: int = 12345678
    misset_seed: Optional[int] = None      # None: time-based, as C (not -seed)

    # --- reporting -----------------------------------------------------------
    progress: bool = True
    printout: bool = False
    printout_pixel: Optional[Tuple[int, int]] = None  # (fast, slow)
    trace_pixel: Optional[Tuple[int, int]] = None     # (slow, fast)

    # --- this port -------------------------------------------------------------
    c_quirks: bool = False
    device: str = "auto"                   # cpu | cuda | auto
    precision: str = "double"              # double | single
    noop_flags: Tuple[str, ...] = ()       # flags C accepts but ignores
    quirk_hits: Tuple[str, ...] = ()       # parser-level quirks that fired
    parse_notes: Tuple[str, ...] = ()      # the command line's notes (spellings, ignored words)
    command_line: Optional[str] = None     # the flags as given (written into CBF headers as ground truth)

    def replace(self, **changes) -> "Config":
        """Return a copy with some fields changed (``dataclasses.replace``)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            from .errors import NanoBraggError
            raise NanoBraggError("unknown setting(s) %s (see nanobrag_numba.Config for the names)"
                                 % ", ".join(sorted(unknown)))
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_args(cls, args) -> "Config":
        """A Config from nanoBragg flags: a list of words or one string.

        ``Config.from_args(["-hkl", "P1.hkl", "-cell", "40", "42", "45", "90", "90", "90"])``
        gives the configuration the command line would use (same defaults,
        same flag order semantics; errors raise :class:`NanoBraggError`).
        The parser's notes (a spelling C matches by substring, a word C
        ignores) are in ``parse_notes``; ``-strict`` makes them errors.
        ``-h`` and ``--version`` raise :class:`NanoBraggError`: the flag list
        is ``nanobrag_numba.flags.help_text()``.
        """
        import shlex
        from .errors import NanoBraggError
        from .flags import parse_args
        if isinstance(args, str):
            try:
                words = shlex.split(args)
            except ValueError as exc:
                raise NanoBraggError("cannot split the flags %r: %s" % (args, exc)) from None
        elif isinstance(args, (list, tuple)) and all(isinstance(w, str) for w in args):
            words = list(args)
        else:
            raise NanoBraggError("Config.from_args takes the flags as one string or a list of strings, got %s"
                                 % type(args).__name__)
        return parse_args(words)

    def validate(self) -> None:
        """Reject settings that no image can be made from (clear messages)."""
        from .errors import NanoBraggError

        if self.convention not in CONVENTIONS:
            raise NanoBraggError("unknown detector convention %r" % self.convention)
        if self.xtal_shape not in SHAPES:
            raise NanoBraggError("unknown crystal shape %r" % self.xtal_shape)
        if self.pivot not in ("BEAM", "SAMPLE"):
            raise NanoBraggError("unknown pivot %r (use beam or sample)" % self.pivot)
        for name, flag in (("fpixels", "-detpixels_f"), ("spixels", "-detpixels_s")):
            if getattr(self, name) < 0:
                raise NanoBraggError("negative detector size: %s %d (pixels)" % (flag, getattr(self, name)))
        for name, flag, unit in (("detsize_f", "-detsize_f", 1e3), ("detsize_s", "-detsize_s", 1e3),
                                 ("pixel_size", "-pixel", 1e3), ("lambda0", "-lambda", 1e10)):
            v = getattr(self, name)
            if not (v > 0.0) or not math.isfinite(v):
                raise NanoBraggError("%s must be a positive number, got %g" % (flag, v * unit))
        if self.oversample > 1000:   # crystal.MAX_OVERSAMPLE
            raise NanoBraggError("-oversample %d is unreasonably large (the limit is 1000)" % self.oversample)
        for name in ("Na", "Nb", "Nc"):
            if getattr(self, name) < 0:
                raise NanoBraggError("negative crystal size: -%s %g (unit cells)" % (name, getattr(self, name)))
        if self.cell is not None:
            a, b, c = self.cell[:3]
            if not a > 0.0:
                raise NanoBraggError("impossible unit cell: a = %g A (must be > 0)" % a)
            if b < 0 or c < 0:
                raise NanoBraggError("impossible unit cell: negative edge length (%g %g %g)" % (a, b, c))
        if self.device not in ("cpu", "cuda", "auto"):
            raise NanoBraggError("unknown device %r (use cpu, cuda or auto)" % self.device)
        if self.precision not in ("double", "single"):
            raise NanoBraggError("unknown precision %r (use double or single)" % self.precision)
        if self.fluence < 0 or not math.isfinite(self.fluence):
            raise NanoBraggError("fluence must be a finite positive number, got %g" % self.fluence)
        if self.spectrum is not None or self.spectrumfile is not None:
            given = "-spectrum" if self.spectrumfile is not None else "a spectrum"
            if self.spectrum is not None and self.spectrumfile is not None:
                raise NanoBraggError("give the spectrum as a file (spectrumfile, -spectrum) or as pairs "
                                     "(spectrum), not both")
            if self.sourcefile is not None:
                raise NanoBraggError("%s and -sourcefile both give the wavelengths: use one (a source file "
                                     "row has its own wavelength and weight)" % given)
            if self.dispersion != 0.0 or self.dispsteps > 1:
                raise NanoBraggError("%s replaces -dispersion/-dispsteps: give one or the other" % given)
        if self.background_MW == 0.0:
            raise NanoBraggError("-background_MW 0: the molecular weight must not be zero (g/mol)")
        if self.mosaic_domains > 100000:
            raise NanoBraggError("-mosaic_domains %d is unreasonably large" % self.mosaic_domains)
        self._validate_finite(NanoBraggError)
        for name, flag in (("readout_noise", "-readout_noise"), ("flicker_noise", "-flicker"),
                           ("calibration_noise", "-calibration"), ("psf_radius", "-psf_radius")):
            v = getattr(self, name)
            if not (v >= 0) or not math.isfinite(v):
                raise NanoBraggError("%s must be 0 or a positive number, got %g" % (flag, v))
        if self.psf not in (None, "gauss", "fiber"):
            raise NanoBraggError("unknown PSF type %r (use gauss or fiber)" % (self.psf,))
        if not (self.psf_fwhm_um > 0) or not math.isfinite(self.psf_fwhm_um):
            raise NanoBraggError("-psf_fwhm must be a positive number of micrometres, got %g" % self.psf_fwhm_um)
        for name, flag in (("seed", "-seed"), ("mosaic_seed", "-mosaic_seed"), ("misset_seed", "-misset_seed"),
                           ("calib_seed", "-calib_seed")):
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, np_integer())) and not (
                    isinstance(v, float) and v.is_integer()):
                raise NanoBraggError("%s must be a whole number, got %r" % (flag, v))
            if not -C_INT_MAX <= int(v) <= C_INT_MAX:
                raise NanoBraggError("%s %d is outside the range of C's int seeds (-%d to %d)"
                                     % (flag, int(v), C_INT_MAX, C_INT_MAX))

    def _validate_finite(self, NanoBraggError) -> None:
        """Numbers that must be finite (inf or NaN would give a NaN or blank image)."""
        for name, flag, unit in FINITE_FIELDS:
            v = getattr(self, name)
            if v is None:
                continue
            try:
                ok = math.isfinite(float(v))
            except (TypeError, ValueError, OverflowError):
                ok = False
            if not ok:
                raise NanoBraggError("%s must be a finite number, got %s" % (flag, _show(v, unit)))
        for name, flag in VECTOR_FIELDS:
            v = getattr(self, name)
            if v is None:
                continue
            try:
                ok = len(v) == 3 and all(math.isfinite(float(x)) for x in v)
            except (TypeError, ValueError, OverflowError):
                ok = False
            if not ok:
                raise NanoBraggError("%s must be three finite numbers, got %r" % (flag, v))


def apply_header_defaults(cfg: Config, path: str, mask: bool = False) -> None:
    """Take detector defaults from an SMV header, as C does for -img and -mask.

    C reads these headers before any flag, so every flag overrides them.  A
    keyword is looked up as C's ``ValueOf`` does (last occurrence of the
    text, so ``DISTANCE`` finds ``CLOSE_DISTANCE`` when both are present and
    ``ORGX`` finds ``XDS_ORGX``).  For a mask, BEAM_CENTER_Y is measured from
    the other edge (``detsize_s - value``), for -img it is taken as is.
    """
    from .io.smv import header_value, read_smv

    smv = read_smv(path)
    hv = lambda key: header_value(smv.header_text, key)  # noqa: E731
    cfg.fpixels = smv.width
    cfg.spixels = smv.height
    v = hv("PIXEL_SIZE")
    if not math.isnan(v):
        cfg.pixel_size = v / 1000.0
    cfg.detsize_f = cfg.pixel_size * cfg.fpixels
    cfg.detsize_s = cfg.pixel_size * cfg.spixels
    v = hv("DISTANCE")
    if not math.isnan(v):
        cfg.distance = v / 1000.0
    v = hv("CLOSE_DISTANCE")
    if not math.isnan(v):
        cfg.close_distance = v / 1000.0
    v = hv("WAVELENGTH")
    if not math.isnan(v):
        cfg.lambda0 = v / 1e10
    v = hv("BEAM_CENTER_X")
    if not math.isnan(v):
        cfg.Xbeam = v / 1000.0
    v = hv("BEAM_CENTER_Y")
    if not math.isnan(v):
        cfg.Ybeam = (cfg.detsize_s - v / 1000.0) if mask else v / 1000.0
    v = hv("ORGX")
    if not math.isnan(v):
        cfg.ORGX = v
    v = hv("ORGY")
    if not math.isnan(v):
        cfg.ORGY = v
    v = hv("PHI")
    if not math.isnan(v):
        cfg.phi0 = v / RTD
    v = hv("OSC_RANGE")
    if not math.isnan(v):
        cfg.osc = v / RTD
    if mask:
        cfg.maskfile = path
    else:
        cfg.imgfile = path
