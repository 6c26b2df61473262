"""nonBragg: golden parity with nonBragg.c, the corrected defects, the physics of the background, bad input.

- Golden (../shared/golden_suite or $NANOBRAGG_GOLDEN_SUITE, skipped without it):
  every nonBragg case with -c_quirks, and the cases that touch no corrected
  row in the default mode, compared as the suite's check.py compares
  (its own comparison functions are used).
- The corrected rows (docs/differences.md): each default behaviour and its
  -c_quirks reproduction, and the note that names it.
- Physics: the background of a water layer is linear in thickness and density,
  inversely proportional to MW, and equals the formula at a pixel.
- Bad input: one line on stderr, exit status 2, nothing written.
"""
import gzip
import importlib.util
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import golden
import golden_suite as gs
from nanobrag_numba import nonbragg as NB
from nanobrag_numba.amorphous import background, stol_table
from nanobrag_numba.errors import NanoBraggError

CORRECTED = {"odet_vector_ignored", "pix0_vector_ignored", "curved_det_needs_arg", "nopgm_ignored",
             "pgm_negative_wrap", "img_stats_count", "stolout_uninitialised_columns", "twotheta_axis_substring"}
NB_CASES = gs.cases("nonBragg")
OUT = ["-floatfile", "floatimage.bin", "-intfile", "intimage.img", "-noisefile", "noiseimage.img",
       "-pgmfile", "image.pgm"]
HERE = os.path.dirname(os.path.abspath(__file__))


