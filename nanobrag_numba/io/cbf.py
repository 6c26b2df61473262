"""imgCIF/CBF images with full geometry, readable by dxtbx's full-CBF reader.

The header describes the experiment with imgCIF's axis categories (``_axis``,
``_diffrn_detector_axis``, ``_diffrn_measurement_axis``, ``_diffrn_scan_axis``,
``_diffrn_scan_frame_axis``, ``_array_structure_list_axis``), so that
dxtbx (``FormatCBFFull``, through CBFlib) builds the detector, beam and
goniometer from the file rather than from a beam centre and a convention.
The pixels are signed 32-bit integers, byte-offset compressed
(``x-CBF_BYTE_OFFSET``).  Extra ``_nanobrag_truth.*`` items carry the ground
truth of the simulation: the crystal's real-space vectors in the file's
frame, cell, misset, seeds and the command line.

Frames.  nanoBragg works in its own lab frame (MOSFLM: beam along +x,
spindle along +z; XDS/DIALS/ADXV/CUSTOM differ).  imgCIF's lab frame has Z
from the sample towards the source and X along the principal goniometer
axis.  :func:`lab_geometry` turns a prepared run into that frame: it rotates
nanoBragg's vectors with the matrix whose rows are X = the spindle (made
perpendicular to the beam), Y = Z x X, Z = -beam, so every convention (and
two-theta, detector rotations, custom vectors) comes out as the same kind of
numbers: the first pixel's corner, the fast and slow directions, the beam
direction and the spindle, in mm and unit vectors.  A NeXus/NXmx writer can
use the same function (NXmx's McStas frame differs from imgCIF's by a
180-degree turn about Y: x -> -x, z -> -z).
"""
from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from .atomic import atomic_write_bytes

Vec = Tuple[float, float, float]

RTD = 180.0 / math.pi


# ---------------------------------------------------------------- byte offset

def byte_offset_encode(data) -> bytes:
    """CBF byte-offset compression of integer ``data`` (flattened in C order).

    Each value is stored as its difference from the previous one (the first
    from 0): one signed byte when it fits in -127..127, otherwise the escape
    byte 0x80 and a little-endian int16 (-32767..32767), otherwise 0x8000
    and an int32, otherwise 0x80000000 and an int64.
    """
    v = np.asarray(data).astype(np.int64, copy=False).ravel()
    d = np.diff(v, prepend=np.int64(0))
    a = np.abs(d)
    n1 = a < 128
    n2 = ~n1 & (a < 32768)
    n4 = ~n1 & ~n2 & (a < 2 ** 31)
    n8 = ~(n1 | n2 | n4)
    length = np.where(n1, 1, np.where(n2, 3, np.where(n4, 7, 15)))
    start = np.cumsum(length) - length
    out = np.zeros(int(length.sum()), dtype=np.uint8)
    out[start[n1]] = d[n1].astype(np.int8).view(np.uint8)
    wide = ~n1
    out[start[wide]] = 0x80
    s = start[n2]
    b = d[n2].astype("<i2").view(np.uint8).reshape(-1, 2)
    out[s + 1], out[s + 2] = b[:, 0], b[:, 1]
    escape2 = ~n1 & ~n2
    out[start[escape2] + 2] = 0x80
    s = start[n4]
    b = d[n4].astype("<i4").view(np.uint8).reshape(-1, 4)
    for k in range(4):
        out[s + 3 + k] = b[:, k]
    s = start[n8]
    out[s + 6] = 0x80
    b = d[n8].astype("<i8").view(np.uint8).reshape(-1, 8)
    for k in range(8):
        out[s + 7 + k] = b[:, k]
    return out.tobytes()


def byte_offset_decode(buf: bytes, count: int) -> np.ndarray:
    """Inverse of :func:`byte_offset_encode`: ``count`` int64 values (a plain loop; for tests and small files)."""
    out = np.empty(count, dtype=np.int64)
    mv = memoryview(bytes(buf))
    pos = 0
    cur = 0
    for i in range(count):
        d = int.from_bytes(mv[pos:pos + 1], "little", signed=True)
        pos += 1
        if d == -128:
            d = int.from_bytes(mv[pos:pos + 2], "little", signed=True)
            pos += 2
            if d == -32768:
                d = int.from_bytes(mv[pos:pos + 4], "little", signed=True)
                pos += 4
                if d == -2 ** 31:
                    d = int.from_bytes(mv[pos:pos + 8], "little", signed=True)
                    pos += 8
        cur += d
        out[i] = cur
    return out


