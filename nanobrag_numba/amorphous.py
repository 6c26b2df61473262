"""Amorphous background (water, air, ice) from a stol-vs-F table: one implementation for every caller.

The physics is nonBragg.c's (see ``kernels/background.py``): for every pixel,
sub-pixel and source, F at ``stol = sin(theta)/lambda`` from the table,
``I = sum sign(F) F^2 polar omega weight``, and photons per pixel
``I * r_e^2 * fluence * molecules / (sources * oversample^2)`` with
``molecules = thickness * width * height * density * N_A / MW`` (width and
height clipped to the beam).  The ``nonbragg`` command
(:mod:`nanobrag_numba.nonbragg`) and the Python function :func:`background` (``nb.background``)
both call :func:`render_rows`.

    import nanobrag_numba as nb
    img = nb.background("-detpixels 256 -pixel 0.1 -distance 100", "water.stol",
                        thickness_mm=0.1, density=1.0, MW=18.0)

``config_or_flags`` may be nonBragg flags (a string or a list of words, the
``nonbragg`` command's flags), a :class:`~nanobrag_numba.nonbragg.NonBraggConfig`,
or a nanoBragg :class:`~nanobrag_numba.config.Config` (or nanoBragg flags
via ``nb.config_from_flags``): the background then lies on the main
simulator's detector (its convention, beam centre and sources) so that it can
be added to a Bragg image of the same geometry.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import NanoBraggError

R_E_SQR = 7.94079248018965e-30          # Thomson cross section (m^2), C's constant
AVOGADRO = 6.02214179e23                # nonBragg.c's value
#: stol column units: -stol (1/A), -4stol (4 stol, 1/A), -Q (4 pi stol, 1/A) -> 1/m
STOL_MULT = {"-stol": 1e10, "-4stol": 1e10 / 4, "-Q": 1e10 / math.pi / 4}


@dataclass
class StolTable:
    """A stol-vs-F table in C's layout (two sentinel rows at each end, stol in 1/m).

    ``stol_of`` and ``F_of`` hold ``nstols`` rows plus NaN padding (C reads
    past the end for a non-finite stol); ``increasing`` tells whether the
    stol column increases strictly (then every pixel can find its row on its
    own, in parallel); ``mult`` is the factor that turned the file's first
    column into 1/m.
    """

    stol_of: np.ndarray
    F_of: np.ndarray
    nstols: int
    increasing: bool
    mult: float
    source: str = "table"


def stol_table(rows, mult: float = 1e10, source: str = "table") -> StolTable:
    """Build C's interpolation table from rows of (stol, F).

    As nonBragg.c: the first column is multiplied by ``mult`` (1e10 for
    sin(theta)/lambda in 1/A), a missing (NaN) F is 0, and two rows are added
    at each end (stol -1e99, -1e98 and 1e98, 1e99) holding the F of the
    first and the last row that has one.

    Raises
    ------
    NanoBraggError
        For an empty table, a table without any F value or a stol that is not
        a finite number.
    """
    data = np.asarray(rows, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] == 0 or data.shape[1] < 2:
        raise NanoBraggError("%s: a stol table needs rows of two numbers (sin(theta)/lambda and F)" % source)
    stol = data[:, 0]
    F = data[:, 1].copy()
    if not np.all(np.isfinite(stol)):
        bad = int(np.flatnonzero(~np.isfinite(stol))[0])
        raise NanoBraggError("%s: row %d has stol %r (must be a finite number)" % (source, bad + 1, stol[bad]))
    have = np.flatnonzero(~np.isnan(F))
    if have.size == 0:
        raise NanoBraggError("%s: no F values (the second column is missing on every row)" % source)
    F_low, F_high = float(F[have[0]]), float(F[have[-1]])
    F[np.isnan(F)] = 0.0
    n = data.shape[0] + 4
    stol_of = np.full(n + 6, np.nan)
    F_of = np.full(n + 6, np.nan)
    stol_of[2:n - 2] = stol * mult
    F_of[2:n - 2] = F
    stol_of[0], stol_of[1] = -1e99, -1e98
    stol_of[n - 2], stol_of[n - 1] = 1e98, 1e99
    F_of[0] = F_of[1] = F_low
    F_of[n - 2] = F_of[n - 1] = F_high
    increasing = bool(np.all(np.diff(stol_of[:n]) > 0.0))
    return StolTable(stol_of, F_of, n, increasing, float(mult), source)


_NUM = rb"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
#: a file of plain "number number" lines, each ending in a newline: read in one numpy call
_PLAIN = re.compile(rb"(?:[ \t]*" + _NUM + rb"[ \t]+" + _NUM + rb"[ \t]*\n)+")


def read_stol(path, mult: float = 1e10) -> StolTable:
    """Read a stol file (two columns: sin(theta)/lambda in 1/A and F) as nonBragg reads it.

    Lines are read like C's ``read_text_file`` (fields separated by
    ``" \\t,;:!"``, blank lines skipped); unlike C, a field that is not a
    number is an error naming the line.  A file made only of plain
    ``number number`` lines (the usual case) is converted in one step.
    """
    from .io import read_input
    from .io.textcols import read_numeric_columns
    shown, raw = read_input(path, "-stol file")
    if _PLAIN.fullmatch(raw):
        data = np.array(raw.split(), dtype=np.float64).reshape(-1, 2)
    else:
        data, _lines = read_numeric_columns(path, 2, "-stol file")
    return stol_table(data, mult, source=str(path))


def as_stol_table(stol, mult: float = 1e10) -> StolTable:
    """A :class:`StolTable` from a table, a path or an (N, 2) array of (stol in 1/A, F)."""
    if isinstance(stol, StolTable):
        return stol
    if isinstance(stol, (str, bytes)) or hasattr(stol, "__fspath__"):
        return read_stol(stol, mult)
    try:
        rows = np.asarray(stol, dtype=np.float64)
    except (TypeError, ValueError):
        raise NanoBraggError("stol must be a file name or an (N, 2) array of sin(theta)/lambda (1/A) and F, "
                             "got %s" % type(stol).__name__) from None
    return stol_table(rows, mult, source="stol array")


def molecule_count(sample_x, sample_y, sample_z, density, MW, molecules=0.0):
    """nonBragg's number of scattering molecules (SI: m, g/m^3, g/mol).

    ``molecules`` given (non-zero) wins, as in C (it then sets the density).
    """
    volume = sample_x * sample_y * sample_z
    if molecules != 0:
        density = molecules / volume / AVOGADRO * MW
    return volume * density * AVOGADRO / MW


def bg_params(det, oversample, point_pixel, curved, nopolar, kahn, nsources, nstols):
    """Kernel parameters for a :class:`~nanobrag_numba.geometry.Detector`."""
    from .kernels.background import make_bgparams
    from .simulator import _polar_axis_after_unitize, detector_kernel_params
    polar = _polar_axis_after_unitize(det.polar)
    return make_bgparams(
        **detector_kernel_params(det, oversample, bool(curved), bool(point_pixel)),
        nsources=nsources, nstols=nstols, kahn=kahn, nopolar=bool(nopolar),
        polar_x=polar[0], polar_y=polar[1], polar_z=polar[2])


def render_rows(params, sources, weights, table: StolTable, full: bool = False, device: str = "cpu",
                progress=None):
    """Run the background kernel; returns float64 rows [7 or 2, npix] (see ``kernels.background.ROWS``).

    ``full=False`` keeps only the intensity and the solid-angle sum (an
    image); ``full=True`` also C's last F, stol, table row, polar and omega of
    every pixel (for ``-Fmap`` and ``-img``).  ``device="cuda"`` runs the
    CUDA kernel (``kernels/cuda_background.py``).  ``progress`` (CPU, an
    increasing table) is called with the percentage done after each of 20
    chunks of detector rows.
    """
    npix = params.fpixels * params.spixels
    nrows = 7 if full else 2
    sources = np.ascontiguousarray(sources[:, :4], dtype=np.float64)
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    if device == "cuda" and table.increasing:
        from .kernels import cuda_background
        return cuda_background.render(params, sources, weights, table.stol_of, table.F_of, nrows)
    try:
        out = np.empty((nrows, npix))
    except MemoryError:
        raise NanoBraggError("out of memory for a %d x %d background image" % (params.fpixels, params.spixels))
    from .kernels import background as kb
    if table.increasing:
        if progress is None:
            kb.background_cpu(params, sources, weights, table.stol_of, table.F_of, out, 0, params.spixels)
        else:
            chunks = 20
            for n in range(chunks):
                r0 = params.spixels * n // chunks
                r1 = params.spixels * (n + 1) // chunks
                kb.background_cpu(params, sources, weights, table.stol_of, table.F_of, out, r0, r1)
                progress(5 * (n + 1))
    else:
        kb.background_serial(params, sources, weights, table.stol_of, table.F_of, out)
    return out


def photons(rows_I, fluence, molecules, steps):
    """C's scale of the summed intensity: ``(float)(I * r_e^2 * fluence * molecules / steps)``."""
    return (rows_I * R_E_SQR * fluence * molecules / steps).astype(np.float32)