def _check_module():
    root = gs.require()
    spec = importlib.util.spec_from_file_location("golden_suite_check", str(root / "check.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(tmp_path, monkeypatch, args):
    """Run the nonbragg command in-process in tmp_path (with the suite's inputs/); returns the status."""
    root = gs.suite_dir()
    if not (tmp_path / "inputs").exists() and (root / "inputs").is_dir():
        os.symlink(root / "inputs", tmp_path / "inputs")
    monkeypatch.chdir(tmp_path)
    return NB.main(list(args))


def _compare(case, workdir):
    """check.py's comparison of every stored output; returns a list of failures."""
    ck = _check_module()
    root = gs.suite_dir()
    bad = []
    for key, rel in case["outputs"].items():
        if key == "stdout":
            continue
        ref = ck.read_bytes(str(root / rel))
        path = workdir / ck.OUT[key]
        if not path.exists():
            bad.append("%s missing" % key)
            continue
        cand = path.read_bytes()
        if key == "float":
            corr, maxrel = ck.float_metrics(np.frombuffer(ref, "<f4"), np.frombuffer(cand, "<f4"))
            if not (corr >= ck.CORR_MIN and maxrel <= ck.MAXREL_MAX):
                bad.append("float corr=%g maxrel=%g" % (corr, maxrel))
        elif key in ("int", "noise"):
            kr, ir = ck.parse_smv(ref)
            kc, ic = ck.parse_smv(cand)
            if ir.shape != ic.shape or (ir == ic).mean() < ck.IDENTICAL_MIN or ck.header_diffs(kr, kc):
                bad.append("%s differs (header %s)" % (key, ck.header_diffs(kr, kc)))
        elif key == "pgm":
            pr, _ = ck.parse_pgm(ref)
            pc, _ = ck.parse_pgm(cand)
            if pr.shape != pc.shape or np.abs(pr.astype(int) - pc.astype(int)).max() > ck.PGM_MAXDIFF:
                bad.append("pgm differs")
        elif key == "stol":
            rr, rc = ck.parse_table(ref), ck.parse_table(cand)
            if len(rr) != len(rc) or any(abs(a[c] - b[c]) > ck.STOL_RTOL * max(abs(a[c]), 1e-12)
                                         for a, b in zip(rr, rc) for c in ck.STOL_COLUMNS):
                bad.append("stol differs")
    return bad


# ---------------------------------------------------------------- golden parity

@pytest.mark.golden
@pytest.mark.parametrize("case", NB_CASES, ids=[c["id"] for c in NB_CASES])
def test_golden_quirks(case, tmp_path, monkeypatch):
    gs.require()
    assert _run(tmp_path, monkeypatch, OUT + case["args"] + ["-c_quirks"]) == 0
    assert _compare(case, tmp_path) == []


_DEFAULT = [c for c in NB_CASES if not CORRECTED & set(c["c_quirks"])]


@pytest.mark.golden
@pytest.mark.parametrize("case", _DEFAULT, ids=[c["id"] for c in _DEFAULT])
def test_golden_default(case, tmp_path, monkeypatch):
    gs.require()
    assert _run(tmp_path, monkeypatch, OUT + case["args"]) == 0
    assert _compare(case, tmp_path) == []


def test_suite_has_the_cases():
    if not gs.available():
        pytest.skip("noisify/nonBragg reference data not found at %s" % gs.suite_dir())
    assert len(NB_CASES) == 21 and len(_DEFAULT) >= 15


# ---------------------------------------------------------------- the corrected rows

WATER = ["-stol", "inputs/water.stol", "-detpixels", "16", "-pixel", "1.6", "-distance", "60", "-lambda", "1",
         "-flux", "1e12", "-exposure", "1", "-beamsize", "0.1", "-noprogress", "-seed", "1"]


def _float(path):
    return np.fromfile(path, dtype="<f4")


def _header(path):
    raw = open(path, "rb").read(512).decode("latin-1")
    return dict(line.rstrip(";").split("=", 1) for line in raw.split("\n") if "=" in line)


@pytest.fixture
def suite():
    gs.require()


def test_odet_vector_honoured(suite, tmp_path, monkeypatch, capsys):
    tilt = ["-odet_vector", "1", "0.1", "0"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert _run(tmp_path / "a", monkeypatch, WATER + tilt) == 0
    out = capsys.readouterr().out
    assert "(odet_vector_ignored)" in out
    assert _run(tmp_path / "b", monkeypatch, WATER + tilt + ["-c_quirks"]) == 0
    assert "odet_vector_ignored" not in capsys.readouterr().out
    a, b = _float(tmp_path / "a/floatimage.bin"), _float(tmp_path / "b/floatimage.bin")
    assert not np.allclose(a, b, rtol=1e-6)
    # with -c_quirks the vector is replaced by fdet x sdet: the image of the plain flags
    (tmp_path / "c").mkdir()
    assert _run(tmp_path / "c", monkeypatch, WATER) == 0
    assert np.array_equal(b, _float(tmp_path / "c/floatimage.bin"))


def test_pix0_vector_sets_origin(suite, tmp_path, monkeypatch, capsys):
    assert _run(tmp_path, monkeypatch, WATER + ["-pix0_vector", "0.07", "0.01", "-0.012"]) == 0
    assert "(pix0_vector_ignored)" in capsys.readouterr().out
    h = _header(tmp_path / "intimage.img")
    # close distance = pix0 . odet, ORGX = -pix0 . fdet / pixel (odet = x, fdet = z, sdet = -y)
    assert float(h["CLOSE_DISTANCE"]) == pytest.approx(70.0)
    assert float(h["ORGX"]) == pytest.approx(0.012 / 1.6e-3, rel=1e-5)
    assert float(h["ORGY"]) == pytest.approx(0.01 / 1.6e-3, rel=1e-5)
    (tmp_path / "q").mkdir()
    assert _run(tmp_path / "q", monkeypatch, WATER + ["-pix0_vector", "0.07", "0.01", "-0.012", "-c_quirks"]) == 0
    assert float(_header(tmp_path / "q/intimage.img")["CLOSE_DISTANCE"]) == pytest.approx(60.0)


def test_curved_det_as_last_word(suite, tmp_path, monkeypatch, capsys):
    for name, args in (("last", WATER + ["-curved_det"]), ("inner", ["-curved_det"] + WATER),
                       ("flat", WATER), ("last_q", WATER + ["-c_quirks", "-curved_det"])):
        (tmp_path / name).mkdir()
        assert _run(tmp_path / name, monkeypatch, args) == 0
        out = capsys.readouterr().out
        assert ("(curved_det_needs_arg)" in out) == (name == "last")
    img = {n: _float(tmp_path / n / "floatimage.bin") for n in ("last", "inner", "flat", "last_q")}
    assert np.array_equal(img["last"], img["inner"])
    assert not np.array_equal(img["last"], img["flat"])
    assert np.array_equal(img["last_q"], img["flat"])


def test_nopgm(suite, tmp_path, monkeypatch, capsys):
    assert _run(tmp_path, monkeypatch, WATER + ["-nopgm"]) == 0
    assert "(nopgm_ignored)" in capsys.readouterr().out
    assert not (tmp_path / "image.pgm").exists()
    assert _run(tmp_path, monkeypatch, WATER + ["-nopgm", "-c_quirks"]) == 0
    assert (tmp_path / "image.pgm").exists()


def _ice_case():
    return next(c for c in NB_CASES if c["id"] == "nb_ice_rings")


def test_pgm_negative_pixels_black(suite, tmp_path, monkeypatch, capsys):
    case = _ice_case()
    assert _run(tmp_path, monkeypatch, OUT + case["args"]) == 0
    assert "(pgm_negative_wrap)" in capsys.readouterr().out
    img = _float(tmp_path / "floatimage.bin").reshape(case["shape"])
    pgm = golden.parse_pgm((tmp_path / "image.pgm").read_bytes())
    scale = float((tmp_path / "image.pgm").read_bytes().split(b"\n")[2].split()[-1])
    neg = img * scale <= -1.0
    assert neg.any() and (pgm[neg] == 0).all()
    ref = golden.parse_pgm(gzip.decompress((gs.suite_dir() / case["outputs"]["pgm"]).read_bytes()))
    assert (ref[neg] != 0).any()          # C's wrapped bytes


def _img_case():
    return next(c for c in NB_CASES if c["id"] == "nb_img_header_air")


def test_img_stats_and_stol_columns(suite, tmp_path, monkeypatch, capsys):
    case = _img_case()
    assert _run(tmp_path, monkeypatch, OUT + case["args"]) == 0
    out = capsys.readouterr().out
    assert "(img_stats_count)" in out and "(stolout_uninitialised_columns)" in out
    img = _float(tmp_path / "floatimage.bin").astype(np.float64)
    avg = img.mean()
    d = np.append(img, 0.0)[1:] - avg         # C's rmsd reads each pixel's right neighbour
    rmsd = math.sqrt((d * d).sum() / (img.size - 1))
    scale = float((tmp_path / "image.pgm").read_bytes().split(b"\n")[2].split()[-1])
    assert scale == pytest.approx(250.0 / (5.0 * rmsd), rel=1e-5)
    rows = [list(map(float, line.split())) for line in (tmp_path / "output.stol").read_text().splitlines()]
    assert len(rows) == 18
    for stol, mean, rms, median, mad, n in rows:
        assert abs(median - mean) < 3 * rms and 0.0 < mad < 3 * rms and n > 100
    assert _run(tmp_path, monkeypatch, OUT + case["args"] + ["-c_quirks"]) == 0
    rows = [line.split() for line in (tmp_path / "output.stol").read_text().splitlines()]
    assert all(r[3] == "0" and r[4] == "0" for r in rows)


def test_twotheta_axis_collision(suite, tmp_path, monkeypatch, capsys):
    cfg = NB.parse_args(WATER + ["-twotheta_axis", "0", "0", "1"])
    assert cfg.detector_twotheta == 0.0 and cfg.pivot == "BEAM"
    q = NB.parse_args(WATER + ["-twotheta_axis", "0", "0", "1", "-c_quirks"])
    assert q.pivot == "SAMPLE"                 # C also reads it as -twotheta 0


# ---------------------------------------------------------------- parser

def test_substring_spellings_and_noops():
    cfg = NB.parse_args(["-stol", "x.stol", "-thicksteps", "2", "-sample_den", "0.5", "-molecular", "36",
                         "-coherent", "-noreject", "-4stol", "y.stol"])
    assert cfg.sample_x == pytest.approx(2e-3) and cfg.density == pytest.approx(0.5e6)
    assert cfg.molecular_weight == 36.0 and cfg.stolfile == "y.stol" and cfg.stol_mult == 1e10 / 4
    assert any("-thicksteps read as -thickness" in n for n in cfg.parse_notes)
    assert set(cfg.noop_flags) == {"-coherent", "-noreject"}
    # -noisefile turns the noise back on, -nonoise after it wins
    assert not NB.parse_args(["-stol", "a", "-noisefile", "n.img", "-nonoise"]).calculate_noise
    assert NB.parse_args(["-stol", "a", "-nonoise", "-noisefile", "n.img"]).calculate_noise
    # -pgmscale is not -scale, -stolout is not -stol, -MW is exact
    cfg = NB.parse_args(["-stol", "a", "-pgmscale", "2", "-stolout", "o.stol", "-MWx", "5"])
    assert cfg.pgm_scale == 2.0 and cfg.intfile_scale == 0.0 and cfg.stolfile == "a"
    assert cfg.stoloutfile == "o.stol" and cfg.molecular_weight == 18.0


def test_default_geometry_and_header(suite, tmp_path, monkeypatch):
    assert _run(tmp_path, monkeypatch, ["-stol", "inputs/water.stol", "-detpixels_x", "12", "-detpixels_y", "8",
                                         "-pixel", "0.5", "-noprogress", "-seed", "3"]) == 0
    h = _header(tmp_path / "intimage.img")
    # default beam centre ((Dx - pixel)/2, (Dy + pixel)/2), Y counted from the far edge in the header
    assert (h["SIZE1"], h["SIZE2"]) == ("12", "8")
    assert float(h["BEAM_CENTER_X"]) == pytest.approx((6.0 - 0.5) / 2)
    assert float(h["BEAM_CENTER_Y"]) == pytest.approx(4.0 - (4.0 + 0.5) / 2)
    assert float(h["DISTANCE"]) == 100.0 and float(h["TWOTHETA"]) == 0.0


# ---------------------------------------------------------------- physics

def _water_rows():
    stol = np.linspace(0.0, 0.5, 501)
    F = 2.57 + 6.0 * np.exp(-((stol - 0.16) / 0.05) ** 2)       # a water-like ring
    return np.column_stack([stol, F])

BG_FLAGS = "-detpixels 9 -pixel 3 -distance 60 -lambda 1 -fluence 1e20"


def test_background_linear_in_thickness_and_density_over_MW():
    rows = _water_rows()
    base = background(BG_FLAGS, rows, thickness_mm=0.05, density=1.0, MW=18.0)
    assert base.dtype == np.float32 and base.shape == (9, 9) and base.min() > 0
    for kw, factor in ((dict(thickness_mm=0.1, density=1.0, MW=18.0), 2.0),
                       (dict(thickness_mm=0.05, density=3.0, MW=18.0), 3.0),
                       (dict(thickness_mm=0.05, density=1.0, MW=36.0), 0.5),
                       (dict(thickness_mm=0.2, density=0.5, MW=9.0), 4.0)):
        np.testing.assert_allclose(background(BG_FLAGS, rows, **kw), factor * base, rtol=1e-6)


def test_background_matches_formula_at_each_pixel():
    """photons = F(stol)^2 * polar * omega * r_e^2 * fluence * t*w*h*rho*N_A/MW, evaluated independently."""
    rows = _water_rows()
    img = background(BG_FLAGS, rows, thickness_mm=0.05, density=1.0, MW=18.0).astype(np.float64)
    ps, dist, lam, n = 3e-3, 0.06, 1e-10, 9
    # nonBragg's default detector: beam along x, fast = z, slow = -y, beam spot at ((D-ps)/2, (D+ps)/2)
    Xb, Yb = (n * ps - ps) / 2, (n * ps + ps) / 2
    s, f = np.mgrid[0:n, 0:n]
    Fd, Sd = (f + 0.5) * ps, (s + 0.5) * ps
    pos = np.stack([np.full(Fd.shape, dist), Yb - Sd, Fd - Xb], axis=-1)
    R = np.linalg.norm(pos, axis=-1)
    d = pos / R[..., None]
    cos2t = d[..., 0]
    stol = np.linalg.norm(d - np.array([1.0, 0, 0]), axis=-1) / 2 / lam * 1e-10
    Fv = np.interp(stol, rows[:, 0], rows[:, 1])
    omega = ps * ps / R ** 2 * dist / R
    polar = 0.5 * (1 + cos2t ** 2)
    molecules = 0.05e-3 * 1e-4 * 1e-4 * 1e6 * 6.02214179e23 / 18.0
    expect = Fv ** 2 * polar * omega * 7.94079248018965e-30 * 1e20 * molecules
    np.testing.assert_allclose(img, expect, rtol=2e-4)


def test_background_on_a_nanobragg_detector():
    """A nanoBragg Config: the background lies on the main simulator's detector (its convention)."""
    import nanobrag_numba as nb
    cfg = nb.config_from_flags("-default_F 1 -cell 50 50 50 90 90 90 -detpixels 9 -pixel 3 -distance 60 "
                               "-fluence 1e20")
    img = background(cfg, _water_rows(), thickness_mm=0.05)
    assert img.shape == (9, 9)
    # MOSFLM puts the default beam spot at (D/2 + pixel) along fast and slow; nonBragg's axes are MOSFLM's
    same = background(BG_FLAGS + " -Xbeam 16.5 -Ybeam 16.5", _water_rows(), thickness_mm=0.05)
    default = background(BG_FLAGS, _water_rows(), thickness_mm=0.05)
    np.testing.assert_allclose(img, same, rtol=1e-12)
    assert not np.allclose(img, default, rtol=1e-3)


def test_serial_walk_equals_parallel_search():
    from nanobrag_numba import amorphous as B
    from nanobrag_numba.kernels import background as KB
    setup = NB.prepare(NB.parse_args(BG_FLAGS.split() + ["-oversample", "2", "-divergence", "1", "-divsteps", "3"],
                                     need_stol=False), log=lambda s: None, table=stol_table(_water_rows()))
    t = setup.table
    p = B.bg_params(setup.det, 2, False, False, False, 0.0, setup.sources.shape[0], t.nstols)
    a = np.empty((7, 81))
    b = np.empty((7, 81))
    KB.background_cpu(p, setup.sources, setup.weights, t.stol_of, t.F_of, a, 0, 9)
    KB.background_serial(p, setup.sources, setup.weights, t.stol_of, t.F_of, b)
    assert np.array_equal(a, b)


def test_stol_table_layout():
    t = stol_table([[0.0, 2.0], [0.1, float("nan")], [0.2, 3.0]], mult=1e10)
    assert t.nstols == 7 and t.increasing
    assert list(t.F_of[:7]) == [2.0, 2.0, 2.0, 0.0, 3.0, 3.0, 3.0]
    assert t.stol_of[3] == pytest.approx(0.1e10)
    assert not stol_table([[0.2, 1.0], [0.1, 1.0]]).increasing
    with pytest.raises(NanoBraggError):
        stol_table([[0.0, float("nan")]])


# ---------------------------------------------------------------- bad input

BAD = {
    "no_stol": (["-detpixels", "8"], "-stol"),
    "missing_stol": (["-stol", "nothere.stol", "-detpixels", "8"], "nothere.stol"),
    "not_a_number": (["-stol", "inputs/water.stol", "-distance", "abc"], "-distance"),
    "zero_pixel": (["-stol", "inputs/water.stol", "-pixel", "0"], "-pixel"),
    "zero_MW": (["-stol", "inputs/water.stol", "-MW", "0"], "-MW"),
    "overwrite_input": (["-stol", "inputs/water.stol", "-floatfile", "inputs/water.stol"], "overwrite"),
    "missing_img": (["-stol", "inputs/water.stol", "-img", "none.img"], "none.img"),
    "img_size": (["-stol", "inputs/air.stol", "-img", "inputs/water64.img", "-detpixels", "32"], "-img"),
    "missing_folder": (["-stol", "inputs/water.stol", "-detpixels", "8", "-pgmfile", "nodir/x.pgm"], "nodir"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input(name, tmp_path, monkeypatch, capsys):
    gs.require()
    args, word = BAD[name]
    assert _run(tmp_path, monkeypatch, ["-noprogress"] + args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nanobrag-numba: error:") and word in lines[0], lines
    assert sorted(os.listdir(tmp_path)) == ["inputs"]


def test_bad_input_console(tmp_path):
    """The installed command's path: one line, status 2, nothing written."""
    p = subprocess.run([sys.executable, "-m", "nanobrag_numba", "nonbragg", "-detpixels", "8", "-distance", "x"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == ["nanobrag-numba: error: -distance expects a number, got 'x'"]
    assert os.listdir(tmp_path) == []


def test_api_bad_input():
    with pytest.raises(NanoBraggError):
        background(BG_FLAGS, _water_rows(), MW=0.0)
    with pytest.raises(NanoBraggError):
        background(BG_FLAGS, "no_such.stol")
    with pytest.raises(NanoBraggError):
        background(BG_FLAGS, _water_rows(), stol_units="-X")
    with pytest.raises(NanoBraggError):
        background(BG_FLAGS + " -distance x", _water_rows())


# ---------------------------------------------------------------- CUDA (numba's simulator)

CUDA_FLAGS = ("-detpixels_x 7 -detpixels_y 5 -pixel 4 -distance 60 -lambda 1 -fluence 1e20 -oversample 2 "
              "-divergence 2 -divsteps 2 -polar 0.8 -roi 1 6 0 3 -curved_det").split()


def test_cuda_simulator_matches_cpu(tmp_path):
    """The CUDA kernel (one thread per pixel, binary search) equals the CPU kernel (row walk)."""
    from nanobrag_numba import amorphous as A
    out = str(tmp_path / "sim.npz")
    np.save(out + ".table.npy", _water_rows())
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", NUMBA_DISABLE_JIT="1")
    p = subprocess.run([sys.executable, os.path.join(HERE, "cuda_background_worker.py"), out] + CUDA_FLAGS,
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    sim = np.load(out)["rows"]
    setup = NB.prepare(NB.parse_args(CUDA_FLAGS, need_stol=False), log=lambda s: None,
                       table=stol_table(_water_rows()))
    t = setup.table
    params = A.bg_params(setup.det, 2, False, True, False, 0.8, setup.sources.shape[0], t.nstols)
    cpu = A.render_rows(params, setup.sources, setup.weights, t, full=True)
    assert cpu[0].max() > 0 and (cpu[0] == 0).sum() == 35 - 24       # ROI: 6 x 4 pixels
    np.testing.assert_allclose(sim, cpu, rtol=1e-12, atol=0)


# ---------------------------------------------------------------- the main command's -background

MAIN = ("-default_F 1 -cell 50 50 50 90 90 90 -N 2 -detpixels 12 -pixel 2 -distance 60 -oversample 1 -fluence 1e20 "
        "-noprogress -seed 1 -nonoise")


def test_main_command_background_adds_nb_background(tmp_path):
    import nanobrag_numba as nb
    table = tmp_path / "w.stol"
    np.savetxt(table, _water_rows())
    base = nb.simulate(nb.config_from_flags(MAIN)).floatimage
    cfg = nb.config_from_flags(MAIN + " -background %s -background_thick 0.2 -background_density 1.1 "
                                      "-background_MW 20" % table)
    both = nb.simulate(cfg).floatimage
    bg = nb.background(cfg, str(table), thickness_mm=0.2, density=1.1, MW=20.0)
    assert bg.min() > 0
    np.testing.assert_allclose(both.astype(np.float64) - base, bg, rtol=1e-5, atol=1e-6 * bg.max())


def test_main_command_background_bad_input(tmp_path, monkeypatch, capsys):
    from nanobrag_numba import cli
    monkeypatch.chdir(tmp_path)
    assert cli.main(MAIN.split() + ["-background", "missing.stol"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.stol" in err[0]
    assert cli.main(MAIN.split() + ["-background", "x.stol", "-background_MW", "0"]) == 2
    assert "-background_MW" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_batch_background(tmp_path):
    import glob
    import nanobrag_numba as nb
    from nanobrag_numba import batch
    table = tmp_path / "w.stol"
    np.savetxt(table, _water_rows())
    out0, out1 = str(tmp_path / "plain"), str(tmp_path / "bg")
    for out, extra in ((out0, []), (out1, ["--background", str(table)])):
        assert batch.main(["--phi-series", "0", "1", "2", "--format", "float", "--quiet", "--out", out] + extra
                          + ["--"] + MAIN.split() + ["-background_thick", "0.3"]) == 0
    bg = nb.background(nb.config_from_flags(MAIN), str(table), thickness_mm=0.3)
    files = sorted(glob.glob(os.path.join(out0, "*.bin")) + glob.glob(os.path.join(out0, "*.float")))
    assert len(files) == 2
    for f in files:
        a = np.fromfile(f, dtype=np.float32).reshape(bg.shape)
        b = np.fromfile(f.replace(out0, out1), dtype=np.float32).reshape(bg.shape)
        np.testing.assert_allclose(b.astype(np.float64) - a, bg, rtol=1e-5, atol=1e-6 * bg.max())


def test_printout_pixel_and_progress(suite, tmp_path, monkeypatch, capsys):
    args = [a for a in WATER if a != "-noprogress"]
    assert _run(tmp_path, monkeypatch, args) == 0
    out = capsys.readouterr().out
    assert "5% done" in out and "100% done" in out
    assert _run(tmp_path, monkeypatch, WATER + ["-printout_pixel", "3", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = [ln for ln in lines if " : stol = " in ln]
    assert len(head) == 1 and head[0].split()[:2] == ["3", "2"]
    pixel = float(next(ln for ln in lines if ln.startswith("pixel ")).split()[1])
    assert pixel == pytest.approx(float(_float(tmp_path / "floatimage.bin").reshape(16, 16)[2, 3]), rel=1e-6)


def test_console_script_and_help(capsys):
    import configparser
    import pathlib
    from nanobrag_numba import cli
    cfg = configparser.ConfigParser()
    cfg.read(pathlib.Path(__file__).resolve().parents[1] / "setup.cfg")
    assert "nonBragg = nanobrag_numba.nonbragg:console_main" in cfg["options.entry_points"]["console_scripts"]
    assert cli.main(["nonbragg", "-h"]) == 0
    text = capsys.readouterr().out
    assert "-stol FILE" in text and "-c_quirks" in text
    assert cli.main(["-h"]) == 0
    assert "nonbragg" in capsys.readouterr().out


def test_binary_search_finds_cs_walk_row():
    """For a strictly increasing table, the row C's walk reaches from ANY start is the binary search's."""
    from hypothesis import given, settings, strategies as st
    from nanobrag_numba.kernels.background import table_row, walk_row

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30, unique=True),
           st.floats(0.0, 1.2), st.integers(0, 40))
    def check(stols, x, start):
        t = stol_table(np.column_stack([sorted(stols), np.ones(len(stols))]), mult=1.0)
        start = min(start, t.nstols - 3)
        row = table_row(t.stol_of, t.nstols, x)
        assert row == walk_row(t.stol_of, t.nstols, x, start)
        assert t.stol_of[row] <= x < t.stol_of[row + 1]

    check()
