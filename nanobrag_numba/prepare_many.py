"""The set-up of many images that differ in orientation and fluence (``Simulator.prepare_many``).

``Simulator.prepare`` repeats C's whole set-up for every image: the Config
checks, the detector, the sources, the HKL table look-up, two reads of
/proc/meminfo, the crystal, the rotation table and the kernel parameters,
about 2 ms of Python for a B5 image (bench/cases.py), which would cap
``render_many`` near 400 images/s whatever the GPU does.  Images whose
settings differ only in :data:`FAST_FIELDS` (the crystal orientation: misset,
orientation matrix, ``phi0``, mosaic and misset seeds; the fluence; the noise
seed) share everything else, so here:

- one full :func:`~nanobrag_numba.simulator.prepare` (the *template*) is made
  per distinct set of the other settings: detector, sampling, sources, HKL
  table, mask, memory checks and KParams are taken from it; the Simulator
  keeps it for later calls (:data:`TEMPLATES_MAX` of them) while its base
  Config has the same values and every file it read (HKL, matrix, mask, image, sources, stol, the ``Fdump.bin`` read
  without ``-hkl``) has the same inode, size and modification time;
- per image only what differs is computed: the Config (one copy of the
  Simulator's base with the image's settings, checked where it differs), the
  fluence, the mosaic domains (C's generator, per distinct seed), and the
  crystal and its rotation table for all images at once with numpy, in the
  same float64 operations, in the same order, as ``crystal.build_crystal``
  and ``crystal.rotation_table`` (sines and cosines from ``math``, one image
  at a time, as there), so every table carries the bits of ``prepare``'s.

Anything outside that (a logging Simulator, a group of one image, a setting
that fails a check, a crystal whose size in cells or oversampling would differ
from the template's, any unexpected exception) takes the full ``prepare`` for that image, which gives its result
or its error exactly.  tests/test_prepare_many.py compares the tables with
``Simulator.prepare`` field by field.
"""
from __future__ import annotations

import math
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import crystal as X
from .config import C_INT_MAX, RTD, Config
from .errors import NanoBraggError

#: the settings a batch of images may differ in and still share one template set-up
FAST_FIELDS = frozenset(("misset", "matrix", "phi0", "mosaic_seed", "misset_seed", "misset_random",
                         "fluence", "flux", "exposure", "seed"))

#: KParams fields that depend on the orientation or the fluence (everything else is the template's)
_PARAM_FIELDS = ("astar_x", "astar_y", "astar_z", "bstar_x", "bstar_y", "bstar_z",
                 "cstar_x", "cstar_y", "cstar_z", "I_bg")


def _silent(_line):
    pass


def prepare_checked(sim, changes_list: Sequence[Dict]) -> List[object]:
    """Prepared images for checked settings (``check_settings`` with ``device`` set), in order.

    Each entry is a :class:`~nanobrag_numba.simulator.Prepared`, or the
    :class:`NanoBraggError` that ``sim.prepare(**changes)`` raises for it.
    """
    out: List[object] = [None] * len(changes_list)
    full = []
    if not sim._quiet:
        full = list(range(len(changes_list)))     # C's set-up lines are printed per image: the full set-up
    else:
        groups: Dict[tuple, List[int]] = {}
        try:
            for i, changes in enumerate(changes_list):
                rest = tuple(sorted((k, v) for k, v in changes.items() if k not in FAST_FIELDS))
                groups.setdefault(rest, []).append(i)
        except TypeError:       # a value that cannot be a key (checked settings are hashable): no sharing
            groups = {(): [i] for i in range(len(changes_list))}
        for rest, idx in groups.items():
            if len(idx) < 2:
                full.extend(idx)
                continue
            try:
                preps = _fast_group(sim, dict(rest), [changes_list[i] for i in idx])
            except Exception:   # the template's own error, or a defect here: each image's full set-up decides
                full.extend(idx)
                continue
            for i, prep in zip(idx, preps):
                if prep is None:
                    full.append(i)
                else:
                    out[i] = prep
    for i in full:
        try:
            out[i] = sim._prepare_checked(changes_list[i])
        except NanoBraggError as exc:
            out[i] = exc
    return out