def _nanobragg_setup(cfg, log):
    """Detector, sources and sampling of a nanoBragg Config (no HKL file is read)."""
    from .geometry import setup_detector
    from .simulator import resolve_sampling
    from .sources import build_sources, kernel_sources, spectrum_pairs, weights_used
    cfg.validate()
    notes = []
    sampling = []
    det = setup_detector(cfg, log, notes, between=lambda: sampling.append(resolve_sampling(cfg, log, notes)))
    s = sampling[0]
    table, w, _d = build_sources(cfg.sourcefile, det.beam, det.polar, det.vert, cfg.lambda0,
                                 (s.hdivrange, s.hdivstep, s.hdivsteps, s.vdivrange, s.vdivstep, s.vdivsteps),
                                 (s.dispersion, s.dispstep, s.dispsteps), cfg.round_div, log,
                                 spectrum=spectrum_pairs(cfg.spectrumfile, cfg.spectrum),
                                 check_weights=weights_used(cfg))
    # the sources weighted as the image weights them (see sources.weights_used)
    return det, kernel_sources(table, w, not weights_used(cfg))


def background(config_or_flags, stol, *, thickness_mm: Optional[float] = None, density: Optional[float] = None,
               MW: Optional[float] = None, molecules: Optional[float] = None, fluence: Optional[float] = None,
               oversample: Optional[int] = None, stol_units: str = "-stol", device: str = "cpu",
               log=None) -> np.ndarray:
    """Photons per pixel scattered by an amorphous sample, as a float32 ``(slow, fast)`` image.

    Parameters
    ----------
    config_or_flags : str, list of str, NonBraggConfig or Config
        The detector and beam: nonBragg flags (``"-detpixels 256 -distance
        100 -lambda 1"``), a :class:`~nanobrag_numba.nonbragg.NonBraggConfig`,
        or a nanoBragg :class:`~nanobrag_numba.config.Config` (its detector,
        sources, fluence; its sample size is NOT used: give ``thickness_mm``).
    stol : str, path, (N, 2) array or StolTable
        sin(theta)/lambda (1/A, or as ``stol_units`` says) and F per row.
    thickness_mm : float, optional
        Sample thickness along the beam (mm); default the config's (nonBragg:
        0.1 mm).  The sample's width and height are the config's (nonBragg
        default 0.1 mm), clipped to the beam size.
    density : float, optional
        g/cm^3 (nonBragg default 1).
    MW : float, optional
        Molecular weight (g/mol, nonBragg default 18).
    molecules : float, optional
        Number of molecules (overrides density).
    fluence : float, optional
        Photons/m^2; default the config's (``-fluence``, or ``-flux``,
        ``-exposure``, ``-beamsize``).
    oversample : int, optional
        Sub-pixels per pixel edge (default the config's ``-oversample``, else
        1; the main command's ``-background`` uses the image's own, possibly
        automatic, oversampling).
    stol_units : {"-stol", "-4stol", "-Q"}
        How the first column is given: stol, 4 stol or Q = 4 pi stol (1/A).
    device : {"cpu", "cuda"}
    log : callable, optional
        Receives the set-up lines (default: silent).

    The background is linear in thickness and density and inversely
    proportional to MW.

    Raises
    ------
    NanoBraggError
        For bad settings (one-line message).
    """
    from . import nonbragg as NB
    from .config import Config
    log = log or (lambda line: None)
    if stol_units not in STOL_MULT:
        raise NanoBraggError("stol_units must be one of %s, got %r" % (", ".join(STOL_MULT), stol_units))
    if device not in ("cpu", "cuda"):
        raise NanoBraggError("unknown device %r (use cpu or cuda)" % (device,))
    for name, value in (("thickness_mm", thickness_mm), ("density", density), ("MW", MW),
                        ("molecules", molecules), ("fluence", fluence)):
        if value is not None and (not isinstance(value, (int, float, np.floating, np.integer))
                                  or isinstance(value, bool) or not math.isfinite(value)):
            raise NanoBraggError("%s must be a finite number, got %r" % (name, value))
    if MW is not None and MW == 0:
        raise NanoBraggError("MW must not be 0 (g/mol)")
    if oversample is not None and (not isinstance(oversample, (int, np.integer)) or oversample < 1):
        raise NanoBraggError("oversample must be a whole number >= 1, got %r" % (oversample,))
    table = as_stol_table(stol, STOL_MULT[stol_units])
    if isinstance(config_or_flags, Config):
        cfg = config_or_flags
        if cfg.detector_json is not None or cfg.expt is not None:
            raise NanoBraggError("background() renders on the flags' detector: a panel description (%s) is not "
                                 "supported there yet" % (cfg.detector_json or cfg.expt))
        det, sources = _nanobragg_setup(cfg, log)
        weights = np.ascontiguousarray(sources[:, 4])
        sample = [1e-4, 1e-4, 1e-4]
        if thickness_mm is not None:
            sample[0] = thickness_mm / 1000.0
        flu = cfg.fluence
        if cfg.flux != 0.0 and cfg.exposure > 0.0 and cfg.beamsize > 0:
            flu = cfg.flux * cfg.exposure / cfg.beamsize / cfg.beamsize
        beamsize = cfg.beamsize
        dens, mw, nmol = 1.0e6, 18.0, 0.0
        ovs = cfg.oversample if cfg.oversample > 0 else 1
        point_pixel, curved, nopolar, kahn = cfg.point_pixel, cfg.curved_detector, cfg.nopolar, cfg.polarization
    else:
        if isinstance(config_or_flags, NB.NonBraggConfig):
            ncfg = config_or_flags
        else:
            ncfg = NB.parse_args(NB.flag_words(config_or_flags), need_stol=False)
        if thickness_mm is not None:
            ncfg = ncfg.replace(sample_x=thickness_mm / 1000.0)
        setup = NB.prepare(ncfg, log, table=table)
        det, sources, weights = setup.det, setup.sources, setup.weights
        sample = [ncfg.sample_x, ncfg.sample_y, ncfg.sample_z]
        flu, beamsize = setup.fluence, ncfg.beamsize
        dens, mw, nmol = ncfg.density, ncfg.molecular_weight, ncfg.molecules
        ovs = setup.oversample
        point_pixel, curved, nopolar, kahn = ncfg.point_pixel, ncfg.curved_detector, ncfg.nopolar, ncfg.polarization
    if beamsize >= 0:
        sample[1] = min(sample[1], beamsize)
        sample[2] = min(sample[2], beamsize)
    if density is not None:
        dens = density * 1e6
    if MW is not None:
        mw = MW
    if molecules is not None:
        nmol = molecules
    if fluence is not None:
        flu = fluence
    if oversample is not None:
        ovs = int(oversample)
    nmol = molecule_count(sample[0], sample[1], sample[2], dens, mw, nmol)
    params = bg_params(det, ovs, point_pixel, curved, nopolar, kahn, sources.shape[0], table.nstols)
    rows = render_rows(params, sources, weights, table, full=False, device=device)
    steps = sources.shape[0] * ovs * ovs
    return photons(rows[0], flu, nmol, steps).reshape(det.spixels, det.fpixels)
