"""noisify: golden parity with the C program (golden_suite), physics of the noise models, bad input."""
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

import golden_suite as gs
import nanobrag_numba as nb
from nanobrag_numba import noisify_cli
from nanobrag_numba.errors import NanoBraggError
from nanobrag_numba.noise_models import apply_psf, psf_fwhm_pixels

NZ = gs.cases("noisify")
NZ_IDS = [c["id"] for c in NZ]
NZ_UNCORRECTED = [c for c in NZ if not gs.corrected_rows(c)]


def _md5(path):
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def _run_case(case, tmp_path, monkeypatch, quirks):
    gs.stage(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = (["-c_quirks"] if quirks else []) + gs.OUTPUT_FLAGS["noisify"] + case["args"]
    assert noisify_cli.main(argv) == 0
    return {key: tmp_path / gs.FILES[key] for key in ("int", "noise", "pgm")}


# ------------------------------------------------------------------ golden parity


@pytest.mark.golden
@pytest.mark.parametrize("case", NZ, ids=NZ_IDS)
def test_golden_c_quirks_byte_identical(case, tmp_path, monkeypatch, capsys):
    """With -c_quirks every file is byte for byte C's (same seeds: same noise, header, PGM)."""
    gs.require()
    out = _run_case(case, tmp_path, monkeypatch, quirks=True)
    for key in ("int", "noise", "pgm"):
        if key in case["outputs"]:
            assert _md5(out[key]) == case["md5"][key], key
        else:
            assert not out[key].exists(), key
    text = capsys.readouterr().out
    assert "restores C's behaviour" not in text               # no correction note under -c_quirks
    assert ("has no effect" in text) == ("noop_flags" in case["c_quirks"])


@pytest.mark.golden
@pytest.mark.parametrize("case", NZ_UNCORRECTED, ids=[c["id"] for c in NZ_UNCORRECTED])
def test_golden_default_mode_uncorrected_cases(case, tmp_path, monkeypatch, capsys):
    """Cases that touch no corrected row give C's files in the default mode too, without notes."""
    gs.require()
    out = _run_case(case, tmp_path, monkeypatch, quirks=False)
    for key in ("int", "noise", "pgm"):
        if key in case["outputs"]:
            assert _md5(out[key]) == case["md5"][key], key
    text = capsys.readouterr().out
    assert "-c_quirks" not in text


def _smv(path, dtype="<u2"):
    raw = open(path, "rb").read()
    return np.frombuffer(raw[512:], dtype=dtype)


@pytest.mark.golden
@pytest.mark.parametrize("case", [c for c in NZ if "psf_edge_wrap" in c["c_quirks"]],
                         ids=[c["id"] for c in NZ if "psf_edge_wrap" in c["c_quirks"]])
def test_golden_default_psf_differs_only_in_column_0(case, tmp_path, monkeypatch, capsys):
    """Corrected psf_edge_wrap: only column 0 (where C adds the light of the next row's edge) changes."""
    gs.require()
    out = _run_case(case, tmp_path, monkeypatch, quirks=False)
    assert "psf_edge_wrap; -c_quirks restores" in capsys.readouterr().out
    slow, fast = case["shape"]
    key = "noise" if "noise" in case["outputs"] else "int"
    ours = _smv(out[key]).reshape(slow, fast)
    ref = np.frombuffer(gs.read(case, key)[512:], dtype="<u2").reshape(slow, fast)
    diff = ours != ref
    assert diff.any()
    assert not diff[:, 1:].any()
    # the light C moved there came from the previous row's right edge: ours is never brighter
    assert np.all(ours[:, 0] <= ref[:, 0])


@pytest.mark.golden
def test_golden_default_bits32_noiseless_not_clipped(tmp_path, monkeypatch, capsys):
    """Corrected noiseless_int32_clipped: the 32-bit noiseless image keeps values above 65535."""
    gs.require()
    case = next(c for c in NZ if c["id"] == "nz_bits32")
    out = _run_case(case, tmp_path, monkeypatch, quirks=False)
    assert "noiseless_int32_clipped" in capsys.readouterr().out
    ours = _smv(out["int"], "<u4")
    ref = np.frombuffer(gs.read(case, "int")[512:], dtype="<u4")
    values = np.fromfile(gs.suite_dir() / "inputs" / "lyso256.bin", dtype="<f4")
    expect = np.minimum(values.astype(np.float64) + 40.0, 2147483647.0).astype(np.uint32)
    assert np.array_equal(ours, expect)
    assert ours.max() > 65535 and ref.max() == 65535
    assert np.array_equal(ours[ref < 65535], ref[ref < 65535])
    assert _md5(out["noise"]) == case["md5"]["noise"]


# ------------------------------------------------------------------ the PSF


def _point(n=64, value=1e4, at=None):
    img = np.zeros((n, n), dtype=np.float32)
    y, x = at or (n // 2, n // 2)
    img[y, x] = value
    return img


@pytest.mark.parametrize("psf,fwhm_um,radius,tol", [("gauss", 200, 0, 1e-3), ("gauss", 300, 4, 5e-3),
                                                    ("fiber", 100, 10, 2e-2), ("fiber", 150, 0, 2e-2)])
def test_psf_conserves_signal_away_from_edges(psf, fwhm_um, radius, tol):
    """A point well inside the image keeps its photons: the disc plus the analytic lost photons.

    With a small user radius (4 pixels for a 3-pixel FWHM) C's analytic estimate of the photons
    beyond the radius misses 0.3 %: the disc of whole pixels is not the circle of the formula.
    """
    img = _point()
    fwhm = psf_fwhm_pixels(fwhm_um, 0.1)
    out = apply_psf(img, psf, fwhm, radius)
    assert abs(float(out.astype(np.float64).sum()) / 1e4 - 1.0) < tol
    # symmetric about the point, brightest there
    c = 32
    assert out[c, c] == out.max()
    np.testing.assert_allclose(out[c, c + 1], out[c, c - 1], rtol=1e-6)
    np.testing.assert_allclose(out[c + 1, c], out[c, c + 1], rtol=1e-6)


def test_psf_flat_image_stays_flat_inside():
    img = np.full((48, 40), 100.0, dtype=np.float32)
    out = apply_psf(img, "gauss", 2.0, 5)
    inner = out[6:-6, 6:-6]
    np.testing.assert_allclose(inner, 100.0, rtol=1e-4)


def test_psf_default_gather_equals_scatter_without_wrap():
    """The parallel per-output-pixel loop sums in C's order: bit-identical to the scatter with >= bounds."""
    from nanobrag_numba.kernels import noisify as kn
    rng = np.random.default_rng(3)
    img = rng.poisson(30, size=(37, 29)).astype(np.float32)
    img[rng.random(img.shape) < 0.2] = 0
    img[5, 28] = 5e4
    for kind, user in ((kn.PSF_GAUSS, 0), (kn.PSF_FIBER, 3), (kn.PSF_GAUSS, 7)):
        flat = img.ravel()
        radii, _lost = kn.psf_radii(flat, kind, 1.3, user, 37)
        table = kn.psf_kernel_table(kind, 1.3, int(radii.max()))
        a, wrapped = kn.psf_scatter(flat, 29, 37, table, radii, False)
        b = kn.psf_gather(flat, 29, 37, table, radii, int(radii.max()))
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
        assert wrapped > 0
        c, _ = kn.psf_scatter(flat, 29, 37, table, radii, True)
        assert not np.array_equal(a, c)


def test_psf_edge_wrap_only_with_c_quirks():
    """Light one column past the right edge: dropped by default, column 0 of the next row with -c_quirks."""
    img = _point(16, 1000.0, at=(5, 15))
    fwhm = 2.0
    log = []
    ours = apply_psf(img, "gauss", fwhm, 3, c_quirks=False, log=log)
    c = apply_psf(img, "gauss", fwhm, 3, c_quirks=True)
    assert any("psf_edge_wrap" in line for line in log)
    assert np.all(c[:, 1:] == ours[:, 1:])
    assert np.all(c[4:9, 0] > ours[4:9, 0]) and c[3, 0] == ours[3, 0] and c[9, 0] == ours[9, 0]


# ------------------------------------------------------------------ noise statistics


def test_poisson_plus_readout_variance_on_a_flat_image():
    """Var(ADU) = gain^2 * I + readout^2 (+ 1/12 from truncation), mean = gain*I + adc - 1/2."""
    img = np.full((128, 128), 100.0, dtype=np.float32)
    r = nb.noisify(img, readout=5.0, calibration=0.0, adc=40.0, seed=7)
    adu = r.noise_image.astype(np.float64)
    var_expected = 100.0 + 25.0 + 1 / 12
    assert abs(adu.var() / var_expected - 1) < 0.06          # 16384 pixels: 1 sigma is 1.1 %
    assert abs(adu.mean() - (140.0 - 0.5)) < 0.5
    # gain scales the Poisson part and not the read-out noise
    g = nb.noisify(img, readout=5.0, calibration=0.0, gain=2.0, adc=40.0, seed=8).noise_image.astype(np.float64)
    assert abs(g.var() / (4 * 100.0 + 25.0 + 1 / 12) - 1) < 0.06
    # calibration and flicker add (c*I)^2 each
    cf = nb.noisify(img, calibration=0.1, flicker=0.1, seed=9).noise_image.astype(np.float64)
    assert abs(cf.var() / (100.0 + 2 * 100.0 + 1 / 12) - 1) < 0.08


def test_same_seeds_same_image_and_calibration_depends_on_the_shared_table():
    img = np.full((16, 16), 50.0, dtype=np.float32)
    a = nb.noisify(img, seed=3, calib_seed=4).noise_image
    assert np.array_equal(a, nb.noisify(img, seed=3, calib_seed=4).noise_image)
    assert not np.array_equal(a, nb.noisify(img, seed=5, calib_seed=4).noise_image)


def test_nonoise_is_deterministic_and_truncates():
    img = np.array([[0.0, 0.99, 1.5, 65600.0]], dtype=np.float32)
    r = nb.noisify(img, noise=False, adc=0.0)
    assert r.noise_image is None
    assert r.int_image.tolist() == [[0, 0, 1, 65535]]
    assert r.pgm.tolist() == [[0, 0, 1, 255]]


def test_api_takes_a_simulator_result():
    cfg = nb.config_from_flags("-default_F 100 -cell 40 40 40 90 90 90 -N 3 -detpixels 16 -pixel 0.2")
    res = nb.simulate(cfg)
    r = nb.noisify(res, readout=2.0, psf="gauss", psf_fwhm_um=200, seed=1)
    assert r.noise_image.shape == (16, 16) and r.noise_image.dtype == np.uint16
    ref = nb.noisify(res.floatimage, readout=2.0, psf="gauss", psf_fwhm_um=200, pixel_mm=0.2, seed=1)
    assert np.array_equal(r.noise_image, ref.noise_image)


@pytest.mark.parametrize("kw", [dict(bits=8), dict(psf="airy"), dict(psf_radius=-1), dict(psf_fwhm_um=-5),
                                dict(gain=float("nan")), dict(seed=2 ** 40)])
def test_api_rejects_bad_settings(kw):
    with pytest.raises(NanoBraggError):
        nb.noisify(np.ones((4, 4), dtype=np.float32), **kw)


def test_api_rejects_non_finite_images():
    img = np.ones((4, 4), dtype=np.float32)
    img[1, 1] = np.nan
    with pytest.raises(NanoBraggError, match="not finite"):
        nb.noisify(img)


# ------------------------------------------------------------------ command line


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    img = np.full((8, 8), 20.0, dtype=np.float32)
    img[0, 0] = 0.005
    img.tofile(tmp_path / "in.bin")
    return tmp_path


def _error(argv, capsys, files_before):
    assert noisify_cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nanobrag-numba: error: ")
    assert sorted(os.listdir(".")) == files_before
    return err[0]


@pytest.mark.parametrize("argv,words", [
    (["-floatfile", "in.bin", "-psf"], "-psf needs a value"),
    (["-floatfile", "missing.bin"], "cannot open input image missing.bin"),
    (["-floatfile", "in.bin", "-bits", "8"], "-bits must be 16 or 32"),
    (["-floatfile", "in.bin", "-seed", "abc"], "-seed expects a number"),
    (["-floatfile", "in.bin", "-readout", "x"], "-readout expects a number"),
    (["-floatfile", "in.bin", "-psf", "gauss", "-psf_radius", "-2"], "-psf_radius must be 0"),
    (["-floatfile", "in.bin", "-detpixels", "100"], "fewer than the 100 x 100"),
    (["-floatfile", "in.bin", "-intfile", "in.bin"], "would overwrite the -floatfile input"),
    (["-floatfile", "in.bin", "-frobnicate", "-strict"], "unknown flag -frobnicate"),
    (["-seed", "4"], "no input image"),
])
def test_bad_input_one_line_exit_2_nothing_written(workdir, capsys, argv, words):
    assert words in _error(argv, capsys, sorted(os.listdir(".")))


def test_empty_input_file(workdir, capsys):
    open("empty.bin", "wb").close()
    assert "empty" in _error(["-floatfile", "empty.bin"], capsys, sorted(os.listdir(".")))


def test_nonoise_gauss_auto_radius_on_faint_pixels_runs(workdir, capsys):
    """C crashes (NaN radius for 0 < I < 0.01); here the faint pixel gets the smallest radius, 1."""
    assert noisify_cli.main(["-floatfile", "in.bin", "-nonoise", "-psf", "gauss", "-psf_fwhm", "200"]) == 0
    assert os.path.exists("intimage.img") and not os.path.exists("noiseimage.img")
    img = _smv("intimage.img").reshape(8, 8)
    assert img[4, 4] >= 40 + 19      # light is kept: ~20 photons a pixel inside, adc 40


def test_c_flag_matching_rules(workdir, capsys):
    """noisify.c's rules: strstr, exact -psf/-detsize/-detpixels, values never consumed, notes."""
    s = noisify_cli.parse(["-bin", "in.bin", "-readnois", "3", "-detsize", "5", "-psf", "gaussian",
                           "-psf_fw", "60", "-detpix", "8", "-badpix_seed", "2"])
    assert s.floatfile == "in.bin" and s.readout == 3.0 and s.psf == "gauss" and s.psf_fwhm_um == 60.0
    text = "\n".join(s.notes)
    assert "-readnois read as -readout_noise" in text
    assert "-detsize has no effect" in text and "-badpix_seed has no effect" in text
    assert "-psf gaussian read as -psf gauss" in text
    assert "unknown flag -detpix" in text and "'8'" not in text.split("-detpix")[0]
    s = noisify_cli.parse(["my_floatimage.bin", "-readout_noise", "2", "-adc_offset", "10", "-seed", "-5"])
    assert s.floatfile == "my_floatimage.bin" and s.adc == 10.0 and s.seed == -5
    assert "-adc_offset read as -adc" in "\n".join(s.notes)
    assert not [n for n in s.notes if "-readout_noise" in n or "-5" in n]
    s = noisify_cli.parse(["-floatfile", "in.bin", "-seed"])
    assert s.seed is None and "needs a value" in s.notes[0]


def test_console_script_noisify(workdir):
    exe = os.path.join(os.path.dirname(sys.executable), "noisify")
    if not os.path.exists(exe):
        pytest.skip("console script noisify not installed in this environment")
    p = subprocess.run([exe, "-floatfile", "in.bin", "-seed", "1", "-psf"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.startswith("noisify: error: -psf needs a value")
    assert "Traceback" not in p.stderr
    p = subprocess.run([exe, "-floatfile", "in.bin", "-seed", "1", "-readout", "2"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(".")) == ["image.pgm", "in.bin", "intimage.img", "noiseimage.img"]


# ------------------------------------------------------------------ the main command's detector model


def test_main_command_detector_flags_equal_a_noisify_run(tmp_path, monkeypatch, capsys):
    """-readout_noise/-psf/-calibration on nanoBragg's command line give noisify's image of the float image."""
    from nanobrag_numba import cli
    monkeypatch.chdir(tmp_path)
    base = ["-default_F", "100", "-cell", "40", "40", "40", "90", "90", "90", "-N", "3", "-detpixels", "32",
            "-pixel", "0.2", "-seed", "5"]
    model = ["-readout_noise", "3", "-psf", "gauss", "-psf_fwhm", "200", "-calibration", "0.02", "-calib_seed", "9"]
    assert cli.main(base + model) == 0
    assert "detector model (noisify)" in capsys.readouterr().out
    assert noisify_cli.main(["-floatfile", "floatimage.bin", "-seed", "5", "-calib_seed", "9", "-readout", "3",
                             "-psf", "gauss", "-psf_fwhm", "200", "-pixel", "0.2", "-calibration", "0.02",
                             "-noisefile", "nz.img", "-intfile", "nzi.img", "-pgmfile", "nz.pgm"]) == 0
    ours = _smv("noiseimage.img")
    assert np.array_equal(ours, _smv("nz.img"))
    # without the model flags the noise image is nanoBragg's Poisson image (C's)
    assert cli.main(base + ["-noisefile", "plain.img"]) == 0
    plain = _smv("plain.img")
    assert not np.array_equal(plain, ours)
    flt = np.fromfile("floatimage.bin", dtype="<f4").reshape(32, 32)
    from nanobrag_numba.crand import CRandom
    assert np.array_equal(plain, CRandom().noise(flt, (0, 31, 0, 31), 40.0, 5)[0].ravel())


def test_api_noise_image_follows_the_config_model():
    cfg = nb.config_from_flags("-default_F 100 -cell 40 40 40 90 90 90 -N 3 -detpixels 16 -pixel 0.2 "
                               "-readout_noise 2 -flicker 0.05")
    res = nb.simulate(cfg)
    ref = nb.noisify(res.floatimage, readout=2, flicker=0.05, calibration=0.0, seed=11)
    assert np.array_equal(res.noise_image(11), ref.noise_image)


@pytest.mark.parametrize("words,msg", [("-psf airy", "unknown PSF type"), ("-readout_noise -1", "-readout_noise must"),
                                       ("-psf_fwhm 0", "-psf_fwhm must"), ("-psf_radius -3", "-psf_radius must")])
def test_main_command_detector_flag_errors(words, msg):
    with pytest.raises(NanoBraggError, match=msg):
        nb.config_from_flags("-default_F 1 -cell 40 40 40 90 90 90 -detpixels 8 " + words)


def test_psf_with_a_few_huge_discs_uses_the_source_loop_and_stays_exact():
    """Fiber PSF, automatic radius: one bright pixel gets a disc of the whole image; the rest radius 3."""
    from nanobrag_numba.kernels import noisify as kn
    img = np.full((40, 48), 0.05, dtype=np.float32)
    img[20, 20] = 1e5
    fwhm = 0.8
    out = apply_psf(img, "fiber", fwhm, 0)
    flat = img.ravel()
    radii, lost = kn.psf_radii(flat, kn.PSF_FIBER, fwhm, 0, 48)
    assert radii.max() == 48 and np.median(radii) == 3
    table = kn.psf_kernel_table(kn.PSF_FIBER, fwhm, 48)
    ref, _ = kn.psf_scatter(flat, 48, 40, table, radii, False)
    kn.add_uniform(ref, lost / flat.size)
    assert np.array_equal(out.ravel().view(np.uint32), ref.view(np.uint32))


def test_batch_noise_model(tmp_path, monkeypatch):
    """batch --noise-model: the noise images are noisify's model of each float image (seed = base + index)."""
    from nanobrag_numba import batch
    monkeypatch.chdir(tmp_path)
    base = ["-default_F", "100", "-cell", "40", "40", "40", "90", "90", "90", "-N", "3", "-detpixels", "16",
            "-pixel", "0.2", "-seed", "5"]
    assert batch.main(["--phi-series", "0", "1", "2", "--out", "b", "--format", "float", "--quiet",
                       "--noise-model", "-readout_noise 3 -psf gauss -psf_fwhm 200", "--"] + base) == 0
    for i in range(2):
        flt = np.fromfile("b/img_%06d.bin" % i, dtype="<f4").reshape(16, 16)
        ref = nb.noisify(flt, readout=3, psf="gauss", psf_fwhm_um=200, pixel_mm=0.2, calibration=0.0, seed=5 + i)
        assert np.array_equal(_smv("b/noise/img_%06d.img" % i).reshape(16, 16), ref.noise_image)
    with pytest.raises(NanoBraggError, match="--noise-model takes only"):
        batch.parse_options(["--phi-series", "0", "1", "2", "--out", "c", "--noise-model", "-N 3", "--"] + base)
    # with --noise-generator counter the model runs per pixel (test_noisify_counter.py)


def test_header_that_is_not_smv_is_an_error(workdir, capsys):
    with open("hdr.txt", "w") as fh:
        fh.write("not an SMV header\n" * 40)
    assert "does not look like an ADSC/SMV image" in _error(["-floatfile", "in.bin", "-header", "hdr.txt"], capsys,
                                                            sorted(os.listdir(".")))


def test_negative_adu_is_zero_by_default_and_gcc_wrap_with_c_quirks():
    img = np.zeros((4, 4), dtype=np.float32)
    d = nb.noisify(img, adc=0.0, readout=5.0, calibration=0.0, seed=3)
    q = nb.noisify(img, adc=0.0, readout=5.0, calibration=0.0, seed=3, c_quirks=True)
    assert any("negative ADU" in n for n in d.notes) and not q.notes
    neg = q.noise_image > 60000            # -3.7 -> 65533 on gcc/x86-64
    assert neg.any() and np.all(d.noise_image[neg] == 0)
    assert np.array_equal(d.noise_image[~neg], q.noise_image[~neg])


def test_unknown_psf_type_warns_and_applies_none(workdir, capsys):
    assert noisify_cli.main(["-floatfile", "in.bin", "-seed", "1", "-psf", "airy", "-nopgm"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: unknown psf type: airy" in out and "no PSF is applied" in out
    ref = nb.noisify(np.fromfile("in.bin", dtype="<f4").reshape(8, 8), seed=1)
    assert np.array_equal(_smv("noiseimage.img").reshape(8, 8), ref.noise_image)
