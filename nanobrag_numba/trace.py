"""One pixel explained: every evaluation of the kernel's loop, and its factors.

The trace runs the same ``render_pixel`` as the kernels (on one CPU core,
in float64, whatever back end rendered the image) with recording switched
on for one pixel, so what it prints is what the image was made of.  It
serves ``-printout``/``-printout_pixel`` (C's lines), ``-trace_pixel``
(TRACE_PY lines, comparable with the instrumented C traces; the lines are
written by :mod:`nanobrag_numba.tracefmt`, see docs/trace.md) and the
interpolation warning.
"""
from __future__ import annotations

import math

import numpy as np

from .kernels.physics import TRACE_COLUMNS, TRACE_FIELDS

COL = {name: i for i, name in enumerate(TRACE_COLUMNS)}


def evaluations_per_pixel(prep) -> int:
    """Evaluations of the kernel's loop for one pixel (layers x sub-pixels x sources x phi x domains)."""
    s = prep.sampling
    return s.thicksteps * prep.oversample ** 2 * prep.sources.shape[0] * s.phisteps * s.mosaic_domains


def trace_params(prep, image=None):
    """The kernel parameters the image was rendered with.

    With ``-c_quirks`` an image whose interpolation C would switch off at a
    pixel was rendered a second time with that cut (``simulator.render``);
    the cut is in ``image.first_oob``.  Without an image, or without the
    cut, these are ``prep.params``.
    """
    p = prep.params
    if image is not None and prep.cfg.c_quirks and getattr(image, "first_oob", None) is not None:
        p = p._replace(interp_cut_pixel=int(image.first_oob[0]), interp_cut_eval=int(image.first_oob[1]))
    return p


def trace_pixel(prep, spixel: int, fpixel: int, params=None):
    """Run one pixel with recording on.

    Parameters
    ----------
    prep : simulator.Prepared
    spixel, fpixel : int
        The pixel (slow, fast).
    params : KParams, optional
        Kernel parameters (default ``prep.params``; see :func:`trace_params`).

    Returns
    -------
    rows : float64[n, TRACE_FIELDS]
        One row per evaluation (layer, sub-pixel, source, phi, domain) in
        loop order; sources that ``-dmin`` drops have no row.
    result : tuple
        What ``render_pixel`` returns (I, capture, polar, omega, bg factor,
        omega sum, first out-of-table evaluation).
    """
    from .kernels.cpu import trace_cpu
    p = params if params is not None else prep.params
    idx = spixel * prep.det.fpixels + fpixel
    p = p._replace(trace_pixel=idx)
    rows = np.full((evaluations_per_pixel(prep), TRACE_FIELDS), np.nan)
    result = trace_cpu(p, spixel, fpixel, prep.sources, prep.rot, prep.phi_map, prep.phi_map_first,
                       prep.Fhkl, rows, prep.panels)
    rows = rows[~np.isnan(rows[:, 0])]
    return rows, result


def evaluation(prep, spixel: int, fpixel: int, ev: int) -> dict:
    """The values of evaluation number ``ev`` of a pixel (counted as the kernel counts), and its source's weight."""
    rows, _ = trace_pixel(prep, spixel, fpixel)
    per_source = prep.sampling.phisteps * prep.sampling.mosaic_domains
    nsrc = prep.sources.shape[0]
    order = (((rows[:, COL["thick_tic"]] * prep.oversample + rows[:, COL["subS"]]) * prep.oversample
              + rows[:, COL["subF"]]) * nsrc + rows[:, COL["source"]]) * per_source \
        + rows[:, COL["phi_tic"]] * prep.sampling.mosaic_domains + rows[:, COL["mos_tic"]]
    hit = np.flatnonzero(order == ev)
    row = rows[hit[0]] if hit.size else rows[-1]
    out = {name: float(row[i]) for i, name in enumerate(TRACE_COLUMNS)}
    out["source_weight"] = float(prep.sources[int(out["source"]), 4])   # the weight the sum used
    return out


