"""From a Config to an image: set-up, kernel call, the single /steps scale.

``prepare`` repeats nanoBragg.c's set-up in C's order (and prints C's lines):
sampling defaults, detector, crystal, structure factors, sources, mosaic
domains.  It tabulates everything that does not depend on the pixel (source
directions, cell vectors per phi step and domain, the HKL table) and packs
the scalars into ``KParams`` for the kernels.  ``render`` runs a kernel
(CPU or CUDA, see ``backends.py``), then applies the one normalisation
``r_e^2 fluence I / steps`` times the per-pixel factors, and adds the water
background.  ``write_outputs`` writes C's four files and prints C's
statistics.  Nothing here loops over pixels.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import numpy as np

from . import crystal as X
from .config import RTD, Config
from .errors import NanoBraggError
from .geometry import Detector, setup_detector, smv_header_values

R_E_SQR = 7.94079248018965e-30
AVOGADRO = 6.02214179e23
WATER_F = 2.57
WATER_MW = 18.0
BANNER = "nanoBragg nanocrystal diffraction simulator - James Holton and Ken Frankel 5-17-17"
INT_BIG = 2 ** 62
_NO_HKL = np.zeros((1, 1, 1))   # the table of a run without structure factors (default_F only)

QUIRK_NOTES = {
    "phi0_carryover": "the cell is rotated at every phi step, also at phi = 0 (C keeps the previous rotation there)",
    "oversample_running_multiply": "each contribution is multiplied once by its -oversample_* factors "
                                   "(C multiplies the running sum again after every contribution)",
    "thick_last_layer_capture": "each sensor layer is weighted by its own capture fraction and the layers "
                                "are thick/layers apart (C uses the last layer's fraction for all)",
    "interpolate_global_disable": "interpolation falls back to the nearest hkl only where the 4x4x4 block "
                                  "leaves the table (C switches it off for the rest of the image)",
    "water_double_scaling": "the water background is I_bg * polar * omega, linear in fluence and "
                            "independent of the sampling steps (C scales it by fluence again and 1/steps)",
    "twotheta_axis_substring": "-twotheta_axis only sets the axis (C's parser also reads it as -twotheta)",
    "misset_seed_substring": "-misset_seed only sets the seed (C's parser also reads it as -misset)",
    "pix0_vector_ignored": "-pix0_vector sets the detector origin (C ignores the vector)",
}


@dataclass
class Sampling:
    """Step counts and ranges after C's defaulting logic."""

    phisteps: int
    phistep: float
    osc: float
    hdivrange: float
    hdivstep: float
    hdivsteps: int
    vdivrange: float
    vdivstep: float
    vdivsteps: int
    dispersion: float
    dispstep: float
    dispsteps: int
    thick: float
    thickstep: float
    thicksteps: int
    mu: float
    mosaic_spread: float
    mosaic_domains: int


def _steps_logic(steps, rng, step, none_range):
    """C's defaulting of (range, step, steps) for divergence and dispersion."""
    if steps <= 0:
        if rng < 0.0:
            if step <= 0.0:
                return 0.0, 0.0, 1
            return step, step, 2
        if step <= 0.0:
            return rng, rng, 2
        return rng, step, int(math.ceil(rng / step))
    if rng < 0.0:
        if step <= 0.0:
            rng = none_range
            return rng, rng / steps, steps
        return step, step, 2
    if step <= 0.0:
        if steps <= 1:
            steps = 2
        return rng, rng / (steps - 1), steps
    return rng, step, steps


def resolve_sampling(cfg: Config, log, notes) -> Sampling:
    """C's default logic for phi, divergence, dispersion, sensor layers and mosaic."""
    phisteps, osc, phistep = cfg.phisteps, cfg.osc, cfg.phistep
    if phisteps < 0:
        if osc < 0.0:
            if phistep <= 0.0:
                phisteps, osc, phistep = 1, 0.0, 0.0
            else:
                osc, phisteps = phistep, 2
        else:
            if phistep <= 0.0:
                phisteps, phistep = 2, osc / 2.0
            else:
                phisteps = int(math.ceil(osc / phistep))
    else:
        if phisteps == 0:
            phisteps = 1
        if osc < 0.0:
            if phistep <= 0.0:
                osc = 1.0 / RTD
                phistep = osc / phisteps
            else:
                osc, phisteps = phistep, 2
        else:
            if phistep < 0.0:
                phistep = osc / phisteps
    hdivrange, hdivstep, hdivsteps = _steps_logic(cfg.hdivsteps, cfg.hdivrange, cfg.hdivstep, 1.0)
    vdivrange, vdivstep, vdivsteps = _steps_logic(cfg.vdivsteps, cfg.vdivrange, cfg.vdivstep, 1.0)
    dispersion, dispstep, dispsteps = _steps_logic(cfg.dispsteps, cfg.dispersion, -1.0, 1.0)

    thick, mu, nthick = cfg.detector_thick, cfg.detector_mu, cfg.detector_thicksteps
    if cfg.c_quirks:
        _, thickstep, thicksteps = _steps_logic(nthick, thick, -1.0, 0.5e-6)
        if nthick <= 0 and thick >= 0.0:
            thickstep = thick / 2  # C: range given, no steps: two layers, thick/2 apart
    else:
        thicksteps = nthick if nthick > 0 else 2
        thickstep = thick / thicksteps if thick > 0.0 else 0.0
    if thick > 0.0 and mu < 0.0:
        mu = 1.0 / thick
        log("WARNING: setting detector attenuation depth to %g m" % mu)

    spread, domains = cfg.mosaic_spread, cfg.mosaic_domains
    if domains <= 0:
        if spread < 0.0:
            domains, spread = 1, 0.0
        elif spread == 0.0:
            domains = 1
        else:
            log("WARNING: finite mosaicity with only one domain! upping to 10 mosaic domains")
            domains = 10
    else:
        if spread < 0.0:
            log("WARNING: no mosaic spread specified.  setting mosaic_domains = 1")
            spread, domains = 0.0, 1
        elif spread == 0.0:
            log("WARNING: zero mosaic spread specified.  setting mosaic_domains = 1")
            domains = 1

    if hdivrange <= 0.0 or hdivstep <= 0.0 or hdivsteps <= 0:
        hdivsteps, hdivrange, hdivstep = 1, 0.0, 0.0
    if vdivrange <= 0.0 or vdivstep <= 0.0 or vdivsteps <= 0:
        vdivsteps, vdivrange, vdivstep = 1, 0.0, 0.0
    if dispersion <= 0.0 or dispstep <= 0.0 or dispsteps <= 0:
        dispsteps, dispersion, dispstep = 1, 0.0, 0.0
    if thick <= 0.0 or thickstep <= 0.0 or thicksteps <= 0:
        if thick <= 0.0 and (nthick > 0 or cfg.detector_mu >= 0.0) and not cfg.c_quirks:
            what = "-detector_thicksteps" if nthick > 0 else "-detector_abs"
            notes.append(("noop_flags", "%s has no effect without -detector_thick" % what))
        thicksteps, thick, thickstep = 1, 0.0, 0.0
    return Sampling(phisteps, phistep, osc, hdivrange, hdivstep, hdivsteps, vdivrange, vdivstep, vdivsteps,
                    dispersion, dispstep, dispsteps, thick, thickstep, thicksteps, mu, spread, domains)


