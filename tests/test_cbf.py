"""imgCIF/CBF output with full geometry (issue 11): -cbffile, write_cbf, batch --format cbf.

The byte-offset codec is checked against a plain decoder and fabio; the
geometry against dxtbx (DIALS' image library, Debian's ``dials`` package for
/usr/bin/python3), which must import the detector, beam and goniometer that
the simulator used: beam centre within 0.01 px, distance within 1 um.
"""
import functools
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

import nanobrag_numba as nb
from nanobrag_numba import batch
from nanobrag_numba.cli import main
from nanobrag_numba.io import cbf
from nanobrag_numba.io.smv import read_smv

BASE = ["-default_F", "100", "-cell", "40", "42", "45", "90", "90", "90", "-N", "3", "-detpixels", "24",
        "-pixel", "0.1", "-distance", "100", "-lambda", "1.2", "-seed", "7", "-device", "cpu", "-noprogress"]
NO_FILES = ["-floatfile", "/dev/null", "-intfile", "/dev/null", "-nopgm", "-nonoise"]
# the Python that imports dxtbx: Debian's dials package is for /usr/bin/python3 (a DIALS installer has dials.python)
SYSTEM_PYTHON = os.environ.get("NANOBRAGG_DXTBX_PYTHON") or "/usr/bin/python3"
NO_DXTBX = ("DIALS is not installed: %s cannot import dxtbx (apt-get install dials, DIALS 3.12 on Debian 12; "
            "or set NANOBRAGG_DXTBX_PYTHON to a Python that imports dxtbx)" % SYSTEM_PYTHON)


def _header_items(head: str) -> dict:
    items = {}
    for line in head.replace("\r\n", "\n").split("\n"):
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0].startswith("_"):
            items[parts[0]] = parts[1].strip("'")
    return items


# ---------------------------------------------------------------- byte offset

@pytest.mark.parametrize("seed", range(4))
def test_byte_offset_round_trip_with_every_width(seed):
    rng = np.random.default_rng(seed)
    n = 2000
    widths = rng.choice([100, 30000, 2 ** 30, 2 ** 31 - 1], size=n)
    arr = (rng.integers(-1, 2, size=n) * rng.integers(0, widths + 1)).astype(np.int64)
    arr[:6] = [0, 127, -127, 128, -128, 32767]
    arr[6:12] = [-32768, 32768, 2 ** 31 - 1, -2 ** 31, 2 ** 31 - 1, -2 ** 31]  # jumps of 2**32 - 1: the int64 escape
    packed = cbf.byte_offset_encode(arr)
    assert np.array_equal(cbf.byte_offset_decode(packed, n), arr)
    small = np.arange(-100, 100)
    assert len(cbf.byte_offset_encode(small)) == 200     # first value -100, then steps of 1: a byte each


def test_byte_offset_widths_are_the_cbf_escapes():
    assert cbf.byte_offset_encode([5, -3]) == bytes([5, 0xF8])
    assert cbf.byte_offset_encode([200]) == bytes([0x80, 200, 0])
    assert cbf.byte_offset_encode([-32767]) == bytes([0x80, 0x01, 0x80])
    assert cbf.byte_offset_encode([70000]) == bytes([0x80, 0, 0x80]) + (70000).to_bytes(4, "little")
    assert cbf.byte_offset_encode([0, 2 ** 31 - 1, -2 ** 31]) == (
        bytes([0, 0x80, 0, 0x80]) + (2 ** 31 - 1).to_bytes(4, "little")
        + bytes([0x80, 0, 0x80, 0, 0, 0, 0x80]) + (-(2 ** 32) + 1).to_bytes(8, "little", signed=True))


# ---------------------------------------------------------------- files

@pytest.fixture
def run_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def run(*extra):
        assert main(BASE + list(extra)) == 0
        return tmp_path
    return run