# ---------------------------------------------------------------- geometry

def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def imgcif_frame(beam: Sequence[float], spindle: Sequence[float]) -> np.ndarray:
    """Rotation (rows X, Y, Z) from nanoBragg's lab frame to imgCIF's.

    Z points from the sample to the source (``-beam``), X along the spindle
    made perpendicular to the beam (any perpendicular when the spindle lies
    along the beam), Y = Z x X.
    """
    z = -_unit(beam)
    s = _unit(spindle)
    x = s - float(np.dot(s, z)) * z
    if np.linalg.norm(x) < 1e-9:
        trial = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        x = trial - float(np.dot(trial, z)) * z
    x = _unit(x)
    y = np.cross(z, x)
    return np.array([x, y, z])


@dataclass(frozen=True)
class LabGeometry:
    """A run's geometry in imgCIF's lab frame: lengths in mm, angles in degrees.

    ``origin`` is the outer corner of the first pixel (fast 0, slow 0), as
    dxtbx's panel origin; ``fast``/``slow`` are the pixel directions,
    ``normal`` the detector normal towards the detector; ``beam`` is the
    direction the X-rays travel (``-beam`` is imgCIF's source axis);
    ``spindle`` is the rotation axis (right-handed positive phi, as dxtbx);
    ``real_space`` are the crystal's a, b, c in Angstrom at phi = 0 (after
    the misset).  ``frame`` is the rotation from nanoBragg's lab frame.
    """

    frame: np.ndarray
    wavelength_A: float
    beam: Vec
    pixel_size_mm: float
    fpixels: int
    spixels: int
    origin: Vec
    fast: Vec
    slow: Vec
    normal: Vec
    distance_mm: float          # sample to detector plane along the normal
    beam_center_fast_mm: float  # where the beam meets the detector, from the first pixel's corner
    beam_center_slow_mm: float
    spindle: Vec
    phi_start_deg: float
    osc_range_deg: float
    twotheta_deg: float
    real_space: Tuple[Vec, Vec, Vec]


def _t(v) -> Vec:
    return tuple(float(c) for c in v)


def lab_geometry(prep, det=None) -> LabGeometry:
    """The geometry of a :class:`~nanobrag_numba.simulator.Prepared` run in imgCIF's lab frame (mm).

    ``det``: one panel's Detector of a multi-panel run (``prep.det.panels``); default ``prep.det``.
    """
    det = prep.det if det is None else det
    cfg, xtal = prep.cfg, prep.crystal
    R = imgcif_frame(det.beam, det.spindle)
    rot = lambda v: R @ np.asarray(v, dtype=np.float64)  # noqa: E731
    fast, slow = _unit(rot(det.fdet)), _unit(rot(det.sdet))
    normal = _unit(np.cross(fast, slow))
    origin = rot(det.pix0) * 1000.0
    if float(np.dot(origin, normal)) < 0:
        normal = -normal
    beam = _unit(rot(det.beam))
    dist = float(np.dot(origin, normal))
    # the beam meets the plane at t*beam with t*beam.n = dist
    bn = float(np.dot(beam, normal))
    hit = beam * (dist / bn) if bn != 0 else np.full(3, np.nan)
    return LabGeometry(
        frame=R, wavelength_A=cfg.lambda0 * 1e10, beam=_t(beam), pixel_size_mm=det.pixel_size * 1000.0,
        fpixels=det.fpixels, spixels=det.spixels, origin=_t(origin), fast=_t(fast), slow=_t(slow),
        normal=_t(normal), distance_mm=dist,
        beam_center_fast_mm=float(np.dot(hit - origin, fast)),
        beam_center_slow_mm=float(np.dot(hit - origin, slow)),
        spindle=_t(_unit(rot(det.spindle))), phi_start_deg=cfg.phi0 * RTD,
        osc_range_deg=prep.sampling.osc * RTD, twotheta_deg=det.twotheta * RTD,
        real_space=tuple(_t(rot(np.asarray(v) * 1e10)) for v in (xtal.a, xtal.b, xtal.c)))


# ---------------------------------------------------------------- writer

def _n(x: float) -> str:
    return repr(float(x) + 0.0) if math.isfinite(x) else "."


def _text_field(name: str, text: str) -> str:
    """A CIF semicolon text field (no line of it may start with ';')."""
    lines = [(" " + ln if ln.startswith(";") else ln) for ln in str(text).splitlines()] or [""]
    return "%s\n;\n%s\n;\n" % (name, "\n".join(lines))


