"""``-trace_pixel``: our TRACE_PY lines against the instrumented C traces.

The golden tests run the command line in-process on each of the 11 traced
golden cases and compare every key that both traces print, to
``tolerances.TRACE_RTOL``; the keys whose meaning differs in the
instrumented C build are excluded explicitly below (and documented in
docs/trace.md).  The other tests build their own small inputs and run
everywhere.
"""
import math
import re
from pathlib import Path

import numpy as np
import pytest

import golden
from nanobrag_numba import tolerances as T
from nanobrag_numba.backends import cuda_available
from nanobrag_numba.cli import main
from nanobrag_numba.compare import compare_traces
from nanobrag_numba.tracefmt import (BLOCK_KEYS, FINAL_KEYS, PREFIX_C, PREFIX_PY, SCALING_FACTORS,
                                     parse_trace, read_trace)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "trace.md"

#: keys both traces print whose meaning differs in the instrumented C build (see docs/trace.md)
EXCLUDED = {
    "detector_convention": "fixed text MOSFLM in the instrumented C build, whatever the convention",
}

TRACED = [c for c in golden.cases() if c.get("trace_pixel")]

SMALL = ("-default_F 100 -cell 40 42 45 90 90 90 -misset 10 20 30 -N 5 -lambda 1 -distance 60 "
         "-detpixels 16 -pixel 0.4 -oversample 1 -noprogress -nonoise -nopgm -seed 1").split()
PHI_CARRYOVER = SMALL + "-phi 0 -osc 1.5 -phisteps 3".split()


def run_trace(args, capsys, pixel):
    """Run the command line in-process with -trace_pixel; returns (exit status, stdout lines)."""
    rc = main(list(args) + ["-trace_pixel", str(pixel[0]), str(pixel[1])])
    out = capsys.readouterr().out
    return rc, out.splitlines()


def golden_trace(case, workdir, monkeypatch, capsys):
    golden.stage(case, workdir)
    monkeypatch.chdir(workdir)
    quirks = ["-c_quirks"] if case["c_quirk"] in golden.CORRECTED else []
    rc, lines = run_trace(golden.OUTPUT_FLAGS + list(case["args"]) + quirks + ["-device", "cpu"], capsys,
                          case["trace_pixel"])
    assert rc == 0
    return lines


@pytest.mark.golden
@pytest.mark.parametrize("case", TRACED or [None], ids=[c["id"] for c in TRACED] or ["no-golden-data"])
def test_trace_matches_instrumented_c(case, tmp_path, monkeypatch, capsys):
    golden.require()
    lines = golden_trace(case, tmp_path, monkeypatch, capsys)
    ours = parse_trace(lines, PREFIX_PY)
    ref = read_trace(str(golden.golden_dir() / case["outputs"]["trace"]), PREFIX_C)
    assert ours.pixel == ref.pixel == tuple(case["trace_pixel"])

    # every per-pixel key and every block of C's trace is in ours
    ref_pixel = {(e.key, e.occurrence) for e in ref.entries if e.kind == "pixel"}
    ours_pixel = {(e.key, e.occurrence) for e in ours.entries if e.kind == "pixel"}
    assert ref_pixel <= ours_pixel, sorted(ref_pixel - ours_pixel)
    assert {k for k, _ in ref_pixel} == set(BLOCK_KEYS + FINAL_KEYS)

    report = compare_traces(ref, ours, rtol=T.TRACE_RTOL)
    compared = [r for r in report.rows if r.key not in EXCLUDED]
    assert len(compared) >= len(ref_pixel)
    bad = ["%s: C %s, ours %s (%.3g)" % (r.label, r.reference, r.ours, r.rel)
           for r in compared if not r.rel <= T.TRACE_RTOL]
    assert bad == []
    # the C detector lines are all matched too
    assert {e.key for e in ref.entries if e.kind == "detector"} <= {r.key for r in compared}

    # floatimage_accumulated is the stored pixel of the C image
    s, f = case["trace_pixel"]
    assert np.float32(ours.get("floatimage_accumulated").values[0]) == golden.float_image(case)[s, f]


def test_excluded_keys_are_documented():
    from nanobrag_numba.compare import NOT_COMPARED
    text = DOCS.read_text()
    for key in list(EXCLUDED) + list(NOT_COMPARED):
        assert "`%s`" % key in text