def _with_changes(base: Config, changes: Dict) -> Config:
    """``base.replace(**changes)`` for checked field names, without dataclasses.replace's overhead."""
    cfg = object.__new__(Config)
    cfg.__dict__.update(base.__dict__)
    cfg.__dict__.update(changes)
    return cfg


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fast_fields_pass(cfg: Config) -> bool:
    """True when ``cfg.validate()`` cannot fail on a fast field (the others passed in the template).

    Conservative: anything unusual returns False, and the image gets the full
    set-up, which raises the exact error (or renders it, if it was fine).
    """
    if not _finite(cfg.fluence) or cfg.fluence < 0:
        return False
    for v in (cfg.flux, cfg.exposure, cfg.phi0):
        if not _finite(v):
            return False
    for v in (cfg.seed, cfg.mosaic_seed, cfg.misset_seed):
        if v is not None and (type(v) is not int or not -C_INT_MAX <= v <= C_INT_MAX):
            return False
    if cfg.misset is not None and (len(cfg.misset) != 3 or not all(_finite(x) for x in cfg.misset)):
        return False
    if cfg.matrix is not None and (len(cfg.matrix) != 9 or not all(_finite(x) for x in cfg.matrix)):
        return False
    return isinstance(cfg.misset_random, bool)


def _fast_group(sim, rest: Dict, changes_list: List[Dict]) -> List[Optional[object]]:
    """Prepared images of one template (None where an image needs the full set-up)."""
    from .crand import CRandom
    from .simulator import Prepared, _seed_now, beam_fluence, water_photons
    T, draws = _template(sim, rest)        # draws: C's generator per seeds, kept with the template
    tcfg, det, sampling = T.cfg, T.det, T.sampling
    now = _seed_now()
    starts = {tcfg.matrix: X.cell_start(tcfg, tcfg.lambda0, _silent)}
    phi_data: Dict[object, tuple] = {}
    t_note = _carryover_note(tcfg, T.phis)

    items = []              # (index, cfg, fluence, start, misset, umats, crand, phi data)
    results: List[Optional[object]] = [None] * len(changes_list)
    for j, changes in enumerate(changes_list):
        cfg = _with_changes(sim.base, changes)
        if not _fast_fields_pass(cfg):
            continue
        if cfg.seed is None:
            cfg.seed = now
        if cfg.misset_seed is None:
            cfg.misset_seed = now
        try:
            fluence = beam_fluence(cfg)
        except NanoBraggError:
            continue
        start = starts.get(cfg.matrix)
        if start is None:
            if cfg.matrix is None:
                continue        # back to the -mat file of the base: the full set-up reads it
            try:
                start = starts[cfg.matrix] = X.cell_start(cfg, cfg.lambda0, _silent)
            except NanoBraggError:
                continue
        # C's generator: the random misset (if any), then the mosaic domains, from one shared table
        key = ((True, cfg.misset_seed) if cfg.misset_random else (False,)) + (cfg.mosaic_seed,)
        drawn = draws.get(key)
        if drawn is None:
            crand = CRandom()
            random_misset = crand.random_misset(cfg.misset_seed)[1] if cfg.misset_random else None
            umats = crand.mosaic_umats(sampling.mosaic_spread, sampling.mosaic_domains, cfg.mosaic_seed)
            if len(draws) >= DRAWS_MAX:     # one seed per image (-misset random): keep the memory bounded
                draws.clear()
            drawn = draws[key] = (random_misset, umats, crand)
        random_misset, umats, crand = drawn
        misset = random_misset if cfg.misset_random else cfg.misset
        pd = phi_data.get(cfg.phi0)
        if pd is None:
            phis = X.phi_angles(cfg.phi0, sampling.phistep, sampling.phisteps)
            maps = X.phi_maps(phis, True) if cfg.c_quirks else (T.phi_map, T.phi_map_first)
            pd = phi_data[cfg.phi0] = (phis, maps[0], maps[1], _carryover_note(cfg, phis))
        items.append((j, cfg, fluence, start, misset, umats, crand.copy(), pd))
    if not items:
        return results

    xtals, tables = orient_many(T, [it[3] for it in items], [it[4] for it in items],
                                [it[7][0] for it in items], [it[5] for it in items])
    notes = {t_note: T.notes}
    fields = T.params._fields
    pos = [fields.index(f) for f in _PARAM_FIELDS]
    base_params = list(T.params)
    for (j, cfg, fluence, _start, _misset, _umats, crand, pd), xtal, table in zip(items, xtals, tables):
        if xtal is None:
            continue
        I_bg = water_photons(cfg, fluence)
        values = base_params[:]
        for p, v in zip(pos, xtal.a_star + xtal.b_star + xtal.c_star + (I_bg,)):
            values[p] = float(v)
        results[j] = Prepared(
            cfg=cfg, det=det, crystal=xtal, sampling=sampling, oversample=T.oversample, fluence=fluence,
            steps=T.steps, I_bg=I_bg, sources=T.sources, rot=table, phi_map=pd[1], phi_map_first=pd[2],
            phis=list(pd[0]), Fhkl=T.Fhkl, hkl_bounds=T.hkl_bounds, hkls=T.hkls, mask=T.mask,
            params=T.params._make(values), crand=crand,
            notes=list(notes[pd[3]] if pd[3] in notes else _notes(T, pd[3], notes)), interpolate=T.interpolate,
            hkl_device=T.hkl_device, fdump=None, bg_table=T.bg_table, panels=T.panels)
    return results


