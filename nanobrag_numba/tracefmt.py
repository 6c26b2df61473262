"""TRACE_PY lines: one pixel's factors, written and read like the C traces.

The instrumented C build that wrote ``golden/cases/*/trace_c.log`` prints,
for the traced pixel, one block of lines per detector layer and sub-pixel
(``pix0_vector_meters`` ... ``F_cell``) and then the normalisation factors
once (``I_before_scaling`` ... ``floatimage_accumulated``).  Each block
shows the first evaluation of its layer and sub-pixel: first source, first
phi step, first mosaic domain.  ``cos_2theta`` is the one value taken from
the last evaluation of the pixel (last layer, sub-pixel and source).  This
module writes the same keys in the same order and number formats (``%.15g``
for the per-pixel lines, ``%g`` for the ``name=value`` set-up lines, as C),
with the prefix ``TRACE_PY``, and reads back either kind of log for
``nanobrag-numba compare`` (see docs/trace.md).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple, Union

from .errors import NanoBraggError

PREFIX_PY = "TRACE_PY"
PREFIX_C = "TRACE_C"
R_E = 2.81794117756025e-15

#: per-pixel keys printed once per (layer, sub-pixel), in C's order
BLOCK_KEYS = (
    "pix0_vector_meters", "fdet_vec", "sdet_vec", "pixel_pos_meters", "R_distance_meters",
    "omega_pixel_sr", "close_distance_meters", "obliquity_factor", "diffracted_vec", "incident_vec",
    "lambda_meters", "lambda_angstroms", "scattering_vec_A_inv",
    "rot_a_angstroms", "rot_b_angstroms", "rot_c_angstroms",
    "rot_a_star_A_inv", "rot_b_star_A_inv", "rot_c_star_A_inv",
    "hkl_frac", "hkl_rounded", "F_latt_a", "F_latt_b", "F_latt_c", "F_latt", "F_cell",
)
#: per-pixel keys printed once after the loops, in C's order
FINAL_KEYS = (
    "I_before_scaling", "r_e_meters", "r_e_sqr", "fluence_photons_per_m2", "steps",
    "oversample_thick", "oversample_polar", "oversample_omega",
    "capture_fraction", "polar", "omega_pixel", "cos_2theta", "I_pixel_final", "floatimage_accumulated",
)
#: keys only we print: the weight of the source shown (weighted sources, default mode) and the
#: water background added after the scale when it is corrected
EXTRA_KEYS = ("source_weight", "I_background")

#: pipeline order of the comparison: the first stage holding a divergence is named
STAGES = ("geometry", "vectors", "hkl", "F_latt", "F_cell", "I_before_scaling", "scaling", "final")
_STAGE_KEYS = {
    "geometry": ("pix0_vector_meters", "fdet_vec", "sdet_vec", "pixel_pos_meters", "R_distance_meters",
                 "omega_pixel_sr", "close_distance_meters", "obliquity_factor"),
    "vectors": ("diffracted_vec", "incident_vec", "lambda_meters", "lambda_angstroms", "source_weight",
                "scattering_vec_A_inv",
                "rot_a_angstroms", "rot_b_angstroms", "rot_c_angstroms",
                "rot_a_star_A_inv", "rot_b_star_A_inv", "rot_c_star_A_inv"),
    "hkl": ("hkl_frac", "hkl_rounded"),
    "F_latt": ("F_latt_a", "F_latt_b", "F_latt_c", "F_latt"),
    "F_cell": ("F_cell",),
    "I_before_scaling": ("I_before_scaling",),
    "scaling": ("r_e_meters", "r_e_sqr", "fluence_photons_per_m2", "steps", "oversample_thick",
                "oversample_polar", "oversample_omega", "capture_fraction", "polar", "omega_pixel",
                "cos_2theta"),
    "final": ("I_background", "I_pixel_final", "floatimage_accumulated"),
}
STAGE_OF = {key: stage for stage, keys in _STAGE_KEYS.items() for key in keys}
#: the factors of the one normalisation, I_pixel_final = r_e_sqr fluence I / steps * capture * polar * omega
SCALING_FACTORS = _STAGE_KEYS["scaling"]

Value = Union[float, str]


@dataclass(frozen=True)
class Entry:
    """One quantity of a trace.

    Attributes
    ----------
    kind : str
        ``detector`` (``DETECTOR_*`` lines), ``setup`` (``PREFIX:name=value``)
        or ``pixel`` (``PREFIX: name value...``).
    key : str
        The quantity's name.
    occurrence : int
        0 for the first line with this key, 1 for the second (the next
        layer or sub-pixel), ...
    values : tuple
        Numbers (float) or, where a token is not a number, its text.
    """

    kind: str
    key: str
    occurrence: int
    values: Tuple[Value, ...]

    @property
    def stage(self) -> str:
        """Pipeline stage (one of :data:`STAGES`); detector and set-up lines are geometry."""
        return STAGE_OF.get(self.key, "geometry" if self.kind != "pixel" else "final")

    @property
    def label(self) -> str:
        """Key with the block number when the key repeats (``pixel_pos_meters[1]``)."""
        return self.key if self.occurrence == 0 else "%s[%d]" % (self.key, self.occurrence)


# ---------------------------------------------------------------- writing

def _g15(x: float) -> str:
    return "%.15g" % x


def _vec15(v: Sequence[float]) -> str:
    return " ".join(_g15(float(x)) for x in v)


def _vecg(v: Sequence[float]) -> str:
    return " ".join("%g" % float(x) for x in v)


def detector_lines(det) -> List[str]:
    """The ``DETECTOR_*`` lines (axes and pix0 in metres), as the C trace prints them."""
    return ["DETECTOR_FAST_AXIS " + _vec15(det.fdet),
            "DETECTOR_SLOW_AXIS " + _vec15(det.sdet),
            "DETECTOR_NORMAL_AXIS " + _vec15(det.odet),
            "DETECTOR_PIX0_VECTOR " + _vec15(det.pix0)]


def setup_lines(prep, prefix: str = PREFIX_PY) -> List[str]:
    """The ``PREFIX:name=value`` detector set-up lines whose meaning matches C's.

    C's fixed-text lines (``initial_*det``, ``convention_mapping``,
    ``beam_center_m``, the rotation matrices) are not written; see
    docs/trace.md.
    """
    cfg, det = prep.cfg, prep.det
    out = ["%s:detector_convention=%s" % (prefix, det.convention),
           "%s:angles_rad=rotx:%g roty:%g rotz:%g twotheta:%g"
           % (prefix, cfg.detector_rotx, cfg.detector_roty, cfg.detector_rotz, det.twotheta),
           "%s:twotheta_axis=%s" % (prefix, _vecg(det.twotheta_axis)),
           "%s:fdet_after_twotheta=%s" % (prefix, _vecg(det.fdet)),
           "%s:sdet_after_twotheta=%s" % (prefix, _vecg(det.sdet)),
           "%s:odet_after_twotheta=%s" % (prefix, _vecg(det.odet)),
           "%s:Fbeam_m=%g" % (prefix, det.Fbeam),
           "%s:Sbeam_m=%g" % (prefix, det.Sbeam),
           "%s:distance_m=%g" % (prefix, det.distance)]
    if det.pivot == "BEAM":
        out += ["%s:term_fast=%s" % (prefix, _vecg([-det.Fbeam * c for c in det.fdet])),
                "%s:term_slow=%s" % (prefix, _vecg([-det.Sbeam * c for c in det.sdet])),
                "%s:term_beam=%s" % (prefix, _vecg([det.distance * c for c in det.beam]))]
    out.append("%s:pix0_vector=%s" % (prefix, _vecg(det.pix0)))
    return out


def block_rows(rows, columns) -> list:
    """The evaluation shown for each (layer, sub-pixel): its first recorded row."""
    col = {name: i for i, name in enumerate(columns)}
    seen = set()
    picked = []
    for row in rows:
        block = (row[col["thick_tic"]], row[col["subS"]], row[col["subF"]])
        if block not in seen:
            seen.add(block)
            picked.append(row)
    return picked


def pixel_values(prep, image, spixel: int, fpixel: int):
    """Every per-pixel quantity of the trace as ``[(key, values, kind)]``.

    ``kind`` is ``"g"`` (``%.15g``) or ``"d"`` (integer).  Runs the pixel
    through the CPU kernel with recording on (:func:`nanobrag_numba.trace.trace_pixel`).
    """
    from .kernels.physics import TRACE_COLUMNS
    from .simulator import R_E_SQR
    from .trace import trace_params, trace_pixel

    params = trace_params(prep, image)
    rows, result = trace_pixel(prep, spixel, fpixel, params)
    col = {name: i for i, name in enumerate(TRACE_COLUMNS)}
    det, xtal = prep.det, prep.crystal
    out = []

    def put(key, values, kind="g"):
        out.append((key, tuple(values), kind))

    def three(row, prefix, scale=1.0):
        return [row[col[prefix + a]] * scale for a in ("_x", "_y", "_z")] if prefix else []

    # weighted sources (default mode, weights not all equal): each block also shows its source's weight
    weights = prep.sources[:, 4] if prep.sources.shape[1] > 4 else None
    weighted = weights is not None and bool((weights != 1.0).any())
    for row in block_rows(rows, TRACE_COLUMNS):
        airpath = row[col["airpath"]]
        lam = row[col["lambda"]]
        put("pix0_vector_meters", det.pix0)
        put("fdet_vec", det.fdet)
        put("sdet_vec", det.sdet)
        put("pixel_pos_meters", three(row, "pixel_pos"))
        put("R_distance_meters", [airpath])
        put("omega_pixel_sr", [row[col["omega_pixel"]]])
        put("close_distance_meters", [det.close_distance])
        put("obliquity_factor", [det.close_distance / airpath])
        put("diffracted_vec", three(row, "diffracted"))
        put("incident_vec", three(row, "incident"))
        put("lambda_meters", [lam])
        put("lambda_angstroms", [lam * 1e10])
        if weighted:
            put("source_weight", [weights[int(row[col["source"]])]])
        put("scattering_vec_A_inv", three(row, "scattering"))
        put("rot_a_angstroms", three(row, "a", 1e10))
        put("rot_b_angstroms", three(row, "b", 1e10))
        put("rot_c_angstroms", three(row, "c", 1e10))
        put("rot_a_star_A_inv", xtal.a_star)
        put("rot_b_star_A_inv", xtal.b_star)
        put("rot_c_star_A_inv", xtal.c_star)
        put("hkl_frac", [row[col["h"]], row[col["k"]], row[col["l"]]])
        put("hkl_rounded", [row[col["h0"]], row[col["k0"]], row[col["l0"]]], "d")
        put("F_latt_a", [row[col["F_latt_a"]]])
        put("F_latt_b", [row[col["F_latt_b"]]])
        put("F_latt_c", [row[col["F_latt_c"]]])
        put("F_latt", [row[col["F_latt"]]])
        put("F_cell", [row[col["F_cell"]]])

    I, cap_f, polar_f, omega_f, bg = result[0], result[1], result[2], result[3], result[4]
    cfg = prep.cfg
    last = rows[-1] if rows.shape[0] else None
    put("I_before_scaling", [I])
    put("r_e_meters", [R_E])
    put("r_e_sqr", [R_E_SQR])
    put("fluence_photons_per_m2", [prep.fluence])
    put("steps", [prep.steps], "d")
    put("oversample_thick", [int(bool(cfg.oversample_thick))], "d")
    put("oversample_polar", [int(bool(cfg.oversample_polar))], "d")
    put("oversample_omega", [int(bool(cfg.oversample_omega))], "d")
    # C prints its variables as the loops leave them (also where the oversample flags applied them already)
    put("capture_fraction", [last[col["capture_fraction"]] if last is not None else cap_f])
    put("polar", [last[col["polar"]] if last is not None else polar_f])
    put("omega_pixel", [last[col["omega_pixel"]] if last is not None else omega_f])
    if last is not None:
        inc = three(last, "incident")
        dif = three(last, "diffracted")
        put("cos_2theta", [inc[0] * dif[0] + inc[1] * dif[1] + inc[2] * dif[2]])
    # the scale exactly as simulator.normalise applies it (same order of products)
    final = R_E_SQR * prep.fluence * I / prep.steps
    final = final * cap_f
    final = final * polar_f
    final = final * omega_f
    if prep.I_bg != 0.0 and not cfg.c_quirks:
        put("I_background", [prep.I_bg * bg])
        final = final + prep.I_bg * bg
    put("I_pixel_final", [final])
    if image is not None:
        put("floatimage_accumulated", [float(image.floatimage[spixel, fpixel])])
    return out


def _format_value(v, kind):
    if kind == "d":
        return "%d" % int(v)
    return _g15(float(v))


def format_trace(prep, image, spixel: int, fpixel: int, prefix: str = PREFIX_PY) -> List[str]:
    """All trace lines of one pixel: ``DETECTOR_*``, set-up and ``TRACE_PY:`` lines.

    Parameters
    ----------
    prep : simulator.Prepared
    image : simulator.Image or None
        The rendered image (for ``floatimage_accumulated``; the interpolation
        switch-off of ``-c_quirks`` is taken from it too).  Any back end.
    spixel, fpixel : int
        The pixel (slow, fast), inside the detector.
    prefix : str
        Line prefix, ``TRACE_PY`` by default.

    Returns
    -------
    list of str
    """
    det = prep.det
    lines = detector_lines(det)[:3] + setup_lines(prep, prefix) + detector_lines(det)[3:]
    lines.append("TRACE_CONFIG: tracing pixel (spixel=%d, fpixel=%d)" % (spixel, fpixel))
    for key, values, kind in pixel_values(prep, image, spixel, fpixel):
        lines.append("%s: %s %s" % (prefix, key, " ".join(_format_value(v, kind) for v in values)))
    return lines


# ---------------------------------------------------------------- reading

_NUM = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^[-+]?(nan|inf|infinity)$", re.IGNORECASE)


def _number(token: str) -> Value:
    """A float for a numeric token (``X:1.3e-05`` reads as 1.3e-05), else the text."""
    t = token.strip("[];,")
    if ":" in t:
        t = t.rsplit(":", 1)[1]
    if _NUM.match(t):
        return float(t)
    return token


def _values(text: str) -> Tuple[Value, ...]:
    tokens = text.replace(";", " ").replace("[", " ").replace("]", " ").split()
    return tuple(_number(t) for t in tokens)


@dataclass
class Trace:
    """A parsed trace log (one program's lines)."""

    prefix: Optional[str]
    entries: List[Entry]
    pixel: Optional[Tuple[int, int]] = None

    def get(self, key: str, occurrence: int = 0) -> Optional[Entry]:
        """The entry of ``key`` (its ``occurrence``-th line), None when absent."""
        for e in self.entries:
            if e.key == key and e.occurrence == occurrence:
                return e
        return None

    def keys(self) -> List[str]:
        """Distinct keys, in order of first appearance."""
        return list(dict.fromkeys(e.key for e in self.entries))


_CONFIG = re.compile(r"TRACE_CONFIG:\s*tracing pixel \(spixel=(-?\d+), fpixel=(-?\d+)\)")


def parse_trace(lines: Iterable[str], prefix: Optional[str] = None, source: str = "trace") -> Trace:
    """Read the trace lines of one program.

    Parameters
    ----------
    lines : iterable of str
        A log (other lines are ignored).  ``TRACE:`` (crystal set-up prose)
        and ``TRACE_CONFIG:`` lines are skipped; the latter gives the pixel.
    prefix : str, optional
        ``TRACE_C`` or ``TRACE_PY``; by default the prefix found in the log
        (an error if it holds both).
    source : str
        Name of the log for error messages.

    Raises
    ------
    NanoBraggError
        When the log has no trace line or mixes both prefixes without
        ``prefix``.
    """
    lines = [ln.rstrip("\r\n") for ln in lines]
    found = {p for p in (PREFIX_C, PREFIX_PY) for ln in lines if ln.startswith(p + ":")}
    if prefix is None:
        if len(found) > 1:
            raise NanoBraggError("%s holds both TRACE_C and TRACE_PY lines; give one program's log" % source)
        prefix = found.pop() if found else None
    entries: List[Entry] = []
    count = {}
    pixel = None

    def add(kind, key, values):
        n = count.get((kind, key), 0)
        count[(kind, key)] = n + 1
        entries.append(Entry(kind, key, n, values))

    for ln in lines:
        m = _CONFIG.match(ln)
        if m:
            pixel = (int(m.group(1)), int(m.group(2)))
            continue
        if ln.startswith("DETECTOR_"):
            parts = ln.split(None, 1)
            add("detector", parts[0], _values(parts[1] if len(parts) > 1 else ""))
            continue
        if prefix is None or not ln.startswith(prefix + ":"):
            continue
        body = ln[len(prefix) + 1:]
        if body.startswith(" "):
            parts = body.split(None, 1)
            if not parts:
                continue
            add("pixel", parts[0], _values(parts[1] if len(parts) > 1 else ""))
        elif "=" in body:
            key, text = body.split("=", 1)
            add("setup", key.strip(), _values(text))
    if not any(e.kind == "pixel" for e in entries):
        raise NanoBraggError("%s has no per-pixel trace lines (TRACE_C: or TRACE_PY: key value...)" % source)
    return Trace(prefix=prefix, entries=entries, pixel=pixel)


def read_trace(path: str, prefix: Optional[str] = None) -> Trace:
    """:func:`parse_trace` of a file; a missing or unreadable file is a NanoBraggError."""
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError as exc:
        raise NanoBraggError("cannot read trace log %s: %s" % (path, exc.strerror or exc)) from None
    return parse_trace(text.splitlines(), prefix, source=path)


def relative_difference(a: Sequence[Value], b: Sequence[Value]) -> float:
    """Difference of two lines of values, relative to the larger magnitude.

    For a vector the scale is the largest component of either side, so a
    component that is zero on one side and 1e-18 on the other does not
    count as a divergence.  Text tokens must be equal (else ``inf``), lines
    of different lengths differ (``inf``), NaN equals NaN.
    """
    if len(a) != len(b):
        return math.inf
    worst = 0.0
    nums = []
    for x, y in zip(a, b):
        if isinstance(x, str) or isinstance(y, str):
            if x != y:
                return math.inf
            continue
        if math.isnan(x) or math.isnan(y):
            if not (math.isnan(x) and math.isnan(y)):
                return math.inf
            continue
        if math.isinf(x) or math.isinf(y):
            if x != y:
                return math.inf
            continue
        nums.append((x, y))
    if not nums:
        return 0.0
    scale = max(max(abs(x), abs(y)) for x, y in nums)
    if scale == 0.0:
        return 0.0
    for x, y in nums:
        worst = max(worst, abs(x - y) / scale)
    return worst
