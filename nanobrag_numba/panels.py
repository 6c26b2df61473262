"""Multi-panel detectors: ``-detector_json`` descriptions and DIALS experiment lists (``-expt``).

A multi-panel detector is rendered as one image whose rows are the panels'
rows, panel after panel: every panel has the same number of pixels (fast x
slow), panel k is image rows ``k*slow .. (k+1)*slow - 1``, so the float
image is the stack (panels, slow, fast) and one kernel call renders every
panel.  The kernels read each panel's geometry from a table
(``kernels.physics.PANEL_COLUMNS``); the per-pixel physics is unchanged.

Frames: panels and vectors are stored here in nanoBragg's lab frame (metres).
DIALS's lab frame (the one ``dials.import`` writes) has z towards the source
and x along the usual rotation axis; nanoBragg's MOSFLM frame has x along the
beam and z along the spindle, so ``ours = (-z, y, x)`` of DIALS's
(:func:`from_dials`; the relation of ``geometry.dials_origin``).

See docs/multipanel.md for the JSON schema.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import List, Optional, Tuple

import numpy as np

from . import vectors as V
from .errors import NanoBraggError

Vec3 = Tuple[float, float, float]


def from_dials(v) -> Vec3:
    """A vector of DIALS's lab frame in nanoBragg's (MOSFLM) lab frame."""
    return (-float(v[2]), float(v[1]), float(v[0]))


def to_dials(v) -> Vec3:
    """A vector of nanoBragg's lab frame in DIALS's lab frame (inverse of :func:`from_dials`)."""
    return (float(v[2]), float(v[1]), -float(v[0]))


@dataclass(frozen=True)
class Panel:
    """One detector panel in nanoBragg's lab frame (metres, unit vectors)."""

    name: str
    origin: Vec3            # outer corner of the first pixel (fast 0, slow 0): nanoBragg's pix0
    fast: Vec3
    slow: Vec3
    normal: Vec3            # away from the sample
    pixel_size: float
    fpixels: int
    spixels: int
    thickness: Optional[float] = None   # m; None: the flags' -detector_thick
    mu: Optional[float] = None          # 1/m; None: the flags' -detector_abs
    mask: Tuple[Tuple[int, int, int, int], ...] = ()   # (f0, s0, f1, s1): pixels f0 <= f < f1, s0 <= s < s1 off


def _where(source, k, key=None):
    return "%s panel %d%s" % (source, k, " %r" % key if key else "")


def _number(source, k, key, v, positive=False, allow_zero=False):
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise NanoBraggError("%s: %r is not a number" % (_where(source, k, key), v)) from None
    if isinstance(v, bool) or not math.isfinite(x):
        raise NanoBraggError("%s: %r is not a finite number" % (_where(source, k, key), v))
    if positive and not (x > 0 or (allow_zero and x == 0)):
        raise NanoBraggError("%s must be %s, got %g" % (_where(source, k, key),
                                                         "0 or more" if allow_zero else "positive", x))
    return x


def _vector(source, k, key, v):
    if not isinstance(v, (list, tuple)) or len(v) != 3:
        raise NanoBraggError("%s must be three numbers, got %r" % (_where(source, k, key), v))
    out = tuple(_number(source, k, key, c) for c in v)
    if out == (0.0, 0.0, 0.0):
        raise NanoBraggError("%s is the zero vector" % _where(source, k, key))
    return out


def _pixels(source, k, key, v):
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise NanoBraggError("%s must be [fast, slow] pixels, got %r" % (_where(source, k, key), v))
    out = []
    for c in v:
        if isinstance(c, bool) or not isinstance(c, (int, float)) or float(c) != int(c) or int(c) <= 0:
            raise NanoBraggError("%s must be two positive whole numbers (fast, slow), got %r"
                                 % (_where(source, k, key), v))
        out.append(int(c))
    return tuple(out)


