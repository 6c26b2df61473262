"""``nanobrag-numba compare``: where do two programs part ways?

Two modes, each on files or on a fresh run of both programs:

trace
    The factors of one pixel (``TRACE_C`` lines of the instrumented C
    program, ``TRACE_PY`` lines of ``-trace_pixel``) side by side with their
    relative difference, PASS or CRITICAL against ``--rtol`` (default
    ``tolerances.COMPARE_TRACE_RTOL``), and the FIRST divergence in pipeline
    order: geometry, vectors, hkl, F_latt, F_cell, I_before_scaling, scaling
    factors, final value.
image
    Two float images: Pearson correlation, max |diff| / max |ref|, sum ratio,
    RMS difference and the five brightest peaks of each, against the parity
    bars of ``tolerances`` (``FLOAT_*``); ``--plot`` draws both images and
    their difference (needs matplotlib, the ``plot`` extra).

Both write ``metrics.json`` into ``--out`` (default: the current
directory) and exit with 0 when everything passes, 1 when something
diverges, 2 on an error (one line ``nanobrag-numba: error: ...``).
How to run an investigation: docs/trace.md.
"""
from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import tolerances as T
from .errors import NanoBraggError
from .tracefmt import STAGES, Trace, parse_trace, read_trace, relative_difference

PROG = "nanobrag-numba"

USAGE = """\
usage: nanobrag-numba compare trace REF.log OURS.log [--rtol R] [--out DIR]
       nanobrag-numba compare trace --reference BINARY [--pixel SLOW FAST] [--rtol R] [--out DIR] FLAGS...
       nanobrag-numba compare image REF.bin OURS.bin [--shape SLOW FAST] [--out DIR] [--plot [PNG]]
       nanobrag-numba compare image --reference BINARY [--out DIR] [--plot [PNG]] FLAGS...

trace   compare the factors of one pixel, name the first divergence in pipeline order
        (geometry -> vectors -> hkl -> F_latt -> F_cell -> I_before_scaling -> scaling -> final).
        REF.log, OURS.log: logs holding TRACE_C lines (instrumented C) or TRACE_PY lines
        (nanobrag-numba -trace_pixel SLOW FAST); the first is the reference.
image   compare two raw float32 images (.gz accepted): correlation, max relative difference,
        sum ratio, RMS difference, five brightest peaks of each.

--reference BINARY   run this reference program and nanobrag-numba with FLAGS (nanoBragg flags),
                     each in its own temporary directory (input files are found from here);
                     trace mode adds -trace_pixel SLOW FAST to the reference's flags
--pixel SLOW FAST    pixel to trace (default: -trace_pixel in FLAGS, else our brightest pixel)
--rtol R             relative tolerance of trace mode (default %g)
--shape SLOW FAST    image shape (default: square, inferred from the file size)
--out DIR            where metrics.json (and, with --reference, the two traces) go (default .)
--plot [PNG]         image mode: draw both images and their difference (default DIR/compare.png;
                     needs matplotlib: pip install 'nanobrag-numba[plot]')

exit status: 0 all PASS, 1 a divergence (CRITICAL / FAIL), 2 an error.
""" % T.COMPARE_TRACE_RTOL

#: our options and how many values each takes (None: an optional PNG path)
_OPTIONS = {"--reference": 1, "--pixel": 2, "--rtol": 1, "--shape": 2, "--out": 1, "--plot": None}
#: flags only nanobrag-numba knows (dropped from the reference's command line) and their value counts
OURS_ONLY_FLAGS = {"-c_quirks": 0, "-device": 1, "-precision": 1}
#: output flags that the comparison sets itself
OUTPUT_FLAGS = {"-floatfile": 1, "-intfile": 1, "-noisefile": 1, "-pgmfile": 1}


# ---------------------------------------------------------------- trace mode

@dataclass
class FactorRow:
    """One line of the factor table."""

    label: str
    key: str
    kind: str
    stage: str
    reference: tuple
    ours: tuple
    rel: float
    status: str          # PASS, CRITICAL or INFO (not compared, see NOT_COMPARED)
    note: str = ""


#: keys that the instrumented C build prints as fixed text (not compared; see docs/trace.md)
NOT_COMPARED = {
    "detector_convention": "the instrumented C build prints MOSFLM whatever the convention",
    "initial_fdet": "fixed text (MOSFLM axes) in the instrumented C build",
    "initial_sdet": "fixed text (MOSFLM axes) in the instrumented C build",
    "initial_odet": "fixed text (MOSFLM axes) in the instrumented C build",
    "convention_mapping": "fixed text in the instrumented C build",
}


