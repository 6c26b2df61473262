"""NeXus/NXmx output with full geometry (issue 11): -nxsfile and write_nxs.

h5py checks the structure (NXmx classes, depends_on chains, the image stack,
the ground truth); dxtbx (Debian's DIALS 3.12 for /usr/bin/python3) must import
the detector, beam and scan that the simulator used: beam centre within
0.01 px, distance within 1 um (the same comparison as tests/test_cbf.py).
"""
import json
import os
import subprocess

import h5py
import numpy as np
import pytest

import nanobrag_numba as nb
from nanobrag_numba.cli import main
from nanobrag_numba.io import cbf
from nanobrag_numba.io.smv import read_smv
from test_cbf import BASE, CASES, NO_DXTBX, SYSTEM_PYTHON, _dxtbx_available, check_dxtbx_geometry, imported_geometry

MC = np.diag([-1.0, 1.0, -1.0])   # imgCIF <-> McStas


def _s(ds):
    v = ds[()]
    return v.decode() if isinstance(v, bytes) else str(v)


def _chain_origin(f, path):
    """Sum of the translations of a depends_on chain (mm): where the chain puts the module."""
    total = np.zeros(3)
    while path != ".":
        ds = f[path]
        assert ds.attrs["transformation_type"] == "translation"
        total += float(ds[()]) * np.asarray(ds.attrs["vector"]) + np.asarray(ds.attrs["offset"])
        path = ds.attrs["depends_on"]
        path = path.decode() if isinstance(path, bytes) else path
    return total