def format_header(geo: LabGeometry, truth: dict, name: str = "image_1") -> str:
    """The imgCIF text before the binary section (everything but ``_array_data``)."""
    g = geo
    src = tuple(-c for c in g.beam)
    d = g.distance_mm
    base = tuple(o - d * n for o, n in zip(g.origin, g.normal))   # ELEMENT_X offset: origin less DETECTOR_Z
    h = ["###CBF: VERSION 1.5, written by nanobrag-numba",
         "# a simulated image: geometry in imgCIF's lab frame (Z towards the source, X along the spindle)",
         "", "data_%s" % name, "",
         "_diffrn.id DIFFRN1", "_diffrn.crystal_id XTAL1", "",
         "_diffrn_source.diffrn_id DIFFRN1", "_diffrn_source.source 'nanoBragg simulation'",
         "_diffrn_source.type nanobrag-numba", "",
         "_diffrn_radiation.diffrn_id DIFFRN1", "_diffrn_radiation.wavelength_id WAVELENGTH1",
         "_diffrn_radiation.probe x-ray", "",
         "_diffrn_radiation_wavelength.id WAVELENGTH1",
         "_diffrn_radiation_wavelength.wavelength %s" % _n(g.wavelength_A),
         "_diffrn_radiation_wavelength.wt 1.0", "",
         "_diffrn_detector.diffrn_id DIFFRN1", "_diffrn_detector.id DETECTOR",
         "_diffrn_detector.type 'nanoBragg simulated detector'", "_diffrn_detector.number_of_axes 1", "",
         "_diffrn_detector_axis.detector_id DETECTOR", "_diffrn_detector_axis.axis_id DETECTOR_Z", "",
         "_diffrn_detector_element.id ELEMENT1", "_diffrn_detector_element.detector_id DETECTOR", "",
         "_diffrn_data_frame.id FRAME1", "_diffrn_data_frame.detector_element_id ELEMENT1",
         "_diffrn_data_frame.array_id IMAGE1", "_diffrn_data_frame.binary_id 1", "",
         "_diffrn_measurement.diffrn_id DIFFRN1", "_diffrn_measurement.id GONIOMETER",
         "_diffrn_measurement.number_of_axes 1", "_diffrn_measurement.method rotation", "",
         "_diffrn_measurement_axis.measurement_id GONIOMETER",
         "_diffrn_measurement_axis.axis_id GONIOMETER_PHI", "",
         "_diffrn_scan.id SCAN1", "_diffrn_scan.frame_id_start FRAME1", "_diffrn_scan.frame_id_end FRAME1",
         "_diffrn_scan.frames 1", "",
         "loop_", "_diffrn_scan_axis.scan_id", "_diffrn_scan_axis.axis_id", "_diffrn_scan_axis.angle_start",
         "_diffrn_scan_axis.angle_range", "_diffrn_scan_axis.angle_increment",
         "_diffrn_scan_axis.displacement_start", "_diffrn_scan_axis.displacement_range",
         "_diffrn_scan_axis.displacement_increment",
         "SCAN1 GONIOMETER_PHI %s %s %s 0.0 0.0 0.0" % (_n(g.phi_start_deg), _n(g.osc_range_deg),
                                                         _n(g.osc_range_deg)),
         "SCAN1 DETECTOR_Z 0.0 0.0 0.0 %s 0.0 0.0" % _n(d),
         "SCAN1 ELEMENT_X 0.0 0.0 0.0 0.0 0.0 0.0",
         "SCAN1 ELEMENT_Y 0.0 0.0 0.0 0.0 0.0 0.0", "",
         "_diffrn_scan_frame.frame_id FRAME1", "_diffrn_scan_frame.frame_number 1",
         "_diffrn_scan_frame.integration_time 1.0", "_diffrn_scan_frame.scan_id SCAN1",
         "_diffrn_scan_frame.date 1970-01-01T00:00:00", "",
         "loop_", "_diffrn_scan_frame_axis.frame_id", "_diffrn_scan_frame_axis.axis_id",
         "_diffrn_scan_frame_axis.angle", "_diffrn_scan_frame_axis.displacement",
         "FRAME1 GONIOMETER_PHI %s 0.0" % _n(g.phi_start_deg),
         "FRAME1 DETECTOR_Z 0.0 %s" % _n(d),
         "FRAME1 ELEMENT_X 0.0 0.0", "FRAME1 ELEMENT_Y 0.0 0.0", "",
         "loop_", "_axis.id", "_axis.type", "_axis.equipment", "_axis.depends_on",
         "_axis.vector[1]", "_axis.vector[2]", "_axis.vector[3]",
         "_axis.offset[1]", "_axis.offset[2]", "_axis.offset[3]",
         "GONIOMETER_PHI rotation goniometer . %s %s %s 0.0 0.0 0.0" % tuple(map(_n, g.spindle)),
         "SOURCE general source . %s %s %s . . ." % tuple(map(_n, src)),
         "GRAVITY general gravity . 0.0 -1.0 0.0 . . .",
         "DETECTOR_Z translation detector . %s %s %s 0.0 0.0 0.0" % tuple(map(_n, g.normal)),
         "ELEMENT_X translation detector DETECTOR_Z %s %s %s %s %s %s"
         % tuple(map(_n, g.fast + base)),
         "ELEMENT_Y translation detector ELEMENT_X %s %s %s 0.0 0.0 0.0" % tuple(map(_n, g.slow)), ""]
    h += ["loop_", "_array_structure_list_axis.axis_set_id", "_array_structure_list_axis.axis_id",
              "_array_structure_list_axis.displacement", "_array_structure_list_axis.displacement_increment",
              "ELEMENT_X ELEMENT_X 0.0 %s" % _n(g.pixel_size_mm),
              "ELEMENT_Y ELEMENT_Y 0.0 %s" % _n(g.pixel_size_mm), "",
              "_array_structure.id IMAGE1", "_array_structure.encoding_type 'signed 32-bit integer'",
              "_array_structure.compression_type 'x-CBF_BYTE_OFFSET'",
              "_array_structure.byte_order little_endian", "",
              "loop_", "_array_structure_list.array_id", "_array_structure_list.index",
              "_array_structure_list.dimension", "_array_structure_list.precedence",
              "_array_structure_list.direction", "_array_structure_list.axis_set_id",
              "IMAGE1 1 %d 1 increasing ELEMENT_X" % g.fpixels,
              "IMAGE1 2 %d 2 increasing ELEMENT_Y" % g.spixels, "",
              "loop_", "_array_element_size.array_id", "_array_element_size.index", "_array_element_size.size",
              "IMAGE1 1 %se-3" % _n(g.pixel_size_mm), "IMAGE1 2 %se-3" % _n(g.pixel_size_mm), "",
              "_array_intensities.array_id IMAGE1", "_array_intensities.binary_id 1",
              "_array_intensities.linearity linear", "_array_intensities.gain 1.0",
              "_array_intensities.overload %s" % truth.get("overload", 65535),
              "_array_intensities.undefined_value -1", ""]
    h.append("# ground truth of the simulation (not imgCIF: nanobrag-numba's own items)")
    for key, value in truth.items():
        if key == "overload":
            continue
        item = "_nanobrag_truth.%s" % key
        if isinstance(value, str) and ("\n" in value or len(value) > 60 or "'" in value):
            h.append(_text_field(item, value).rstrip("\n"))
        elif isinstance(value, str):
            h.append("%s %s" % (item, "'%s'" % value if (not value or " " in value) else value))
        elif isinstance(value, (tuple, list)):
            h.append("%s '%s'" % (item, " ".join(_n(c) for c in value)))
        else:
            h.append("%s %s" % (item, _n(value) if isinstance(value, float) else value))
    h.append("")
    return "\n".join(h) + "\n"