@dataclass
class Prepared:
    """Everything a kernel needs for one image, and what the outputs need."""

    cfg: Config
    det: Detector
    crystal: X.Crystal
    sampling: Sampling
    oversample: int
    fluence: float
    steps: int
    I_bg: float
    sources: np.ndarray
    rot: np.ndarray
    phi_map: np.ndarray
    phi_map_first: np.ndarray
    phis: list
    Fhkl: np.ndarray
    hkl_bounds: tuple
    hkls: int
    mask: np.ndarray
    params: object
    crand: object
    notes: list = field(default_factory=list)
    interpolate: bool = False
    device_tables: dict = field(default_factory=dict)   # GPU copies of this image's tables, per precision
    hkl_device: dict = field(default_factory=dict)      # GPU copies of HKL tables, shared by a Simulator
    fdump: object = None    # the HKLTable still to write to cfg.dumpfile (with the images), or None
    bg_table: object = None  # the -background stol table (amorphous.StolTable), or None
    panels: Optional[np.ndarray] = None   # the kernels' panel table (kernels.physics.PANEL_COLUMNS)


def _seed_now():
    return int(time.time())


def prepare(cfg: Config, log: Callable[[str], None] = print, crand=None, hkl_cache: Optional[dict] = None,
            write_dump: bool = True, hkl_device: Optional[dict] = None) -> Prepared:
    """Set up one image as nanoBragg.c does, printing C's lines through ``log``.

    Parameters
    ----------
    cfg : Config
    log : callable
        Called with each line of C's set-up report (``print`` on the command
        line; a no-op for quiet API use).
    crand : CRandom, optional
        Shared state of C's generators (a new one by default).
    hkl_cache : dict, optional
        Structure-factor tables already read, keyed by file (API reuse).
    write_dump : bool
        Keep the table read from ``-hkl`` in ``Prepared.fdump`` so that
        :func:`write_outputs` writes the ``Fdump.bin`` cache with the
        images (C writes it during set-up; here nothing is written before
        every check has passed, so an error leaves no file behind).
    hkl_device : dict, optional
        GPU copies of HKL tables already uploaded (API reuse).
    """
    from .crand import CRandom
    from .kernels.physics import SHAPES_CODE, make_kparams
    from .sources import build_sources, kernel_sources, spectrum_pairs, weights_used

    cfg.validate()
    now = _seed_now()
    cfg = cfg.replace(seed=cfg.seed if cfg.seed is not None else now,
                      misset_seed=cfg.misset_seed if cfg.misset_seed is not None else now)
    notes: List[tuple] = []
    crand = crand if crand is not None else CRandom()
    if not cfg.c_quirks:
        for q in dict.fromkeys(cfg.quirk_hits):
            notes.append((q, QUIRK_NOTES[q]))

    for path in (cfg.maskfile, cfg.imgfile):     # C reads the -mask, then the -img, header first
        if path is not None:
            log("reading %s" % path)

    # fluence from flux; the beam clips the sample
    fluence = beam_fluence(cfg)
    sample_y, sample_z = clip_sample_to_beam(cfg.beamsize, cfg.sample_y, cfg.sample_z, log)
    cfg_eff = cfg.replace(sample_y=sample_y, sample_z=sample_z)

    from . import panels as P
    panel_list = None
    if cfg.detector_json is not None or cfg.expt is not None:
        P.check_panel_flags(cfg)
        panel_list = _cached(hkl_cache, ("panels", cfg.detector_json or cfg.expt, cfg.detector_json is None),
                             lambda: P.load_panels(cfg))
        P.check_panel_outputs(cfg, panel_list)
    if panel_list is not None:
        if any(p.thickness is not None for p in panel_list):
            t0 = panel_list[0].thickness if panel_list[0].thickness is not None else cfg.detector_thick
            cfg_eff = cfg_eff.replace(detector_thick=t0)
            if len({(t if t is not None else cfg.detector_thick) == 0.0 for t in
                    [p.thickness for p in panel_list]}) > 1:
                raise NanoBraggError("the panels of %s mix sensors with and without thickness: give every panel "
                                     "a thickness or none" % (cfg.detector_json or cfg.expt))
        if panel_list[0].mu is not None:
            # panel 0's sensor sets the run's (the one-panel kernel reads it); other panels keep their own
            cfg_eff = cfg_eff.replace(detector_mu=panel_list[0].mu)
    dump_exists = cfg.hklfile is None and os.path.exists(cfg.dumpfile)
    sampling_box = []

    def after_axes():
        # C prints its banner once the axes are set, checks its inputs, then picks the sampling
        log(BANNER)
        if cfg.hklfile is None and not dump_exists and cfg.default_F == 0.0:
            raise NanoBraggError("no structure factors: give -hkl FILE, keep a %s from an earlier run in "
                                 "this directory, or set -default_F" % cfg.dumpfile)
        if cfg.cell is None and cfg.matfile is None and cfg.matrix is None and cfg.dials_A is None:
            raise NanoBraggError("no unit cell: give -cell a b c alpha beta gamma or -mat FILE")
        sampling_box.append(resolve_sampling(cfg_eff, log, notes))

    det = setup_detector(cfg_eff, log, notes, between=after_axes)
    sampling = sampling_box[0]
    if panel_list is not None:
        det = P.stack_detector(det, panel_list)
        log("%d detector panels of %d x %d pixels from %s" % (len(panel_list), panel_list[0].fpixels,
                                                              panel_list[0].spixels, cfg.detector_json or cfg.expt))

    interpolate = cfg.interpolate
    if interpolate is None:
        if cfg.Na <= 2 or cfg.Nb <= 2 or cfg.Nc <= 2:
            log("auto-selected tricubic interpolation of structure factors")
            interpolate = True
        else:
            log("auto-selected no interpolation")
            interpolate = False

    check_memory(det, cfg)
    from .kernels import _cache
    # the kernels this run calls: a one-domain run draws its mosaic in Python (crand.mosaic_umats)
    kernels = [("cpu", "render_cpu")]
    if sampling.mosaic_domains > 1:
        kernels.append(("crand", "mosaic_umats_fill"))
    if cfg.calculate_noise and cfg.noisefile:
        kernels.append(("noise", "noise_image"))
    if cfg.misset_random:
        kernels.append(("crand", "mosaic_rotation_umat"))
        # the random orientation is drawn by a kernel (the render kernel is checked once its variant is known)
        _cache.announce_compile(entry_points=[k for k in kernels if k[0] != "cpu"])
    xtal, oversample = X.build_crystal(cfg_eff, crand, cfg.lambda0, det.distance, det.pixel_size, log)
    if cfg.spectrumfile is not None:
        log("reading %s" % cfg.spectrumfile)
    spectrum = spectrum_pairs(cfg.spectrumfile, cfg.spectrum)
    check_tables(det, cfg, sampling, len(spectrum) if spectrum is not None else None)
    mask = _load_mask(cfg, det) if panel_list is None else P.panel_mask(panel_list)

    table, dump_pending = _load_structure_factors(cfg, log, hkl_cache, write_dump)
    if table is None or table.hkls == 0:
        interpolate = False
    bg_table = None
    if cfg.background_stol is not None:
        from .amorphous import read_stol
        log("reading %s" % cfg.background_stol)
        bg_table = _cached(hkl_cache, ("stol", cfg.background_stol), lambda: read_stol(cfg.background_stol))
    if cfg.stolfile is not None:
        from .io.textcols import read_numeric_columns
        log("reading %s" % cfg.stolfile)
        read_numeric_columns(cfg.stolfile, 2, "-stol file")

    for t in range(sampling.thicksteps):
        log("thick%d = %g um" % (t, sampling.thickstep * t * 1e6))
    phis = X.phi_angles(cfg.phi0, sampling.phistep, sampling.phisteps)
    for t, phi in enumerate(phis):
        log("phi%d = %g" % (t, phi * RTD))

    table_src, weights, divsteps = build_sources(
        cfg.sourcefile, det.beam, det.polar, det.vert, cfg.lambda0,
        (sampling.hdivrange, sampling.hdivstep, sampling.hdivsteps,
         sampling.vdivrange, sampling.vdivstep, sampling.vdivsteps),
        (sampling.dispersion, sampling.dispstep, sampling.dispsteps), cfg.round_div, log,
        spectrum=spectrum, check_weights=weights_used(cfg))
    # each source counts in proportion to its weight for a spectrum, and for -sourcefile with
    # -source_weights; otherwise (and always under -c_quirks) equally, as C (source_weights_ignored)
    sources = kernel_sources(table_src, weights, not weights_used(cfg))
    if cfg.sourcefile is not None and not weights_used(cfg) and len(np.unique(weights)) > 1:
        notes.append(("source_weights_ignored",
                      "the weight column of %s is not used: every source counts equally, as in C%s"
                      % (cfg.sourcefile, "" if cfg.c_quirks else " (-source_weights uses it)")))

    nsources = sources.shape[0]
    I_bg = water_photons(cfg, fluence)

    if table is not None and table.hkls != 0:
        Fhkl = np.ascontiguousarray(table.F, dtype=np.float64)
        bounds = (table.h_min, table.h_max, table.k_min, table.k_max, table.l_min, table.l_max)
        hkls = table.hkls
    else:
        Fhkl = _NO_HKL
        bounds = (0, 0, 0, 0, 0, 0)
        hkls = 0
    h_min, h_max, k_min, k_max, l_min, l_max = bounds
    a_s, b_s, c_s = xtal.a_star, xtal.b_star, xtal.c_star
    polar_axis = _polar_axis_after_unitize(det.polar)
    params = make_kparams(
        **detector_kernel_params(det, oversample, cfg.curved_detector, cfg.point_pixel),
        use_mask=mask is not None,
        thicksteps=sampling.thicksteps, thickstep=sampling.thickstep, detector_thick=sampling.thick,
        detector_mu=sampling.mu,
        oversample_thick=cfg.oversample_thick, oversample_polar=cfg.oversample_polar,
        oversample_omega=cfg.oversample_omega,
        nsources=nsources, phisteps=sampling.phisteps, mosaic_domains=sampling.mosaic_domains,
        kahn=cfg.polarization, nopolar=cfg.nopolar,
        polar_x=polar_axis[0], polar_y=polar_axis[1], polar_z=polar_axis[2], dmin=cfg.dmin,
        shape=SHAPES_CODE[cfg.xtal_shape], Na=xtal.Na, Nb=xtal.Nb, Nc=xtal.Nc, fudge=cfg.fudge,
        astar_x=a_s[0], astar_y=a_s[1], astar_z=a_s[2], bstar_x=b_s[0], bstar_y=b_s[1], bstar_z=b_s[2],
        cstar_x=c_s[0], cstar_y=c_s[1], cstar_z=c_s[2],
        interpolate=interpolate, hkls=hkls, default_F=cfg.default_F,
        h_min=h_min, h_max=h_max, k_min=k_min, k_max=k_max, l_min=l_min, l_max=l_max,
        h_range=h_max - h_min + 1, k_range=k_max - k_min + 1, l_range=l_max - l_min + 1,
        I_bg=I_bg, water=cfg.water_size,
        quirks=cfg.c_quirks, first_phi_pixel=-1, interp_cut_pixel=INT_BIG, interp_cut_eval=INT_BIG,
        c_math=0, trace_pixel=-1, npanels=len(det.panels) or 1,
        panel_rows=det.panels[0].spixels if det.panels else det.spixels)
    panel_rows = P.panel_table(det, oversample, sampling, panel_list, flags_mu=cfg.detector_mu)
    from .kernels.cpu import cpu_variant, kernel_name, serial_run
    # the compile-time variant this run renders with (on one thread when it is small)
    small = serial_run(params)
    kernels[0] = ("cpu", kernel_name(cpu_variant(params), serial=small))
    # the first kernel may run here: say so when it has to compile
    _cache.announce_compile(entry_points=kernels, seconds=_cache.COMPILE_SECONDS_SMALL if small else None)
    umats = crand.mosaic_umats(sampling.mosaic_spread, sampling.mosaic_domains, cfg.mosaic_seed)
    log("  created a total of %d mosaic domains" % sampling.mosaic_domains)

    steps = nsources * sampling.mosaic_domains * sampling.phisteps * oversample * oversample
    rot = X.rotation_table(xtal, det.spindle, phis, sampling.mosaic_spread, umats)
    phi_map, phi_map_first = X.phi_maps(phis, cfg.c_quirks)
    if not cfg.c_quirks and len(phis) > 1 and any(p == 0.0 for p in phis) and any(p != 0.0 for p in phis):
        notes.append(("phi0_carryover", QUIRK_NOTES["phi0_carryover"]))

    _print_summary(cfg, det, xtal, sampling, table, fluence, oversample, divsteps, nsources, log)

    _collect_notes(cfg, sampling, oversample, nsources, notes)

    prep = Prepared(cfg=cfg, det=det, crystal=xtal, sampling=sampling, oversample=oversample,
                    fluence=fluence, steps=steps, I_bg=I_bg, sources=sources, rot=rot, phi_map=phi_map,
                    phi_map_first=phi_map_first, phis=phis, Fhkl=Fhkl, hkl_bounds=bounds, hkls=hkls,
                    mask=mask if mask is not None else np.zeros(1, dtype=np.uint16), params=params,
                    crand=crand, notes=notes, interpolate=interpolate,
                    hkl_device=hkl_device if hkl_device is not None else {}, fdump=dump_pending,
                    bg_table=bg_table, panels=panel_rows)
    if cfg.c_quirks and sampling.phisteps > 1:
        from .kernels.cpu import first_phi_loop_pixel
        first = first_phi_loop_pixel(params, sources, prep.mask, prep.panels)
        prep.params = params._replace(first_phi_pixel=first)
    return prep


