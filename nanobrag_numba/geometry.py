"""Detector geometry: conventions, beam centre, pivots and the pixel origin.

This repeats, in order, what nanoBragg.c does between reading its flags and
rendering: fill in the detector size, pick the beam centre and the axes of
the chosen convention (MOSFLM by default, whatever the C usage text says),
rotate the detector, place ``pix0`` (the first pixel) from the beam spot
(BEAM pivot) or the near point (SAMPLE pivot), and derive the values written
into the SMV header.  Plain Python floats and ``math``, so every vector has
C's bits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

from . import vectors as V
from .config import Config
from .errors import NanoBraggError

DBL_MIN = 2.2250738585072014e-308

# axes of each convention: beam, fdet, sdet, odet, twotheta axis, polarization, spindle
CONVENTION_AXES = {
    "ADXV": ((0, 0, 1), (1, 0, 0), (0, -1, 0), (0, 0, 1), (-1, 0, 0), (1, 0, 0), (1, 0, 0)),
    "MOSFLM": ((1, 0, 0), (0, 0, 1), (0, -1, 0), (1, 0, 0), (0, 0, -1), (0, 0, 1), (0, 0, 1)),
    "DENZO": ((1, 0, 0), (0, 0, 1), (0, -1, 0), (1, 0, 0), (0, 0, -1), (0, 0, 1), (0, 0, 1)),
    "XDS": ((0, 0, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 0), (1, 0, 0), (1, 0, 0)),
    "DIALS": ((0, 0, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 1, 0), (0, 1, 0), (0, 1, 0)),
}


def _nan(x):
    return NAN_ if x is None else x


NAN_ = float("nan")


@dataclass
class Detector:
    """Everything the image and its header need to know about the detector.

    Distances in metres; vectors are unit 3-tuples in the lab frame.
    """

    convention: str
    pivot: str
    fpixels: int
    spixels: int
    pixel_size: float
    detsize_f: float
    detsize_s: float
    fdet: Tuple[float, float, float]
    sdet: Tuple[float, float, float]
    odet: Tuple[float, float, float]
    pix0: Tuple[float, float, float]
    beam: Tuple[float, float, float]
    polar: Tuple[float, float, float]
    spindle: Tuple[float, float, float]
    vert: Tuple[float, float, float]
    twotheta_axis: Tuple[float, float, float]
    distance: float
    close_distance: float
    Xbeam: float
    Ybeam: float
    Fbeam: float
    Sbeam: float
    Xclose: float
    Yclose: float
    Fclose: float
    Sclose: float
    ORGX: float
    ORGY: float
    dials_origin: Tuple[float, float, float]
    roi: Tuple[int, int, int, int]
    twotheta: float
    panels: tuple = ()      # multi-panel detectors: one Detector per panel (panels.stack_detector)

    @property
    def shape(self):
        """(slow, fast) pixels."""
        return (self.spixels, self.fpixels)


def detector_size(cfg: Config, half: float = 0.5):
    """C's "fill in blanks": pixel counts and sizes from -detpixels/-detsize/-pixel.

    nanoBragg.c rounds the pixel counts (``ceil(detsize / pixel - 0.5)``); nonBragg.c
    takes ``ceil(detsize / pixel)`` (``half=0``).
    """
    detsize_f, detsize_s = cfg.detsize_f, cfg.detsize_s
    if cfg.fpixels:
        detsize_f = cfg.pixel_size * cfg.fpixels
    if cfg.spixels:
        detsize_s = cfg.pixel_size * cfg.spixels
    fpixels = int(math.ceil(detsize_f / cfg.pixel_size - half))
    spixels = int(math.ceil(detsize_s / cfg.pixel_size - half))
    if fpixels <= 0 or spixels <= 0:
        raise NanoBraggError("the detector has no pixels (%d x %d): check -detpixels, -detsize and -pixel"
                             % (fpixels, spixels))
    return fpixels, spixels, detsize_f, detsize_s


def setup_detector(cfg: Config, log: Callable[[str], None], notes: list,
                   between: Optional[Callable[[], None]] = None) -> Detector:
    """Build the detector exactly as nanoBragg.c does, printing C's lines.

    Parameters
    ----------
    cfg : Config
    log : callable
        Receives each line C would print.
    notes : list
        Receives ``(quirk, text)`` for every corrected C behaviour this
        geometry touches.
    between : callable, optional
        Called after the axes are set and before the detector is rotated
        (where C prints its banner and settles the sampling).
    """
    fpixels, spixels, detsize_f, detsize_s = detector_size(cfg)
    ps = cfg.pixel_size
    Xbeam, Ybeam = _nan(cfg.Xbeam), _nan(cfg.Ybeam)
    Xclose, Yclose = _nan(cfg.Xclose), _nan(cfg.Yclose)
    ORGX, ORGY = _nan(cfg.ORGX), _nan(cfg.ORGY)
    Fclose = Sclose = NAN_
    if not math.isnan(ORGX):
        Fclose = (ORGX - 0.5) * ps
    if not math.isnan(ORGY):
        Sclose = (ORGY - 0.5) * ps
    if math.isnan(Fclose):
        Fclose = (detsize_f - 0 * ps) / 2.0
    if math.isnan(Sclose):
        Sclose = (detsize_s + 0 * ps) / 2.0
    if math.isnan(Xclose):
        Xclose = Fclose
    if math.isnan(Yclose):
        Yclose = Sclose
    Fbeam, Sbeam = Fclose, Sclose
    roi = list(cfg.roi) if cfg.roi is not None else [-1, -1, -1, -1]
    if roi[0] < 0:
        roi[0] = 0
    if roi[1] < 0:
        roi[1] = fpixels
    if roi[2] < 0:
        roi[2] = 0
    if roi[3] < 0:
        roi[3] = spixels

    conv = cfg.convention
    pivot = cfg.pivot
    beam, fdet, sdet, odet = cfg.beam_vector, cfg.fdet_vector, cfg.sdet_vector, cfg.odet_vector
    tt_axis, polar, spindle = cfg.twotheta_axis, cfg.polar_vector, cfg.spindle_vector
    if conv in CONVENTION_AXES:
        beam, fdet, sdet, odet, tt_axis, polar, spindle = (
            tuple(float(c) for c in v) for v in CONVENTION_AXES[conv])
    if conv == "ADXV":
        if math.isnan(Xbeam):
            Xbeam = (detsize_f + ps) / 2.0
        if math.isnan(Ybeam):
            Ybeam = (detsize_s - ps) / 2.0
        Fbeam = Xbeam
        Sbeam = detsize_s - Ybeam
        pivot = "BEAM"
    elif conv in ("MOSFLM", "DENZO"):
        if math.isnan(Xbeam):
            Xbeam = (detsize_s + ps) / 2.0
        if math.isnan(Ybeam):
            Ybeam = (detsize_f + ps) / 2.0
        half = 0.5 if conv == "MOSFLM" else 0.0
        Fbeam = Ybeam + half * ps
        Sbeam = Xbeam + half * ps
        pivot = "BEAM"
    else:  # XDS, DIALS and CUSTOM: the beam centre defaults to the near point
        if math.isnan(Xbeam):
            Xbeam = Xclose
        if math.isnan(Ybeam):
            Ybeam = Yclose
        Fbeam = Xbeam
        Sbeam = Ybeam
        if conv == "CUSTOM":
            Fclose = Xbeam
            Sclose = Ybeam
        else:
            pivot = "SAMPLE"

    beam, beam_len = V.unitize(beam)
    if beam_len == 0.0:
        raise NanoBraggError("-beam_vector %g %g %g has no direction: the beam needs a non-zero vector"
                             % tuple(cfg.beam_vector))
    fdet, _ = V.unitize(fdet)
    sdet, _ = V.unitize(sdet)
    odet_unit, odet_len = V.unitize(odet)
    if odet_len != 1.0:
        log("WARNING: auto-generating odet_vector")
        odet, _ = V.unitize(V.cross(fdet, sdet))
    else:
        odet = odet_unit
    polar, _ = V.unitize(polar)
    spindle, _ = V.unitize(spindle)
    vert, _ = V.unitize(V.cross(beam, polar))
    if not cfg.c_quirks:
        tt_unit, tt_len = V.unitize(tt_axis)
        if tt_len != 1.0 and cfg.detector_twotheta != 0.0:
            notes.append(("twotheta_axis_substring",
                          "the two-theta axis %g %g %g is normalised (C rotates about it unnormalised)"
                          % tuple(tt_axis)))
        tt_axis = tt_unit
    if between is not None:
        between()
    return _orient(cfg, log, notes, conv, pivot, fpixels, spixels, detsize_f, detsize_s, ps,
                   beam, fdet, sdet, odet, polar, spindle, vert, tt_axis,
                   Xbeam, Ybeam, Fbeam, Sbeam, Xclose, Yclose, Fclose, Sclose, tuple(roi))


def _origin(F, S, D, fdet, sdet, direction):
    """``-F fdet - S sdet + D direction``: the first pixel seen from the sample (C's order)."""
    return (-F * fdet[0] - S * sdet[0] + D * direction[0],
            -F * fdet[1] - S * sdet[1] + D * direction[1],
            -F * fdet[2] - S * sdet[2] + D * direction[2])


def _orient(cfg, log, notes, conv, pivot, fpixels, spixels, detsize_f, detsize_s, ps,
            beam, fdet, sdet, odet, polar, spindle, vert, tt_axis,
            Xbeam, Ybeam, Fbeam, Sbeam, Xclose, Yclose, Fclose, Sclose, roi, close_abs=True, announce=True):
    """Rotate the detector and place pix0 (the second half of C's set-up).

    nonBragg.c (``nonbragg.py``) shares this code with ``close_abs=False``
    (it takes the near-point distance as ``ratio*distance`` without
    ``fabs``) and ``announce=False`` (it has no conventions to report).
    """
    if announce:
        log("%s convention selected." % conv.lower())
    rx, ry, rz, tt = cfg.detector_rotx, cfg.detector_roty, cfg.detector_rotz, cfg.detector_twotheta
    ratio = V.dot(beam, V.rotate_xyz(odet, rx, ry, rz))
    if ratio == 0.0:
        ratio = DBL_MIN
    distance = cfg.distance
    close_distance = cfg.close_distance
    if close_distance is None or math.isnan(close_distance):
        close_distance = abs(ratio * distance) if close_abs else ratio * distance
    if close_distance == 0.0:
        what = ("-close_distance 0" if cfg.close_distance is not None and not math.isnan(cfg.close_distance)
                else "-distance %g" % (cfg.distance * 1e3))
        raise NanoBraggError("%s puts the detector through the sample: the distance must not be zero" % what)
    distance = close_distance / ratio
    pix0 = None
    if pivot == "SAMPLE":
        log("pivoting detector around sample")
        pix0 = _origin(Fclose, Sclose, close_distance, fdet, sdet, odet)
        pix0 = V.rotate_xyz(pix0, rx, ry, rz)
        pix0 = V.rotate_axis(pix0, tt_axis, tt)
    fdet = V.rotate_axis(V.rotate_xyz(fdet, rx, ry, rz), tt_axis, tt)
    sdet = V.rotate_axis(V.rotate_xyz(sdet, rx, ry, rz), tt_axis, tt)
    odet = V.rotate_axis(V.rotate_xyz(odet, rx, ry, rz), tt_axis, tt)
    if pivot == "BEAM":
        log("pivoting detector around direct beam spot")
        pix0 = _origin(Fbeam, Sbeam, distance, fdet, sdet, beam)
    if cfg.pix0_vector is not None:
        if cfg.c_quirks:
            pass  # C selects the CUSTOM convention but ignores the vector itself
        else:
            pix0 = tuple(float(c) for c in cfg.pix0_vector)
            notes.append(("pix0_vector_ignored",
                          "-pix0_vector %g %g %g sets the detector origin (C ignores the vector)"
                          % pix0))
    Fclose = -V.dot(pix0, fdet)
    Sclose = -V.dot(pix0, sdet)
    close_distance = V.dot(pix0, odet)
    if close_distance == 0.0:
        # only a -pix0_vector in the detector's own plane through the sample gets here
        raise NanoBraggError("-pix0_vector %g %g %g puts the sample in the detector plane (distance 0 along "
                             "the detector normal %g %g %g)" % (pix0 + odet))
    newv = (close_distance / ratio * beam[0] - pix0[0],
            close_distance / ratio * beam[1] - pix0[1],
            close_distance / ratio * beam[2] - pix0[2])
    Fbeam = V.dot(fdet, newv)
    Sbeam = V.dot(sdet, newv)
    distance = close_distance / ratio
    ORGX = Fclose / ps + 0.5
    ORGY = Sclose / ps + 0.5
    dials_origin = (1000.0 * V.dot(pix0, (0.0, 0.0, 1.0)),
                    1000.0 * V.dot(pix0, (0.0, 1.0, 0.0)),
                    1000.0 * V.dot(pix0, (-1.0, 0.0, 0.0)))
    if announce:
        log("XDS incident beam: %g %g %g" % (V.dot(beam, fdet), V.dot(beam, sdet), V.dot(beam, odet)))
    return Detector(convention=conv, pivot=pivot, fpixels=fpixels, spixels=spixels, pixel_size=ps,
                    detsize_f=detsize_f, detsize_s=detsize_s, fdet=fdet, sdet=sdet, odet=odet,
                    pix0=pix0, beam=beam, polar=polar, spindle=spindle, vert=vert,
                    twotheta_axis=tt_axis, distance=distance, close_distance=close_distance,
                    Xbeam=Xbeam, Ybeam=Ybeam, Fbeam=Fbeam, Sbeam=Sbeam, Xclose=Xclose,
                    Yclose=Yclose, Fclose=Fclose, Sclose=Sclose, ORGX=ORGX, ORGY=ORGY,
                    dials_origin=dials_origin, roi=roi, twotheta=tt)


def smv_header_values(det: Detector, lambda0: float, phi0: float, osc: float, noise: bool) -> dict:
    """Keyword arguments of ``io.smv.format_smv_header``, computed as C computes them."""
    from .config import RTD
    ps = det.pixel_size
    return dict(
        fast=det.fpixels, slow=det.spixels, pixel_size_mm=ps * 1000.0,
        distance_mm=det.distance * 1000.0, wavelength_A=lambda0 * 1e10,
        beam_center_x_mm=det.Xbeam * 1000.0, beam_center_y_mm=det.Ybeam * 1000,
        adxv_center_x_mm=det.Fbeam * 1000.0, adxv_center_y_mm=(det.detsize_s - det.Sbeam) * 1000,
        mosflm_center_x_mm=(det.Sbeam - 0.5 * ps) * 1000.0, mosflm_center_y_mm=(det.Fbeam - 0.5 * ps) * 1000,
        denzo_x_beam_mm=((det.Sbeam + 0.0 * ps) if noise else (det.Sbeam - 0.0 * ps)) * 1000.0,
        denzo_y_beam_mm=((det.Fbeam + 0.0 * ps) if noise else (det.Fbeam - 0.0 * ps)) * 1000,
        dials_origin_mm=det.dials_origin, xds_orgx=det.ORGX, xds_orgy=det.ORGY,
        close_distance_mm=det.close_distance * 1000.0, phi_deg=phi0 * RTD, osc_start_deg=phi0 * RTD,
        osc_range_deg=osc * RTD, twotheta_deg=det.twotheta * RTD)
