"""The crystal: unit cell vectors, orientation, size and mosaic domains.

Follows nanoBragg.c step by step: reciprocal vectors from ``-cell`` (or a
MOSFLM matrix), the ``-misset`` rotation (or C's random orientation), the
real-space vectors re-derived from the reciprocal ones, the crystal size in
unit cells and the auto-selected oversampling.  The rotation of the cell at
each (phi step, mosaic domain) pair is tabulated here once per image for the
kernels (:func:`rotation_table`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, NamedTuple, Tuple

import numpy as np

from . import vectors as V
from .config import RTD, Config
from .errors import NanoBraggError

Avogadro = 6.02214179e23

#: a number as fscanf's %lg reads it (decimal; hex floats, inf and nan are refused)
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")

#: the largest oversampling accepted, from -oversample or chosen automatically
MAX_OVERSAMPLE = 1000


@dataclass
class Crystal:
    """Cell vectors (real space in metres, reciprocal in 1/Angstrom) and size."""

    a: Tuple[float, float, float]
    b: Tuple[float, float, float]
    c: Tuple[float, float, float]
    a_star: Tuple[float, float, float]
    b_star: Tuple[float, float, float]
    c_star: Tuple[float, float, float]
    V_cell: float
    Na: float
    Nb: float
    Nc: float
    misset: Tuple[float, float, float]
    cell_lengths: Tuple[float, float, float]       # Angstrom
    cell_angles: Tuple[float, float, float]        # degrees
    xtalsize_max: float


def matrix_vectors(rows, lambda0: float):
    """Reciprocal vectors (1/A) from the 3x3 numbers of a MOSFLM matrix.

    ``rows`` are the first three lines of the file: a*, b*, c* as columns
    (x, y, z rows), multiplied by the wavelength; C divides by ``-lambda``.
    """
    s = 1e-10 / lambda0
    return (V.scale((rows[0][0], rows[1][0], rows[2][0]), s),
            V.scale((rows[0][1], rows[1][1], rows[2][1]), s),
            V.scale((rows[0][2], rows[1][2], rows[2][2]), s))


def read_matrix_numbers(path: str):
    """The 9 numbers of a MOSFLM matrix file as three rows (a*, b*, c* as columns, times lambda).

    C reads them with three ``fscanf("%lg%lg%lg")``: the first nine numbers
    separated by any white space, line breaks included (the usual file has
    them as three lines of three, followed by the U matrix and the cell,
    which are not read).  Unlike C, which keeps zeros or garbage when a
    number is missing, a word that is not a finite number or a file with
    fewer than nine numbers is an error naming the file and the line.
    """
    from .io import read_input
    text = read_input(path, "matrix file")[1].decode("latin-1")
    nums = []
    odd_line = None             # the first line not holding three numbers, for the message of a short file
    for n, line in enumerate(text.splitlines(), 1):
        if odd_line is None and line.split() and len(line.split()) != 3:
            odd_line = (n, line.strip())
        for word in line.split():
            if len(nums) == 9:
                break
            x = float(word) if _DECIMAL.fullmatch(word) else math.nan
            if not math.isfinite(x):
                shown = line.strip()
                shown = shown if len(shown) <= 80 else shown[:77] + "..."
                raise NanoBraggError("%s line %d: %r is not a finite number (the orientation matrix is the first "
                                     "nine numbers of the file): %r" % (path, n, word[:40], shown))
            nums.append(x)
        if len(nums) == 9:
            break
    if len(nums) < 9 and odd_line is not None:
        raise NanoBraggError("%s line %d: expected three numbers of the orientation matrix, got %r (%d numbers "
                             "in all, nine are needed)" % (path, odd_line[0], odd_line[1][:80], len(nums)))
    if len(nums) < 9:
        raise NanoBraggError("%s: the orientation matrix needs nine numbers (three lines of three), found %d"
                             % (path, len(nums)))
    return nums[0:3], nums[3:6], nums[6:9]


def read_matrix(path: str, lambda0: float):
    """Reciprocal vectors (1/A) from a MOSFLM matrix file (see :func:`matrix_vectors`)."""
    return matrix_vectors(read_matrix_numbers(path), lambda0)


def _clamp_angles(sin_a, sin_b, sin_g, cos_a, cos_b, cos_g):
    sins = [min(1.0, max(-1.0, x)) for x in (sin_a, sin_b, sin_g)]
    coss = [1.0 if x * x > 1.0 else x for x in (cos_a, cos_b, cos_g)]
    return sins, coss


def _oddball(log, title, names, values):
    if any(v > 1.0000001 or v < -1.0000001 for v in values):
        log("WARNING: oddball %s:" % title)
        for name, v in zip(names, values):
            log("%s = %.25g" % (name, v))


NAMES_REAL = ("sin_alpha", "cos_alpha", "sin_beta ", "cos_beta ", "sin_gamma", "cos_gamma")
NAMES_RECIPROCAL = ("sin(alpha_star)", "cos(alpha_star)", "sin(beta_star) ", "cos(beta_star) ",
                    "sin(gamma_star)", "cos(gamma_star)")


def _cell_angles(log, title, names, vecs, lengths, dual_lengths, volume):
    """alpha, beta, gamma of one cell (radians), as C derives them from it and its dual.

    ``sin(alpha) = |a_dual| V / |b| / |c|`` and ``cos(alpha) = b.c / |b| / |c|``, and so on;
    C warns about values outside [-1, 1] and clamps them.
    """
    a, b, c = vecs
    la, lb, lc = lengths
    lad, lbd, lcd = dual_lengths
    sin_a = lad * volume / lb / lc
    sin_b = lbd * volume / la / lc
    sin_g = lcd * volume / la / lb
    cos_a = V.dot(b, c) / lb / lc
    cos_b = V.dot(a, c) / la / lc
    cos_g = V.dot(a, b) / la / lb
    _oddball(log, title, names, (sin_a, cos_a, sin_b, cos_b, sin_g, cos_g))
    (sin_a, sin_b, sin_g), (cos_a, cos_b, cos_g) = _clamp_angles(sin_a, sin_b, sin_g, cos_a, cos_b, cos_g)
    return math.atan2(sin_a, cos_a), math.atan2(sin_b, cos_b), math.atan2(sin_g, cos_g)


class CellStart(NamedTuple):
    """The reciprocal cell before any misset (from ``-cell`` and/or the orientation matrix)."""

    user_cell: bool
    a0: float
    b0: float
    c0: float
    V_cell_user: float
    a_star: Tuple[float, float, float]
    b_star: Tuple[float, float, float]
    c_star: Tuple[float, float, float]


def build_crystal(cfg: Config, crand, lambda0: float, distance: float, pixel_size: float,
                  log: Callable[[str], None]):
    """Cell vectors, orientation and size, printing C's lines.

    Returns
    -------
    crystal : Crystal
    oversample : int
        ``cfg.oversample``, or C's recommendation when it is not given.
    """
    start = cell_start(cfg, lambda0, log)
    return _orient_crystal(cfg, crand, lambda0, distance, pixel_size, log, start)


def cell_start(cfg: Config, lambda0: float, log: Callable[[str], None]) -> CellStart:
    """C's reciprocal cell from ``-cell`` (and its edges and volume), replaced by ``-mat``/``matrix`` if given.

    The first half of :func:`build_crystal`: everything before the misset,
    so it does not depend on the crystal's orientation (a batch of
    orientations shares it, see ``nanobrag_numba.prepare_many``).
    """
    user_cell = cfg.cell is not None
    a0 = b0 = c0 = 0.0
    V_cell_user = 0.0
    a_star = b_star = c_star = (0.0, 0.0, 0.0)
    if user_cell:
        a0, b0, c0, alpha, beta, gamma = cfg.cell
        if b0 <= 0.0:
            b0 = a0
        if c0 <= 0.0:
            c0 = a0
        if alpha <= 0.0:
            alpha = math.pi / 2
        if beta <= 0.0:
            beta = math.pi / 2
        if gamma <= 0.0:
            gamma = math.pi / 2
        aavg = (alpha + beta + gamma) / 2
        skew = math.sin(aavg) * math.sin(aavg - alpha) * math.sin(aavg - beta) * math.sin(aavg - gamma)
        if skew < 0.0 or not (a0 > 0.0):
            raise NanoBraggError("impossible unit cell %g %g %g %g %g %g: no parallelepiped has these "
                                 "edges and angles" % (a0, b0, c0, alpha * RTD, beta * RTD, gamma * RTD))
        V_cell_user = 2.0 * a0 * b0 * c0 * math.sqrt(skew)
        if not V_cell_user > 0.0:
            raise NanoBraggError("impossible unit cell %g %g %g %g %g %g: volume %g"
                                 % (a0, b0, c0, alpha * RTD, beta * RTD, gamma * RTD, V_cell_user))
        V_star = 1.0 / V_cell_user
        as0 = b0 * c0 * math.sin(alpha) * V_star
        bs0 = c0 * a0 * math.sin(beta) * V_star
        cs0 = a0 * b0 * math.sin(gamma) * V_star
        if as0 <= 0.0 or bs0 <= 0.0 or cs0 <= 0.0:
            raise NanoBraggError("impossible unit cell: reciprocal cell lengths %g %g %g" % (as0, bs0, cs0))
        sin_as = a0 * V_star / bs0 / cs0
        sin_bs = b0 * V_star / as0 / cs0
        sin_gs = c0 * V_star / as0 / bs0
        cos_as = (math.cos(beta) * math.cos(gamma) - math.cos(alpha)) / (math.sin(beta) * math.sin(gamma))
        cos_bs = (math.cos(gamma) * math.cos(alpha) - math.cos(beta)) / (math.sin(gamma) * math.sin(alpha))
        cos_gs = (math.cos(alpha) * math.cos(beta) - math.cos(gamma)) / (math.sin(alpha) * math.sin(beta))
        _oddball(log, "reciprocal cell angles",
                 ("sin(alpha_star)", "cos(alpha_star)", "sin(beta_star) ", "cos(beta_star) ",
                  "sin(gamma_star)", "cos9gamma_star)"),
                 (sin_as, cos_as, sin_bs, cos_bs, sin_gs, cos_gs))
        (sin_as, sin_bs, sin_gs), (cos_as, cos_bs, cos_gs) = _clamp_angles(
            sin_as, sin_bs, sin_gs, cos_as, cos_bs, cos_gs)
        a_star = (as0, 0.0, 0.0)
        b_star = (bs0 * cos_gs, bs0 * sin_gs, 0.0)
        c_star = (cs0 * cos_bs, cs0 * (cos_as - cos_bs * cos_gs) / sin_gs,
                  cs0 * V_cell_user / (a0 * b0 * c0 * sin_gs))
    if cfg.dials_A is not None:
        from .panels import dials_A_vectors
        a_star, b_star, c_star = dials_A_vectors(cfg.dials_A)
    elif cfg.matrix is not None:
        m = [float(x) for x in cfg.matrix]
        if len(m) != 9 or not all(math.isfinite(x) for x in m):
            raise NanoBraggError("matrix must be 9 finite numbers (the first three lines of a -mat file)")
        a_star, b_star, c_star = matrix_vectors((m[0:3], m[3:6], m[6:9]), lambda0)
    elif cfg.matfile is not None:
        log("reading %s" % cfg.matfile)
        a_star, b_star, c_star = read_matrix(cfg.matfile, lambda0)
    if not user_cell and cfg.matfile is None and cfg.matrix is None and cfg.dials_A is None:
        raise NanoBraggError("no unit cell: give -cell a b c alpha beta gamma or -mat FILE")
    if cfg.matfile is not None or cfg.matrix is not None:
        volume = V.dot(a_star, V.cross(b_star, c_star))
        if not (math.isfinite(volume) and volume != 0.0):
            raise NanoBraggError("the orientation matrix %sis singular (its reciprocal axes a*, b*, c* lie in one "
                                 "plane): it describes no crystal"
                                 % ("of %s " % cfg.matfile if cfg.matrix is None else ""))
    return CellStart(user_cell, a0, b0, c0, V_cell_user, a_star, b_star, c_star)


def _orient_crystal(cfg: Config, crand, lambda0: float, distance: float, pixel_size: float,
                    log: Callable[[str], None], start: CellStart):
    """The second half of :func:`build_crystal`: misset, real-space cell, size and oversampling."""
    user_cell, a0, b0, c0, V_cell_user, a_star, b_star, c_star = start
    misset = cfg.misset
    if cfg.misset_random:
        umat, misset = crand.random_misset(cfg.misset_seed)
        log("random orientation misset angles: %f %f %f deg" % (misset[0] * RTD, misset[1] * RTD,
                                                                misset[2] * RTD))
    if misset is not None:
        a_star = V.rotate_xyz(a_star, *misset)
        b_star = V.rotate_xyz(b_star, *misset)
        c_star = V.rotate_xyz(c_star, *misset)

    a_star_cross_b_star = V.cross(a_star, b_star)
    b_star_cross_c_star = V.cross(b_star, c_star)
    c_star_cross_a_star = V.cross(c_star, a_star)
    V_star = V.dot(a_star, b_star_cross_c_star)
    if user_cell:
        b_star_cross_c_star = V.rescale(b_star_cross_c_star, a0 / V_cell_user)
        c_star_cross_a_star = V.rescale(c_star_cross_a_star, b0 / V_cell_user)
        a_star_cross_b_star = V.rescale(a_star_cross_b_star, c0 / V_cell_user)
        V_star = 1.0 / V_cell_user
    if V_star == 0.0 or not math.isfinite(V_star):
        raise NanoBraggError("impossible unit cell: the reciprocal vectors of %s are coplanar"
                             % (cfg.matfile or "-cell"))
    V_cell = 1.0 / V_star
    a = V.scale(b_star_cross_c_star, V_cell)
    b = V.scale(c_star_cross_a_star, V_cell)
    c = V.scale(a_star_cross_b_star, V_cell)
    a_star = V.scale(V.cross(b, c), V_star)
    b_star = V.scale(V.cross(c, a), V_star)
    c_star = V.scale(V.cross(a, b), V_star)
    la, lb, lc = V.magnitude(a), V.magnitude(b), V.magnitude(c)
    las, lbs, lcs = V.magnitude(a_star), V.magnitude(b_star), V.magnitude(c_star)

    alpha, beta, gamma = _cell_angles(log, "cell angles", NAMES_REAL, (a, b, c), (la, lb, lc),
                                      (las, lbs, lcs), V_cell)
    alpha_s, beta_s, gamma_s = _cell_angles(log, "reciprocal cell angles", NAMES_RECIPROCAL,
                                            (a_star, b_star, c_star), (las, lbs, lcs), (la, lb, lc), V_star)

    log("Unit Cell: %g %g %g %g %g %g" % (la, lb, lc, alpha * RTD, beta * RTD, gamma * RTD))
    log("Recp Cell: %g %g %g %g %g %g" % (las, lbs, lcs, alpha_s * RTD, beta_s * RTD, gamma_s * RTD))
    log("volume = %g A^3" % V_cell)
    log("real-space cell vectors (Angstrom):")
    log("     %-10s  %-10s  %-10s" % ("a", "b", "c"))
    for i, axis in enumerate("XYZ"):
        log("%s: %11.8f %11.8f %11.8f" % (axis, a[i], b[i], c[i]))
    log("reciprocal-space cell vectors (Angstrom^-1):")
    log("     %-10s  %-10s  %-10s" % ("a_star", "b_star", "c_star"))
    for i, axis in enumerate("XYZ"):
        log("%s: %11.8f %11.8f %11.8f" % (axis, a_star[i], b_star[i], c_star[i]))

    a = V.scale(a, 1e-10)
    b = V.scale(b, 1e-10)
    c = V.scale(c, 1e-10)
    la, lb, lc = V.magnitude(a), V.magnitude(b), V.magnitude(c)

    Na, Nb, Nc = float(cfg.Na), float(cfg.Nb), float(cfg.Nc)
    if cfg.sample_x > 0:
        Na = math.ceil(cfg.sample_x / la)
    if cfg.sample_y > 0:
        Nb = math.ceil(cfg.sample_y / lb)
    if cfg.sample_z > 0:
        Nc = math.ceil(cfg.sample_z / lc)
    Na, Nb, Nc = (max(float(n), 1.0) for n in (Na, Nb, Nc))
    xa, xb, xc = la * Na, lb * Nb, lc * Nc
    log("crystal is %g x %g x %g microns" % (xa * 1e6, xb * 1e6, xc * 1e6))
    xtalsize_max = max(xa, xb, xc)
    reciprocal_pixel_size = lambda0 * distance / pixel_size
    wanted = 3.0 * xtalsize_max / reciprocal_pixel_size
    recommended = int(math.ceil(wanted)) if math.isfinite(wanted) else MAX_OVERSAMPLE + 1
    if recommended <= 0:
        recommended = 1
    oversample = cfg.oversample
    if oversample <= 0:
        if recommended > MAX_OVERSAMPLE:
            raise NanoBraggError(
                "the crystal (%g x %g x %g um from -N/-Na/-Nb/-Nc or -xtalsize) is so large that the automatic "
                "oversampling would be %.3g-fold, more than the limit of %d: give -oversample N (1 to %d) "
                "or a smaller crystal" % (xa * 1e6, xb * 1e6, xc * 1e6, wanted, MAX_OVERSAMPLE, MAX_OVERSAMPLE))
        oversample = recommended
        log("auto-selected %d-fold oversampling" % oversample)
    if oversample < recommended:
        log("WARNING: maximum dimension of sample is %g A" % (xtalsize_max * 1e10))
        log("         but reciprocal pixel size is %g A" % (reciprocal_pixel_size * 1e10))
        log("         intensity may vary significantly across a pixel!")
        log("         recommend -oversample %d to work around this" % recommended)
    volume = xa * xb * xc
    log("approximate MW = %g" % (volume * 1.2e6 * Avogadro / (Na * Nb * Nc)))
    crystal = Crystal(a=a, b=b, c=c, a_star=a_star, b_star=b_star, c_star=c_star, V_cell=V_cell,
                      Na=Na, Nb=Nb, Nc=Nc, misset=misset or (0.0, 0.0, 0.0),
                      cell_lengths=(la * 1e10, lb * 1e10, lc * 1e10),
                      cell_angles=(alpha * RTD, beta * RTD, gamma * RTD), xtalsize_max=xtalsize_max)
    return crystal, oversample


def phi_angles(phi0: float, phistep: float, phisteps: int):
    """Spindle angle (radians) of each phi step."""
    return [phi0 + phistep * t for t in range(phisteps)]


def rotation_table(crystal: Crystal, spindle, phis, mosaic_spread: float, umats: np.ndarray):
    """Cell vectors for every (phi step, mosaic domain), plus the unrotated cell.

    Row ``t`` of the result holds, for each domain, ``umat . R(spindle, phi_t) . (a, b, c)``
    flattened as ``ax ay az bx by bz cx cy cz`` (metres); the last row uses
    the unrotated cell (C's state before any phi rotation).  The arithmetic
    is C's, so the kernels see the same bits C computes in its loops.
    """
    nphi = len(phis)
    ndom = umats.shape[0]
    table = np.empty((nphi + 1, ndom, 9))
    # a rotation by phi = 0 is the identity: use the cell itself (as C does), which also keeps its signed zeros
    cells = [tuple(V.rotate_axis(v, spindle, phi) if phi != 0.0 else v for v in (crystal.a, crystal.b, crystal.c))
             for phi in phis]
    cells.append((crystal.a, crystal.b, crystal.c))
    u = np.ascontiguousarray(np.asarray(umats, dtype=np.float64).T)     # [9, ndom]
    rows = np.empty((9, ndom))
    for t, cell in enumerate(cells):
        if mosaic_spread > 0.0:
            # V.rotate_umat for every domain at once: the same products and sums in the same order
            for i, v in enumerate(cell):
                for r in range(3):
                    rows[3 * i + r] = u[3 * r] * v[0] + u[3 * r + 1] * v[1] + u[3 * r + 2] * v[2]
            table[t] = rows.T
        else:
            table[t, :] = [x for v in cell for x in v]
    return table


def phi_maps(phis, quirks: bool):
    """Row of the rotation table used at each phi step.

    Without ``-c_quirks`` every step uses its own rotation.  With it, C's
    carry-over is reproduced: a step at phi == 0 is not rotated, so it keeps
    the cell of the last step with phi != 0 in this phi loop or, failing
    that, in the previous phi loop; in the first phi loop of the image that
    is the unrotated cell (the last row of the table).
    Returns ``(phi_map, phi_map_first)``.
    """
    nphi = len(phis)
    ident = list(range(nphi))
    if not quirks:
        return np.array(ident, dtype=np.int32), np.array(ident, dtype=np.int32)

    def run(carry):
        out = []
        for t, phi in enumerate(phis):
            if phi != 0.0:
                carry = t
            out.append(carry)
        return out, carry

    first, carry = run(nphi)
    later, _ = run(carry)
    return np.array(later, dtype=np.int32), np.array(first, dtype=np.int32)