def test_cbffile_holds_the_int_image_geometry_and_truth(run_cli):
    d = run_cli("-floatfile", "/dev/null", "-nopgm", "-intfile", "i.img", "-noisefile", "n.img",
                "-cbffile", "i.cbf", "-cbfnoisefile", "n.cbf", "-phi", "10", "-osc", "0.5", "-misset", "5", "6", "7")
    head, pixels = cbf.read_cbf(str(d / "i.cbf"))
    assert np.array_equal(pixels, read_smv(str(d / "i.img")).data)
    _, noise = cbf.read_cbf(str(d / "n.cbf"))
    assert np.array_equal(noise, read_smv(str(d / "n.img")).data)
    it = _header_items(head)
    assert float(it["_diffrn_radiation_wavelength.wavelength"]) == pytest.approx(1.2)
    assert "ELEMENT_X ELEMENT_X 0.0 0.1\r\n" in head           # pixel size, mm
    assert "SCAN1 GONIOMETER_PHI 10.0 0.5 0.5" in head
    assert "IMAGE1 1 24 1 increasing ELEMENT_X" in head
    assert [float(x) for x in it["_nanobrag_truth.misset_deg"].split()] == pytest.approx([5, 6, 7])
    assert it["_nanobrag_truth.noise_seed"] == "7"
    assert it["_nanobrag_truth.mosaic_seed"] == "12345678"
    assert it["_nanobrag_truth.convention"] == "MOSFLM"
    assert it["_nanobrag_truth.phi_steps"] == "2" and float(it["_nanobrag_truth.phi_step_deg"]) == 0.25   # C's default
    assert "-misset 5 6 7" in head and "nanoBragg -default_F 100" in head     # the command line
    # the real-space vectors: lengths and angles are the cell
    a, b, c = (np.array([float(x) for x in it["_nanobrag_truth.real_space_%s" % k].split()]) for k in "abc")
    assert [np.linalg.norm(v) for v in (a, b, c)] == pytest.approx([40, 42, 45])
    assert np.dot(a, b) == pytest.approx(0, abs=1e-9)


def test_nonoise_writes_no_noise_cbf(run_cli):
    # as -noisefile in C, -cbfnoisefile turns the noise on and a later -nonoise turns it off
    d = run_cli("-cbfnoisefile", "n.cbf", "-cbffile", "i.cbf", *NO_FILES)
    assert (d / "i.cbf").exists() and not (d / "n.cbf").exists()
    d = run_cli(*NO_FILES, "-cbfnoisefile", "n.cbf")
    assert (d / "n.cbf").exists()


def test_cbf_that_names_an_input_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "P1.hkl").write_text("0 0 1 10\n")
    before = (tmp_path / "P1.hkl").read_bytes()
    assert main(BASE + NO_FILES + ["-hkl", "P1.hkl", "-cbffile", "P1.hkl"]) == 2
    assert (tmp_path / "P1.hkl").read_bytes() == before
    assert capsys.readouterr().err.count("\n") == 1


def test_fabio_reads_our_cbf(run_cli):
    fabio = pytest.importorskip("fabio", reason="fabio is not installed (pip install fabio)")
    d = run_cli(*NO_FILES, "-cbffile", "i.cbf")
    _, pixels = cbf.read_cbf(str(d / "i.cbf"))
    img = fabio.open(str(d / "i.cbf"))
    assert img.data.dtype == np.int32 and np.array_equal(img.data, pixels)


def test_api_write_cbf_and_bad_data(tmp_path):
    res = nb.simulate(nb.config_from_flags(BASE), device="cpu")
    nb.write_cbf(tmp_path / "a.cbf", res)
    _, pixels = cbf.read_cbf(str(tmp_path / "a.cbf"))
    assert np.array_equal(pixels, res.int_image())
    nb.write_cbf(tmp_path / "n.cbf", res, noise=True, noise_seed=3)
    head, pixels = cbf.read_cbf(str(tmp_path / "n.cbf"))
    assert np.array_equal(pixels, res.noise_image(3)) and "_nanobrag_truth.noise_seed 3" in head
    with pytest.raises(nb.NanoBraggError, match="CBF data must be whole numbers"):
        nb.write_cbf(tmp_path / "b.cbf", res, data=np.zeros((2, 2), dtype=np.int32))
    assert not (tmp_path / "b.cbf").exists()