#: templates a Simulator keeps (its most recent distinct sets of shared settings)
TEMPLATES_MAX = 8
#: mosaic draws (per distinct seeds) a template keeps
DRAWS_MAX = 256
#: the files a set-up reads (Config fields)
_INPUT_FIELDS = ("hklfile", "matfile", "maskfile", "imgfile", "sourcefile", "stolfile", "background_stol",
                 "spectrumfile", "detector_json", "expt")


def _template_key(base: Config, rest: Dict, cfg: Config) -> Optional[tuple]:
    """The base and shared settings and the state of every file the set-up reads; None: keep no template."""
    try:
        settings = hash(tuple(base.__dict__.items())), tuple(base.__dict__.items()), tuple(sorted(rest.items()))
    except TypeError:           # a base changed in place to an unhashable value: no reuse
        return None
    files = []
    paths = [getattr(cfg, name) for name in _INPUT_FIELDS]
    if cfg.hklfile is None:
        paths.append(cfg.dumpfile)           # read when it exists (and an error or default_F when not)
    for path in paths:
        if path is None:
            continue
        try:
            st = os.stat(path)
        except OSError:
            if path == cfg.dumpfile and cfg.hklfile is None:
                files.append((path, None))
                continue
            return None
        files.append((path, st.st_ino, st.st_mtime_ns, st.st_size))
    return settings[1:] + (tuple(files),)


def _template(sim, rest: Dict):
    """The full set-up of the shared settings and its cache of mosaic draws (by seeds), kept by the
    Simulator while the base and the files it read are unchanged."""
    templates = sim.__dict__.setdefault("_templates", {})
    key = _template_key(sim.base, rest, _with_changes(sim.base, rest))
    if key is not None and key in templates:
        return templates[key]
    kept = (sim._prepare_checked(rest), {})
    if key is not None:
        while len(templates) >= TEMPLATES_MAX:
            templates.pop(next(iter(templates)))
        templates[key] = kept
    return kept


def _notes(T, carryover: bool, cache: Dict[bool, list]) -> list:
    """The template's notes with the phi0 carry-over note added or removed where ``prepare`` puts it."""
    from .simulator import QUIRK_NOTES, _collect_notes
    entry = ("phi0_carryover", QUIRK_NOTES["phi0_carryover"])
    notes = list(T.notes)
    if carryover:
        tail: list = []         # the notes prepare adds after this one
        _collect_notes(T.cfg, T.sampling, T.oversample, T.sources.shape[0], tail)
        notes.insert(len(notes) - len(tail), entry)
    else:
        notes.remove(entry)
    cache[carryover] = notes
    return notes


def _carryover_note(cfg: Config, phis) -> bool:
    """Whether ``prepare`` adds the phi0_carry-over note for these phi steps."""
    return (not cfg.c_quirks and len(phis) > 1 and any(p == 0.0 for p in phis)
            and any(p != 0.0 for p in phis))


# ---------------------------------------------------------------- the crystals of K orientations at once
# A set of vectors is a float64 array [3 components (x, y, z), n vectors, K images]; ``v[0]`` is every x.
# vectors.py's dot, cross and scale take these (indexing gives the components) and do the same operations
# in the same order as for one vector of Python floats; so do the functions below.

def _magnitude(v):
    return np.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])


def _trig(angles):
    """cos and sin of each angle with ``math`` (the C library, as the one-image path), as arrays."""
    return (np.array([math.cos(a) for a in angles], dtype=np.float64),
            np.array([math.sin(a) for a in angles], dtype=np.float64))


def _rotate_xyz(v, angles):
    """``vectors.rotate_xyz`` of each image's vectors by its own angles [K, 3] (zero angles skipped)."""
    x, y, z = v
    for axis in range(3):
        phi = angles[:, axis]
        on = phi != 0
        if not on.any():
            continue
        c, s = _trig(phi.tolist())
        if axis == 0:
            ny, nz = y * c + z * -s, y * s + z * c
            y, z = np.where(on, ny, y), np.where(on, nz, z)
        elif axis == 1:
            nx, nz = x * c + y * 0 + z * s, x * -s + y * 0 + z * c
            x, z = np.where(on, nx, x), np.where(on, nz, z)
        else:
            nx, ny = x * c + y * -s, x * s + y * c
            x, y = np.where(on, nx, x), np.where(on, ny, y)
    return np.stack((x, y, z))


