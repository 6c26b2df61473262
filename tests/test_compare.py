"""``nanobrag-numba compare``: trace and image modes, on files and on fresh runs.

A stand-in reference program (a script that runs nanobrag-numba and writes
its trace lines as TRACE_C) exercises ``--reference`` everywhere; the real C
program is used where ``$NANOBRAGG_REFERENCE`` names one.  Golden-data
tests skip without the data.
"""
import gzip
import json
import math
import os
import stat
import sys

import numpy as np
import pytest

import golden
from nanobrag_numba import tolerances as T
from nanobrag_numba.cli import main as cli_main
from nanobrag_numba.compare import (brightest_peaks, compare_traces, image_metrics, main,
                                    parse_compare_args)
from nanobrag_numba.errors import NanoBraggError
from nanobrag_numba.tracefmt import parse_trace, relative_difference

SMALL = ("-default_F 100 -cell 40 42 45 90 90 90 -misset 10 20 30 -N 5 -lambda 1 -distance 60 "
         "-detpixels 16 -pixel 0.4 -oversample 1 -noprogress -nonoise -nopgm -seed 1").split()
PHI_CARRYOVER = SMALL + "-phi 0 -osc 1.5 -phisteps 3".split()

FAKE_REFERENCE = """#!{python}
# stand-in for an instrumented nanoBragg: runs nanobrag-numba, prints its trace as TRACE_C
import subprocess, sys
p = subprocess.run([{python!r}, "-m", "nanobrag_numba"] + sys.argv[1:] + ["-device", "cpu"],
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
sys.stdout.write(p.stdout.replace("TRACE_PY", "TRACE_C"))
sys.exit(p.returncode)
"""