def truth_items(prep, geo: LabGeometry, noise: bool, command_line: Optional[str],
                noise_seed: Optional[int] = None) -> dict:
    """The ``_nanobrag_truth`` items: what a test or a user checks a processed result against."""
    cfg, xtal = prep.cfg, prep.crystal
    a, b, c = geo.real_space
    truth = {
        "real_space_a": a, "real_space_b": b, "real_space_c": c,
        "frame": "imgCIF lab frame of this file; Angstrom; crystal at phi = 0 after the misset",
        "cell": tuple(xtal.cell_lengths) + tuple(xtal.cell_angles),
        "misset_deg": tuple(m * RTD for m in xtal.misset),
        "mosaic_spread_deg": max(cfg.mosaic_spread, 0.0) * RTD,
        "mosaic_domains": max(cfg.mosaic_domains, 1) if cfg.mosaic_spread > 0 else 1,
        "mosaic_seed": cfg.mosaic_seed,
        "misset_seed": cfg.misset_seed,
        "noise_seed": cfg.seed if noise_seed is None else noise_seed,
        "pixels": "noise image (Poisson, noise_seed)" if noise else "int image (no noise)",
        "adc_offset": float(cfg.adc_offset),
        "convention": prep.det.convention,
        "twotheta_deg": geo.twotheta_deg,
        "beam_center_fast_mm": geo.beam_center_fast_mm,
        "beam_center_slow_mm": geo.beam_center_slow_mm,
        "distance_mm": geo.distance_mm,
        # the image is the mean over phi_start + k*phi_step_deg, k < phi_steps (C's sampling), not over the
        # whole range: a program that integrates over [phi_start, phi_start + osc] sees the crystal
        # osc/(2*phi_steps) degrees later than it was rendered
        "phi_steps": int(prep.sampling.phisteps),
        "phi_step_deg": prep.sampling.phistep * RTD,
    }
    if command_line:
        truth["command_line"] = "nanoBragg " + " ".join(str(command_line).split())
    return truth