def _pixel_size(source, k, key, v):
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise NanoBraggError("%s must be one number or [fast, slow], got %r" % (_where(source, k, key), v))
        f, s = (_number(source, k, key, c, positive=True) for c in v)
        if f != s:
            raise NanoBraggError("%s: rectangular pixels (%g x %g mm) are not supported (nanoBragg's pixels "
                                 "are square)" % (_where(source, k, key), f, s))
        return f
    return _number(source, k, key, v, positive=True)


def _mask(source, k, v, size):
    if v is None:
        return ()
    if not isinstance(v, list):
        raise NanoBraggError("%s must be a list of [f0, s0, f1, s1] rectangles, got %r"
                             % (_where(source, k, "mask"), v))
    out = []
    for r in v:
        if (not isinstance(r, (list, tuple)) or len(r) != 4
                or not all(isinstance(c, int) and not isinstance(c, bool) for c in r)):
            raise NanoBraggError("%s: each rectangle is four whole numbers [f0, s0, f1, s1], got %r"
                                 % (_where(source, k, "mask"), r))
        f0, s0, f1, s1 = r
        if not (0 <= f0 <= f1 <= size[0] and 0 <= s0 <= s1 <= size[1]):
            raise NanoBraggError("%s: rectangle %r is not inside the panel's %d x %d pixels"
                                 % (_where(source, k, "mask"), r, size[0], size[1]))
        out.append(tuple(r))
    return tuple(out)


def _orthonormal(source, k, fast, slow, normal=None):
    fast, _ = V.unitize(fast)
    slow, _ = V.unitize(slow)
    if abs(V.dot(fast, slow)) > 1e-6:
        raise NanoBraggError("%s: the fast and slow axes are not perpendicular (cos = %g)"
                             % (_where(source, k), V.dot(fast, slow)))
    if normal is None:
        normal, _ = V.unitize(V.cross(fast, slow))
    else:
        normal, _ = V.unitize(normal)
        if abs(V.dot(normal, fast)) > 1e-6 or abs(V.dot(normal, slow)) > 1e-6:
            raise NanoBraggError("%s: the normal is not perpendicular to the fast and slow axes" % _where(source, k))
    return fast, slow, normal


def _away(origin, normal):
    """The normal pointing away from the sample (nanoBragg's odet: the omega and parallax factors need it)."""
    if V.dot(origin, normal) < 0:
        return tuple(-c for c in normal)
    return normal


def _load_json(path, what):
    from .io.textcols import read_input
    try:
        raw = read_input(path, what)[1]
    except NanoBraggError:
        raise
    except OSError as exc:
        raise NanoBraggError("cannot read %s %s: %s" % (what, path, exc.strerror or exc)) from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise NanoBraggError("%s %s is not valid JSON: %s" % (what, path, exc)) from None


def read_detector_json(path: str) -> List[Panel]:
    """The panels of a ``-detector_json`` file (schema: docs/multipanel.md)."""
    doc = _load_json(path, "detector description")
    source = path
    if not isinstance(doc, dict) or not isinstance(doc.get("panels"), list):
        raise NanoBraggError("%s: expected an object with a list \"panels\"" % path)
    frame = doc.get("frame", "nanobragg")
    if frame not in ("nanobragg", "dials"):
        raise NanoBraggError("%s: \"frame\" must be \"nanobragg\" or \"dials\", got %r" % (path, frame))
    conv = from_dials if frame == "dials" else (lambda v: v)
    if not doc["panels"]:
        raise NanoBraggError("%s: the detector has no panels" % path)
    panels = []
    for k, d in enumerate(doc["panels"]):
        if not isinstance(d, dict):
            raise NanoBraggError("%s: expected an object, got %r" % (_where(source, k), d))
        for key in ("origin_mm", "fast_axis", "slow_axis", "pixel_size_mm", "image_size"):
            if key not in d:
                raise NanoBraggError("%s has no %r" % (_where(source, k), key))
        unknown = set(d) - {"name", "origin_mm", "fast_axis", "slow_axis", "normal", "pixel_size_mm",
                            "image_size", "thickness_mm", "mu_per_mm", "mask"}
        if unknown:
            raise NanoBraggError("%s: unknown key(s) %s" % (_where(source, k), ", ".join(sorted(unknown))))
        origin = conv(tuple(c / 1000.0 for c in _vector(source, k, "origin_mm", d["origin_mm"])))
        fast = conv(_vector(source, k, "fast_axis", d["fast_axis"]))
        slow = conv(_vector(source, k, "slow_axis", d["slow_axis"]))
        normal = conv(_vector(source, k, "normal", d["normal"])) if "normal" in d else None
        fast, slow, normal = _orthonormal(source, k, fast, slow, normal)
        size = _pixels(source, k, "image_size", d["image_size"])
        thick = (_number(source, k, "thickness_mm", d["thickness_mm"], positive=True, allow_zero=True) / 1000.0
                 if d.get("thickness_mm") is not None else None)
        mu = (_number(source, k, "mu_per_mm", d["mu_per_mm"], positive=True) * 1000.0
              if d.get("mu_per_mm") is not None else None)
        panels.append(Panel(name=str(d.get("name", "panel%d" % k)), origin=origin, fast=fast, slow=slow,
                            normal=_away(origin, normal),
                            pixel_size=_pixel_size(source, k, "pixel_size_mm", d["pixel_size_mm"]) / 1000.0,
                            fpixels=size[0], spixels=size[1], thickness=thick, mu=mu,
                            mask=_mask(source, k, d.get("mask"), size)))
    return panels