def test_batch_format_cbf_names_end_in_the_frame_number(tmp_path):
    out = str(tmp_path / "cbf")
    assert batch.main(["--phi-series", "0", "0.5", "2", "--noise", "--format", "cbf", "--out", out,
                       "--quiet", "--"] + BASE + ["-osc", "0.5"]) == 0
    names = sorted(os.listdir(out))
    cbfs = [n for n in names if n.endswith(".cbf")]
    assert len(cbfs) == 2 and all(n[-10:-4].isdigit() for n in cbfs), names
    assert sorted(os.listdir(os.path.join(out, "noise"))) == cbfs
    head, _ = cbf.read_cbf(os.path.join(out, cbfs[1]))
    assert "SCAN1 GONIOMETER_PHI 0.5 0.5 0.5" in head


# ---------------------------------------------------------------- the frame

@pytest.mark.parametrize("conv", ["MOSFLM", "XDS", "DIALS", "ADXV", "DENZO"])
def test_lab_frame_puts_the_source_on_z_and_the_spindle_on_x(conv):
    res = nb.simulate(nb.config_from_flags(BASE + ["-%s" % conv.lower()]), device="cpu")
    g = cbf.lab_geometry(res.prep)
    assert g.beam == pytest.approx((0, 0, -1))
    assert g.spindle == pytest.approx((1, 0, 0))
    R = g.frame
    assert np.allclose(R @ R.T, np.eye(3)) and np.linalg.det(R) == pytest.approx(1)
    det = res.prep.det
    assert g.distance_mm == pytest.approx(det.close_distance * 1000)
    assert g.beam_center_fast_mm == pytest.approx(det.Fbeam * 1000)
    assert g.beam_center_slow_mm == pytest.approx(det.Sbeam * 1000)


# ---------------------------------------------------------------- dxtbx

DXTBX_SCRIPT = r"""
import json, sys
from dxtbx.model.experiment_list import ExperimentListFactory
out = {}
for path in sys.argv[1:]:
    expt = ExperimentListFactory.from_filenames([path])[0]
    d, b, g, s = expt.detector, expt.beam, expt.goniometer, expt.scan
    p = d[0]
    s0 = b.get_s0()
    nf, ns = p.get_image_size()
    out[path] = dict(
        format=expt.imageset.get_format_class().__name__,
        origin=list(p.get_origin()), fast=list(p.get_fast_axis()), slow=list(p.get_slow_axis()),
        pixel=list(p.get_pixel_size()), size=list(p.get_image_size()),
        beam_centre_px=list(p.get_beam_centre_px(s0)), distance=p.get_distance(),
        direction=list(b.get_sample_to_source_direction()), wavelength=b.get_wavelength(),
        axis=list(g.get_rotation_axis()) if g else None,
        oscillation=list(s.get_oscillation()) if s else None,
        pixel_sum=int(sum(expt.imageset.get_raw_data(0)[0])),
        # sample -> centre of a few pixels (mm): checked against the simulator's own pixel positions
        pixels={"%d,%d" % (f, t): list(p.get_pixel_lab_coord((f + 0.5, t + 0.5)))
                for f, t in ((0, 0), (nf - 1, 0), (0, ns - 1), (nf // 2, ns // 3))})
print(json.dumps(out))
"""


@functools.lru_cache(maxsize=None)
def _dxtbx_available():
    """Whether /usr/bin/python3 imports dxtbx (asked once: a start of dxtbx takes seconds)."""
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    p = subprocess.run([SYSTEM_PYTHON, "-c", "import dxtbx.model.experiment_list"], capture_output=True)
    return p.returncode == 0