def test_nxsfile_structure_geometry_and_truth(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flags = BASE + ["-floatfile", "f.bin", "-intfile", "i.img", "-nopgm", "-nonoise", "-nxsfile", "i.nxs",
                    "-phi", "10", "-osc", "0.5", "-misset", "5", "6", "7", "-twotheta", "15", "-detector_rotz", "4"]
    assert main(flags) == 0
    res = nb.simulate(nb.config_from_flags(flags), device="cpu")
    g = cbf.lab_geometry(res.prep)
    from nanobrag_numba.simulator import _output_sizes
    estimate = {flag: size for flag, _path, size in _output_sizes(res.prep, None)}["-nxsfile"]
    assert (tmp_path / "i.nxs").stat().st_size <= estimate      # the free-space check asks for enough
    with h5py.File("i.nxs", "r") as f:
        entry = f["entry"]
        assert entry.attrs["NX_class"] == "NXentry" and _s(entry["definition"]) == "NXmx"
        data = entry["data/data"]
        assert data.shape == (1, 24, 24) and data.dtype == np.uint16
        assert np.array_equal(data[0], read_smv("i.img").data)
        floats = np.fromfile("f.bin", dtype="<f4").reshape(24, 24)
        assert np.array_equal(entry["data/float_data"][0], floats)
        det = entry["instrument/detector"]
        assert det.attrs["NX_class"] == "NXdetector" and _s(det["sensor_material"]) == "Si"
        mod = det["module"]
        assert mod.attrs["NX_class"] == "NXdetector_module"
        assert list(mod["data_size"][()]) == [24, 24] and list(mod["data_origin"][()]) == [0, 0]
        fast = mod["fast_pixel_direction"]
        assert float(fast[()]) == pytest.approx(0.1) and fast.attrs["units"] == "mm"
        assert MC @ fast.attrs["vector"] == pytest.approx(g.fast, abs=1e-12)
        assert MC @ mod["slow_pixel_direction"].attrs["vector"] == pytest.approx(g.slow, abs=1e-12)
        origin = _chain_origin(f, fast.attrs["depends_on"])
        assert MC @ origin == pytest.approx(g.origin, abs=1e-9)
        assert _s(det["depends_on"]).startswith("/entry/instrument/detector/transformations/")
        beam = entry["instrument/beam"]
        assert float(beam["incident_wavelength"][()]) == pytest.approx(1.2) and "incident_wavelength_spectrum" not in beam
        sample = entry["sample"]
        omega = f[_s(sample["depends_on"])]
        assert omega.attrs["transformation_type"] == "rotation" and omega.attrs["units"] == "deg"
        assert list(omega[()]) == pytest.approx([10.0])
        assert list(sample["transformations/omega_end"][()]) == pytest.approx([10.5])
        assert MC @ omega.attrs["vector"] == pytest.approx(g.spindle, abs=1e-12)
        truth = sample["ground_truth"]
        assert truth.attrs["NX_class"] == "NXnote"
        assert list(truth["cell"][()]) == pytest.approx([40, 42, 45, 90, 90, 90])
        assert list(truth["misset_deg"][()]) == pytest.approx([5, 6, 7])
        for key, v in zip("abc", g.real_space):
            assert MC @ truth["real_space_" + key][()] == pytest.approx(v, abs=1e-9)
        assert "-nxsfile i.nxs" in _s(truth["command_line"])
        assert int(truth["noise_seed"][()]) == 7
        assert int(truth["phi_steps"][()]) == 2 and float(truth["phi_step_deg"][()]) == 0.25


def test_dispersion_writes_the_spectrum(tmp_path):
    res = nb.simulate(nb.config_from_flags(BASE + ["-dispersion", "2", "-dispsteps", "3"]), device="cpu")
    nb.write_nxs(tmp_path / "s.nxs", res, float_images=False)
    with h5py.File(tmp_path / "s.nxs", "r") as f:
        beam = f["entry/instrument/beam"]
        assert float(beam["incident_wavelength"][()]) == pytest.approx(1.2)
        spec = beam["incident_wavelength_spectrum"]
        assert spec["wavelength"][()] == pytest.approx([1.188, 1.2, 1.212])
        assert spec["weight"][()] == pytest.approx([1 / 3] * 3)
        assert "float_data" not in f["entry/data"]


def test_write_nxs_series_stack_and_refusals(tmp_path):
    sim = [nb.simulate(nb.config_from_flags(BASE + ["-phi", str(p), "-osc", "0.5"]), device="cpu") for p in (0, 0.5, 1)]
    nb.write_nxs(tmp_path / "series.nxs", sim, noise=True, noise_seed=3)
    with h5py.File(tmp_path / "series.nxs", "r") as f:
        stack = f["entry/data/data"][()]
        assert stack.shape == (3, 24, 24)
        for k, r in enumerate(sim):
            assert np.array_equal(stack[k], r.noise_image(3))
        assert list(f["entry/sample/transformations/omega"][()]) == pytest.approx([0, 0.5, 1])
        assert int(f["entry/sample/ground_truth/noise_seed"][()]) == 3
    other = nb.simulate(nb.config_from_flags(BASE + ["-distance", "90"]), device="cpu")
    with pytest.raises(nb.NanoBraggError, match="another detector"):
        nb.write_nxs(tmp_path / "bad.nxs", [sim[0], other])
    with pytest.raises(nb.NanoBraggError, match="Result"):
        nb.write_nxs(tmp_path / "bad.nxs", [])
    with pytest.raises(nb.NanoBraggError, match="Result"):
        nb.write_nxs(tmp_path / "bad.nxs", "x")
    assert not (tmp_path / "bad.nxs").exists()


def test_nxsfile_that_names_an_input_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.hkl").write_text("0 0 1 100\n")
    assert main(["-hkl", "in.hkl", "-cell", "40", "40", "40", "90", "90", "90", "-detpixels", "8", "-nonoise",
                 "-nopgm", "-device", "cpu", "-nxsfile", "in.hkl"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nanobrag-numba: error:") and "-nxsfile" in err[0]
    assert (tmp_path / "in.hkl").read_text() == "0 0 1 100\n"


@pytest.mark.dials
@pytest.mark.parametrize("case", list(CASES))
def test_dxtbx_imports_our_nxmx_geometry(tmp_path_factory, case):
    # every convention, two-theta and detector rotations, custom vectors: as tests/test_cbf.py does for CBF
    d, res, g = imported_geometry(tmp_path_factory, "nxs")[case]
    assert d["format"] == "FormatNXmx", d["format"]
    check_dxtbx_geometry(d, res, g, "FormatNXmx", case)


def test_batch_refuses_nxsfile_in_the_base_flags():
    from nanobrag_numba import batch
    with pytest.raises(nb.NanoBraggError, match="-nxsfile has no meaning in a batch"):
        batch.base_config(BASE + ["-nxsfile", "x.nxs"])


@pytest.mark.dials
def test_dxtbx_imports_a_write_nxs_series_as_one_sweep(tmp_path):
    if not _dxtbx_available():
        pytest.skip(NO_DXTBX)
    sim = [nb.simulate(nb.config_from_flags(BASE + ["-phi", str(p), "-osc", "0.5", "-misset", "3", "4", "5"]),
                       device="cpu") for p in (3, 3.5, 4)]
    path = str(tmp_path / "series.nxs")
    nb.write_nxs(path, sim)
    script = ("import json, sys\nfrom dxtbx.model.experiment_list import ExperimentListFactory\n"
              "e = ExperimentListFactory.from_filenames([sys.argv[1]])\ns = e[0].imageset\n"
              "print(json.dumps([len(e), list(e[0].scan.get_image_range()), list(e[0].scan.get_oscillation()),"
              " [int(sum(s.get_raw_data(i)[0])) for i in range(len(s))]]))\n")
    p = subprocess.run([SYSTEM_PYTHON, "-c", script, path], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    n, image_range, osc, sums = json.loads(p.stdout.strip().splitlines()[-1])
    assert n == 1 and image_range == [1, 3] and osc == pytest.approx([3, 0.5])
    assert sums == [int(r.int_image().astype(np.int64).sum()) for r in sim]


def test_batch_format_nxs_writes_frames_and_one_series_file(tmp_path, capsys):
    import os
    from nanobrag_numba import batch
    out = str(tmp_path / "nxs")
    argv = ["--phi-series", "0", "0.5", "3", "--noise", "--format", "nxs", "--out", out, "--quiet", "--"] + BASE + [
        "-osc", "0.5"]
    assert batch.main(argv) == 0
    frames = sorted(n for n in os.listdir(out) if n.startswith("img_"))
    assert frames == ["img_000000.nxs", "img_000001.nxs", "img_000002.nxs"]
    for sub in ("", "noise"):
        with h5py.File(os.path.join(out, sub, "series.nxs"), "r") as f:
            stack = f["entry/data/data"][()]
            assert stack.shape == (3, 24, 24)
            assert list(f["entry/sample/transformations/omega"][()]) == pytest.approx([0, 0.5, 1])
            assert list(f["entry/sample/transformations/omega_end"][()]) == pytest.approx([0.5, 1, 1.5])
            assert f["entry/sample/ground_truth/real_space_a_per_image"].shape == (3, 3)
            for k, name in enumerate(frames):
                with h5py.File(os.path.join(out, sub, name), "r") as one:
                    assert np.array_equal(stack[k], one["entry/data/data"][0])
            assert ("float_data" in f["entry/data"]) == (sub == "")
    # a resumed run with nothing left to render still writes the series file
    os.unlink(os.path.join(out, "series.nxs"))
    assert batch.main(argv) == 0 and os.path.exists(os.path.join(out, "series.nxs"))
    # a job that would be named like the series file is refused before anything is rendered
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"name": "series", "phi_deg": 0}\n')
    assert batch.main(["--jobs", str(jobs), "--format", "nxs", "--out", str(tmp_path / "x"), "--quiet", "--"]
                      + BASE) == 2
    assert "series.nxs" in capsys.readouterr().err


# ---------------------------------------------------------------- -nxsnoisefile

NO_FILES = ["-floatfile", "/dev/null", "-intfile", "/dev/null", "-nopgm"]


def test_nxsnoisefile_holds_the_noise_image(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(BASE + NO_FILES + ["-noisefile", "n.img", "-nxsnoisefile", "n.nxs", "-nxsfile", "i.nxs",
                                   "-seed", "11", "-phi", "3", "-osc", "0.5"]) == 0
    with h5py.File("n.nxs", "r") as f:
        data = f["entry/data/data"]
        assert data.shape == (1, 24, 24)
        assert np.array_equal(data[0], read_smv("n.img").data)          # the noise image, as the SMV file
        assert "float_data" not in f["entry/data"]                       # the float image goes with -nxsfile
        truth = f["entry/sample/ground_truth"]
        assert int(truth["noise_seed"][()]) == 11 and _s(truth["pixels"]).startswith("noise image")
        assert "-nxsnoisefile n.nxs" in _s(truth["command_line"])
        assert list(f["entry/sample/transformations/omega"][()]) == pytest.approx([3.0])
    with h5py.File("i.nxs", "r") as f:
        assert not np.array_equal(f["entry/data/data"][0], read_smv("n.img").data)
        assert _s(f["entry/sample/ground_truth/pixels"]).startswith("int image")


def test_nonoise_writes_no_noise_nxs(tmp_path, monkeypatch):
    # as -noisefile in C: -nxsnoisefile turns the noise on and a later -nonoise turns it off
    monkeypatch.chdir(tmp_path)
    assert main(BASE + NO_FILES + ["-nxsnoisefile", "a.nxs", "-nxsfile", "i.nxs", "-nonoise"]) == 0
    assert os.path.exists("i.nxs") and not os.path.exists("a.nxs")
    assert main(BASE + NO_FILES + ["-nonoise", "-nxsnoisefile", "b.nxs"]) == 0
    assert os.path.exists("b.nxs")


def test_nxsnoisefile_that_names_an_input_is_refused_and_batch_refuses_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.hkl").write_text("0 0 1 100\n")
    assert main(BASE + NO_FILES + ["-hkl", "in.hkl", "-nxsnoisefile", "in.hkl"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nanobrag-numba: error:") and "-nxsnoisefile" in err[0]
    assert (tmp_path / "in.hkl").read_text() == "0 0 1 100\n"
    from nanobrag_numba import batch
    with pytest.raises(nb.NanoBraggError, match="-nxsnoisefile has no meaning in a batch"):
        batch.base_config(BASE + ["-nxsnoisefile", "x.nxs"])


def test_result_write_puts_the_noise_nxs_in_the_directory(tmp_path):
    res = nb.simulate(nb.config_from_flags(BASE + ["-nxsnoisefile", "n.nxs", "-floatfile", "", "-intfile", "",
                                                   "-nopgm"]), device="cpu")
    res.write(str(tmp_path))
    with h5py.File(tmp_path / "n.nxs", "r") as f:
        assert np.array_equal(f["entry/data/data"][0], res.noise_image())