@pytest.fixture
def fake_reference(tmp_path):
    path = tmp_path / "fake_nanoBragg"
    path.write_text(FAKE_REFERENCE.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def trace_of(args, pixel, capsys):
    rc = cli_main(list(args) + ["-device", "cpu", "-trace_pixel", str(pixel[0]), str(pixel[1])])
    assert rc == 0
    return capsys.readouterr().out


def one_line_error(capsys, rc, *words):
    out, err = capsys.readouterr()
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nanobrag-numba: error: "), err
    assert "Traceback" not in out + err
    for w in words:
        assert w in lines[0]
    return lines[0]


# ---------------------------------------------------------------- trace mode

def test_relative_difference():
    assert relative_difference((1.0, 0.0, -0.0), (1.0, 1e-18, 0.0)) < 1e-17
    assert relative_difference((0.0,), (0.0,)) == 0.0
    assert math.isclose(relative_difference((100.0, 1.0), (100.0, 2.0)), 0.01)
    assert relative_difference((1.0,), (1.0, 2.0)) == math.inf
    assert relative_difference(("MOSFLM",), ("XDS",)) == math.inf
    assert relative_difference((float("nan"),), (float("nan"),)) == 0.0


def _pair(block0_key=None, block1_key=None):
    """Two hand-written traces with two blocks; optional divergences in block 0 and block 1."""
    def block(n, bad):
        vals = {"pixel_pos_meters": "0.06 -0.0054 -0.0098", "hkl_frac": "0.1 -4.06 -7.04",
                "F_latt": "94.4", "F_cell": "192.07"}
        if bad in vals:
            vals[bad] = vals[bad].replace("0", "3", 1)
        return ["TRACE_C: %s %s" % kv for kv in vals.items()]
    tail = ["TRACE_C: I_before_scaling 1000", "TRACE_C: steps 1", "TRACE_C: polar 0.98",
            "TRACE_C: I_pixel_final 12.5"]
    ref = block(0, None) + block(1, None) + tail
    ours = block(0, block0_key) + block(1, block1_key) + tail
    return parse_trace(ref), parse_trace([ln.replace("TRACE_C", "TRACE_PY") for ln in ours])


def test_first_divergence_is_the_most_upstream_stage():
    ref, ours = _pair()
    assert compare_traces(ref, ours).first_divergence is None
    # F_cell differs in block 0 and the pixel position in block 1: geometry comes first in the pipeline
    ref, ours = _pair("F_cell", "pixel_pos_meters")
    report = compare_traces(ref, ours)
    assert report.first_divergence.label == "pixel_pos_meters[1]"
    assert report.first_divergence.stage == "geometry"
    assert [r.label for r in report.critical] == ["pixel_pos_meters[1]", "F_cell"]
    ref, ours = _pair("hkl_frac")
    assert compare_traces(ref, ours).first_divergence.label == "hkl_frac"


def test_trace_mode_on_two_logs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.log").write_text(trace_of(PHI_CARRYOVER + ["-c_quirks"], (8, 5), capsys))
    (tmp_path / "py.log").write_text(trace_of(PHI_CARRYOVER, (8, 5), capsys))
    # a log against itself: all PASS, exit 0
    rc = main(["trace", "py.log", "py.log", "--out", "same"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "no divergence" in out
    m = json.loads((tmp_path / "same" / "metrics.json").read_text())
    assert m["status"] == "PASS" and m["first_divergence"] is None and m["critical"] == 0
    assert m["pixel"] == [8, 5]
    # C's phi carry-over against the default: the first divergence is the lattice at phi step 0
    rc = main(["trace", "c.log", "py.log", "--out", "carry"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "FIRST DIVERGENCE: rot_a_angstroms (stage vectors)" in out
    assert "every scaling factor passes" in out
    m = json.loads((tmp_path / "carry" / "metrics.json").read_text())
    assert m["status"] == "CRITICAL"
    assert m["first_divergence"]["factor"] == "rot_a_angstroms"
    assert m["stages"]["scaling"] == "PASS" and m["stages"]["I_before_scaling"] == "CRITICAL"
    factors = {f["factor"]: f for f in m["factors"]}
    assert factors["I_before_scaling"]["status"] == "CRITICAL"
    assert factors["omega_pixel"]["status"] == "PASS"
    # a loose tolerance lets the small I difference through, not the lattice one
    rc = main(["trace", "c.log", "py.log", "--out", "loose", "--rtol", "1e-2"])
    capsys.readouterr()
    m = json.loads((tmp_path / "loose" / "metrics.json").read_text())
    assert rc == 1 and m["rtol"] == 1e-2
    assert m["first_divergence"]["stage"] in ("vectors", "hkl", "F_latt")


def test_trace_mode_runs_both_programs(tmp_path, monkeypatch, capsys, fake_reference):
    monkeypatch.chdir(tmp_path)
    rc = main(["trace", "--reference", fake_reference, "--out", "run"] + SMALL + ["-trace_pixel", "8", "5"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "no divergence" in out
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["status"] == "PASS" and m["pixel"] == [8, 5] and m["compared"] > 40
    assert "TRACE_C: hkl_frac" in (tmp_path / "run" / "trace_reference.log").read_text()
    assert "TRACE_PY: hkl_frac" in (tmp_path / "run" / "trace_ours.log").read_text()
    assert not (tmp_path / "floatimage.bin").exists() and not (tmp_path / "Fdump.bin").exists()
    # -c_quirks is ours only: the reference runs without it, and the phi carry-over shows up
    rc = main(["trace", "--reference", fake_reference, "--out", "quirks", "--pixel", "8", "5"]
              + PHI_CARRYOVER + ["-c_quirks"])
    out = capsys.readouterr().out
    assert rc == 1
    m = json.loads((tmp_path / "quirks" / "metrics.json").read_text())
    assert m["first_divergence"]["stage"] in ("vectors", "hkl")
    # without a pixel, our brightest pixel is traced
    rc = main(["trace", "--reference", fake_reference, "--out", "bright"] + SMALL)
    capsys.readouterr()
    m = json.loads((tmp_path / "bright" / "metrics.json").read_text())
    assert rc == 0 and len(m["pixel"]) == 2


def test_a_reference_without_trace_lines_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    silent = tmp_path / "silent"
    silent.write_text("#!/bin/sh\necho 'nanoBragg without trace'\n")
    silent.chmod(0o755)
    rc = main(["trace", "--reference", str(silent)] + SMALL)
    one_line_error(capsys, rc, "printed no trace lines")
    failing = tmp_path / "failing"
    failing.write_text("#!/bin/sh\necho 'ERROR: something'\nexit 3\n")
    failing.chmod(0o755)
    rc = main(["image", "--reference", str(failing)] + SMALL)
    one_line_error(capsys, rc, "status 3", "ERROR: something")
    rc = main(["image", "--reference", str(tmp_path / "nowhere")] + SMALL)
    one_line_error(capsys, rc, "not found")


@pytest.mark.golden
def test_golden_trace_against_ours_through_the_command(tmp_path, monkeypatch, capsys):
    golden.require()
    case = next(c for c in golden.cases() if c["id"] == "det_thick_abs")
    golden.stage(case, tmp_path)
    monkeypatch.chdir(tmp_path)
    ref = str(golden.golden_dir() / case["outputs"]["trace"])
    for quirks, expect in ((["-c_quirks"], 0), ([], 1)):
        (tmp_path / "ours.log").write_text(trace_of(case["args"] + quirks, case["trace_pixel"], capsys))
        rc = main(["trace", ref, "ours.log", "--out", "m"])
        out = capsys.readouterr().out
        assert rc == expect, out
    # corrected layer weighting: the sum differs, every scaling factor (capture fraction included) agrees
    m = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert m["first_divergence"]["factor"] == "I_before_scaling"
    assert m["stages"]["scaling"] == "PASS"


def test_trace_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk.log").write_text("hello\nTRACE: prose only\n")
    rc = main(["trace", "missing.log", "junk.log"])
    one_line_error(capsys, rc, "missing.log")
    rc = main(["trace", "junk.log", "junk.log"])
    one_line_error(capsys, rc, "junk.log", "no per-pixel trace lines")
    (tmp_path / "both.log").write_text("TRACE_C: F_cell 1\nTRACE_PY: F_cell 1\n")
    rc = main(["trace", "both.log", "both.log"])
    one_line_error(capsys, rc, "both TRACE_C and TRACE_PY")
    rc = main([])
    one_line_error(capsys, rc, "mode")
    rc = main(["diff", "a", "b"])
    one_line_error(capsys, rc, "mode")
    rc = main(["trace", "a.log"])
    one_line_error(capsys, rc, "two files")
    rc = main(["trace", "a.log", "b.log", "--rtol", "x"])
    one_line_error(capsys, rc, "--rtol")
    rc = main(["trace", "a.log", "b.log", "--bogus"])
    one_line_error(capsys, rc, "--bogus")
    rc = main(["trace", "a.log", "b.log", "-N", "5"])
    one_line_error(capsys, rc, "--reference")
    # through the main command line too
    rc = cli_main(["compare", "trace", "missing.log", "junk.log"])
    one_line_error(capsys, rc, "missing.log")
    assert main(["-h"]) == 0 and "usage" in capsys.readouterr().out


def test_compare_args_split_our_options_from_nanobragg_flags():
    a = parse_compare_args(["image", "--reference", "nb", "-N", "5", "--plot", "x.png", "-misset", "10", "-20",
                            "30", "--out", "d"])
    assert a.reference == "nb" and a.plot == "x.png" and a.out == "d"
    assert a.flags == ["-N", "5", "-misset", "10", "-20", "30"]
    a = parse_compare_args(["image", "r.bin", "o.bin", "--plot", "--shape", "2", "8"])
    assert a.files == ["r.bin", "o.bin"] and a.plot == "" and a.shape == (2, 8)
    a = parse_compare_args(["trace", "--reference", "nb", "--", "-cell", "40", "--rtol"])
    assert a.flags == ["-cell", "40", "--rtol"]
    with pytest.raises(NanoBraggError):
        parse_compare_args(["trace", "a", "b", "--plot"])


# ---------------------------------------------------------------- image mode

def synthetic(shape=(40, 48), seed=1):
    rng = np.random.default_rng(seed)
    img = rng.uniform(0.0, 1.0, shape).astype(np.float32)
    for (s, f), v in zip([(5, 7), (20, 30), (33, 3), (12, 40), (37, 44), (25, 10)], [90, 80, 70, 60, 50, 40]):
        img[s, f] = v
    return img


def test_brightest_peaks_are_local_maxima():
    img = synthetic()
    img[5, 8] = 89.0   # a shoulder of the brightest peak is not a peak of its own
    peaks = brightest_peaks(img)
    assert [(p["slow"], p["fast"]) for p in peaks] == [(5, 7), (20, 30), (33, 3), (12, 40), (37, 44)]
    assert peaks[0]["value"] == 90.0
    flat = np.zeros((4, 4), np.float32)
    assert [(p["slow"], p["fast"]) for p in brightest_peaks(flat)] == [(0, 0)]


def test_image_metrics():
    ref = synthetic()
    m = image_metrics(ref, ref.copy())
    assert m["identical"] and m["status"] == "PASS"
    assert m["correlation"] == pytest.approx(1.0) and m["max_rel_diff"] == 0.0 and m["rms_diff"] == 0.0
    m = image_metrics(ref, ref * np.float32(1.01))
    assert m["status"] == "FAIL" and m["checks"]["sum_ratio"] == "FAIL"
    assert m["checks"]["correlation"] == "PASS"
    assert m["sum_ratio"] == pytest.approx(1.01, rel=1e-6)
    assert m["max_rel_diff"] == pytest.approx(0.01, rel=1e-5)
    d = ref.astype(np.float64) * 0.01
    assert m["rms_diff"] == pytest.approx(float(np.sqrt(np.mean(d * d))), rel=1e-5)
    with pytest.raises(NanoBraggError):
        image_metrics(ref, ref[:10])


def test_image_mode_on_synthetic_files(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ref = synthetic()
    ref.astype("<f4").tofile("ref.bin")
    (ref * np.float32(1.02)).astype("<f4").tofile("ours.bin")
    with gzip.open("ref.bin.gz", "wb") as fh:
        fh.write(ref.astype("<f4").tobytes())
    rc = main(["image", "ref.bin.gz", "ref.bin", "--shape", "40", "48", "--out", "same"])
    out = capsys.readouterr().out
    assert rc == 0 and "verdict: PASS" in out
    rc = main(["image", "ref.bin", "ours.bin", "--shape", "40", "48", "--out", "scaled"])
    out = capsys.readouterr().out
    assert rc == 1
    for word in ("correlation", "max rel diff", "sum ratio", "rms diff", "(5, 7): 90", "(5, 7): 91.8"):
        assert word in out
    m = json.loads((tmp_path / "scaled" / "metrics.json").read_text())
    assert m["sum_ratio"] == pytest.approx(1.02, rel=1e-6) and m["status"] == "FAIL"
    assert [p["slow"] for p in m["peaks_ours"]] == [5, 20, 33, 12, 37]
    # shape inferred only for square images
    rc = main(["image", "ref.bin", "ours.bin"])
    one_line_error(capsys, rc, "not a square", "--shape")
    np.zeros((16, 16), np.float32).tofile("sq.bin")
    rc = main(["image", "sq.bin", "sq.bin", "--out", "sq"])
    capsys.readouterr()
    assert rc == 0
    rc = main(["image", "sq.bin", "ours.bin", "--shape", "16", "16"])
    one_line_error(capsys, rc, "ours.bin", "16 16")
    (tmp_path / "odd.bin").write_bytes(b"12345")
    rc = main(["image", "odd.bin", "sq.bin"])
    one_line_error(capsys, rc, "odd.bin", "multiple of 4")


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    np.zeros((8, 8), np.float32).tofile("a.bin")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    rc = main(["image", "a.bin", "a.bin", "--plot"])
    one_line_error(capsys, rc, "matplotlib", "nanobrag-numba[plot]")
    assert not (tmp_path / "metrics.json").exists()


def test_plot_writes_a_png(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    ref = synthetic((48, 48))
    ref.tofile("a.bin")
    (ref + np.float32(0.5)).tofile("b.bin")
    rc = main(["image", "a.bin", "b.bin", "--plot", "--out", "o"])
    capsys.readouterr()
    assert rc == 1
    png = tmp_path / "o" / "compare.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["plot"] == str(png.relative_to(tmp_path))


def test_image_mode_runs_both_programs(tmp_path, monkeypatch, capsys, fake_reference):
    monkeypatch.chdir(tmp_path)
    rc = main(["image", "--reference", fake_reference, "--out", "run"] + SMALL + ["-trace_pixel", "3", "3"])
    out = capsys.readouterr().out
    assert rc == 0, out
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["identical"] and m["shape"] == [16, 16]
    assert sorted(os.listdir(tmp_path)) == ["fake_nanoBragg", "run"]


@pytest.mark.golden
def test_image_mode_on_golden_images(tmp_path, monkeypatch, capsys):
    golden.require()
    monkeypatch.chdir(tmp_path)
    cases = {c["id"]: c for c in golden.cases()}
    a = str(golden.golden_dir() / cases["geom_mosflm_default"]["outputs"]["float"])
    b = str(golden.golden_dir() / cases["beam_dispersion"]["outputs"]["float"])
    rc = main(["image", a, a, "--out", "same"])
    capsys.readouterr()
    assert rc == 0
    rc = main(["image", a, b, "--out", "diff"])
    out = capsys.readouterr().out
    assert rc == 1
    m = json.loads((tmp_path / "diff" / "metrics.json").read_text())
    assert m["shape"] == [64, 64] and m["status"] == "FAIL"
    assert 0.0 < m["correlation"] < T.FLOAT_CORR_MIN
    # the traced pixel of geom_mosflm_default is its brightest spot
    assert (m["peaks_reference"][0]["slow"], m["peaks_reference"][0]["fast"]) == (46, 8)
    assert m["peaks_reference"][0]["value"] == pytest.approx(13648.140625)
    assert m["sum_reference"] == pytest.approx(cases["geom_mosflm_default"]["float_sum"], rel=1e-6)
    assert "(46, 8): 13648.1" in out


@pytest.mark.skipif(not os.environ.get("NANOBRAGG_REFERENCE"),
                    reason="set NANOBRAGG_REFERENCE to a nanoBragg binary to compare against it")
def test_image_mode_against_the_c_program(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = main(["image", "--reference", os.environ["NANOBRAGG_REFERENCE"], "--out", "c"] + SMALL)
    capsys.readouterr()
    assert rc == 0
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())["status"] == "PASS"


C_LIKE_REFERENCE = """#!{python}
# stand-in for the C program: nanobrag-numba with -c_quirks (C's behaviour for the defects we correct)
import subprocess, sys
p = subprocess.run([{python!r}, "-m", "nanobrag_numba"] + sys.argv[1:] + ["-device", "cpu", "-c_quirks"]{more},
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
sys.stdout.write(p.stdout)
sys.exit(p.returncode)
"""


def _c_like(tmp_path, name="c_like", more=""):
    path = tmp_path / name
    path.write_text(C_LIKE_REFERENCE.format(python=sys.executable, more=more))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_image_fail_on_a_corrected_behaviour_points_at_c_quirks(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ref = _c_like(tmp_path)
    rc = main(["image", "--reference", ref, "--out", "carry"] + PHI_CARRYOVER)
    out = capsys.readouterr().out
    assert rc == 1 and "verdict: FAIL" in out, out
    hints = [ln for ln in out.splitlines() if "-c_quirks" in ln]
    assert len(hints) == 1 and "phi0_carryover" in hints[0] and "corrected C defect" in hints[0]
    assert json.loads((tmp_path / "carry" / "metrics.json").read_text())["corrected_behaviours"] == ["phi0_carryover"]
    # with -c_quirks the two agree
    rc = main(["image", "--reference", ref, "--out", "quirks"] + PHI_CARRYOVER + ["-c_quirks"])
    out = capsys.readouterr().out
    assert rc == 0 and not [ln for ln in out.splitlines() if ln.startswith("note:")]


def test_image_fail_without_a_corrected_behaviour_has_no_hint(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ref = _c_like(tmp_path, "other", more=' + ["-distance", "61"]')        # a real difference
    rc = main(["image", "--reference", ref, "--out", "o"] + SMALL)
    out = capsys.readouterr().out
    assert rc == 1 and "verdict: FAIL" in out
    assert "-c_quirks" not in out


def test_trace_divergence_on_a_corrected_behaviour_points_at_c_quirks(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c_like_trace"
    path.write_text(FAKE_REFERENCE.format(python=sys.executable).replace('["-device", "cpu"]',
                                                                         '["-device", "cpu", "-c_quirks"]'))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    rc = main(["trace", "--reference", str(path), "--out", "t", "--pixel", "8", "5"] + PHI_CARRYOVER)
    out = capsys.readouterr().out
    assert rc == 1
    assert [ln for ln in out.splitlines() if ln.startswith("note:") and "-c_quirks" in ln]