def format_cbf(header: str, data) -> bytes:
    """Header text plus the MIME-framed byte-offset binary section of ``data`` (slow, fast)."""
    arr = np.asarray(data)
    if arr.ndim != 2 or arr.dtype.kind not in "iu":
        raise ValueError("CBF pixels must be a 2-D integer array (slow, fast), got %s %s" % (arr.dtype, arr.shape))
    if arr.size and (int(arr.min()) < -2 ** 31 or int(arr.max()) >= 2 ** 31):
        raise ValueError("CBF pixels must fit in signed 32 bits")
    packed = byte_offset_encode(arr)
    md5 = base64.b64encode(hashlib.md5(packed).digest()).decode("ascii")
    mime = "\r\n".join([
        "--CIF-BINARY-FORMAT-SECTION--",
        "Content-Type: application/octet-stream;",
        '     conversions="x-CBF_BYTE_OFFSET"',
        "Content-Transfer-Encoding: BINARY",
        "X-Binary-Size: %d" % len(packed),
        "X-Binary-ID: 1",
        'X-Binary-Element-Type: "signed 32-bit integer"',
        "X-Binary-Element-Byte-Order: LITTLE_ENDIAN",
        "Content-MD5: %s" % md5,
        "X-Binary-Number-of-Elements: %d" % arr.size,
        "X-Binary-Size-Fastest-Dimension: %d" % arr.shape[1],
        "X-Binary-Size-Second-Dimension: %d" % arr.shape[0],
        "X-Binary-Size-Padding: 4095",
        "", ""])
    text = (header + "_array_data.array_id IMAGE1\n_array_data.binary_id 1\n_array_data.data\n;\n")
    tail = b"\r\n--CIF-BINARY-FORMAT-SECTION----\r\n;\n\n"
    return (text.replace("\n", "\r\n").encode("ascii", "replace") + mime.encode("ascii")
            + b"\x0c\x1a\x04\xd5" + packed + b"\x00" * 4095 + tail)


def write_cbf(path, prep, data, noise: bool = False, command_line: Optional[str] = None,
              noise_seed: Optional[int] = None) -> None:
    """Write ``data`` (the int or noise image of ``prep``'s run) as a full-geometry CBF, atomically."""
    geo = lab_geometry(prep)
    truth = truth_items(prep, geo, noise, command_line, noise_seed)
    atomic_write_bytes(path, (format_cbf(format_header(geo, truth), data),))


def read_cbf(path) -> Tuple[str, np.ndarray]:
    """(header text, int64 pixels of shape (slow, fast)) of a file written by :func:`write_cbf`."""
    with open(path, "rb") as fh:
        raw = fh.read()
    start = raw.index(b"\x0c\x1a\x04\xd5")
    head = raw[:start].decode("ascii", "replace")
    fields = {}
    for line in head.replace("\r\n", "\n").split("\n"):
        if line.startswith("X-Binary-") and ":" in line:
            k, v = line.split(":", 1)
            fields[k.strip()] = v.strip()
    size = int(fields["X-Binary-Size"])
    fast = int(fields["X-Binary-Size-Fastest-Dimension"])
    slow = int(fields["X-Binary-Size-Second-Dimension"])
    packed = raw[start + 4:start + 4 + size]
    return head, byte_offset_decode(packed, fast * slow).reshape(slow, fast)