def _rotate_axis(v, axis, phi):
    """``vectors.rotate_axis`` of each image's vectors by its own angle [K] (zero: the vectors themselves)."""
    on = phi != 0.0
    if not on.any():
        return v
    cosphi, sinphi = _trig(phi.tolist())
    d = (axis[0] * v[0] + axis[1] * v[1] + axis[2] * v[2]) * (1.0 - cosphi)
    r = np.stack((axis[0] * d + v[0] * cosphi + (-axis[2] * v[1] + axis[1] * v[2]) * sinphi,
                  axis[1] * d + v[1] * cosphi + (+axis[2] * v[0] - axis[0] * v[2]) * sinphi,
                  axis[2] * d + v[2] * cosphi + (-axis[1] * v[0] + axis[0] * v[1]) * sinphi))
    return np.where(on, r, v)


#: for the three cell angles (alpha, beta, gamma): the lengths divided by, in C's order, and the vector pairs
_FIRST, _SECOND = [1, 0, 0], [2, 2, 1]


def _angles(vecs, lengths, dual_lengths, volume):
    """``crystal._cell_angles`` of K cells: [alpha, beta, gamma] (radians), each a list over the images.

    ``sin(alpha) = |a_dual| V / |b| / |c|``, ``cos(alpha) = b.c / |b| / |c|``, and so on, clamped as C does.
    """
    from .vectors import dot
    sins = dual_lengths * volume / lengths[_FIRST] / lengths[_SECOND]
    coss = dot(vecs[:, _FIRST], vecs[:, _SECOND]) / lengths[_FIRST] / lengths[_SECOND]
    sins = np.minimum(1.0, np.maximum(-1.0, sins)).tolist()
    coss = np.where(coss * coss > 1.0, 1.0, coss).tolist()
    return [[math.atan2(s, c) for s, c in zip(sins[i], coss[i])] for i in range(3)]