@dataclass
class TraceReport:
    """The result of :func:`compare_traces`."""

    rows: List[FactorRow]
    rtol: float
    only_reference: List[str] = field(default_factory=list)
    only_ours: List[str] = field(default_factory=list)
    pixel_reference: Optional[Tuple[int, int]] = None
    pixel_ours: Optional[Tuple[int, int]] = None

    @property
    def critical(self) -> List[FactorRow]:
        """Rows beyond the tolerance, in pipeline order."""
        return [r for r in self.rows if r.status == "CRITICAL"]

    @property
    def first_divergence(self) -> Optional[FactorRow]:
        """The most upstream CRITICAL row (None when everything passes)."""
        crit = self.critical
        return crit[0] if crit else None

    def row(self, label: str) -> Optional[FactorRow]:
        """The row of ``label`` (``key`` or ``key[n]``), None when not compared."""
        for r in self.rows:
            if r.label == label:
                return r
        return None

    def stage_status(self) -> Dict[str, str]:
        """PASS or CRITICAL per pipeline stage (stages with no row are left out)."""
        out = {}
        for r in self.rows:
            if r.status == "INFO":
                continue
            if out.get(r.stage) != "CRITICAL":
                out[r.stage] = r.status
        return out


def compare_traces(ref: Trace, ours: Trace, rtol: float = T.COMPARE_TRACE_RTOL) -> TraceReport:
    """Compare every quantity that both traces print, in pipeline order.

    Entries are matched by kind, key and occurrence (the n-th block of a
    key is the n-th layer/sub-pixel).  Rows are sorted by pipeline stage
    (:data:`nanobrag_numba.tracefmt.STAGES`), then block, then the
    reference's line order, so the first CRITICAL row is the most upstream
    divergence.
    """
    ours_by = {(e.kind, e.key, e.occurrence): e for e in ours.entries}
    ref_ids = {(e.kind, e.key, e.occurrence) for e in ref.entries}
    rows = []
    order = []
    for pos, e in enumerate(ref.entries):
        o = ours_by.get((e.kind, e.key, e.occurrence))
        if o is None:
            continue
        if e.key in NOT_COMPARED:
            rel, status, note = float("nan"), "INFO", NOT_COMPARED[e.key]
        else:
            rel = relative_difference(e.values, o.values)
            status = "PASS" if rel <= rtol else "CRITICAL"
            note = ""
        rows.append(FactorRow(e.label, e.key, e.kind, e.stage, e.values, o.values, rel, status, note))
        order.append((STAGES.index(e.stage), e.occurrence, pos))
    rows = [r for _, r in sorted(zip(order, rows), key=lambda t: t[0])]
    only_ref = [e.label for e in ref.entries if (e.kind, e.key, e.occurrence) not in ours_by]
    only_ours = [e.label for e in ours.entries if (e.kind, e.key, e.occurrence) not in ref_ids]
    return TraceReport(rows, rtol, only_ref, only_ours, ref.pixel, ours.pixel)


def _fmt_values(values: Sequence) -> str:
    return " ".join(v if isinstance(v, str) else "%.10g" % v for v in values)


def _fmt_rel(rel: float) -> str:
    if math.isnan(rel):
        return "-"
    if math.isinf(rel):
        return "inf"
    return "%.2e" % rel


