"""Weighted sources: ``-spectrum FILE``, the ``spectrum`` setting and the weights of ``-sourcefile``.

Default mode: each source counts in proportion to its weight, the weights
scaled to sum to the number of sources (the one ``/steps`` scale keeps the
total fluence).  ``-c_quirks``: every source counts equally, as in C.  No
golden data is needed (the golden ``beam_sourcefile`` case is checked with
``-c_quirks`` by the parity tests).
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import nanobrag_numba as nb
from nanobrag_numba import batch
from nanobrag_numba.cli import main
from nanobrag_numba.errors import NanoBraggError
from nanobrag_numba.simulator import R_E_SQR, launch_groups, render
from nanobrag_numba.sources import kernel_sources
from nanobrag_numba.tracefmt import BLOCK_KEYS, FINAL_KEYS, PREFIX_PY, parse_trace

HERE = os.path.dirname(os.path.abspath(__file__))

BASE = ("-default_F 100 -cell 40 42 45 90 90 90 -misset 10 20 30 -N 5 -lambda 1 -distance 60 "
        "-detpixels 16 -pixel 0.4 -oversample 1 -noprogress -nonoise -nopgm -seed 1").split()
SPECTRUM = [(0.97, 1.0), (1.0, 3.0), (1.04, 0.5)]            # (A, weight)
SOURCES = [(-10, 0, 0, 1.0, 1e-10), (-10, 0.004, 0, 0.5, 1e-10), (-10, -0.004, 0.002, 2.0, 1.02e-10),
           (-10, 0.002, 0.002, 0.25, 0.99e-10)]

#: float64 tolerance of a weighted sum against the hand-weighted sum of separate renders: the
#: same products in another order (weights scaled by n/sum, the sum over sources, /steps), a few
#: ulps (2.2e-16) each; 1e-12 relative to the brightest pixel leaves a wide margin and is still
#: 1e9 times finer than any weighting error (the weights differ by factors of 2 to 8)
RTOL64 = 1e-12


def photons64(prep, raw):
    """The image in float64: ``simulator.normalise`` without the float32 rounding."""
    img = R_E_SQR * prep.fluence * raw[0] / prep.steps
    img = img * raw[1] * raw[2] * raw[3]
    return img.reshape(prep.det.shape)


def image64(sim, **changes):
    prep = sim.prepare(**changes)
    return photons64(prep, render(prep, "cpu", keep_raw=True).raw), prep


def write_spectrum(path, pairs, scale=1.0):
    path.write_text("# wavelength(A) weight\n\n" + "".join("%r %r\n" % (lam, w * scale) for lam, w in pairs))
    return str(path)


def write_sources(path, rows, weight=None):
    path.write_text("".join("%r %r %r %r %r\n" % (x, y, z, w if weight is None else weight, lam)
                            for x, y, z, w, lam in rows))
    return str(path)


def assert_close64(got, want):
    assert want.max() > 0
    err = np.abs(got - want).max() / want.max()
    assert err <= RTOL64, err


# ---------------------------------------------------------------- physics

def test_spectrum_is_the_weighted_sum_of_monochromatic_images():
    sim = nb.Simulator(BASE, device="cpu")
    poly, prep = image64(sim, spectrum=tuple((lam / 1e10, w) for lam, w in SPECTRUM))
    assert prep.sources.shape == (3, 5) and prep.steps == 3
    total = sum(w for _, w in SPECTRUM)
    mono = [image64(sim, lambda0=lam / 1e10)[0] for lam, _ in SPECTRUM]
    want = sum((w / total) * m for (_, w), m in zip(SPECTRUM, mono))
    assert_close64(poly, want)
    # the weights matter: the unweighted (C) average of the same wavelengths is another image
    flat = sum(m for m in mono) / 3
    assert np.abs(flat - want).max() / want.max() > 1e-3


def test_sourcefile_weights_are_the_weighted_sum_of_single_sources(tmp_path):
    # -nopolar: without it the polarization of a pixel is that of its first source (C's loop), so
    # sources of other directions would not add up to separate single-source renders
    base = BASE + ["-nopolar", "-source_weights"]
    sim = nb.Simulator(base, device="cpu")
    poly, prep = image64(sim, sourcefile=write_sources(tmp_path / "all.txt", SOURCES))
    total = sum(r[3] for r in SOURCES)
    assert math.isclose(prep.sources[:, 4].sum(), len(SOURCES), rel_tol=1e-15)
    want = 0.0
    for i, row in enumerate(SOURCES):
        one = image64(sim, sourcefile=write_sources(tmp_path / ("s%d.txt" % i), [row]))[0]
        want = want + (row[3] / total) * one
    assert_close64(poly, want)


def test_doubling_every_weight_changes_nothing(tmp_path):
    sim = nb.Simulator(BASE, device="cpu")
    a = sim.render(spectrumfile=write_spectrum(tmp_path / "a.txt", SPECTRUM)).floatimage
    b = sim.render(spectrumfile=write_spectrum(tmp_path / "b.txt", SPECTRUM, 2.0)).floatimage
    assert np.array_equal(a, b)            # exact: scaling by 2 is exact in the normalisation
    c = sim.render(spectrumfile=write_spectrum(tmp_path / "c.txt", SPECTRUM, 3.0)).floatimage
    assert np.abs(c.astype(float) - a).max() <= 1e-6 * a.max()
    s1 = sim.render(sourcefile=write_sources(tmp_path / "s1.txt", SOURCES), source_weights=True).floatimage
    s2 = sim.render(sourcefile=write_sources(tmp_path / "s2.txt", [r[:3] + (2 * r[3], r[4]) for r in SOURCES]),
                    source_weights=True)
    assert np.array_equal(s1, s2.floatimage)


def test_c_quirks_ignores_the_weights_as_c(tmp_path):
    weighted = write_sources(tmp_path / "w.txt", SOURCES)
    unit = write_sources(tmp_path / "u.txt", SOURCES, weight=1.0)
    quirks = nb.Simulator(BASE + ["-c_quirks"], device="cpu")
    qw = quirks.render(sourcefile=weighted)
    assert np.array_equal(qw.prep.sources[:, 4], np.ones(len(SOURCES)))
    assert np.array_equal(qw.floatimage, quirks.render(sourcefile=unit).floatimage)
    assert any(k == "source_weights_ignored" for k, _ in qw.prep.notes)
    default = nb.Simulator(BASE, device="cpu")
    # equal weights: exactly C's image in the default mode too (weights exactly 1.0)
    assert np.array_equal(default.render(sourcefile=unit).floatimage, qw.floatimage)
    # the default mode is C's too (REFERENCE.md: source_weights_ignored "as C"), with a note naming the opt-in
    dw = default.render(sourcefile=weighted)
    assert np.array_equal(dw.floatimage, qw.floatimage)
    assert any(k == "source_weights_ignored" and "-source_weights uses it" in t for k, t in dw.prep.notes)
    # -source_weights: the weights count
    assert not np.array_equal(default.render(sourcefile=weighted, source_weights=True).floatimage, qw.floatimage)
    # a spectrum under -c_quirks: its wavelengths, equal weights
    spec = write_spectrum(tmp_path / "s.txt", SPECTRUM)
    flat = write_spectrum(tmp_path / "f.txt", [(lam, 1.0) for lam, _ in SPECTRUM])
    assert np.array_equal(quirks.render(spectrumfile=spec).floatimage, default.render(spectrumfile=flat).floatimage)


def test_equal_weights_are_exactly_one():
    table = np.zeros((3, 4))
    assert kernel_sources(table, [1 / 3] * 3, False)[:, 4].tolist() == [1.0, 1.0, 1.0]
    w = kernel_sources(table, [1.0, 2.0, 5.0], False)[:, 4]
    assert w.sum() == 3.0 and w[2] / w[0] == 5.0
    assert kernel_sources(table, [1.0, 2.0, 5.0], True)[:, 4].tolist() == [1.0, 1.0, 1.0]


def test_spectrum_is_combined_with_the_divergence(tmp_path):
    sim = nb.Simulator(BASE + ["-divergence", "1", "-divsteps", "3", "-square_div"], device="cpu")
    prep = sim.prepare(spectrumfile=write_spectrum(tmp_path / "s.txt", SPECTRUM))
    n = len(SPECTRUM)
    assert prep.sources.shape == (9 * n, 5) and prep.steps == 9 * n
    lam = prep.sources[:, 3].reshape(9, n)
    assert np.array_equal(lam, np.tile([l / 1e10 for l, _ in SPECTRUM], (9, 1)))
    w = prep.sources[:, 4].reshape(9, n)
    total = sum(x for _, x in SPECTRUM)
    assert np.allclose(w, np.tile([x * n / total for _, x in SPECTRUM], (9, 1)), rtol=1e-15, atol=0)


# ---------------------------------------------------------------- the command line, the API, the batch

def test_cli_spectrum_file_equals_the_api_pairs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_spectrum(tmp_path / "s.txt", SPECTRUM)
    assert main(BASE + ["-spectrum", "s.txt", "-floatfile", "f.bin", "-intfile", "i.img", "-device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "reading s.txt" in out and "spectrum of 3 wavelengths" in out
    cli = np.fromfile(tmp_path / "f.bin", dtype=np.float32).reshape(16, 16)
    sim = nb.Simulator(BASE, device="cpu")
    pairs = tuple((lam / 1e10, w) for lam, w in SPECTRUM)
    assert np.array_equal(sim.render(spectrum=pairs).floatimage, cli)
    assert np.array_equal(sim.render(spectrum=np.array(pairs)).floatimage, cli)     # a 2-D array too
    # a base with a spectrum file: a per-image spectrum replaces it, and back
    based = nb.Simulator(BASE + ["-spectrum", "s.txt"], device="cpu")
    assert np.array_equal(based.render().floatimage, cli)
    other = ((1.0e-10, 1.0),)
    assert np.array_equal(based.render(spectrum=other).floatimage, sim.render().floatimage)


def test_render_many_keeps_each_images_spectrum(tmp_path):
    sim = nb.Simulator(BASE, device="cpu")
    shots = [dict(spectrum=((0.98e-10, 1.0), (1.0e-10, 2.0))), dict(spectrum=((1.0e-10, 1.0), (1.03e-10, 4.0))),
             dict(spectrum=((0.98e-10, 1.0), (1.0e-10, 2.0)), misset=(0.1, 0.2, 0.3)), {}]
    results = sim.render_many(shots)
    for res, changes in zip(results, shots):
        assert np.array_equal(res.floatimage, sim.render(**changes).floatimage)
    # different spectra never share a launch; the same spectrum with another orientation does
    assert sorted(launch_groups([r.prep for r in results], "cpu")) == [[0, 2], [1], [3]]


def test_batch_jobs_carry_a_spectrum_per_shot(tmp_path):
    spec = write_spectrum(tmp_path / "s.txt", SPECTRUM)
    jobs = tmp_path / "jobs.jsonl"
    shots = [{"spectrum_A": [[0.98, 1.0], [1.0, 2.0]], "name": "a"},
             {"spectrum": [[1.0e-10, 1.0], [1.03e-10, 4.0]], "name": "b"},
             {"spectrumfile": spec, "name": "c"}]
    jobs.write_text("".join(json.dumps(s) + "\n" for s in shots))
    out = str(tmp_path / "out")
    assert batch.main(["--jobs", str(jobs), "--format", "float", "--out", out, "--quiet", "--"] + BASE) == 0
    sim = nb.Simulator(BASE, device="cpu")
    want = {"a": sim.render(spectrum=((0.98 / 1e10, 1.0), (1.0 / 1e10, 2.0))),
            "b": sim.render(spectrum=((1.0e-10, 1.0), (1.03e-10, 4.0))),
            "c": sim.render(spectrumfile=spec)}
    with open(os.path.join(out, "manifest.jsonl")) as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    assert len(records) == 3
    for rec in records:
        got = np.fromfile(os.path.join(out, rec["files"]["image"]), dtype=np.float32).reshape(16, 16)
        assert np.array_equal(got, want[rec["name"]].floatimage), rec["name"]
    with pytest.raises(batch.JobError, match="not both"):
        batch.resolve_job({"spectrum_A": [[1, 1]], "spectrum": [[1e-10, 1]]})


# ---------------------------------------------------------------- trace

def test_trace_shows_the_weight_and_adds_up(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_spectrum(tmp_path / "s.txt", SPECTRUM)
    assert main(BASE + ["-spectrum", "s.txt", "-floatfile", "f.bin", "-intfile", "i.img", "-device", "cpu",
                        "-trace_pixel", "7", "11"]) == 0
    t = parse_trace(capsys.readouterr().out.splitlines(), PREFIX_PY)
    total = sum(w for _, w in SPECTRUM)
    assert t.get("source_weight").values[0] == pytest.approx(SPECTRUM[0][1] * 3 / total, rel=1e-15)
    v = {k: t.get(k).values[0] for k in FINAL_KEYS}
    final = v["r_e_sqr"] * v["fluence_photons_per_m2"] * v["I_before_scaling"] / v["steps"]
    final *= v["capture_fraction"] * v["polar"] * v["omega_pixel"]
    assert math.isclose(final, v["I_pixel_final"], rel_tol=1e-13)
    img = np.fromfile(tmp_path / "f.bin", dtype=np.float32).reshape(16, 16)
    assert np.float32(v["floatimage_accumulated"]) == img[7, 11]
    # -c_quirks: C's trace lines, no weight
    assert main(BASE + ["-spectrum", "s.txt", "-c_quirks", "-device", "cpu", "-floatfile", "g.bin",
                        "-intfile", "g.img", "-trace_pixel", "7", "11"]) == 0
    lines = capsys.readouterr().out.splitlines()
    keys = [ln.split()[1] for ln in lines if ln.startswith(PREFIX_PY + ": ")]
    assert keys == list(BLOCK_KEYS) + list(FINAL_KEYS)


# ---------------------------------------------------------------- bad input

def _fails(capsys, args, *needles):
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nanobrag-numba: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("text, needles", [
    ("1.0 1\nwavelength weight\n", ("s.txt, line 2", "'wavelength' is not a number")),
    ("1.0 1 7\n", ("s.txt, line 1", "expected 2 numbers", "got 3")),
    ("1.0\n", ("line 1", "got 1")),
    ("1.0 nan\n", ("line 1", "'nan' is not a finite number")),
    ("inf 1\n", ("line 1", "'inf' is not a finite number")),
    ("1.0 1\n0 1\n", ("line 2", "wavelength 0 A")),
    ("-1.0 1\n", ("line 1", "wavelength -1 A")),
    ("1.0 -0.5\n", ("line 1", "weight -0.5 is negative")),
    ("1.0 0\n1.1 0\n", ("every weight is 0",)),
    ("# only a comment\n\n", ("no data lines in s.txt",)),
    ("1.0 1\n\x00\x01\x02 1\n", ("line 2", "is not a number")),
    ("1_0 1\n", ("line 1", "'1_0' is not a number")),
    ("1.0 1e999\n", ("line 1", "'1e999' is not a finite number")),
])
def test_bad_spectrum_files(text, needles, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.txt").write_text(text)
    _fails(capsys, BASE + ["-spectrum", "s.txt", "-device", "cpu"], *needles)
    assert sorted(os.listdir(tmp_path)) == ["s.txt"]        # nothing written


def test_spectrum_file_layout(tmp_path):
    from nanobrag_numba.io.textcols import read_spectrum
    (tmp_path / "s.txt").write_bytes(b"# lambda weight\r\n\r\n  1.0,\t0.5  # a comment\r\n"
                                     b"   # indented comment\n1.1 , 2\n1.2 0")
    pairs, lines = read_spectrum(tmp_path / "s.txt")
    assert pairs == [(1.0, 0.5), (1.1, 2.0), (1.2, 0.0)] and lines == [3, 5, 6]


def test_spectrum_conflicts_and_missing_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _fails(capsys, BASE + ["-spectrum", "nope.txt"], "cannot open spectrum file nope.txt")
    write_spectrum(tmp_path / "s.txt", SPECTRUM)
    write_sources(tmp_path / "src.txt", SOURCES)
    _fails(capsys, BASE + ["-spectrum", "s.txt", "-sourcefile", "src.txt"], "-spectrum and -sourcefile")
    _fails(capsys, BASE + ["-spectrum", "s.txt", "-dispersion", "1"], "replaces -dispersion")
    sim = nb.Simulator(BASE, device="cpu")
    for bad, text in [(((1e-10, -1.0),), "weight -1"), (((0.0, 1.0),), "wavelength 0 m"),
                      ((), "spectrum is empty"), (((1e-10, 0.0),), "every weight is 0"),
                      (((1e-10,),), "list of 2 numbers"), (((1e-10, math.nan),), "finite")]:
        with pytest.raises(NanoBraggError, match=text):
            sim.render(spectrum=bad)


def test_negative_source_weight_is_refused_in_the_default_mode(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rows = SOURCES[:1] + [SOURCES[1][:3] + (-1.0, SOURCES[1][4])]
    write_sources(tmp_path / "src.txt", rows)
    _fails(capsys, BASE + ["-sourcefile", "src.txt", "-source_weights"], "src.txt, line 2", "weight -1")
    write_sources(tmp_path / "zero.txt", SOURCES, weight=0.0)
    _fails(capsys, BASE + ["-sourcefile", "zero.txt", "-source_weights"], "every source has weight 0")
    # without -source_weights the weights are not used (as C), so any weight runs
    assert main(BASE + ["-sourcefile", "src.txt", "-floatfile", "f.bin", "-device", "cpu"]) == 0
    # -c_quirks: C ignores the weights, so any weight runs
    assert main(BASE + ["-sourcefile", "src.txt", "-c_quirks", "-floatfile", "f.bin", "-intfile", "i.img",
                        "-device", "cpu"]) == 0


# ---------------------------------------------------------------- CUDA (numba's simulator)

def test_cuda_simulator_matches_cpu_for_weighted_sources(tmp_path):
    write_spectrum(tmp_path / "s.txt", SPECTRUM)
    flags = [w for w in BASE if w not in ("-detpixels", "16")] + ["-detpixels", "6", "-pixel", "3",
                                                                  "-spectrum", "s.txt", "-divsteps", "2",
                                                                  "-divergence", "0.5", "-square_div"]
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", NUMBA_DISABLE_JIT="1")
    out = tmp_path / "sim.npz"
    p = subprocess.run([sys.executable, os.path.join(HERE, "cuda_sim_worker.py"), str(out), str(tmp_path)] + flags,
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    sim_rows = np.load(out)["rows"]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        prep = nb.Simulator(flags, device="cpu").prepare()
        from nanobrag_numba.backends import run_kernel
        rows, _oob, _ = run_kernel("cpu", prep, prep.params)
    finally:
        os.chdir(cwd)
    assert (prep.sources[:, 4] != 1.0).any() and rows[0].max() > 0
    assert np.allclose(sim_rows, rows, rtol=1e-12, atol=0)


def test_nxmx_spectrum_carries_the_weights(tmp_path):
    h5py = pytest.importorskip("h5py")
    sim = nb.Simulator(BASE, device="cpu")
    res = sim.render(spectrum=tuple((lam / 1e10, w) for lam, w in SPECTRUM))
    nb.write_nxs(tmp_path / "s.nxs", res, float_images=False)
    total = sum(w for _, w in SPECTRUM)
    with h5py.File(tmp_path / "s.nxs", "r") as f:
        spec = f["entry/instrument/beam/incident_wavelength_spectrum"]
        assert spec["wavelength"][()] == pytest.approx([lam for lam, _ in SPECTRUM])
        assert spec["weight"][()] == pytest.approx([w / total for _, w in SPECTRUM], rel=1e-12)


def test_compare_names_the_weights_as_a_corrected_behaviour(tmp_path):
    from nanobrag_numba.compare import corrected_behaviours
    sim = nb.Simulator(BASE + ["-source_weights"], device="cpu")
    weighted = write_sources(tmp_path / "w.txt", SOURCES)
    assert corrected_behaviours(sim.prepare(sourcefile=weighted)) == ["source_weights_ignored"]
    assert corrected_behaviours(nb.Simulator(BASE, device="cpu").prepare(sourcefile=weighted)) == []
    assert corrected_behaviours(sim.prepare(sourcefile=write_sources(tmp_path / "u.txt", SOURCES, 1.0))) == []
    assert corrected_behaviours(nb.Simulator(BASE + ["-c_quirks"], device="cpu").prepare(sourcefile=weighted)) == []