def beam_fluence(cfg: Config) -> float:
    """Photons per m^2: ``-fluence``, or ``-flux`` x ``-exposure`` / ``-beamsize``^2 when those are given (C)."""
    fluence, flux, exposure, beamsize = cfg.fluence, cfg.flux, cfg.exposure, cfg.beamsize
    if flux != 0.0 and exposure > 0.0 and beamsize >= 0:
        if beamsize == 0.0:
            raise NanoBraggError("-beamsize 0 with -flux gives an infinite fluence")
        fluence = flux * exposure / beamsize / beamsize
    return fluence


def clip_sample_to_beam(beamsize, sample_y, sample_z, log):
    """C's clipping of the sample's height and width to a smaller beam (``-beamsize`` >= 0), with its warnings."""
    if beamsize >= 0:
        if beamsize < sample_y:
            log("WARNING: clipping sample (%g m high) with beam (%g m)" % (sample_y, beamsize))
            sample_y = beamsize
        if beamsize < sample_z:
            log("WARNING: clipping sample (%g m wide) with beam (%g m)" % (sample_z, beamsize))
            sample_z = beamsize
    return sample_y, sample_z


def water_photons(cfg: Config, fluence: float) -> float:
    """C's ``I_bg``: the photons per steradian of the ``-water`` droplet at this fluence."""
    return (WATER_F * WATER_F * R_E_SQR * fluence * cfg.water_size * cfg.water_size * cfg.water_size
            * 1e6 * AVOGADRO / WATER_MW)


def memory_bytes() -> Optional[int]:
    """Memory this run can use (bytes): Linux's MemAvailable, else the physical memory, else None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


#: bytes per pixel of the kernel's work arrays: rows, oob index, float image and its copies
PIXEL_BYTES = 6 * 8 + 8 + 4 * 4
#: peak bytes per entry while the tables are built, Python objects included (tracemalloc, CPython 3.11:
#: 256 per source with -dispsteps 200000, 584 per phi step with -phisteps 200000)
SOURCE_BYTES = 256          # a source: its row of Python floats, the float64[4] table row, weight
PHI_BYTES = 600             # a phi step: its angle, its rotated cell (9 Python floats), the phi maps
ROTATION_BYTES = 9 * 8      # a (phi step, mosaic domain) pair: 9 float64 of the rotation table
DOMAIN_BYTES = 9 * 8        # a mosaic domain: its rotation matrix


def _gib(n):
    return n / 2 ** 30


def check_memory(det: Detector, cfg: Config):
    """Refuse a detector whose work arrays cannot fit in this machine's memory."""
    npix = det.fpixels * det.spixels
    need = npix * PIXEL_BYTES
    have = memory_bytes()
    if have and need > have:
        raise NanoBraggError("a %dx%d detector needs %.1f GiB of memory, this machine has %.1f GiB available "
                             "(use a smaller -detpixels or -roi)" % (det.fpixels, det.spixels,
                                                                     need / 2 ** 30, have / 2 ** 30))