# ---------------------------------------------------------------- DIALS experiment lists

@dataclass(frozen=True)
class Experiment:
    """What nanoBragg takes from a DIALS experiment list (nanoBragg's frame, SI units)."""

    panels: Tuple[Panel, ...]
    lambda0: Optional[float]
    beam: Optional[Vec3]               # direction the X-rays travel
    polar: Optional[Vec3]              # E-vector direction
    kahn: Optional[float]              # 2 * polarization_fraction - 1
    spindle: Optional[Vec3]
    dials_A: Optional[Tuple[float, ...]]   # crystal A = UB (1/A, DIALS frame, row-major), at the scan's datum
    phi0: Optional[float] = None       # radians: the scan's first image starts here
    osc: Optional[float] = None        # radians: the scan's oscillation width per image


def _list3(source, k, key, v):
    if not isinstance(v, (list, tuple)) or len(v) != 3:
        raise NanoBraggError("%s must be three numbers, got %r" % (_where(source, k, key), v))
    return v


def _mat3(source, key, v):
    if not isinstance(v, list) or len(v) != 9:
        raise NanoBraggError("%s: %r must be 9 numbers" % (source, key))
    return np.array([_number(source, 0, key, c) for c in v], dtype=np.float64).reshape(3, 3)


def _hierarchy_frames(source, det):
    """Panel index -> the lab frame of its parent group (origin, fast, slow, normal), DIALS frame.

    In dxtbx's dictionaries a panel entry holds the panel's frame local to
    its parent group; ``hierarchy`` holds the groups' local frames and the
    panels by index, so the groups' frames are composed here.
    """
    out = {}

    def walk(node, d0, d1, d2, origin):
        if "panel" in node:
            out[int(node["panel"])] = (origin, d0, d1, d2)
            return
        try:
            o = np.asarray(node.get("origin", [0, 0, 0]), dtype=float)
            f = np.asarray(node.get("fast_axis", [1, 0, 0]), dtype=float)
            s = np.asarray(node.get("slow_axis", [0, 1, 0]), dtype=float)
        except (TypeError, ValueError):
            raise NanoBraggError("%s: malformed detector hierarchy" % source) from None
        f = f / np.linalg.norm(f)
        s = s / np.linalg.norm(s)
        n = np.cross(f, s)
        # the node's frame in the parent's frame, then the parent's in the lab
        lab_origin = origin + o[0] * d0 + o[1] * d1 + o[2] * d2
        nd0 = f[0] * d0 + f[1] * d1 + f[2] * d2
        nd1 = s[0] * d0 + s[1] * d1 + s[2] * d2
        nd2 = n[0] * d0 + n[1] * d1 + n[2] * d2
        for child in node.get("children", []):
            walk(child, nd0, nd1, nd2, lab_origin)

    h = det.get("hierarchy")
    if isinstance(h, dict):
        eye = np.eye(3)
        walk(h, eye[0], eye[1], eye[2], np.zeros(3))
    return out