def format_trace_report(report: TraceReport, ref_name: str = "reference", ours_name: str = "ours") -> List[str]:
    """The factor table and the verdict, as printed by ``compare trace``."""
    rows = report.rows
    first = report.first_divergence
    w_label = max([len("factor")] + [len(r.label) for r in rows])
    w_ref = min(60, max([len(ref_name)] + [len(_fmt_values(r.reference)) for r in rows]))
    w_ours = min(60, max([len(ours_name)] + [len(_fmt_values(r.ours)) for r in rows]))
    head = "%-*s  %-16s  %-*s  %-*s  %-9s  %s" % (w_label, "factor", "stage", w_ref, ref_name, w_ours, ours_name,
                                                 "rel.diff", "status")
    out = [head, "-" * len(head)]
    for r in rows:
        mark = "  <-- first divergence" if r is first else ""
        if r.status == "INFO":
            mark = "  (not compared: %s)" % r.note
        out.append("%-*s  %-16s  %-*s  %-*s  %-9s  %s%s" % (
            w_label, r.label, r.stage, w_ref, _fmt_values(r.reference), w_ours, _fmt_values(r.ours),
            _fmt_rel(r.rel), r.status, mark))
    out.append("")
    npass = sum(r.status == "PASS" for r in rows)
    ncrit = sum(r.status == "CRITICAL" for r in rows)
    out.append("%d factors compared (rtol %g): %d PASS, %d CRITICAL" % (npass + ncrit, report.rtol, npass, ncrit))
    if report.pixel_reference and report.pixel_ours and report.pixel_reference != report.pixel_ours:
        out.append("WARNING: the traces are of different pixels: %s %s, %s %s"
                   % (ref_name, report.pixel_reference, ours_name, report.pixel_ours))
    if report.only_reference:
        out.append("only in %s: %s" % (ref_name, ", ".join(report.only_reference)))
    if report.only_ours:
        out.append("only in %s: %s" % (ours_name, ", ".join(report.only_ours)))
    stages = report.stage_status()
    out.append("stages: " + ", ".join("%s %s" % (s, stages[s]) for s in STAGES if s in stages))
    if first is None:
        out.append("no divergence: every factor agrees within %g" % report.rtol)
    else:
        out.append("FIRST DIVERGENCE: %s (stage %s): %s %s, %s %s, relative difference %s"
                   % (first.label, first.stage, ref_name, _fmt_values(first.reference), ours_name,
                      _fmt_values(first.ours), _fmt_rel(first.rel)))
        later = [r.label for r in report.critical[1:]]
        if later:
            shown = later[:12]
            out.append("  then: %s%s" % (", ".join(shown), " ... (%d more)" % (len(later) - 12)
                                         if len(later) > 12 else ""))
        if stages.get("scaling") == "PASS" and STAGES.index(first.stage) < STAGES.index("scaling"):
            out.append("  every scaling factor passes: the difference is upstream of the normalisation")
    return out


def _jsonable(x):
    if isinstance(x, float):
        if math.isnan(x) or math.isinf(x):
            return str(x)
        return x
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (np.floating,)):
        return _jsonable(float(x))
    if isinstance(x, (np.integer,)):
        return int(x)
    return x


def trace_metrics(report: TraceReport, ref_name: str, ours_name: str) -> dict:
    """What ``metrics.json`` holds in trace mode."""
    first = report.first_divergence
    return {
        "mode": "trace",
        "reference": ref_name,
        "ours": ours_name,
        "rtol": report.rtol,
        "pixel": list(report.pixel_ours or report.pixel_reference or []) or None,
        "status": "PASS" if first is None else "CRITICAL",
        "compared": sum(r.status != "INFO" for r in report.rows),
        "passed": sum(r.status == "PASS" for r in report.rows),
        "critical": sum(r.status == "CRITICAL" for r in report.rows),
        "first_divergence": None if first is None else {
            "factor": first.label, "key": first.key, "stage": first.stage,
            "reference": list(first.reference), "ours": list(first.ours), "rel_diff": first.rel},
        "stages": report.stage_status(),
        "factors": [{"factor": r.label, "stage": r.stage, "reference": list(r.reference), "ours": list(r.ours),
                     "rel_diff": r.rel, "status": r.status} for r in report.rows],
        "only_in_reference": report.only_reference,
        "only_in_ours": report.only_ours,
    }


# ---------------------------------------------------------------- image mode