ROTATIONS = ["-detector_rotx", "3", "-detector_roty", "-4", "-detector_rotz", "5", "-Xbeam", "1.3", "-Ybeam", "0.9"]
CASES = {
    "mosflm": ["-mosflm"],
    "xds": ["-xds"],
    "dials": ["-dials"],
    "adxv": ["-adxv"],
    "denzo": ["-denzo"],
    "twotheta": ["-twotheta", "20"],
    "custom": ["-fdet_vector", "0", "0.1", "1", "-sdet_vector", "0", "-1", "0.1", "-odet_vector", "1", "0", "0",
               "-beam_vector", "1", "0", "0.02", "-spindle_axis", "0", "0.1", "1", "-Xbeam", "1.1", "-Ybeam", "1.4"],
    "rotations": ROTATIONS,
    "twotheta_rotations": ROTATIONS + ["-twotheta", "20"],
    "xds_twotheta": ["-xds", "-twotheta", "15", "-detector_rotz", "-3"],
    "dials_rotations": ["-dials"] + ROTATIONS,
    "denzo_twotheta": ["-denzo", "-twotheta", "-10", "-detector_roty", "2"],
}


def dxtbx_read(paths):
    """What dxtbx (``/usr/bin/python3``) imports from each file: {path: DXTBX_SCRIPT's dict}."""
    p = subprocess.run([SYSTEM_PYTHON, "-c", DXTBX_SCRIPT] + list(paths), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def _frame_free(v, beam, spindle):
    """A vector by its length and components along the beam, the spindle and beam x spindle: the same numbers
    in any right-handed lab frame that agrees on the beam and the spindle."""
    beam, spindle = np.asarray(beam) / np.linalg.norm(beam), np.asarray(spindle) / np.linalg.norm(spindle)
    v = np.asarray(v, dtype=np.float64)
    return np.array([np.linalg.norm(v), v @ beam, v @ spindle, v @ np.cross(beam, spindle)])


def check_dxtbx_geometry(d, res, g, format_prefix, path=""):
    """dxtbx's model of one file (``d``) against the simulator's geometry (``res``; ``g`` its lab_geometry)."""
    det = res.prep.det
    ps = g.pixel_size_mm
    assert d["format"].startswith(format_prefix), d["format"]
    assert d["origin"] == pytest.approx(g.origin, abs=1e-6), path
    assert d["fast"] == pytest.approx(g.fast, abs=1e-9) and d["slow"] == pytest.approx(g.slow, abs=1e-9)
    assert d["pixel"] == pytest.approx([ps, ps]) and d["size"] == [det.fpixels, det.spixels]
    assert d["direction"] == pytest.approx([-c for c in g.beam], abs=1e-12)
    assert d["wavelength"] == pytest.approx(res.prep.cfg.lambda0 * 1e10, rel=1e-12)
    # beam centre within 0.01 px and distance within 1 um of where the simulator's beam meets its detector
    assert d["beam_centre_px"][0] == pytest.approx(g.beam_center_fast_mm / ps, abs=0.01), path
    assert d["beam_centre_px"][1] == pytest.approx(g.beam_center_slow_mm / ps, abs=0.01), path
    assert d["distance"] == pytest.approx(det.close_distance * 1000, abs=1e-3), path
    assert d["axis"] == pytest.approx(g.spindle, abs=1e-9)
    assert d["oscillation"] == pytest.approx([2, 0.25])
    assert d["pixel_sum"] == int(res.int_image().astype(np.int64).sum())
    # independent of lab_geometry's frame change: the pixel centres the kernel uses (C: pix0 + (f + 0.5) pixel
    # fdet + (s + 0.5) pixel sdet, nanoBragg's lab frame, m) against dxtbx's, both relative to beam and spindle
    for key, xyz in d["pixels"].items():
        f, t = (int(c) for c in key.split(","))
        ours = (np.asarray(det.pix0) + (f + 0.5) * det.pixel_size * np.asarray(det.fdet)
                + (t + 0.5) * det.pixel_size * np.asarray(det.sdet)) * 1000.0
        assert _frame_free(xyz, [-c for c in d["direction"]], d["axis"]) == pytest.approx(
            _frame_free(ours, det.beam, det.spindle), abs=1e-6), (path, key)
    if res.prep.cfg.detector_twotheta == 0:
        # C's own Fbeam/Sbeam (its header values) agree; with two-theta C computes them without the
        # two-theta turn (the SMV header's beam centre is then not where the beam meets the detector)
        assert d["beam_centre_px"] == pytest.approx([det.Fbeam / det.pixel_size, det.Sbeam / det.pixel_size],
                                                    abs=0.01), path


_IMPORTED = {}


def imported_geometry(tmp_path_factory, fmt):
    """Every CASES geometry written as ``fmt`` (cbf or nxs) and read back by dxtbx in ONE call (cached per
    format): {case: (what dxtbx read, Result, lab_geometry)}."""
    if not _dxtbx_available():
        pytest.skip(NO_DXTBX)
    if fmt not in _IMPORTED:
        folder = tmp_path_factory.mktemp("geometry_" + fmt)
        ours = {}
        for name, flags in CASES.items():
            path = str(folder / ("%s_0001.%s" % (name, fmt)))       # dxtbx wants a frame number in CBF names
            res = nb.simulate(nb.config_from_flags(BASE + ["-phi", "2", "-osc", "0.25"] + flags), device="cpu")
            (nb.write_cbf if fmt == "cbf" else nb.write_nxs)(path, res)
            ours[name] = (path, res, cbf.lab_geometry(res.prep))
        got = dxtbx_read([path for path, _, _ in ours.values()])
        _IMPORTED[fmt] = {name: (got[path], res, g) for name, (path, res, g) in ours.items()}
    return _IMPORTED[fmt]


@pytest.mark.dials
@pytest.mark.parametrize("case", list(CASES))
def test_dxtbx_imports_our_cbf_geometry(tmp_path_factory, case):
    d, res, g = imported_geometry(tmp_path_factory, "cbf")[case]
    check_dxtbx_geometry(d, res, g, "FormatCBFFull", case)


# ---------------------------------------------------------------- DIALS indexes a series to the truth

# A 20-image, 10-degree rotation series that DIALS can index to the truth in about a minute.  What made an
# earlier hand run (-N 8, -detpixels 512 at 100 mm, default -phisteps) miss by 0.3 % and 0.2 degrees:
# * the square crystal's sinc fringes between Bragg peaks are found as spots (-gauss_xtal has none);
# * -osc 0.5 alone renders 2 phi steps, at phi0 and phi0 + 0.25 (C's left Riemann sum), so an image shows
#   the crystal osc/(2*phisteps) = 0.125 degrees earlier than the middle of its range where DIALS puts it:
#   with -phisteps 10 that lag is 0.025 degrees (checked below, raw and corrected);
# * 4 A at the detector edge (1100 spots), with the detector refined in a 10-degree wedge: the cell is only as
#   good as the distance.  Here: 2.2 A at the edge, ~2300 spots, and the detector and beam fixed at the
#   geometry in the file (exact: the positional RMSD is ~0.02 px).
SERIES_OSC, SERIES_PHISTEPS = 0.5, 10
SERIES = ["-gauss_xtal", "-N", "5", "-cell", "40", "42", "45", "90", "90", "90", "-default_F", "100",
          "-detpixels", "384", "-pixel", "0.1", "-distance", "40", "-lambda", "1", "-osc", str(SERIES_OSC),
          "-phisteps", str(SERIES_PHISTEPS), "-misset", "10", "20", "30", "-seed", "3", "-device", "cpu"]
# fft1d and 5 candidate bases: the default fft3d search and 50 refined candidates take 4x longer, same answer
DIALS_INDEX = ["indexing.method=fft1d", "basis_vector_combinations.max_refine=5",
               "refinement.parameterisation.detector.fix=all", "refinement.parameterisation.beam.fix=all"]

CRYSTAL_SCRIPT = r"""
import json, sys
from dxtbx.model.experiment_list import ExperimentListFactory
from dials.array_family import flex
e = ExperimentListFactory.from_json_file(sys.argv[1], check_format=False)[0]
r = flex.reflection_table.from_file(sys.argv[2])
used = r.select(r.get_flags(r.flags.used_in_refinement))
x, y, _ = used["xyzobs.px.value"].parts()
xc, yc, _ = used["xyzcal.px"].parts()
print(json.dumps(dict(
    real_space=[list(v) for v in e.crystal.get_real_space_vectors()],
    axis=list(e.goniometer.get_rotation_axis()), oscillation=list(e.scan.get_oscillation()),
    space_group=e.crystal.get_space_group().info().symbol_and_number(),
    indexed=int((r["miller_index"] != (0, 0, 0)).count(True)), spots=len(r),
    rmsd_px=[float(flex.mean(flex.pow2(x - xc))) ** 0.5, float(flex.mean(flex.pow2(y - yc))) ** 0.5])))
"""


def _rotation(axis, deg):
    """Right-handed rotation by ``deg`` about ``axis`` (Rodrigues)."""
    k = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    t = np.radians(deg)
    return np.eye(3) + np.sin(t) * K + (1 - np.cos(t)) * K @ K


def compare_crystal(truth, found):
    """Cell and orientation of ``found`` (rows a, b, c; any basis of the lattice) against ``truth`` (rows a, b, c).

    DIALS picks its own (reduced, right-handed) basis: ``found`` is first re-expressed in the truth's
    basis by the integer matrix M = round(truth found^-1), which must be unimodular.  Returns
    (relative length errors, angle errors in degrees, misorientation in degrees: the angle of the
    rotation part of the map from the truth's vectors to the found ones, and that rotation).
    """
    truth, found = np.asarray(truth, dtype=np.float64), np.asarray(found, dtype=np.float64)
    M = np.rint(truth @ np.linalg.inv(found))
    assert abs(np.linalg.det(M) - 1) < 1e-9, "DIALS's lattice is not the truth's: M =\n%s" % M
    f = M @ found
    lengths = np.linalg.norm(f, axis=1) / np.linalg.norm(truth, axis=1) - 1

    def angles(v):
        return np.degrees([np.arccos(np.dot(v[i], v[j]) / np.linalg.norm(v[i]) / np.linalg.norm(v[j]))
                           for i, j in ((1, 2), (0, 2), (0, 1))])
    u, _, vt = np.linalg.svd(f.T @ np.linalg.inv(truth.T))    # f^T = Q truth^T, Q = R (rotation) x strain
    R = u @ vt
    angle = float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))))
    return lengths, angles(f) - angles(truth), angle, R