def orient_many(T, starts, missets, phis_list, umats_list):
    """The crystals and rotation tables of K orientations, each equal to ``prepare``'s bit for bit.

    Parameters
    ----------
    T : Prepared
        The template (detector, sampling and the size and oversampling every image must keep).
    starts : list of crystal.CellStart
        Each image's reciprocal cell before the misset (one cell; orientation matrices may differ).
    missets : list of (3 angles) or None
    phis_list : list of list of float
        Each image's phi angles (``crystal.phi_angles``).
    umats_list : list of float64 [domains, 9]
        Each image's mosaic domains (``CRandom.mosaic_umats``).

    Returns
    -------
    crystals : list of crystal.Crystal or None
        None for an image whose crystal cannot share the template's launch
        set-up (size in cells, oversampling, a non-finite value): it gets the
        full set-up, which also gives C's error where there is one.
    tables : list of float64 [phisteps + 1, domains, 9]
        ``crystal.rotation_table`` of each image (views of one C-contiguous stack).
    """
    from .vectors import cross, dot, scale
    cfg, det, sampling = T.cfg, T.det, T.sampling
    k = len(starts)
    user_cell, a0, b0, c0, V_cell_user = starts[0][:5]
    # (a*, b*, c*) of every image: [component, vector, image]
    recip = np.array([(s.a_star, s.b_star, s.c_star) for s in starts], dtype=np.float64).transpose(2, 1, 0)
    angles = np.array([m if m is not None else (0.0, 0.0, 0.0) for m in missets], dtype=np.float64).reshape(k, 3)
    if angles.any():
        recip = _rotate_xyz(recip, angles)

    # (b* x c*, c* x a*, a* x b*): C's a, b, c before scaling
    crosses = np.stack(cross(recip[:, [1, 2, 0]], recip[:, [2, 0, 1]]))
    V_star = dot(recip[:, 0], crosses[:, 0])
    if user_cell:
        old = _magnitude(crosses)
        old = np.where(old <= 0.0, 1.0, old)
        new = np.array([a0 / V_cell_user, b0 / V_cell_user, c0 / V_cell_user])[:, None]
        crosses = np.stack([new / old * crosses[i] for i in range(3)])
        V_star = np.full(k, 1.0 / V_cell_user)
    ok = (V_star != 0.0) & np.isfinite(V_star)
    with np.errstate(all="ignore"):
        V_cell = 1.0 / V_star
        real = np.stack(scale(crosses, V_cell))                                     # a, b, c
        recip = np.stack(scale(np.stack(cross(real[:, [1, 2, 0]], real[:, [2, 0, 1]])), V_star))
        lengths, dual = _magnitude(real), _magnitude(recip)
        ok &= np.isfinite(real).all(axis=(0, 1)) & np.isfinite(recip).all(axis=(0, 1))
        ok &= np.isfinite(lengths).all(axis=0) & np.isfinite(dual).all(axis=0) & np.isfinite(V_cell)
        alpha, beta, gamma = _angles(real, lengths, dual, V_cell)

        real = np.stack(scale(real, 1e-10))
        lengths = _magnitude(real)
        # the crystal's size in cells (from -samplesize, clipped by the beam as in prepare)
        sample_x, sample_y, sample_z, beamsize = cfg.sample_x, cfg.sample_y, cfg.sample_z, cfg.beamsize
        if beamsize >= 0:
            sample_y = beamsize if beamsize < sample_y else sample_y
            sample_z = beamsize if beamsize < sample_z else sample_z
        sizes = []
        for n, sample, length in zip((cfg.Na, cfg.Nb, cfg.Nc), (sample_x, sample_y, sample_z), lengths):
            cells = np.full(k, float(n)) if not sample > 0 else np.ceil(sample / length)
            sizes.append(np.maximum(cells, 1.0))
        Na, Nb, Nc = sizes
        ok &= (Na == T.crystal.Na) & (Nb == T.crystal.Nb) & (Nc == T.crystal.Nc)
        xtalsize_max = np.maximum(np.maximum(lengths[0] * Na, lengths[1] * Nb), lengths[2] * Nc)
        if cfg.oversample <= 0:
            # C's automatic oversampling must come out as the template's
            reciprocal_pixel_size = cfg.lambda0 * det.distance / det.pixel_size
            for i, size in enumerate(xtalsize_max.tolist()):
                wanted = 3.0 * size / reciprocal_pixel_size
                recommended = int(math.ceil(wanted)) if math.isfinite(wanted) else X.MAX_OVERSAMPLE + 1
                if max(recommended, 1) != T.oversample:
                    ok[i] = False

    # the rotation tables: crystal.rotation_table of every image, stacked [K, phi steps + 1, domains, 9]
    nphi, ndom = sampling.phisteps, sampling.mosaic_domains
    table = np.empty((k, nphi + 1, ndom, 9))
    phis = np.array(phis_list, dtype=np.float64).reshape(k, nphi)
    cells = [_rotate_axis(real, det.spindle, phis[:, t]) for t in range(nphi)] + [real]
    if sampling.mosaic_spread > 0.0:
        same = all(u is umats_list[0] for u in umats_list)
        u = np.asarray(umats_list[0] if same else np.stack(umats_list), dtype=np.float64)
        u = u.T[None] if same else u.transpose(0, 2, 1)          # [1 or K, 9, domains]
        for t, cell in enumerate(cells):
            v0, v1, v2 = cell[0][:, :, None], cell[1][:, :, None], cell[2][:, :, None]   # [vector, image, 1]
            for r in range(3):
                rows = u[:, 3 * r] * v0 + u[:, 3 * r + 1] * v1 + u[:, 3 * r + 2] * v2    # [vector, image, domain]
                table[:, t, :, r::3] = rows.transpose(1, 2, 0)
    else:
        for t, cell in enumerate(cells):
            table[:, t] = cell.transpose(2, 1, 0).reshape(k, 1, 9)

    crystals = []
    rows = np.concatenate((real.transpose(2, 1, 0).reshape(k, 9), recip.transpose(2, 1, 0).reshape(k, 9),
                           np.broadcast_to(V_cell, (k,))[:, None], Na[:, None], Nb[:, None], Nc[:, None],
                           lengths.T, xtalsize_max[:, None]), axis=1).tolist()
    for i, v in enumerate(rows):
        if not ok[i]:
            crystals.append(None)
            continue
        crystals.append(X.Crystal(
            a=tuple(v[0:3]), b=tuple(v[3:6]), c=tuple(v[6:9]), a_star=tuple(v[9:12]), b_star=tuple(v[12:15]),
            c_star=tuple(v[15:18]), V_cell=v[18], Na=v[19], Nb=v[20], Nc=v[21],
            misset=missets[i] or (0.0, 0.0, 0.0), cell_lengths=(v[22] * 1e10, v[23] * 1e10, v[24] * 1e10),
            cell_angles=(alpha[i] * RTD, beta[i] * RTD, gamma[i] * RTD), xtalsize_max=v[25]))
    return crystals, list(table)