def read_image(path: str, shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """A raw float32 image (``.gz`` read through gzip) as a (slow, fast) array.

    Without ``shape`` the image must be square.
    """
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            with open(path, "rb") as fh:
                raw = fh.read()
    except (OSError, EOFError) as exc:
        raise NanoBraggError("cannot read image %s: %s" % (path, getattr(exc, "strerror", None) or exc)) from None
    if len(raw) % 4:
        raise NanoBraggError("%s is not a float32 image: %d bytes is not a multiple of 4" % (path, len(raw)))
    data = np.frombuffer(raw, dtype="<f4")
    if shape is None:
        side = int(round(math.sqrt(data.size)))
        if side * side != data.size or side == 0:
            raise NanoBraggError("cannot infer the shape of %s: %d pixels is not a square; give --shape SLOW FAST"
                                 % (path, data.size))
        shape = (side, side)
    if shape[0] * shape[1] != data.size:
        raise NanoBraggError("%s holds %d float32 values, but --shape %d %d needs %d"
                             % (path, data.size, shape[0], shape[1], shape[0] * shape[1]))
    return data.reshape(shape)


def brightest_peaks(img: np.ndarray, n: int = 5) -> List[dict]:
    """The ``n`` brightest local maxima (3x3 neighbourhood), brightest first.

    Each is ``{"slow", "fast", "value"}``; plateaus count once (first pixel
    in raster order).  Fewer than ``n`` when the image has fewer maxima.
    """
    a = np.asarray(img, dtype=np.float64)
    if a.size == 0:
        return []
    pad = np.pad(a, 1, mode="constant", constant_values=-np.inf)
    s, f = a.shape
    is_max = np.ones(a.shape, dtype=bool)
    for ds in (-1, 0, 1):
        for df in (-1, 0, 1):
            if ds == 0 and df == 0:
                continue
            nb = pad[1 + ds:1 + ds + s, 1 + df:1 + df + f]
            # a neighbour earlier in raster order must be strictly lower, a later one not higher
            if (ds, df) < (0, 0):
                is_max &= a > nb
            else:
                is_max &= a >= nb
    idx = np.flatnonzero(is_max.ravel())
    vals = a.ravel()[idx]
    keep = np.argsort(-vals, kind="stable")[:n]
    return [{"slow": int(idx[i] // f), "fast": int(idx[i] % f), "value": float(vals[i])} for i in keep]


def image_metrics(ref: np.ndarray, ours: np.ndarray) -> dict:
    """Correlation, max relative difference, sum ratio, RMS difference, peaks, verdict."""
    if ref.shape != ours.shape:
        raise NanoBraggError("the images differ in shape: reference %s, ours %s" % (ref.shape, ours.shape))
    r = ref.astype(np.float64).ravel()
    o = ours.astype(np.float64).ravel()
    d = o - r
    if r.std() > 0 and o.std() > 0:
        corr = float(np.corrcoef(r, o)[0, 1])
    else:
        corr = 1.0 if np.array_equal(r, o) else 0.0
    mref = float(np.abs(r).max()) if r.size else 0.0
    maxdiff = float(np.abs(d).max()) if d.size else 0.0
    maxrel = maxdiff / mref if mref > 0 else (0.0 if maxdiff == 0 else math.inf)
    sref, sours = float(r.sum()), float(o.sum())
    ratio = sours / sref if sref != 0 else (1.0 if sours == 0 else math.inf)
    rms = float(np.sqrt(np.mean(d * d))) if d.size else 0.0
    checks = {"correlation": corr >= T.FLOAT_CORR_MIN,
              "max_rel_diff": maxrel <= T.FLOAT_MAXREL,
              "sum_ratio": abs(ratio - 1.0) <= T.FLOAT_SUMREL}
    return {
        "mode": "image",
        "shape": list(ref.shape),
        "correlation": corr,
        "max_rel_diff": maxrel,
        "max_abs_diff": maxdiff,
        "sum_reference": sref,
        "sum_ours": sours,
        "sum_ratio": ratio,
        "rms_diff": rms,
        "identical": bool(np.array_equal(ref, ours)),
        "peaks_reference": brightest_peaks(ref),
        "peaks_ours": brightest_peaks(ours),
        "bars": {"correlation_min": T.FLOAT_CORR_MIN, "max_rel_diff_max": T.FLOAT_MAXREL,
                 "sum_ratio_tolerance": T.FLOAT_SUMREL},
        "checks": {k: ("PASS" if v else "FAIL") for k, v in checks.items()},
        "status": "PASS" if all(checks.values()) else "FAIL",
    }


def _short(name: str) -> str:
    """The last two parts of a path (enough to tell two images apart in a column)."""
    parts = os.path.normpath(name).split(os.sep)
    return os.path.join(*parts[-2:]) if len(parts) > 1 else name


def format_image_report(m: dict, ref_name: str = "reference", ours_name: str = "ours") -> List[str]:
    """The lines ``compare image`` prints."""
    c = m["checks"]
    out = ["images: %s (reference) and %s (ours), %d x %d (slow x fast)"
           % (ref_name, ours_name, m["shape"][0], m["shape"][1]),
           "correlation    %.9f   %s (>= %g)" % (m["correlation"], c["correlation"], T.FLOAT_CORR_MIN),
           "max rel diff   %.3e   %s (<= %g; max |diff| / max |reference|, max |diff| = %g)"
           % (m["max_rel_diff"], c["max_rel_diff"], T.FLOAT_MAXREL, m["max_abs_diff"]),
           "sum ratio      %.9f   %s (within %g of 1; sums %g and %g)"
           % (m["sum_ratio"], c["sum_ratio"], T.FLOAT_SUMREL, m["sum_ours"], m["sum_reference"]),
           "rms diff       %.6g" % m["rms_diff"],
           "identical      %s" % ("yes" if m["identical"] else "no"),
           "brightest peaks (slow, fast): value"]
    pr, po = m["peaks_reference"], m["peaks_ours"]
    out.append("  %-36s  %s" % (_short(ref_name)[-36:], _short(ours_name)))
    for i in range(max(len(pr), len(po))):
        a = "(%d, %d): %.6g" % (pr[i]["slow"], pr[i]["fast"], pr[i]["value"]) if i < len(pr) else ""
        b = "(%d, %d): %.6g" % (po[i]["slow"], po[i]["fast"], po[i]["value"]) if i < len(po) else ""
        out.append("  %-36s  %s" % (a, b))
    out.append("verdict: %s" % m["status"])
    return out


def _require_matplotlib():
    """matplotlib's Figure class (no pyplot, no global backend), or a NanoBraggError saying how to get it."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise NanoBraggError("--plot needs matplotlib, which is not installed "
                             "(pip install 'nanobrag-numba[plot]')") from None
    return Figure


def plot_images(ref: np.ndarray, ours: np.ndarray, path: str, ref_name: str = "reference",
                ours_name: str = "ours") -> str:
    """Write a PNG with both images (same grey scale) and ``ours - reference``."""
    Figure = _require_matplotlib()
    r = ref.astype(np.float64)
    o = ours.astype(np.float64)
    d = o - r
    both = np.concatenate([r.ravel(), o.ravel()])
    vmax = float(np.percentile(both, 99.5)) if both.size else 1.0
    if vmax <= 0:
        vmax = float(both.max()) if both.size and both.max() > 0 else 1.0
    dmax = float(np.abs(d).max()) or 1.0
    fig = Figure(figsize=(15, 5))
    axes = fig.subplots(1, 3)
    for ax, img, title in ((axes[0], r, "reference: " + _short(ref_name)), (axes[1], o, "ours: " + _short(ours_name))):
        im = ax.imshow(img, cmap="gray_r", vmin=0.0, vmax=vmax, origin="upper", interpolation="nearest")
        ax.set_title(title[:70], fontsize=9)
        ax.set_xlabel("fast")
        ax.set_ylabel("slow")
        fig.colorbar(im, ax=ax, fraction=0.046)
    im = axes[2].imshow(d, cmap="RdBu_r", vmin=-dmax, vmax=dmax, origin="upper", interpolation="nearest")
    axes[2].set_title("ours - reference (max |diff| %.3g)" % dmax, fontsize=9)
    axes[2].set_xlabel("fast")
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100, format="png")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- running both programs

def _strip_flags(flags: Sequence[str], drop: Dict[str, int]) -> List[str]:
    out, i = [], 0
    flags = list(flags)
    while i < len(flags):
        if flags[i] in drop:
            i += 1 + drop[flags[i]]
            continue
        out.append(flags[i])
        i += 1
    return out


def _find_trace_pixel(flags: Sequence[str]) -> Optional[Tuple[int, int]]:
    flags = list(flags)
    for i, w in enumerate(flags):
        if w == "-trace_pixel":
            try:
                return int(flags[i + 1]), int(flags[i + 2])
            except (IndexError, ValueError):
                raise NanoBraggError("-trace_pixel expects two whole numbers SLOW FAST") from None
    return None


def _absolute_inputs(flags: Sequence[str]) -> List[str]:
    """Flags with every value that names an existing relative path made absolute."""
    out = []
    for w in flags:
        if not w.startswith("-") and not os.path.isabs(w) and os.path.exists(w):
            out.append(os.path.abspath(w))
        else:
            out.append(w)
    return out


def _stage_dump(flags: Sequence[str], workdir: str):
    """Without -hkl a program reads its Fdump cache from its working directory: give it ours."""
    if "-hkl" in flags:
        return
    name = "Fdump.bin"
    flags = list(flags)
    if "-dump" in flags and flags.index("-dump") + 1 < len(flags):
        name = flags[flags.index("-dump") + 1]
    if os.path.isfile(name) and not os.path.isabs(name):
        shutil.copyfile(name, os.path.join(workdir, name))


def run_reference(binary: str, flags: Sequence[str], workdir: str, timeout: float = 3600.0) -> str:
    """Run the reference program in ``workdir``; returns what it printed (stdout and stderr)."""
    path = binary if os.sep in binary else (shutil.which(binary) or binary)
    if not os.path.isfile(path):
        raise NanoBraggError("reference program %s not found" % binary)
    if not os.access(path, os.X_OK):
        raise NanoBraggError("reference program %s is not executable" % binary)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    try:
        p = subprocess.run([os.path.abspath(path)] + list(flags), cwd=workdir, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, env=env, timeout=timeout)
    except OSError as exc:
        raise NanoBraggError("cannot run reference program %s: %s" % (binary, exc.strerror or exc)) from None
    except subprocess.TimeoutExpired:
        raise NanoBraggError("reference program %s ran longer than %g s" % (binary, timeout)) from None
    text = p.stdout.decode("utf-8", errors="replace")
    if p.returncode != 0:
        tail = [ln for ln in text.splitlines() if ln.strip()][-1:] or ["(no output)"]
        raise NanoBraggError("reference program %s exited with status %d: %s" % (binary, p.returncode, tail[0]))
    return text


class _Chdir:
    def __init__(self, path):
        self.path, self.old = path, None

    def __enter__(self):
        self.old = os.getcwd()
        os.chdir(self.path)

    def __exit__(self, *exc):
        os.chdir(self.old)


def render_ours(flags: Sequence[str], workdir: str):
    """Set up and render our image in ``workdir`` (quietly); returns ``(prep, image)``."""
    from .flags import parse_args
    from .simulator import prepare, render
    with _Chdir(workdir):
        cfg = parse_args(list(flags))
        prep = prepare(cfg, lambda *a: None, write_dump=False)
        image = render(prep, cfg.device)
    return prep, image


def corrected_behaviours(prep, image=None) -> List[str]:
    """The C defects we correct that this run touches (the ``c_quirk`` names of docs/differences.md).

    The same list as the ``note: ... -c_quirks restores C's behaviour`` lines
    of the command (empty with ``-c_quirks``).
    """
    if prep.cfg.c_quirks:
        return []
    keys = [k for k, _text in prep.notes if k not in ("noop_flags", "source_weights_ignored")]
    src = prep.sources
    if prep.cfg.sourcefile is not None and src.shape[1] > 4 and (src[:, 4] != 1.0).any():
        keys.append("source_weights_ignored")     # -source_weights: the weights C ignores are used
    if image is not None and getattr(image, "first_oob", None) is not None and prep.interpolate:
        keys.append("interpolate_global_disable")
    return list(dict.fromkeys(keys))


def quirks_hint(corrected: Sequence[str]) -> str:
    """The line a failed comparison adds when the flags touch corrected C behaviours."""
    return ("note: these flags touch C behaviours we correct (%s): the difference may be a corrected C defect; "
            "rerun with -c_quirks to compare with C's behaviour (docs/differences.md)" % ", ".join(corrected))


def _run_dirs(workdir, flags):
    """Two fresh run directories (ours, the reference's), each with the Fdump a run without -hkl reads."""
    dirs = os.path.join(workdir, "ours"), os.path.join(workdir, "reference")
    for d in dirs:
        os.mkdir(d)
        _stage_dump(flags, d)
    return dirs


def _run_both_trace(binary, flags, pixel, outdir):
    workdir = tempfile.mkdtemp(prefix="nanobrag-compare-")
    try:
        flags = _absolute_inputs(_strip_flags(flags, OUTPUT_FLAGS))
        in_flags = _find_trace_pixel(flags)
        flags = _strip_flags(flags, {"-trace_pixel": 2})
        ours_dir, ref_dir = _run_dirs(workdir, flags)
        prep, image = render_ours(flags, ours_dir)
        corrected = corrected_behaviours(prep, image)
        pixel = pixel or in_flags
        if pixel is None:
            idx = int(np.argmax(image.floatimage))
            pixel = divmod(idx, prep.det.fpixels)
        from .trace import pixel_state, trace_lines
        why = pixel_state(prep, *pixel)
        if why:
            raise NanoBraggError("pixel %d %d is %s" % (pixel[0], pixel[1], why))
        with _Chdir(ours_dir):
            ours_lines = trace_lines(prep, image, *pixel)
        ref_flags = _strip_flags(flags, OURS_ONLY_FLAGS) + ["-trace_pixel", str(pixel[0]), str(pixel[1])]
        ref_text = run_reference(binary, ["-floatfile", "floatimage.bin"] + ref_flags, ref_dir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ref_log = os.path.join(outdir, "trace_reference.log")
    ours_log = os.path.join(outdir, "trace_ours.log")
    with open(ref_log, "w") as fh:
        fh.write(ref_text)
    with open(ours_log, "w") as fh:
        fh.write("\n".join(ours_lines) + "\n")
    try:
        ref = parse_trace(ref_text.splitlines(), source="the reference's output")
    except NanoBraggError:
        raise NanoBraggError("the reference %s printed no trace lines for -trace_pixel %d %d (it must be a "
                             "build that prints TRACE_C lines; its output is in %s)"
                             % (binary, pixel[0], pixel[1], ref_log)) from None
    ours = parse_trace(ours_lines, source="our trace")
    return ref, ours, ref_log, ours_log, corrected


def _run_both_image(binary, flags):
    workdir = tempfile.mkdtemp(prefix="nanobrag-compare-")
    try:
        flags = _absolute_inputs(_strip_flags(flags, OUTPUT_FLAGS))
        # C's parser reads "-trace_pixel" as "-pixel" (substring match): never pass it on
        flags = _strip_flags(flags, {"-trace_pixel": 2})
        ours_dir, ref_dir = _run_dirs(workdir, flags)
        prep, image = render_ours(flags, ours_dir)
        ref_flags = _strip_flags(flags, OURS_ONLY_FLAGS)
        run_reference(binary, ["-floatfile", "floatimage.bin"] + ref_flags, ref_dir)
        shape = (prep.det.spixels, prep.det.fpixels)
        ref_file = os.path.join(ref_dir, "floatimage.bin")
        if not os.path.isfile(ref_file):
            raise NanoBraggError("the reference %s wrote no floatimage.bin" % binary)
        ref = read_image(ref_file, shape)
        return ref.copy(), image.floatimage, corrected_behaviours(prep, image)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------- command line

@dataclass
class Args:
    """The parsed ``compare`` command line."""

    mode: str
    files: List[str]
    flags: List[str]
    reference: Optional[str] = None
    pixel: Optional[Tuple[int, int]] = None
    rtol: float = T.COMPARE_TRACE_RTOL
    shape: Optional[Tuple[int, int]] = None
    out: str = "."
    plot: Optional[str] = None


def _num(opt, text, kind):
    try:
        value = kind(text)
    except ValueError:
        raise NanoBraggError("%s expects %s, got %r" % (opt, "a number" if kind is float else "whole numbers",
                                                        text)) from None
    return value


def parse_compare_args(argv: Sequence[str]) -> Args:
    """Split ``compare`` arguments into our options, files and nanoBragg flags.

    Our options start with ``--`` and may stand anywhere; the first word
    starting with a single ``-`` (or everything after ``--``) begins the
    nanoBragg flags, which keep their values.
    """
    argv = list(argv)
    if not argv or argv[0] not in ("trace", "image"):
        raise NanoBraggError("compare needs a mode, 'trace' or 'image' (%s compare -h)" % PROG)
    a = Args(mode=argv[0], files=[], flags=[])
    i = 1
    in_flags = False
    while i < len(argv):
        w = argv[i]
        if w == "--" and not in_flags:
            a.flags.extend(argv[i + 1:])
            break
        if w in _OPTIONS:
            n = _OPTIONS[w]
            if n is None:  # --plot [PNG]
                if i + 1 < len(argv) and argv[i + 1].lower().endswith(".png"):
                    a.plot = argv[i + 1]
                    i += 2
                else:
                    a.plot = ""
                    i += 1
                continue
            vals = argv[i + 1:i + 1 + n]
            if len(vals) < n:
                raise NanoBraggError("%s expects %d value%s" % (w, n, "s" if n > 1 else ""))
            if w == "--reference":
                a.reference = vals[0]
            elif w == "--pixel":
                a.pixel = (_num(w, vals[0], int), _num(w, vals[1], int))
            elif w == "--rtol":
                a.rtol = _num(w, vals[0], float)
                if not a.rtol >= 0:
                    raise NanoBraggError("--rtol must be >= 0, got %r" % vals[0])
            elif w == "--shape":
                a.shape = (_num(w, vals[0], int), _num(w, vals[1], int))
                if a.shape[0] <= 0 or a.shape[1] <= 0:
                    raise NanoBraggError("--shape expects two positive whole numbers")
            elif w == "--out":
                a.out = vals[0]
            i += 1 + n
            continue
        if w.startswith("--"):
            raise NanoBraggError("unknown compare option %s (%s compare -h)" % (w, PROG))
        if w.startswith("-") or in_flags:
            in_flags = True
            a.flags.append(w)
        else:
            a.files.append(w)
        i += 1
    if a.reference is None:
        if len(a.files) != 2:
            raise NanoBraggError("compare %s needs two files (reference, ours) or --reference BINARY and flags; "
                                 "got %d file%s" % (a.mode, len(a.files), "" if len(a.files) == 1 else "s"))
        if a.flags:
            raise NanoBraggError("nanoBragg flags (%s ...) are only used with --reference" % a.flags[0])
    else:
        if a.files:
            raise NanoBraggError("with --reference give nanoBragg flags, not files (%r)" % a.files[0])
        if not a.flags:
            raise NanoBraggError("--reference needs the nanoBragg flags to run both programs with")
    if a.plot is not None and a.mode != "image":
        raise NanoBraggError("--plot is for image mode")
    if a.shape is not None and a.mode != "image":
        raise NanoBraggError("--shape is for image mode")
    if a.pixel is not None and (a.mode != "trace" or a.reference is None):
        raise NanoBraggError("--pixel is for trace mode with --reference")
    return a


def _write_metrics(outdir: str, metrics: dict) -> str:
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, "metrics.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(_jsonable(metrics), fh, indent=1)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def run(args: Args, log=print) -> int:
    """Carry out a parsed ``compare`` command; returns the exit status (0 pass, 1 divergence)."""
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        raise NanoBraggError("cannot create --out directory %s: %s" % (args.out, exc.strerror or exc)) from None
    if args.mode == "trace":
        corrected: List[str] = []
        if args.reference is None:
            ref_name, ours_name = args.files
            ref, ours = read_trace(ref_name), read_trace(ours_name)
        else:
            ref, ours, ref_name, ours_name, corrected = _run_both_trace(args.reference, args.flags, args.pixel,
                                                                        args.out)
        report = compare_traces(ref, ours, args.rtol)
        short_ref = "reference (%s)" % (ref.prefix or "?")
        short_ours = "ours (%s)" % (ours.prefix or "?")
        log("trace: reference %s, ours %s" % (ref_name, ours_name))
        for line in format_trace_report(report, short_ref, short_ours):
            log(line)
        metrics = trace_metrics(report, ref_name, ours_name)
        metrics["corrected_behaviours"] = corrected
        if report.first_divergence is not None and corrected:
            log(quirks_hint(corrected))
        path = _write_metrics(args.out, metrics)
        log("wrote %s" % path)
        return 0 if report.first_divergence is None else 1
    # image
    if args.plot is not None:
        _require_matplotlib()
    corrected = []
    if args.reference is None:
        ref_name, ours_name = args.files
        ref = read_image(ref_name, args.shape)
        ours = read_image(ours_name, args.shape)
    else:
        ref_name, ours_name = args.reference, "nanobrag-numba"
        ref, ours, corrected = _run_both_image(args.reference, args.flags)
    metrics = image_metrics(ref, ours)
    metrics.update(reference=ref_name, ours=ours_name, corrected_behaviours=corrected)
    for line in format_image_report(metrics, ref_name, ours_name):
        log(line)
    if metrics["status"] != "PASS" and corrected:
        log(quirks_hint(corrected))
    if args.plot is not None:
        png = args.plot or os.path.join(args.out, "compare.png")
        metrics["plot"] = plot_images(ref, ours, png, ref_name, ours_name)
        log("wrote %s" % png)
    path = _write_metrics(args.out, metrics)
    log("wrote %s" % path)
    return 0 if metrics["status"] == "PASS" else 1


def main(argv=None) -> int:
    """Entry point of ``nanobrag-numba compare``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or any(w in ("-h", "-help") for w in argv[:2]):
        print(USAGE, end="")
        return 0
    try:
        return run(parse_compare_args(argv))
    except NanoBraggError as exc:
        sys.stdout.flush()
        print("%s: error: %s" % (PROG, exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("%s: interrupted" % PROG, file=sys.stderr)
        return 130