def test_compare_crystal_finds_a_rotation_in_any_basis():
    truth = np.diag([40.0, 42.0, 45.0]) @ _rotation([1, 2, 3], 30).T
    R = _rotation([0.3, -1, 0.2], 0.04)
    found = np.array([[0, 1, 0], [-1, 0, 0], [1, 0, 1]]) @ (truth @ R.T) * 1.0005    # another basis, 0.05 % long
    lengths, angles, angle, R2 = compare_crystal(truth, found)
    assert lengths == pytest.approx([5e-4] * 3) and angles == pytest.approx([0, 0, 0], abs=1e-9)
    assert angle == pytest.approx(0.04) and R2 == pytest.approx(R)
    with pytest.raises(AssertionError, match="not the truth"):
        compare_crystal(truth, found * [[2], [1], [1]])


def _truth(fmt, path):
    """The ``_nanobrag_truth`` / ``ground_truth`` real-space vectors of a file, in dxtbx's (imgCIF) lab frame,
    and the number of phi steps each image was rendered with."""
    if fmt == "cbf":
        it = _header_items(cbf.read_cbf(path)[0])
        return (np.array([[float(x) for x in it["_nanobrag_truth.real_space_%s" % k].split()] for k in "abc"]),
                int(it["_nanobrag_truth.phi_steps"]))
    import h5py
    with h5py.File(path, "r") as f:
        mcstas = np.array([f["entry/sample/ground_truth/real_space_%s" % k][()] for k in "abc"])
        steps = int(f["entry/sample/ground_truth/phi_steps"][()])
    return mcstas @ np.diag([-1.0, 1.0, -1.0]), steps      # NeXus McStas -> imgCIF, as dxtbx reads NXmx