def read_expt(path: str, index: int = 0) -> Experiment:
    """Detector, beam, goniometer and crystal of experiment ``index`` of a DIALS ``.expt`` file."""
    doc = _load_json(path, "experiment list")
    if not isinstance(doc, dict) or not isinstance(doc.get("experiment"), list) or not doc["experiment"]:
        raise NanoBraggError("%s: not a DIALS experiment list (no \"experiment\" entries)" % path)
    exp = doc["experiment"][index]

    def model(kind):
        ref = exp.get(kind) if isinstance(exp, dict) else None
        models = doc.get(kind)
        if ref is None or not isinstance(models, list):
            return None
        if not isinstance(ref, int) or not 0 <= ref < len(models) or not isinstance(models[ref], dict):
            raise NanoBraggError("%s: experiment 0 refers to %s %r, which the file does not hold" % (path, kind, ref))
        return models[ref]

    det = model("detector")
    if det is None or not isinstance(det.get("panels"), list) or not det["panels"]:
        raise NanoBraggError("%s: the experiment has no detector panels" % path)
    frames = _hierarchy_frames(path, det)
    panels = []
    for k, d in enumerate(det["panels"]):
        if not isinstance(d, dict):
            raise NanoBraggError("%s: malformed panel %d" % (path, k))
        for key in ("origin", "fast_axis", "slow_axis", "pixel_size", "image_size"):
            if key not in d:
                raise NanoBraggError("%s has no %r" % (_where(path, k), key))
        o = np.asarray([_number(path, k, "origin", c) for c in _list3(path, k, "origin", d["origin"])])
        f = np.asarray(_vector(path, k, "fast_axis", d["fast_axis"]))
        s = np.asarray(_vector(path, k, "slow_axis", d["slow_axis"]))
        if k in frames:
            po, p0, p1, p2 = frames[k]
            o = po + o[0] * p0 + o[1] * p1 + o[2] * p2
            f = f[0] * p0 + f[1] * p1 + f[2] * p2
            s = s[0] * p0 + s[1] * p1 + s[2] * p2
        origin = from_dials(o / 1000.0)
        fast, slow, normal = _orthonormal(path, k, from_dials(f), from_dials(s))
        size = _pixels(path, k, "image_size", d["image_size"])
        thick = d.get("thickness")
        mu = d.get("mu")
        mask = [[int(c) for c in r] if isinstance(r, list) else r for r in d.get("mask", [])]
        panels.append(Panel(name=str(d.get("name", "panel%d" % k)), origin=origin, fast=fast, slow=slow,
                            normal=_away(origin, normal),
                            pixel_size=_pixel_size(path, k, "pixel_size", d["pixel_size"]) / 1000.0,
                            fpixels=size[0], spixels=size[1],
                            thickness=(_number(path, k, "thickness", thick, positive=True, allow_zero=True) / 1000.0
                                       if thick is not None else None),
                            mu=(_number(path, k, "mu", mu, positive=True) * 1000.0 if mu else None),
                            mask=_mask(path, k, mask, size)))

    lambda0 = beam = polar = kahn = None
    b = model("beam")
    if b is not None:
        if "wavelength" in b:
            lambda0 = _number(path, 0, "wavelength", b["wavelength"], positive=True) * 1e-10
        if "direction" in b:
            # dxtbx's direction points to the source (s0 = -direction / wavelength)
            beam, _ = V.unitize(from_dials([-c for c in _vector(path, 0, "beam direction", b["direction"])]))
        if "polarization_normal" in b and beam is not None:
            n = from_dials(_vector(path, 0, "polarization_normal", b["polarization_normal"]))
            e, mag = V.unitize(V.cross(n, beam))
            if mag > 0:
                polar = e
        if "polarization_fraction" in b:
            kahn = 2.0 * _number(path, 0, "polarization_fraction", b["polarization_fraction"]) - 1.0
    spindle = None
    setting = np.eye(3)
    fixed = np.eye(3)
    g = model("goniometer")
    if g is not None:
        if "setting_rotation" in g:
            setting = _mat3(path, "setting_rotation", g["setting_rotation"])
        if "fixed_rotation" in g:
            fixed = _mat3(path, "fixed_rotation", g["fixed_rotation"])
        if "rotation_axis" in g:
            axis = setting @ np.asarray(_vector(path, 0, "rotation_axis", g["rotation_axis"]))
            spindle, _ = V.unitize(from_dials(axis))
    phi0 = osc = None
    sc = model("scan")
    if sc is not None and "oscillation" in sc:
        o = sc["oscillation"]
        if not isinstance(o, list) or len(o) != 2:
            raise NanoBraggError("%s: the scan's oscillation must be [start, width] in degrees, got %r" % (path, o))
        phi0 = math.radians(_number(path, 0, "oscillation", o[0]))
        width = _number(path, 0, "oscillation", o[1])
        osc = math.radians(width) if width > 0 else None
    dials_A = None
    c = model("crystal")
    if c is not None:
        try:
            real = np.array([c["real_space_a"], c["real_space_b"], c["real_space_c"]], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise NanoBraggError("%s: the crystal needs real_space_a, real_space_b and real_space_c" % path) from None
        if real.shape != (3, 3) or not np.all(np.isfinite(real)) or abs(np.linalg.det(real)) < 1e-9:
            raise NanoBraggError("%s: the crystal's real-space vectors are not three independent vectors" % path)
        # A = UB: columns a*, b*, c* (the inverse of the matrix with rows a, b, c); the lab-frame crystal
        # at the datum of the goniometer is S F A
        A = setting @ fixed @ np.linalg.inv(real)
        dials_A = tuple(float(x) for x in A.reshape(-1))
    return Experiment(panels=tuple(panels), lambda0=lambda0, beam=beam, polar=polar, kahn=kahn,
                      spindle=spindle, dials_A=dials_A, phi0=phi0, osc=osc)


#: (Experiment field, Config field) of what an experiment list gives as a default, where it gives it
_EXPT_DEFAULTS = (("lambda0", "lambda0"), ("beam", "beam_vector"), ("polar", "polar_vector"),
                  ("kahn", "polarization"), ("spindle", "spindle_vector"), ("dials_A", "dials_A"),
                  ("phi0", "phi0"), ("osc", "osc"))


def apply_expt_defaults(cfg, path: str) -> None:
    """Take the beam, goniometer and crystal of a DIALS experiment list as defaults (before any flag).

    The detector itself is read when the run is prepared (``cfg.expt``).
    """
    exp = read_expt(path)
    cfg.expt = path
    cfg.convention = "CUSTOM"
    for field, setting in _EXPT_DEFAULTS:
        value = getattr(exp, field)
        if value is not None:
            setattr(cfg, setting, value)

def dials_A_vectors(A) -> Tuple[Vec3, Vec3, Vec3]:
    """a*, b*, c* (1/A, nanoBragg's frame) from a DIALS A matrix (row-major 9 numbers, DIALS frame)."""
    m = [float(x) for x in A]
    if len(m) != 9 or not all(math.isfinite(x) for x in m):
        raise NanoBraggError("dials_A must be 9 finite numbers (the crystal's A = UB matrix, row-major)")
    return tuple(from_dials((m[j], m[3 + j], m[6 + j])) for j in range(3))


def load_panels(cfg) -> Optional[List[Panel]]:
    """The panels of ``cfg.detector_json`` or ``cfg.expt``; None for the flags' monolithic detector."""
    if cfg.detector_json is not None and cfg.expt is not None:
        raise NanoBraggError("-detector_json and -expt both describe the detector: give one")
    if cfg.detector_json is not None:
        panels = read_detector_json(cfg.detector_json)
    elif cfg.expt is not None:
        panels = list(read_expt(cfg.expt).panels)
    else:
        return None
    sizes = {(p.fpixels, p.spixels) for p in panels}
    if len(sizes) > 1:
        raise NanoBraggError("%s: the panels must all have the same size in pixels (found %s)"
                             % (cfg.detector_json or cfg.expt,
                                ", ".join("%dx%d" % s for s in sorted(sizes))))
    return panels


#: Config fields of the flags' detector geometry, which a panel description replaces (field, flag)
GEOMETRY_FIELDS = (
    ("distance", "-distance"), ("close_distance", "-close_distance"), ("pixel_size", "-pixel"),
    ("detsize_f", "-detsize"), ("detsize_s", "-detsize"), ("fpixels", "-detpixels"), ("spixels", "-detpixels"),
    ("Xbeam", "-Xbeam"), ("Ybeam", "-Ybeam"), ("Xclose", "-Xclose"), ("Yclose", "-Yclose"), ("ORGX", "-ORGX"),
    ("ORGY", "-ORGY"), ("detector_twotheta", "-twotheta"), ("detector_rotx", "-detector_rotx"),
    ("detector_roty", "-detector_roty"), ("detector_rotz", "-detector_rotz"), ("pix0_vector", "-pix0_vector"),
    ("fdet_vector", "-fdet_vector"), ("sdet_vector", "-sdet_vector"), ("odet_vector", "-odet_vector"),
    ("pivot", "-pivot"),
)


def check_panel_flags(cfg) -> None:
    """Refuse the flags that a panel description replaces or that do not apply to it."""
    import dataclasses
    if cfg.detector_json is not None and cfg.expt is not None:
        raise NanoBraggError("-detector_json and -expt both describe the detector: give one")
    src = cfg.detector_json or cfg.expt
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    if cfg.command_line:
        # a geometry flag given on the command line, even at its default value, has no effect here
        import shlex
        from .flags import TABLE, c_matches
        geometry = {f.name for f in TABLE if set(f.fields) & {name for name, _ in GEOMETRY_FIELDS}
                    or f.name in ("-pivot", "-detsize", "-fdet_vector", "-sdet_vector", "-odet_vector",
                                  "-pix0_vector", "-pix0_vector_mm")}
        try:
            words = shlex.split(cfg.command_line)
        except ValueError:
            words = []
        for w in words:
            hit = [m for m in c_matches(w) if m in geometry] if w.startswith("-") else []
            if hit:
                raise NanoBraggError("%s does not apply: the panels of %s place the detector (edit the panels "
                                     "there)" % (w, src))
    for name, flag in GEOMETRY_FIELDS:
        if getattr(cfg, name) != defaults[name]:
            raise NanoBraggError("%s does not apply: the panels of %s place the detector (edit the panels there)"
                                 % (flag, src))
    if cfg.roi is not None:
        raise NanoBraggError("-roi cannot be used with a panel description (%s): mask pixels off there" % src)
    if cfg.maskfile is not None:
        raise NanoBraggError("-mask cannot be used with a panel description (%s): give the panels' masks there"
                             % src)
    if cfg.curved_detector:
        raise NanoBraggError("-curved_det cannot be used with a panel description (%s)" % src)


def check_panel_outputs(cfg, panels) -> None:
    """Refuse the outputs that hold one panel only (CBF) for a detector of several panels."""
    if len(panels) < 2:
        return
    src = cfg.detector_json or cfg.expt
    if cfg.background_stol is not None:
        raise NanoBraggError("-background is rendered on one panel: a multi-panel detector (%s) is not supported "
                             "with it yet" % src)
    if cfg.psf is not None:
        raise NanoBraggError("-psf spreads light across the image: a multi-panel detector (%s) is not supported "
                             "with it (apply noisify to each panel's float image)" % src)
    for flag, path in (("-cbffile", cfg.cbffile), ("-cbfnoisefile", cfg.cbfnoisefile)):
        if path:
            raise NanoBraggError("%s writes one panel: a multi-panel detector (%s) is written as NXmx (-nxsfile), "
                                 "SMV or PGM files (one per panel)" % (flag, src))


def panel_detector(base, panel: Panel):
    """A ``geometry.Detector`` for one panel (the beam, axes and logs of ``base``), as C places pix0."""
    pix0, fdet, sdet, odet = panel.origin, panel.fast, panel.slow, panel.normal
    ps = panel.pixel_size
    close_distance = V.dot(pix0, odet)
    if close_distance == 0.0:
        raise NanoBraggError("panel %r lies in a plane through the sample" % panel.name)
    ratio = V.dot(base.beam, odet)
    if ratio == 0.0:
        ratio = 2.2250738585072014e-308
    distance = close_distance / ratio
    newv = tuple(distance * b - p for b, p in zip(base.beam, pix0))
    Fbeam, Sbeam = V.dot(fdet, newv), V.dot(sdet, newv)
    Fclose, Sclose = -V.dot(pix0, fdet), -V.dot(pix0, sdet)
    return replace(base, fpixels=panel.fpixels, spixels=panel.spixels, pixel_size=ps,
                   detsize_f=ps * panel.fpixels, detsize_s=ps * panel.spixels, fdet=fdet, sdet=sdet, odet=odet,
                   pix0=pix0, distance=distance, close_distance=close_distance,
                   Xbeam=Fbeam, Ybeam=Sbeam, Fbeam=Fbeam, Sbeam=Sbeam, Xclose=Fclose, Yclose=Sclose,
                   Fclose=Fclose, Sclose=Sclose, ORGX=Fclose / ps + 0.5, ORGY=Sclose / ps + 0.5,
                   dials_origin=tuple(1000.0 * c for c in to_dials(pix0)),
                   roi=(0, panel.fpixels, 0, panel.spixels), panels=())


def stack_detector(base, panels: List[Panel]):
    """The Detector of the whole stack: panel 0's geometry, every panel's rows, the panels in ``.panels``."""
    dets = tuple(panel_detector(base, p) for p in panels)
    if len(dets) == 1:
        return dets[0]
    rows = panels[0].spixels * len(panels)
    first = dets[0]
    return replace(first, spixels=rows, detsize_s=first.pixel_size * rows, roi=(0, first.fpixels, 0, rows),
                   panels=dets)


def panel_mask(panels: List[Panel]) -> Optional[np.ndarray]:
    """The uint16 mask of the stack (1: render), or None when no panel masks a pixel."""
    if not any(p.mask for p in panels):
        return None
    rows, cols = panels[0].spixels, panels[0].fpixels
    mask = np.ones((len(panels), rows, cols), dtype=np.uint16)
    for k, p in enumerate(panels):
        for f0, s0, f1, s1 in p.mask:
            mask[k, s0:s1, f0:f1] = 0
    return mask.reshape(-1)


def panel_table(det, oversample: int, sampling, panels: Optional[List[Panel]] = None,
                flags_mu: float = -1.0) -> np.ndarray:
    """The kernels' panel table (``kernels.physics.PANEL_COLUMNS``) of a detector.

    One row from ``det`` for a monolithic detector (the KParams values, so a
    one-panel run is the same arithmetic); a row per panel otherwise, with
    each panel's sensor thickness and attenuation where it gives them (the
    layers are the run's, ``sampling.thickstep`` scaled by the panel's
    thickness; a panel without an attenuation takes ``-detector_abs`` where
    it is given, else C's default, one over the panel's thickness).
    """
    from .kernels.physics import PANEL_COLUMNS
    dets = det.panels or (det,)
    table = np.zeros((len(dets), len(PANEL_COLUMNS)), dtype=np.float64)
    for k, d in enumerate(dets):
        step, m = sampling.thickstep, sampling.mu
        if panels is not None and len(dets) > 1 and sampling.thick > 0.0:
            t = panels[k].thickness
            if t is not None and t != sampling.thick:
                step = sampling.thickstep * (t / sampling.thick)
            if panels[k].mu is not None:
                m = panels[k].mu
            elif flags_mu < 0.0:
                m = 1.0 / (t if t is not None else sampling.thick)
            else:
                m = flags_mu
        table[k] = (d.pix0 + d.fdet + d.sdet + d.odet
                    + (d.pixel_size, d.pixel_size / oversample, d.close_distance, step, m))
    return table