def test_values_are_printed_as_c_prints_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, lines = run_trace(PHI_CARRYOVER + ["-oversample", "2", "-device", "cpu"], capsys, (9, 5))
    assert rc == 0
    pixel = [ln for ln in lines if ln.startswith(PREFIX_PY + ": ")]
    keys = [ln.split()[1] for ln in pixel]
    # 4 sub-pixels: 4 blocks in C's key order, then the final keys once
    assert keys == list(BLOCK_KEYS) * 4 + list(FINAL_KEYS)
    ints = {"hkl_rounded", "steps", "oversample_thick", "oversample_polar", "oversample_omega"}
    for ln in pixel:
        _, key, *tokens = ln.split()
        for tok in tokens:
            if key in ints:
                assert re.fullmatch(r"-?\d+", tok), ln
            else:
                assert "%.15g" % float(tok) == tok, ln
    setup = [ln for ln in lines if ln.startswith(PREFIX_PY + ":") and "=" in ln.split()[0]]
    assert any(ln.startswith("TRACE_PY:pix0_vector=") for ln in setup)
    for name in ("FAST_AXIS", "SLOW_AXIS", "NORMAL_AXIS", "PIX0_VECTOR"):
        assert sum(ln.startswith("DETECTOR_" + name + " ") for ln in lines) == 1
    assert "TRACE_CONFIG: tracing pixel (spixel=9, fpixel=5)" in lines


def test_trace_adds_up_to_the_image(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, lines = run_trace(SMALL + ["-floatfile", "f.bin", "-device", "cpu"], capsys, (7, 11))
    assert rc == 0
    t = parse_trace(lines)
    v = {k: t.get(k).values[0] for k in FINAL_KEYS}
    final = v["r_e_sqr"] * v["fluence_photons_per_m2"] * v["I_before_scaling"] / v["steps"]
    final *= v["capture_fraction"] * v["polar"] * v["omega_pixel"]
    assert math.isclose(final, v["I_pixel_final"], rel_tol=1e-13)  # %.15g on both sides
    img = np.fromfile(tmp_path / "f.bin", dtype=np.float32).reshape(16, 16)
    assert np.float32(v["floatimage_accumulated"]) == img[7, 11] == np.float32(v["I_pixel_final"])
    # the block shows the first evaluation: F_cell^2 F_latt^2 of the only evaluation is I
    assert math.isclose(t.get("F_cell").values[0] ** 2 * t.get("F_latt").values[0] ** 2,
                        v["I_before_scaling"], rel_tol=1e-14)


def test_c_quirks_phi_carryover_diverges_upstream_of_the_scale(tmp_path, monkeypatch, capsys):
    """C's phi = 0 carry-over seen in a trace: lattice vectors at phi step 0, then I_before_scaling."""
    monkeypatch.chdir(tmp_path)
    pixel = (8, 5)   # not the first pixel: its phi step 0 inherits the previous pixel's last rotation in C
    rc, c_lines = run_trace(PHI_CARRYOVER + ["-c_quirks", "-device", "cpu"], capsys, pixel)
    assert rc == 0
    rc, py_lines = run_trace(PHI_CARRYOVER + ["-device", "cpu"], capsys, pixel)
    assert rc == 0
    report = compare_traces(parse_trace(c_lines), parse_trace(py_lines), rtol=T.COMPARE_TRACE_RTOL)
    first = report.first_divergence
    assert first is not None
    assert first.stage in ("vectors", "hkl")
    assert first.key in ("rot_a_angstroms", "rot_b_angstroms", "rot_c_angstroms", "hkl_frac")
    stages = report.stage_status()
    assert stages["geometry"] == "PASS"
    assert stages["I_before_scaling"] == "CRITICAL"
    assert stages["scaling"] == "PASS"
    assert all(report.row(k).status == "PASS" for k in SCALING_FACTORS)
    assert report.row("incident_vec").status == "PASS"
    assert report.row("I_pixel_final").status == "CRITICAL"


def test_pixel_outside_the_detector_is_a_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, lines = run_trace(SMALL + ["-device", "cpu"], capsys, (16, 3))
    assert rc == 0
    assert not any(ln.startswith(PREFIX_PY) for ln in lines)
    assert any(ln.startswith("WARNING: -trace_pixel 16 3") and "outside" in ln for ln in lines)
    rc, lines = run_trace(SMALL + ["-roi", "0", "7", "0", "7", "-device", "cpu"], capsys, (10, 3))
    assert rc == 0
    assert any("outside the -roi" in ln for ln in lines)


@pytest.mark.gpu
def test_trace_of_a_gpu_image_is_the_cpu_trace(tmp_path, monkeypatch, capsys):
    if not cuda_available():
        pytest.skip("no usable CUDA GPU")
    monkeypatch.chdir(tmp_path)
    args = PHI_CARRYOVER + ["-oversample", "2", "-mosaic", "0.5", "-mosaic_domains", "3", "-mosaic_seed", "4"]
    rc, cpu = run_trace(args + ["-device", "cpu"], capsys, (8, 5))
    assert rc == 0
    rc, gpu = run_trace(args + ["-device", "cuda"], capsys, (8, 5))
    assert rc == 0
    report = compare_traces(parse_trace(cpu), parse_trace(gpu), rtol=0.0)
    differing = [r.label for r in report.critical]
    # the trace itself is computed on the CPU; only the stored pixel comes from the GPU image
    assert set(differing) <= {"floatimage_accumulated"}
    row = report.row("floatimage_accumulated")
    assert row.rel <= T.CUDA_SIM_RTOL or row.rel <= 2 ** -23