@pytest.mark.dials
@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["cbf", "nxs"])
def test_dials_indexes_a_batch_series_to_the_truth(tmp_path, fmt):
    """batch -> dials.import -> dials.find_spots -> dials.index: the cell within 0.1 % and the orientation
    within 0.05 degrees of the real-space vectors written in the files."""
    if not (shutil.which("dials.import") and shutil.which("dials.index") and _dxtbx_available()):
        pytest.skip(NO_DXTBX if not _dxtbx_available() else "dials.import/dials.index are not on PATH")
    out = tmp_path / "series"
    assert batch.main(["--phi-series", "0", str(SERIES_OSC), "20", "--noise", "--format", fmt, "--out", str(out),
                       "--quiet", "--"] + SERIES) == 0
    work = out / "noise"
    if fmt == "cbf":
        names = sorted(n for n in os.listdir(work) if n.endswith(".cbf"))
        assert len(names) == 20 and names[0] == "img_000000.cbf"
        inputs, truth_file = names, str(work / names[0])
    else:
        inputs, truth_file = ["series.nxs"], str(work / "series.nxs")

    def dials(*argv):
        p = subprocess.run(list(argv), cwd=work, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        return p.stdout
    log = dials("dials.import", *inputs)
    assert "sweep:    1" in log and ("FormatCBFFull" if fmt == "cbf" else "FormatNXmx") in log, log[-2000:]
    if fmt == "cbf":
        assert "img_######.cbf" in (work / "imported.expt").read_text()   # one template: the number is last
    dials("dials.find_spots", "imported.expt", "nproc=1")
    dials("dials.index", "imported.expt", "strong.refl", *DIALS_INDEX)
    p = subprocess.run([SYSTEM_PYTHON, "-c", CRYSTAL_SCRIPT, "indexed.expt", "indexed.refl"], cwd=work,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    truth, phi_steps = _truth(fmt, truth_file)
    assert phi_steps == SERIES_PHISTEPS
    assert got["axis"] == pytest.approx([1, 0, 0], abs=1e-12)       # the file's spindle: imgCIF X
    assert got["spots"] > 2000 and got["indexed"] > 0.9 * got["spots"], got
    assert max(got["rmsd_px"]) < 0.1, got          # the detector and beam were not refined: ours are exact
    lengths, angles, raw, _ = compare_crystal(truth, got["real_space"])
    # nanoBragg's phi steps sample each image's range from its start: DIALS sees the crystal at the middle of
    # the range, osc/(2*phi_steps) later than rendered, so its orientation lags by that much about the spindle
    assert got["oscillation"] == pytest.approx([0, SERIES_OSC])
    lag = got["oscillation"][1] / (2 * phi_steps)
    _, _, corrected, _ = compare_crystal(truth @ _rotation(got["axis"], -lag).T, got["real_space"])
    print("\n%s: cell error %s %%, angle errors %s deg, misorientation %.4f deg (%.4f deg after the %.3f-degree "
          "phi-sampling lag), %d of %d spots indexed, RMSD %.3f %.3f px"
          % (fmt, np.round(lengths * 100, 4).tolist(), np.round(angles, 4).tolist(), raw, corrected, lag,
             got["indexed"], got["spots"], *got["rmsd_px"]))
    assert np.abs(lengths).max() < 1e-3
    assert np.abs(angles).max() < 0.09
    assert raw < 0.05
    assert corrected < 0.02