def check_tables(det: Detector, cfg: Config, s: Sampling, nlambdas: Optional[int] = None):
    """Refuse settings whose tables cannot fit in memory, before building any of them.

    C loops over sources, phi steps and mosaic domains in constant memory;
    here they are tabulated (``build_sources``, ``rotation_table``), so their
    sizes, and their products, are estimated first.  The limit is the
    memory available (:func:`memory_bytes`, as for :func:`check_memory`):
    a huge job that fits is run, as C would run it.
    """
    have = memory_bytes()
    if not have:
        return
    tables = []
    if cfg.sourcefile is None:
        nwave = s.dispsteps if nlambdas is None else nlambdas
        nsrc = s.hdivsteps * s.vdivsteps * nwave
        flags = []
        if s.hdivsteps > 1 or s.vdivsteps > 1:
            flags.append("-hdivsteps %d x -vdivsteps %d" % (s.hdivsteps, s.vdivsteps))
        if nlambdas is not None:
            flags.append("%d spectrum wavelengths" % nlambdas)
        elif s.dispsteps > 1:
            flags.append("-dispsteps %d" % s.dispsteps)
        tables.append(("%d sources (%s)" % (nsrc, " x ".join(flags) or "one"), nsrc * SOURCE_BYTES))
    tables.append(("%d phi steps (-phisteps %d)" % (s.phisteps, s.phisteps), s.phisteps * PHI_BYTES))
    tables.append(("%d mosaic domains (-mosaic_domains %d)" % (s.mosaic_domains, s.mosaic_domains),
                   s.mosaic_domains * DOMAIN_BYTES))
    tables.append(("%d cell orientations (-phisteps %d x -mosaic_domains %d)"
                   % ((s.phisteps + 1) * s.mosaic_domains, s.phisteps, s.mosaic_domains),
                   (s.phisteps + 1) * s.mosaic_domains * ROTATION_BYTES))
    pixels = det.fpixels * det.spixels * PIXEL_BYTES
    need = pixels + sum(size for _, size in tables)
    if need <= have:
        return
    big = [t for t in sorted(tables, key=lambda t: -t[1]) if t[1] >= 0.1 * need] or tables[:1]
    raise NanoBraggError("these settings need %.1f GiB of tables, more than the %.1f GiB of memory available: "
                         "%s; use fewer steps" % (_gib(need), _gib(have),
                                                  ", ".join("%s %.1f GiB" % (w, _gib(n)) for w, n in big)))


def detector_kernel_params(det, oversample, curved, point_pixel):
    """The pixel-geometry fields of a kernel's parameters (the Bragg kernel's and the background
    kernel's alike): pixel grid, detector axes, pix0, beam, distances, ROI."""
    ps = det.pixel_size
    return dict(
        fpixels=det.fpixels, spixels=det.spixels, oversample=oversample, pixel_size=ps,
        subpixel_size=ps / oversample,
        pix0_x=det.pix0[0], pix0_y=det.pix0[1], pix0_z=det.pix0[2],
        fdet_x=det.fdet[0], fdet_y=det.fdet[1], fdet_z=det.fdet[2],
        sdet_x=det.sdet[0], sdet_y=det.sdet[1], sdet_z=det.sdet[2],
        odet_x=det.odet[0], odet_y=det.odet[1], odet_z=det.odet[2],
        beam_x=det.beam[0], beam_y=det.beam[1], beam_z=det.beam[2],
        distance=det.distance, close_distance=det.close_distance,
        curved=curved, point_pixel=point_pixel,
        roi_xmin=det.roi[0], roi_xmax=det.roi[1], roi_ymin=det.roi[2], roi_ymax=det.roi[3])


def _polar_axis_after_unitize(axis):
    """The E-vector as C leaves it after re-normalising it in every call."""
    from . import vectors as V
    for _ in range(4):
        new, _m = V.unitize(axis)
        if new == axis:
            break
        axis = new
    return axis


def _load_structure_factors(cfg: Config, log, cache, write_dump):
    """The HKL table (or the dump read without -hkl) and the table still to dump."""
    from .io import hkl as hklio
    if cfg.hklfile is None:
        if os.path.exists(cfg.dumpfile):
            log("reading Fs from %s" % cfg.dumpfile)
            return _cached(cache, ("dump", cfg.dumpfile), lambda: hklio.read_fdump(cfg.dumpfile)), None
        return None, None
    log("counting entries in %s" % cfg.hklfile)
    if cfg.default_F != 0.0:
        log("initializing to default_F = %g:" % cfg.default_F)
        log("done initializing:")
    table = _cached(cache, ("hkl", cfg.hklfile, cfg.default_F),
                    lambda: hklio.read_hkl(cfg.hklfile, default_F=cfg.default_F))
    log("re-reading %s" % cfg.hklfile)
    if not write_dump:
        return table, None
    log("writing dump file for next time: %s" % cfg.dumpfile)
    return table, table


def _cached(cache, key, load):
    if cache is None:
        return load()
    path = key[1]
    try:
        st = os.stat(path)
        key = key + (st.st_mtime_ns, st.st_size)
    except OSError:
        return load()
    if key not in cache:
        cache[key] = load()
    return cache[key]


def _load_mask(cfg: Config, det: Detector):
    if cfg.maskfile is None:
        return None
    from .io.smv import read_smv
    smv = read_smv(cfg.maskfile)
    if (smv.height, smv.width) != (det.spixels, det.fpixels):
        raise NanoBraggError("mask %s is %dx%d pixels but the detector is %dx%d (fast x slow)"
                             % (cfg.maskfile, smv.width, smv.height, det.fpixels, det.spixels))
    return np.ascontiguousarray(smv.data.reshape(-1), dtype=np.uint16)


def _collect_notes(cfg, sampling, oversample, nsources, notes):
    if cfg.c_quirks:
        return
    if cfg.oversample_thick or cfg.oversample_polar or cfg.oversample_omega:
        contributions = oversample * oversample * nsources * sampling.phisteps * sampling.mosaic_domains
        if contributions * sampling.thicksteps > 1 or cfg.water_size != 0.0:
            notes.append(("oversample_running_multiply", QUIRK_NOTES["oversample_running_multiply"]))
    if sampling.thick > 0.0:
        notes.append(("thick_last_layer_capture", QUIRK_NOTES["thick_last_layer_capture"]))
    if cfg.water_size != 0.0:
        notes.append(("water_double_scaling", QUIRK_NOTES["water_double_scaling"]))
    for flag in cfg.noop_flags:
        notes.append(("noop_flags", "%s is accepted but has no effect on the images (as in C)" % flag))


def log_polar_and_pixel(cfg, log):
    """C's summary lines on polarization, curved detector and pixel obliquity (nanoBragg and nonBragg alike)."""
    if cfg.nopolar:
        log("  polarization effect disabled")
    else:
        log("  Kahn polarization factor: %f" % cfg.polarization)
    if cfg.curved_detector:
        log("  curved detector: all pixels same distance from origin")
    if cfg.point_pixel:
        log("  pixel obliquity effect disabled")