def printout_lines(prep, image, spixel: int, fpixel: int):
    """C's ``-printout`` block for one pixel (values of its last evaluation)."""
    rows, result = trace_pixel(prep, spixel, fpixel, trace_params(prep, image))
    if rows.shape[0] == 0:
        return []
    r = {name: float(rows[-1, i]) for i, name in enumerate(TRACE_COLUMNS)}
    px, py, pz = r["pixel_pos_x"], r["pixel_pos_y"], r["pixel_pos_z"]
    twotheta = math.atan2(math.sqrt(py * py + pz * pz), px)
    test = math.sin(twotheta / 2.0) / (prep.cfg.lambda0 * 1e10)
    sx, sy, sz = r["scattering_x"], r["scattering_y"], r["scattering_z"]
    stol = 0.5 * math.sqrt(sx * sx + sy * sy + sz * sz)
    I = result[0]
    lines = ["%4d %4d : stol = %g or %g" % (fpixel, spixel, stol, test),
             "at %g %g %g" % (px, py, pz),
             "hkl= %f %f %f  hkl0= %d %d %d" % (r["h"], r["k"], r["l"], r["h0"], r["k0"], r["l0"]),
             " F_cell=%g  F_latt=%g   I = %g" % (r["F_cell"], r["F_latt"], I),
             "I/steps %15.10g" % (I / prep.steps),
             "polar   %15.10g" % r["polar"],
             "omega   %15.10g" % r["omega_pixel"],
             "capfrac %15.10g" % r["capture_fraction"],
             "pixel   %15.10g" % float(image.floatimage[spixel, fpixel]),
             "real-space cell vectors (Angstrom):",
             "     %-10s  %-10s  %-10s" % ("a", "b", "c")]
    for axis in "xyz":
        lines.append("%s: %11.8f %11.8f %11.8f" % (axis.upper(), r["a_" + axis] * 1e10, r["b_" + axis] * 1e10,
                                                   r["c_" + axis] * 1e10))
    return lines


def pixel_state(prep, spixel: int, fpixel: int) -> str:
    """Why a pixel cannot be traced ('' when it can): outside the detector, the ROI or the mask."""
    det = prep.det
    if not (0 <= spixel < det.spixels and 0 <= fpixel < det.fpixels):
        return "outside the %dx%d (fast x slow) detector" % (det.fpixels, det.spixels)
    xmin, xmax, ymin, ymax = det.roi
    if fpixel < xmin or fpixel > xmax or spixel < ymin or spixel > ymax:
        return "outside the -roi"
    if prep.params.use_mask and prep.mask[spixel * det.fpixels + fpixel] == 0:
        return "masked out by -mask"
    return ""


def report(prep, image, log=print):
    """Print what ``-printout``/``-printout_pixel`` and ``-trace_pixel`` ask for."""
    cfg, det = prep.cfg, prep.det
    if cfg.printout:
        if cfg.printout_pixel is not None and cfg.printout_pixel[0] >= 0:
            pixels = [(cfg.printout_pixel[1], cfg.printout_pixel[0])]
        else:
            pixels = [(s, f) for s in range(det.spixels) for f in range(det.fpixels)]
        for s, f in pixels:
            if 0 <= s < det.spixels and 0 <= f < det.fpixels:
                for line in printout_lines(prep, image, s, f):
                    log(line)
    if cfg.trace_pixel is not None:
        s, f = cfg.trace_pixel
        why = pixel_state(prep, s, f)
        if why:
            log("WARNING: -trace_pixel %d %d: the pixel is %s and is not rendered; no trace" % (s, f, why))
            return
        for line in trace_lines(prep, image, s, f):
            log(line)


def trace_lines(prep, image, spixel: int, fpixel: int):
    """TRACE_PY lines for one pixel (see :func:`nanobrag_numba.tracefmt.format_trace`, docs/trace.md).

    Parameters
    ----------
    prep : simulator.Prepared
    image : simulator.Image or None
        The rendered image (any back end); None leaves out ``floatimage_accumulated``.
    spixel, fpixel : int
        The pixel (slow, fast).
    """
    from .tracefmt import format_trace
    return format_trace(prep, image, spixel, fpixel)