def _print_summary(cfg, det, xtal, s, table, fluence, oversample, divsteps, nsources, log):
    hkls = table.hkls if table is not None else 0
    log("  %d initialized hkls (all others =%g)" % (hkls, cfg.default_F))
    shape = {"ROUND": "ellipsoidal", "SQUARE": "parallelpiped", "GAUSS": "gaussian",
             "TOPHAT": "tophat-spot"}[cfg.xtal_shape]
    log("  %s xtal: %.0fx%.0fx%.0f cells" % (shape, xtal.Na, xtal.Nb, xtal.Nc))
    if cfg.spectrum is not None or cfg.spectrumfile is not None:
        log("  spectrum of %d wavelengths (-lambda %g meters is the nominal one, in headers)"
            % (nsources // max(divsteps, 1), cfg.lambda0))
    else:
        log("  wave=%g meters +/- %g%% in %d steps" % (cfg.lambda0, s.dispersion * 100, s.dispsteps))
    log_polar_and_pixel(cfg, log)
    log("  incident fluence: %g photons/m^2" % fluence)
    log("  distance=%g detsize=%gx%g  pixel=%g meters (%dx%d pixels)"
        % (det.distance, det.detsize_f, det.detsize_s, det.pixel_size, det.fpixels, det.spixels))
    log("  sensor is %g m thick in %d layers with mu= %g" % (s.thick, s.thicksteps, s.mu))
    log("  Xbeam=%g Ybeam=%g" % (det.Xbeam, det.Ybeam))
    log("  Fbeam=%g Sbeam=%g" % (det.Fbeam, det.Sbeam))
    log("  Xclose=%g Yclose=%g" % (det.Xclose, det.Yclose))
    log("  Fclose=%g Sclose=%g" % (det.Fclose, det.Sclose))
    log("  DIRECTION_OF_DETECTOR_X-AXIS= %g %g %g" % det.fdet)
    log("  DIRECTION_OF_DETECTOR_Y-AXIS= %g %g %g" % det.sdet)
    log("  DIRECTION_OF_DETECTOR_Z-AXIS= %g %g %g" % det.odet)
    log("  INCIDENT_BEAM_DIRECTION= %g %g %g" % det.beam)
    log("  spindle ROTATION_AXIS= %g %g %g" % det.spindle)
    from . import vectors as V
    log("  POLARIZATION_PLANE_NORMAL= %g %g %g" % V.cross(det.beam, det.polar))
    log("  dials origin= %g %g %g" % det.dials_origin)
    log("  roi: %d < x < %d && %d < y < %d" % det.roi)
    log("  hdivrange=%g hdivstep=%g  radians" % (s.hdivrange, s.hdivstep))
    log("  vdivrange=%g vdivstep=%g  radians" % (s.vdivrange, s.vdivstep))
    log("  %d divergence steps" % divsteps)
    log("  %d sources" % nsources)
    log("  %d mosaic domains over mosaic spread of %g degrees" % (s.mosaic_domains, s.mosaic_spread * RTD))
    log("  %d phi steps from %g to %g degrees" % (s.phisteps, cfg.phi0 * RTD, (cfg.phi0 + s.osc) * RTD))
    extra = ""
    if cfg.oversample_thick:
        extra += " +thick"
    if cfg.oversample_polar:
        extra += " +polar"
    if cfg.oversample_omega:
        extra += " +omega"
    log("  %dx%d pixel oversample steps%s" % (oversample, oversample, extra))
    if cfg.maskfile is not None:
        log("  skipping zero-flagged pixels in %s" % cfg.maskfile)
    if cfg.calculate_noise:
        log("")
        log("  noise image paramters:")
        log("  seed: %d" % -cfg.seed)
        log("  water droplet size: %g m" % cfg.water_size)
        from .noise_models import detector_model_on
        if detector_model_on(cfg):
            psf = ("%s PSF fwhm %g um radius %s" % (cfg.psf, cfg.psf_fwhm_um, cfg.psf_radius or "auto")
                   if cfg.psf else "no PSF")
            log("  detector model (noisify): readout_noise = %g ADU, flicker = %g %%, calibration = %g %%, %s"
                % (cfg.readout_noise, cfg.flicker_noise * 100, cfg.calibration_noise * 100, psf))


@dataclass
class Image:
    """A rendered image and the numbers C reports about it."""

    floatimage: np.ndarray          # float32 (slow, fast), photons per pixel
    omega_sum: float
    backend: str
    kernel_seconds: float
    first_oob: Optional[Tuple[int, int]] = None   # (pixel index, evaluation) of C's interpolation switch-off
    raw: Optional[np.ndarray] = None               # float64 [6, npix] kernel output, when kept
    device_image: object = field(default=None, repr=False)   # float32 [npix] on the GPU (render_many, cupy)


def normalise(prep: Prepared, raw, xp=np, dtype=None):
    """The single scale of the image: ``r_e^2 fluence I / steps`` times the factors.

    ``raw`` holds the kernel's rows (I, capture, polar, omega, background
    factor); ``xp`` is numpy or cupy, so the GPU path scales on the device.
    The products are taken in C's order so that float64 results carry C's
    bits; the result is rounded to float32 like C's ``floatimage`` (``dtype``:
    another type, e.g. float64 for comparisons below float32's resolution).
    """
    test = R_E_SQR * prep.fluence * raw[0] / prep.steps
    test = test * raw[1]
    test = test * raw[2]
    test = test * raw[3]
    if prep.I_bg != 0.0 and not prep.cfg.c_quirks:
        test = test + prep.I_bg * raw[4]
    return test.astype(xp.float32 if dtype is None else dtype)


def render(prep: Prepared, device: Optional[str] = None, progress: Optional[Callable[[int], None]] = None,
           keep_raw: bool = False) -> Image:
    """Run the kernel for the whole image and scale it.

    Parameters
    ----------
    prep : Prepared
    device : str, optional
        ``cpu``, ``cuda`` or ``auto`` (default: ``prep.cfg.device``).
    progress : callable, optional
        Called with the percentage done (CPU back end, in steps of 5 %).
    keep_raw : bool
        Keep the kernel's per-pixel rows in ``Image.raw`` (for tracing).
    """
    from . import backends
    backend = backends.choose(device or prep.cfg.device)
    backends.check_precision(backend, prep.cfg.precision)
    t0 = time.perf_counter()
    raw, oob, xp = backends.run_kernel(backend, prep, prep.params, progress=progress)
    first = _first_oob(oob, xp) if prep.interpolate else None
    if first is not None and prep.cfg.c_quirks:
        # C switches interpolation off for the rest of the image at the first miss (raster order)
        params = prep.params._replace(interp_cut_pixel=first[0], interp_cut_eval=first[1])
        raw, oob, xp = backends.run_kernel(backend, prep, params, progress=None)
    img = normalise(prep, raw, xp)
    omega_sum = float(raw[5].sum())
    if xp is not np:
        img = xp.asnumpy(img)
        raw = xp.asnumpy(raw) if keep_raw else None
    img = img.reshape(prep.det.spixels, prep.det.fpixels)
    if prep.bg_table is not None:
        img = (img.astype(np.float64) + amorphous_background(prep, backend)).astype(np.float32)
    seconds = time.perf_counter() - t0
    return Image(floatimage=img, omega_sum=omega_sum, backend=backend, kernel_seconds=seconds,
                 first_oob=first, raw=raw if keep_raw else None)


#: KParams fields the kernel reads only for the GAUSS and TOPHAT shapes (the reciprocal cell, which
#: turns with the crystal): images of other shapes may differ in them and still share a launch
_SHAPE_ONLY_FIELDS = ("astar_x", "astar_y", "astar_z", "bstar_x", "bstar_y", "bstar_z",
                      "cstar_x", "cstar_y", "cstar_z")


def launch_key(prep: Prepared, backend: str) -> tuple:
    """What images must share to be rendered in one launch (:func:`render_many`).

    Everything the kernel and the scaling read, except what is stacked per
    image: the rotation table and phi maps (crystal orientation: misset,
    ``-mat``/``matrix``, ``phi0``, mosaic seed) and the fluence (with it the
    water photons ``I_bg``, which the kernel reads only with ``-c_quirks``).
    So KParams (detector, beam, sampling, shape, options, ...) must be equal,
    and so must the sources, the mask and the HKL table (the same table
    object: a Simulator reads a file once).
    """
    from .kernels.physics import GAUSS, TOPHAT
    p = prep.params
    free = {}
    if int(p.shape) not in (GAUSS, TOPHAT):
        free.update({k: 0.0 for k in _SHAPE_ONLY_FIELDS})
    if not p.quirks:
        free["I_bg"] = 0.0
    params = p._replace(**free) if free else p
    return (backend, prep.cfg.precision, tuple(params), prep.I_bg != 0.0,
            prep.sources.shape, prep.sources.tobytes(), id(prep.Fhkl), prep.mask.shape, prep.mask.tobytes(),
            prep.rot.shape, prep.phi_map.shape, prep.steps, prep.det.shape,
            prep.panels.tobytes() if prep.panels is not None else None)


def launch_groups(preps: List[Prepared], backend: str) -> List[List[int]]:
    """The indices of ``preps`` in groups that can share a launch, each in input order (first seen first)."""
    groups = {}
    for i, prep in enumerate(preps):
        groups.setdefault(launch_key(prep, backend), []).append(i)
    return list(groups.values())


def normalise_many(preps: List[Prepared], raw, xp=np):
    """:func:`normalise` of K images at once: ``raw`` is [6, K*npix], the result float32 [K, npix].

    The per-image factors are columns, every product is taken in the order
    of :func:`normalise` (so each row has its bits).  All images share
    ``steps``, ``c_quirks`` and whether there is water (see :func:`launch_key`).
    """
    k = len(preps)
    rows = raw.reshape(6, k, -1)
    first = preps[0]
    scale = xp.asarray(np.array([R_E_SQR * p.fluence for p in preps]).reshape(k, 1))
    test = scale * rows[0] / first.steps
    test = test * rows[1]
    test = test * rows[2]
    test = test * rows[3]
    if first.I_bg != 0.0 and not first.cfg.c_quirks:
        ibg = xp.asarray(np.array([p.I_bg for p in preps]).reshape(k, 1))
        test = test + ibg * rows[4]
    return test.astype(xp.float32)


def render_many(preps: List[Prepared], device: Optional[str] = None, keep_device: bool = False):
    """Render prepared images, one launch per group of compatible ones (:func:`launch_groups`).

    Returns a list of :class:`Image` in the order of ``preps``; every
    float image is the one :func:`render` gives (the same kernel per pixel,
    the same scaling, bit for bit on the CPU).  ``kernel_seconds`` is the
    group's time divided by its images.  A ``-c_quirks`` image whose
    interpolation left the HKL table gets C's switch-off second pass as a
    launch of its own, as :func:`render` does.

    With ``keep_device`` (CUDA with cupy), each Image gets ``device_image``:
    its float32 row of the group's image stack, still on the device.
    """
    from . import backends
    preps = list(preps)
    devices = {device or p.cfg.device for p in preps}
    backend_of = {d: backends.choose(d) for d in devices}
    images: List[Optional[Image]] = [None] * len(preps)
    by_backend = {}
    for i, p in enumerate(preps):
        b = backend_of[device or p.cfg.device]
        backends.check_precision(b, p.cfg.precision)
        by_backend.setdefault(b, []).append(i)
    for backend, members in by_backend.items():
        for group in launch_groups([preps[i] for i in members], backend):
            idx = [members[g] for g in group]
            for i, img in zip(idx, _render_group([preps[i] for i in idx], backend, keep_device)):
                images[i] = img
    return images


def _render_group(preps: List[Prepared], backend: str, keep_device: bool) -> List[Image]:
    from . import backends
    t0 = time.perf_counter()
    k = len(preps)
    npix = preps[0].det.fpixels * preps[0].det.spixels
    raw, oob, xp = backends.run_kernel_many(backend, preps, preps[0].params)
    stack = normalise_many(preps, raw, xp)
    if xp is np:
        host = stack
        omega = [float(raw[5, i * npix:(i + 1) * npix].sum()) for i in range(k)]
    else:
        host = xp.asnumpy(stack)
        omega = [float(x) for x in xp.asnumpy(raw[5].reshape(k, npix).sum(axis=1))]
    seconds = (time.perf_counter() - t0) / k
    out = []
    for i, prep in enumerate(preps):
        first = _first_oob(oob[i * npix:(i + 1) * npix], xp) if prep.interpolate else None
        img = host[i].reshape(prep.det.spixels, prep.det.fpixels)
        omega_sum = omega[i]
        device_image = stack[i] if (keep_device and xp is not np) else None
        if first is not None and prep.cfg.c_quirks:
            # C's switch-off of interpolation at the first miss: the second pass of render(), for this image only
            t1 = time.perf_counter()
            params = prep.params._replace(interp_cut_pixel=first[0], interp_cut_eval=first[1])
            raw1, _oob1, xp1 = backends.run_kernel(backend, prep, params, progress=None)
            img1 = normalise(prep, raw1, xp1)
            omega_sum = float(raw1[5].sum())
            device_image = img1 if (keep_device and xp1 is not np) else None
            if xp1 is not np:
                img1 = xp1.asnumpy(img1)
            img = img1.reshape(prep.det.spixels, prep.det.fpixels)
            seconds_i = seconds + time.perf_counter() - t1
        else:
            seconds_i = seconds
        if prep.bg_table is not None:
            # -background: the amorphous layer's photons, as render() adds them (per image: fluence may differ)
            img = (img.astype(np.float64) + amorphous_background(prep, backend)).astype(np.float32)
            if device_image is not None:
                device_image = xp.asarray(img.reshape(-1))
        out.append(Image(floatimage=img, omega_sum=omega_sum, backend=backend, kernel_seconds=seconds_i,
                         first_oob=first, device_image=device_image))
    return out


def amorphous_background(prep: Prepared, backend: str = "cpu") -> np.ndarray:
    """The ``-background`` photons of every pixel (float64, slow x fast), nonBragg's physics on this detector.

    The layer is ``-background_thick`` along the beam and 0.1 mm wide and
    high, clipped to the beam size (nonBragg's sample), of ``-background_density``
    and ``-background_MW``; every source counts with its weight, as in the image.  Pixels
    outside the ROI or the mask get none.
    """
    from .amorphous import bg_params, molecule_count, render_rows, R_E_SQR
    cfg, det, table = prep.cfg, prep.det, prep.bg_table
    side = min(1e-4, cfg.beamsize) if cfg.beamsize >= 0 else 1e-4
    molecules = molecule_count(cfg.background_thick, side, side, cfg.background_density, cfg.background_MW)
    nsources = prep.sources.shape[0]
    params = bg_params(det, prep.oversample, cfg.point_pixel, cfg.curved_detector, cfg.nopolar,
                       cfg.polarization, nsources, table.nstols)
    rows = render_rows(params, prep.sources, np.ascontiguousarray(prep.sources[:, 4]), table, full=False,
                       device=backend)
    bg = rows[0] * R_E_SQR * prep.fluence * molecules / (nsources * prep.oversample * prep.oversample)
    if prep.params.use_mask:
        bg = np.where(prep.mask != 0, bg, 0.0)
    return bg.reshape(det.spixels, det.fpixels)


def _first_oob(oob, xp):
    """(pixel, evaluation) of the first out-of-table interpolation in raster order, or None."""
    hit = xp.flatnonzero(oob >= 0)
    if hit.size == 0:
        return None
    i = int(hit[0])
    return i, int(oob[i])


@dataclass
class Stats:
    """C's statistics of the float image."""

    max_I: float
    max_I_x: float
    max_I_y: float
    mean: float
    rms: float
    rmsd: float


def image_stats(prep: Prepared, img: np.ndarray) -> Stats:
    """max, mean, rms and rmsd as C computes them (rendered pixels, then the ROI)."""
    det = prep.det
    xmin, xmax, ymin, ymax = det.roi
    roi = np.zeros(img.shape, dtype=bool)
    roi[max(ymin, 0):ymax + 1, max(xmin, 0):xmax + 1] = True
    rendered = roi.copy()
    if prep.params.use_mask:
        rendered &= prep.mask.reshape(img.shape) != 0
    vals = img[rendered].astype(np.float64)
    sumn = vals.size
    total = float(vals.sum())
    sumsqr = float((vals * vals).sum())
    max_I = max_x = max_y = 0.0
    if sumn and vals.max() > 0.0:
        flat = np.where(rendered, img, -np.inf).reshape(-1)
        idx = int(np.argmax(flat))
        max_I = float(flat[idx])
        s, f = divmod(idx, det.fpixels)
        sub = det.pixel_size / prep.oversample
        last = prep.oversample - 1
        max_x = sub * (f * prep.oversample + last) + sub / 2.0
        max_y = sub * (s * prep.oversample + last) + sub / 2.0
    n = sumn if sumn > 0 else 1
    avg = total / n
    n = sumn if sumn > 1 else 2
    rms = math.sqrt(sumsqr / (n - 1))
    diffs = img[roi].astype(np.float64) - avg
    m = diffs.size if diffs.size > 1 else 2
    rmsd = math.sqrt(float((diffs * diffs).sum()) / (m - 1))
    return Stats(max_I, max_x, max_y, avg, rms, rmsd)


def int_image(prep: Prepared, img: np.ndarray, scale: float) -> np.ndarray:
    """C's SMV pixel values: floorf(float * scale + adc + 0.5), clipped, ROI only."""
    test = img.astype(np.float64) * scale + prep.cfg.adc_offset
    test = np.clip(test, 0.0, 65535.0)
    out = np.floor((test + 0.5).astype(np.float32)).astype(np.uint16)
    return _roi_only(prep, out)


def pgm_image(prep: Prepared, img: np.ndarray, scale: float) -> np.ndarray:
    """C's PGM bytes: (unsigned char) min(255, float * pgm_scale), ROI only."""
    test = np.minimum(img.astype(np.float64) * scale, 255.0)
    out = np.trunc(np.maximum(test, 0.0)).astype(np.uint8)
    return _roi_only(prep, out)


def _roi_only(prep, out):
    xmin, xmax, ymin, ymax = prep.det.roi
    keep = np.zeros(out.shape, dtype=bool)
    keep[max(ymin, 0):ymax + 1, max(xmin, 0):xmax + 1] = True
    out[~keep] = 0
    return out


def write_outputs(prep: Prepared, image: Image, log: Callable[[str], None] = print, fdump=None):
    """Write C's files (float, int, PGM, noise) and print C's statistics.

    Every file is written all together or not at all: the regular files are
    staged as temporaries next to their destinations and renamed into place
    only once every one of them has been written (see
    :func:`nanobrag_numba.io.atomic.output_transaction`), so an error or an
    interrupt while writing leaves none of this run's outputs and no
    temporary file.  Devices and pipes (``/dev/null``, a FIFO) are written in
    place.  Outputs that name an input or each other are refused before
    anything is written.

    Parameters
    ----------
    prep, image
        The prepared run and its rendered image.
    log : callable
        Receives C's report lines.
    fdump : tuple (path, HKLTable), optional
        The structure-factor cache to write with the images (the command
        line's ``Fdump.bin``); a ``prep.fdump`` left by ``prepare`` is used
        when this is not given.  As in C, a dump that cannot be written is a
        warning, not an error.
    """
    from .io.atomic import output_transaction
    from .io.images import write_float_image, write_pgm
    from .io.smv import format_smv_header, write_smv
    cfg, det = prep.cfg, prep.det
    if fdump is None and prep.fdump is not None:
        fdump = (cfg.dumpfile, prep.fdump)
    _check_files(cfg, fdump[0] if fdump is not None else None, len(det.panels))
    img = image.floatimage
    with output_transaction():
        if fdump is not None:
            from .io import hkl as hklio
            try:
                hklio.write_fdump(fdump[0], fdump[1])
            except NanoBraggError:
                log("WARNING: unable to open dump file: %s" % fdump[0])
        log("")
        log("solid angle subtended by detector = %g steradian ( %g%% sphere)"
            % (image.omega_sum / prep.steps, 100 * image.omega_sum / prep.steps / 4 / math.pi))
        st = image_stats(prep, img)
        npix = det.fpixels * det.spixels
        if cfg.floatfile:
            log("writing %s as %d 4-byte floats" % (cfg.floatfile, npix))
            write_float_image(cfg.floatfile, img)
        log("max_I = %g  at %g %g" % (st.max_I, st.max_I_x, st.max_I_y))
        log("mean= %g rms= %g rmsd= %g" % (st.mean, st.rms, st.rmsd))
        scale = cfg.intfile_scale
        if scale <= 0.0:
            scale = 1.0
            if st.max_I > 0.0:
                scale = 55000.0 / st.max_I
        log("intfile_scale = %g" % scale)
        if cfg.intfile:
            ints = int_image(prep, img, scale)
            for path, d, part in _per_panel(cfg.intfile, det, ints):
                log("writing %s as 2-byte integers" % path)
                header = format_smv_header(**smv_header_values(d, cfg.lambda0, cfg.phi0, prep.sampling.osc, False))
                write_smv(path, part, header)
        if cfg.cbffile:
            from .io.cbf import write_cbf
            log("writing %s as byte-offset CBF" % cfg.cbffile)
            write_cbf(cfg.cbffile, prep, int_image(prep, img, scale), noise=False, command_line=cfg.command_line)
        if cfg.nxsfile:
            log("writing %s as NeXus/NXmx HDF5" % cfg.nxsfile)
            from .io.nxmx import write_nxmx
            write_nxmx(cfg.nxsfile, prep, [int_image(prep, img, scale)], noise=False, command_line=cfg.command_line,
                       float_images=[img])
        if cfg.write_pgm and cfg.pgmfile:
            pgm_scale = cfg.pgm_scale
            if pgm_scale <= 0.0:
                pgm_scale = scale
                if st.rmsd > 0.0:
                    pgm_scale = 250.0 / (5.0 * st.rmsd)
            log("pgm_scale = %g" % pgm_scale)
            pgm = pgm_image(prep, img, pgm_scale)
            for path, _d, part in _per_panel(cfg.pgmfile, det, pgm):
                log("writing %s as 1-byte integers" % path)
                write_pgm(path, part, pgm_scale)
        if cfg.calculate_noise and (cfg.noisefile or cfg.cbfnoisefile or cfg.nxsnoisefile):
            from .noise_models import detector_model_on, detector_noise
            if detector_model_on(cfg):
                noise, photons, overloads, notes = detector_noise(img, cfg, det.roi, det.pixel_size, cfg.seed)
                for text in notes:
                    log("note: %s" % text)
            else:
                noise, photons, overloads = prep.crand.noise(img, det.roi, cfg.adc_offset, cfg.seed)
            log("%.0f photons on noise image (%d overloads)" % (photons, overloads))
            if cfg.noisefile:
                for path, d, part in _per_panel(cfg.noisefile, det, noise):
                    log("writing %s as 2-byte integers" % path)
                    header = format_smv_header(**smv_header_values(d, cfg.lambda0, cfg.phi0, prep.sampling.osc,
                                                                   True))
                    write_smv(path, part, header)
            if cfg.cbfnoisefile:
                from .io.cbf import write_cbf
                log("writing %s as byte-offset CBF" % cfg.cbfnoisefile)
                write_cbf(cfg.cbfnoisefile, prep, noise, noise=True, command_line=cfg.command_line)
            if cfg.nxsnoisefile:
                from .io.nxmx import write_nxmx
                log("writing %s as NeXus/NXmx HDF5" % cfg.nxsnoisefile)
                write_nxmx(cfg.nxsnoisefile, prep, [noise], noise=True, command_line=cfg.command_line)
    return st


def print_notes(prep: Prepared, image: Optional[Image] = None, out=None):
    """One line for each corrected C behaviour that this input touches."""
    out = out or sys.stdout
    seen = set()
    notes = list(prep.notes)
    if image is not None and image.first_oob is not None and not prep.cfg.c_quirks:
        notes.append(("interpolate_global_disable", QUIRK_NOTES["interpolate_global_disable"]))
    for key, text in notes:
        if text in seen:
            continue
        seen.add(text)
        if key in ("noop_flags", "source_weights_ignored"):
            print("note: %s" % text, file=out)
        else:
            print("note: %s; -c_quirks restores C's behaviour (%s)" % (text, key), file=out)


# the files a run writes and reads, with the flag that names each (for write_outputs' checks)
_OUTPUT_FLAGS = (("-floatfile", "floatfile"), ("-intfile", "intfile"), ("-pgmfile", "pgmfile"),
                 ("-noisefile", "noisefile"), ("-cbffile", "cbffile"), ("-cbfnoisefile", "cbfnoisefile"),
                 ("-nxsfile", "nxsfile"), ("-nxsnoisefile", "nxsnoisefile"))
_NOISE_OUTPUTS = ("noisefile", "cbfnoisefile", "nxsnoisefile")     # written only with the noise on
_INPUT_FLAGS = (("-hkl", "hklfile"), ("-mat", "matfile"), ("-mask", "maskfile"), ("-img", "imgfile"),
                ("-detector_json", "detector_json"), ("-expt", "expt"),
                ("-sourcefile", "sourcefile"), ("-spectrum", "spectrumfile"), ("-stol", "stolfile"),
                ("-background", "background_stol"))


def panel_file_name(path: str, k: int) -> str:
    """The file of panel ``k`` of a multi-panel image: ``name_pNN.ext``."""
    root, ext = os.path.splitext(path)
    return "%s_p%02d%s" % (root, k, ext)


def _per_panel(path, det, image):
    """(file, panel Detector, panel image) of each panel (the file itself for a monolithic detector)."""
    if not det.panels:
        return [(path, det, image)]
    rows = det.panels[0].spixels
    return [(panel_file_name(path, k), d, image[k * rows:(k + 1) * rows]) for k, d in enumerate(det.panels)]


#: outputs written as one file per panel for a multi-panel detector (SMV, PGM hold one panel)
_PER_PANEL = ("intfile", "noisefile", "pgmfile")


def _output_files(cfg: Config, dumpfile: Optional[str], npanels: int = 0):
    """(flag, path) of every file ``write_outputs`` writes for ``cfg`` (``npanels``: panel files)."""
    outs = [("-dump", dumpfile)] if dumpfile else []
    for flag, name in _OUTPUT_FLAGS:
        path = getattr(cfg, name)
        if not path or (name == "pgmfile" and not cfg.write_pgm) or (name in _NOISE_OUTPUTS and not cfg.calculate_noise):
            continue
        if npanels > 1 and name in _PER_PANEL:
            outs.extend((flag, panel_file_name(path, k)) for k in range(npanels))
        else:
            outs.append((flag, path))
    return outs


def _input_files(cfg: Config):
    """(flag, path) of every file the run reads (the dump when it is read instead of -hkl)."""
    ins = [(flag, getattr(cfg, name)) for flag, name in _INPUT_FLAGS if getattr(cfg, name)]
    if cfg.hklfile is None and cfg.dumpfile and os.path.exists(cfg.dumpfile):
        ins.append(("-dump", cfg.dumpfile))
    return ins


def _check_files(cfg: Config, dumpfile: Optional[str], npanels: int = 0):
    """Every check of the outputs that can be made before anything is written."""
    from .io.atomic import check_outputs
    check_outputs(_output_files(cfg, dumpfile, npanels), _input_files(cfg), warn_only=("-dump",))


def _output_sizes(prep: Prepared, fdump):
    """(flag, path, bytes) of every output, for the free-space check."""
    npix = prep.det.fpixels * prep.det.spixels
    npanels = len(prep.det.panels)
    panel_flags = {flag for flag, name in _OUTPUT_FLAGS if name in _PER_PANEL} if npanels > 1 else set()
    per_pixel = {"-floatfile": 4, "-intfile": 2, "-pgmfile": 1, "-noisefile": 2,
                 "-cbffile": 3, "-cbfnoisefile": 3,    # byte offset: at most 3 bytes for 16-bit values
                 "-nxsfile": 6,    # uint16 int image + float32 image (gzip, no larger than raw)
                 "-nxsnoisefile": 2}
    fixed = {"-nxsfile": 65536, "-nxsnoisefile": 65536}     # HDF5 metadata of the NXmx groups (about 45 kB)
    sizes = [(flag, path, (npix // npanels if flag in panel_flags else npix) * per_pixel[flag]
              + fixed.get(flag, 16384))
             for flag, path in _output_files(prep.cfg, None, npanels)]
    if fdump is not None:
        sizes.append(("-dump", fdump[0], fdump[1].F.nbytes + 64))
    return sizes


def run_command_line(cfg: Config) -> int:
    """Everything ``nanobrag-numba FLAGS`` does; returns the exit status.

    Every check of the outputs (a file that is an input or another output, a
    missing or read-only folder, the noise seed's range) runs before the HKL
    file is read, the free space is checked before rendering, and the images
    and ``Fdump.bin`` are written together at the end (all or none of them).
    Temporaries of our naming that a killed run left next to the outputs are
    removed first.  SIGTERM is handled like Ctrl-C: the temporaries are
    removed and the exit status is 143 with one line ``terminated``.
    """
    from .io.atomic import Terminated, check_free_space, remove_stale_temporaries, sigterm_as_exception
    try:
        with sigterm_as_exception():
            dumpfile = cfg.dumpfile if cfg.hklfile is not None else None
            _check_files(cfg, dumpfile)
            for _flag, path in _output_files(cfg, dumpfile):
                target = os.path.realpath(path)
                remove_stale_temporaries(os.path.dirname(target), [os.path.basename(target)])

            log = print
            prep = prepare(cfg, log)          # keeps the -hkl table in prep.fdump: written with the images
            fdump = (cfg.dumpfile, prep.fdump) if prep.fdump is not None else None
            check_free_space(_output_sizes(prep, fdump))
            from . import backends
            backend = backends.choose(cfg.device)
            backends.check_precision(backend, cfg.precision)
            log("rendering on %s%s" % (backends.describe(backend),
                                      ", single precision" if cfg.precision == "single" else ""))
            progress = None
            if cfg.progress:
                progress = lambda pct: (print("%d%% done" % pct), sys.stdout.flush())  # noqa: E731
            image = render(prep, backend, progress=progress)
            print_notes(prep, image)
            if cfg.printout or cfg.trace_pixel is not None:
                from . import trace
                trace.report(prep, image, log)
            if image.first_oob is not None:
                _warn_interpolation(prep, image, log)
            write_outputs(prep, image, log, fdump=fdump)
            return 0
    except Terminated:
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        print("nanobrag-numba: terminated", file=sys.stderr)
        return 143


def _warn_interpolation(prep: Prepared, image: Image, log):
    from . import trace
    idx, ev = image.first_oob
    s, f = divmod(idx, prep.det.fpixels)
    row = trace.evaluation(prep, s, f, ev)
    log("WARNING: out of range for three point interpolation: h,k,l,h0,k0,l0: %g,%g,%g,%d,%d,%d "
        % (row["h"], row["k"], row["l"], row["h0"], row["k0"], row["l0"]))
    # C prints this without a newline; its "\n" after the pixel loop (write_outputs' first line) ends it
    print("WARNING: further warnings will not be printed! ", end="")
