"""Multi-panel detectors (issue 14): -detector_json, -expt, the panel table of the kernels, outputs.

A one-panel description must give the flags' image bit for bit; a detector
split into panels must give the monolithic image on the same pixels (and so
must a split with the panels listed in another order, on their own pixels);
DIALS experiment lists are read in DIALS's frame (crystal, beam, detector
hierarchy); bad descriptions are one-line errors.  The dials-marked test
renders a 4-panel detector with gaps and tilts from a DIALS experiment list,
writes NXmx and checks that dxtbx imports every panel within 0.01 px.
"""
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

import nanobrag_numba as nb
import nanobrag_numba.panels  # noqa: F401
from nanobrag_numba.cli import main
from nanobrag_numba.errors import NanoBraggError
from nanobrag_numba.panels import from_dials, to_dials
from nanobrag_numba.simulator import prepare
from test_cbf import SYSTEM_PYTHON, _dxtbx_available

FLAGS = ["-default_F", "100", "-cell", "50", "50", "50", "90", "90", "90", "-N", "5", "-detpixels", "16",
         "-distance", "50", "-misset", "10", "20", "30", "-device", "cpu"]
#: the same run with the detector from a panel description (the flags' geometry is refused there)
PFLAGS = [w for i, w in enumerate(FLAGS) if FLAGS[i - 1 if i else 0] not in ("-distance", "-detpixels")
          and w not in ("-distance", "-detpixels")]
HERE = os.path.dirname(os.path.abspath(__file__))


def _panel_of(det, rows=None, first_row=0, **extra):
    """A -detector_json panel with the geometry of a flags detector (rows first_row.. of it)."""
    rows = det.spixels if rows is None else rows
    origin = [det.pix0[i] + first_row * det.pixel_size * det.sdet[i] for i in range(3)]
    d = dict(origin_mm=[c * 1000.0 for c in origin], fast_axis=list(det.fdet), slow_axis=list(det.sdet),
             normal=list(det.odet), pixel_size_mm=det.pixel_size * 1000.0, image_size=[det.fpixels, rows])
    d.update(extra)
    return d


def _write(path, doc):
    with open(path, "w") as fh:
        json.dump(doc, fh)
    return str(path)


def _render(flags):
    return nb.Simulator(nb.Config.from_args(flags), device="cpu").render().floatimage


@pytest.fixture(scope="module")
def flat():
    cfg = nb.Config.from_args(FLAGS)
    prep = prepare(cfg, lambda s: None, write_dump=False)
    return prep.det, _render(FLAGS)


def test_one_panel_description_is_the_flags_image_bit_for_bit(tmp_path, flat):
    det, image = flat
    path = _write(tmp_path / "one.json", {"panels": [_panel_of(det)]})
    got = _render(PFLAGS + ["-detector_json", path])
    assert got.shape == image.shape and got.dtype == np.float32
    assert np.array_equal(got, image)


def test_split_detector_reproduces_the_monolithic_image(tmp_path, flat):
    det, image = flat
    halves = [_panel_of(det, 8, 0, name="top"), _panel_of(det, 8, 8, name="bottom")]
    path = _write(tmp_path / "two.json", {"panels": halves})
    got = _render(PFLAGS + ["-detector_json", path])
    assert got.shape == (2, 8, 16)
    assert np.array_equal(got.reshape(16, 16), image)
    # the same panels listed the other way round: each panel keeps its own pixels
    path2 = _write(tmp_path / "two_rev.json", {"panels": halves[::-1]})
    rev = _render(PFLAGS + ["-detector_json", path2])
    assert np.array_equal(rev[0], image[8:]) and np.array_equal(rev[1], image[:8])
    # four panels of four rows, one of them masked off by a rectangle
    quarters = [_panel_of(det, 4, 4 * k) for k in range(4)]
    quarters[2]["mask"] = [[0, 0, 16, 4]]
    path4 = _write(tmp_path / "four.json", {"panels": quarters})
    got4 = _render(PFLAGS + ["-detector_json", path4])
    want = image.reshape(4, 4, 16).copy()
    want[2] = 0.0
    assert np.array_equal(got4, want)


def test_panel_geometry_is_used_per_panel(tmp_path, flat):
    """A panel moved away renders its own, fainter pixels; the other panel is unchanged."""
    det, image = flat
    far = _panel_of(det, 8, 8)
    far["origin_mm"] = [far["origin_mm"][0] * 2.0] + far["origin_mm"][1:]
    path = _write(tmp_path / "far.json", {"panels": [_panel_of(det, 8, 0), far]})
    got = _render(PFLAGS + ["-detector_json", path])
    assert np.array_equal(got[0], image[:8])
    assert not np.array_equal(got[1], image[8:]) and got[1].sum() < image[8:].sum()


def test_cli_outputs_of_a_multi_panel_detector(tmp_path, flat, monkeypatch, capsys):
    det, image = flat
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "two.json", {"panels": [_panel_of(det, 8, 0), _panel_of(det, 8, 8)]})
    assert main(PFLAGS + ["-detector_json", "two.json", "-floatfile", "f.bin", "-intfile", "i.img",
                         "-noisefile", "n.img", "-pgmfile", "p.pgm", "-nxsfile", "d.nxs", "-seed", "1"]) == 0
    raw = np.fromfile("f.bin", dtype=np.float32)
    assert np.array_equal(raw, image.reshape(-1))      # (panels, slow, fast): the monolithic bytes
    for stem in ("i", "n"):
        for k in range(2):
            smv = nb.io.smv.read_smv("%s_p%02d.img" % (stem, k))
            assert (smv.height, smv.width) == (8, 16)
    assert not os.path.exists("i.img") and os.path.exists("p_p01.pgm")
    with h5py.File("d.nxs", "r") as f:
        mods = sorted(k for k in f["entry/instrument/detector"] if k.startswith("module"))
        assert mods == ["module_p00", "module_p01"]
        assert list(f["entry/instrument/detector/module_p01/data_origin"][()]) == [8, 0]
        assert f["entry/data/data"].shape == (1, 16, 16)
    capsys.readouterr()
    # CBF holds one panel: refused with one line, nothing written
    assert main(PFLAGS + ["-detector_json", "two.json", "-cbffile", "x.cbf", "-floatfile", "g.bin"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "-cbffile" in err[0] and not os.path.exists("x.cbf") and not os.path.exists("g.bin")


@pytest.mark.parametrize("doc, words", [
    ("{not json", "not valid JSON"),
    ({"panel": []}, "list \"panels\""),
    ({"panels": []}, "no panels"),
    ({"panels": [{"fast_axis": [1, 0, 0]}]}, "'origin_mm'"),
    ({"panels": [dict(origin_mm=[100, 0, 0], fast_axis=[0, 0, 1], slow_axis=[0, -1, 0], pixel_size_mm=0.1,
                      image_size=[0, 16])]}, "image_size"),
    ({"panels": [dict(origin_mm=[100, 0, 0], fast_axis=[0, 0, 1], slow_axis=[0, 0, 1], pixel_size_mm=0.1,
                      image_size=[16, 16])]}, "not perpendicular"),
    ({"panels": [dict(origin_mm=[100, 0, 0], fast_axis=[0, 0, 1], slow_axis=[0, -1, 0], pixel_size_mm=[0.1, 0.2],
                      image_size=[16, 16])]}, "rectangular"),
    ({"panels": [dict(origin_mm=[100, 0, 0], fast_axis=[0, 0, 1], slow_axis=[0, -1, 0], pixel_size_mm=0.1,
                      image_size=[16, 16]),
                 dict(origin_mm=[100, 0, 0], fast_axis=[0, 0, 1], slow_axis=[0, -1, 0], pixel_size_mm=0.1,
                      image_size=[16, 8])]}, "same size"),
    ({"panels": [dict(origin_mm=[100, 0, 0], fast_axis=[0, 0, 1], slow_axis=[0, -1, 0], pixel_size_mm=0.1,
                      image_size=[16, 16], mask=[[0, 0, 20, 4]])]}, "not inside"),
    ({"panels": [dict(origin_mm=[100, 0, 0], fast_axis=[0, 0, 1], slow_axis=[0, -1, 0], pixel_size_mm=0.1,
                      image_size=[16, 16], colour="red")]}, "unknown key"),
])
def test_bad_descriptions_are_one_line_errors(tmp_path, monkeypatch, capsys, doc, words):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    assert main(PFLAGS + ["-detector_json", "bad.json", "-floatfile", "f.bin"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nanobrag-numba: error:") and words in err[0], err
    assert sorted(os.listdir(tmp_path)) == ["bad.json"]
    with pytest.raises(NanoBraggError, match=words.replace("(", r"\(")):
        nb.Simulator(nb.Config.from_args(PFLAGS + ["-detector_json", str(path)]), device="cpu").render()


def test_flags_that_a_description_replaces_are_refused(tmp_path, flat):
    det, _ = flat
    path = _write(tmp_path / "one.json", {"panels": [_panel_of(det)]})
    for extra, words in ((["-roi", "0", "3", "0", "3"], "-roi"), (["-curved_det"], "-curved_det")):
        with pytest.raises(NanoBraggError, match=words):
            nb.Simulator(nb.Config.from_args(extra + PFLAGS + ["-detector_json", path]), device="cpu").render()


# ---------------------------------------------------------------- DIALS experiment lists

def _expt(panels, crystal=True, beam_dir=(0.0, 0.0, 1.0), wavelength=1.2):
    doc = {"__id__": "ExperimentList",
           "experiment": [{"__id__": "Experiment", "beam": 0, "detector": 0}],
           "beam": [{"direction": list(beam_dir), "wavelength": wavelength, "polarization_normal": [0.0, 1.0, 0.0],
                     "polarization_fraction": 0.75}],
           "detector": [{"panels": panels}]}
    if crystal:
        doc["experiment"][0]["crystal"] = 0
        doc["crystal"] = [{"__id__": "crystal", "real_space_a": [50.0, 0.0, 0.0], "real_space_b": [0.0, 50.0, 0.0],
                           "real_space_c": [0.0, 0.0, 50.0], "space_group_hall_symbol": " P 1"}]
    return doc


def _dials_panel(det, rows=None, first_row=0):
    """The panel dictionary dxtbx writes for (rows of) a flags detector, in DIALS's frame (mm)."""
    rows = det.spixels if rows is None else rows
    origin = [det.pix0[i] + first_row * det.pixel_size * det.sdet[i] for i in range(3)]
    return {"name": "p", "type": "SENSOR_PAD", "fast_axis": list(to_dials(det.fdet)),
            "slow_axis": list(to_dials(det.sdet)), "origin": [c * 1000.0 for c in to_dials(origin)],
            "pixel_size": [det.pixel_size * 1000.0] * 2, "image_size": [det.fpixels, rows], "thickness": 0.0,
            "mu": 0.0, "mask": []}


def test_frames_are_inverse():
    v = (0.1, -0.2, 0.3)
    assert from_dials(to_dials(v)) == v
    assert from_dials((0.0, 0.0, -1.0)) == (1.0, 0.0, -0.0)    # DIALS's beam (to -z) is MOSFLM's +x


def test_expt_gives_beam_crystal_and_panels(tmp_path, flat):
    det, _ = flat
    path = _write(tmp_path / "a.expt", _expt([_dials_panel(det, 8, 0), _dials_panel(det, 8, 8)]))
    cfg = nb.Config.from_args(["-expt", path, "-default_F", "100", "-N", "5", "-device", "cpu"])
    assert cfg.lambda0 == pytest.approx(1.2e-10) and cfg.polarization == pytest.approx(0.5)
    assert cfg.beam_vector == pytest.approx((1.0, 0.0, 0.0))
    assert cfg.dials_A is not None
    prep = prepare(cfg, lambda s: None, write_dump=False)
    assert len(prep.det.panels) == 2 and prep.det.shape == (16, 16)
    # the crystal: real-space a along DIALS x is nanoBragg's z
    assert prep.crystal.a == pytest.approx((0.0, 0.0, 50e-10), abs=1e-20)
    # the same experiment with the crystal from the flags: the same image as -cell without misset,
    # on the same pixels as the flags' detector; a flag after -expt overrides the file (-lambda)
    flags = ["-default_F", "100", "-N", "5", "-device", "cpu", "-distance", "50", "-detpixels", "16",
             "-cell", "50", "50", "50", "90", "90", "90", "-lambda", "1.2", "-polar", "0.5"]
    ref = _render(flags)
    nocrystal = _write(tmp_path / "b.expt", _expt([_dials_panel(det, 8, 0), _dials_panel(det, 8, 8)],
                                                  crystal=False))
    got = _render(["-expt", nocrystal, "-default_F", "100", "-N", "5", "-device", "cpu",
                   "-cell", "50", "50", "50", "90", "90", "90"])
    np.testing.assert_allclose(got.reshape(16, 16), ref, rtol=1e-5, atol=1e-3)
    with_crystal = _render(["-expt", path, "-default_F", "100", "-N", "5", "-device", "cpu"])
    np.testing.assert_allclose(with_crystal.reshape(16, 16), ref, rtol=2e-4, atol=1e-3)
    other = _render(["-expt", path, "-default_F", "100", "-N", "5", "-device", "cpu", "-lambda", "1.0"])
    assert not np.allclose(other, with_crystal)


def test_bad_expt_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.expt").write_text(json.dumps({"experiment": []}))
    assert main(["-expt", "x.expt", "-default_F", "1", "-floatfile", "f.bin"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a DIALS experiment list" in err[0]
    (tmp_path / "y.expt").write_text(json.dumps(_expt([{"name": "p"}])))
    assert main(["-expt", "y.expt", "-default_F", "1", "-floatfile", "f.bin"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'origin'" in err[0]
    assert sorted(os.listdir(tmp_path)) == ["x.expt", "y.expt"]


def _rot(axis, deg):
    """Rotation matrix about a unit axis (right-handed)."""
    a = np.asarray(axis, dtype=float)
    t = np.radians(deg)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * K + (1 - np.cos(t)) * K @ K


def four_panel_expt(npix=24, ps=0.172, gap=1.5, thick=0.0):
    """A DIALS experiment list (as dxtbx writes it) of a 2 x 2 detector with gaps and tilts, as a hierarchy.

    The panels' frames are local to a group at 100 mm (fast along DIALS x, slow
    along -y); dxtbx composes them itself in the dials test, which checks this
    reader's composition against it.
    """
    size = npix * ps
    panels = []
    tilts = [(1.0, -0.5), (-1.5, 0.8), (0.7, 1.2), (-0.9, -1.1)]
    common = {"type": "SENSOR_PAD", "raw_image_offset": [0, 0], "image_size": [npix, npix], "pixel_size": [ps, ps],
              "trusted_range": [-1.0, 1e6], "thickness": thick, "material": "Si", "mu": 0.0, "identifier": "",
              "mask": [], "gain": 1.0, "pedestal": 0.0, "px_mm_strategy": {"type": "SimplePxMmStrategy"}}
    for k, (ix, iy) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
        ax, ay = tilts[k]
        fast = _rot((0, 1, 0), ay) @ np.array([1.0, 0.0, 0.0])
        slow = _rot((1, 0, 0), ax) @ np.array([0.0, 1.0, 0.0])
        slow = slow - fast * fast.dot(slow)
        slow /= np.linalg.norm(slow)
        origin = [-size - gap / 2 + ix * (size + gap) + 0.3 * k, -size - gap / 2 + iy * (size + gap) - 0.2 * k,
                  0.05 * k]
        panels.append(dict(common, name="module%d" % k, fast_axis=list(fast), slow_axis=list(slow), origin=origin))
    root = dict(common, name="", type="", image_size=[0, 0], pixel_size=[0.0, 0.0], trusted_range=[0.0, 0.0],
                material="", fast_axis=[1.0, 0.0, 0.0], slow_axis=[0.0, -1.0, 0.0], origin=[0.0, 0.0, -100.0],
                children=[{"panel": k} for k in range(4)])
    U = _rot((1, 0, 0), np.degrees(0.4)) @ _rot((0, 1, 0), np.degrees(0.9)) @ _rot((0, 0, 1), np.degrees(0.2))
    real = (U @ (50.0 * np.eye(3))).T       # rows: a, b, c
    return {"__id__": "ExperimentList",
            "experiment": [{"__id__": "Experiment", "identifier": "", "beam": 0, "detector": 0, "crystal": 0}],
            "imageset": [],
            "beam": [{"direction": [0.0, 0.0, 1.0], "wavelength": 1.0, "divergence": 0.0, "sigma_divergence": 0.0,
                      "polarization_normal": [0.0, 1.0, 0.0], "polarization_fraction": 0.999, "flux": 0.0,
                      "transmission": 1.0}],
            "detector": [{"panels": panels, "hierarchy": root}],
            "goniometer": [], "scan": [],
            "crystal": [{"__id__": "crystal", "real_space_a": list(real[0]), "real_space_b": list(real[1]),
                         "real_space_c": list(real[2]), "space_group_hall_symbol": " P 1"}],
            "profile": [], "scaling_model": []}


def test_hierarchy_of_an_experiment_list_is_composed(tmp_path):
    """The panels of a dxtbx hierarchy are local to their group: composed, panel 0 sits at the group's 100 mm."""
    path = _write(tmp_path / "h.expt", four_panel_expt())
    exp = nb.panels.read_expt(path)
    assert len(exp.panels) == 4
    p0 = exp.panels[0]
    # the group is at DIALS z = -100 mm, i.e. 100 mm along nanoBragg's beam (+x); panel 0 is at local z 0
    assert p0.origin[0] == pytest.approx(0.1, abs=1e-12)
    # local z is along the group normal (fast x slow = DIALS -z): 0.15 mm further from the sample
    assert exp.panels[3].origin[0] == pytest.approx(0.1 + 0.15e-3, abs=1e-12)
    assert exp.beam == pytest.approx((1.0, 0.0, 0.0)) and exp.kahn == pytest.approx(0.998)


@pytest.mark.dials
def test_dials_imports_a_four_panel_nxmx_rendered_from_an_experiment_list(tmp_path):
    """4 panels with gaps and tilts (a dxtbx hierarchy) -> render -> NXmx -> dxtbx: panels within 0.01 px."""
    if not _dxtbx_available():
        pytest.skip("dxtbx is not importable by %s (apt-get install dials)" % SYSTEM_PYTHON)
    expt = _write(tmp_path / "four.expt", four_panel_expt(24))
    sim = nb.Simulator.from_expt(expt, "-default_F 100 -N 10", device="cpu")
    res = sim.render()
    assert res.floatimage.shape == (4, 24, 24) and res.floatimage.max() > 0
    nxs = str(tmp_path / "four.nxs")
    nb.write_nxs(nxs, res)
    script = r"""
import json, sys
from dxtbx.model.experiment_list import ExperimentListFactory
a = ExperimentListFactory.from_json_file(sys.argv[1], check_format=False)[0]
b = ExperimentListFactory.from_filenames([sys.argv[2]])[0]
out = {"format": b.imageset.get_format_class().__name__, "panels": [], "s0": [list(a.beam.get_s0()), list(b.beam.get_s0())],
       "sums": [float(sum(d)) for d in b.imageset.get_raw_data(0)]}
for pa, pb in zip(a.detector, b.detector):
    out["panels"].append([list(pa.get_origin()), list(pb.get_origin()), list(pa.get_fast_axis()),
                          list(pb.get_fast_axis()), list(pa.get_slow_axis()), list(pb.get_slow_axis()),
                          list(pb.get_image_size()), list(pb.get_pixel_size())])
out["npanels"] = [len(a.detector), len(b.detector)]
print(json.dumps(out))
"""
    p = subprocess.run([SYSTEM_PYTHON, "-c", script, expt, nxs], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["format"] == "FormatNXmx" and got["npanels"] == [4, 4]
    assert got["s0"][1] == pytest.approx(got["s0"][0], abs=1e-12)
    ps = 0.172
    for oa, ob, fa, fb, sa, sb, size, pix in got["panels"]:
        # dxtbx's own composition of the hierarchy (oa) against what came back from our NXmx (ob)
        assert np.abs(np.subtract(oa, ob)).max() < 0.01 * ps
        assert fb == pytest.approx(fa, abs=1e-9) and sb == pytest.approx(sa, abs=1e-9)
        assert size == [24, 24] and pix == pytest.approx([ps, ps])
    # the pixels of each module are that panel's int image
    ints = res.int_image()
    assert got["sums"] == pytest.approx([float(ints[k].sum()) for k in range(4)])


def _real_to_A(real):
    return tuple(float(x) for x in np.linalg.inv(np.asarray(real, dtype=float)).reshape(-1))


def test_from_expt_and_batch_jobs_override_the_crystal_in_the_dials_frame(tmp_path, flat, capsys):
    det, _ = flat
    doc = _expt([_dials_panel(det, 8, 0), _dials_panel(det, 8, 8)])
    doc["crystal"][0]["real_space_a"] = [40.0, 30.0, 0.0]     # a general orientation
    doc["crystal"][0]["real_space_b"] = [-30.0, 40.0, 0.0]
    path = _write(tmp_path / "c.expt", doc)
    sim = nb.Simulator.from_expt(path, "-default_F 100 -N 5", device="cpu")
    base = sim.render()
    assert base.floatimage.shape == (2, 8, 16)
    A0 = _real_to_A([[40.0, 30.0, 0.0], [-30.0, 40.0, 0.0], [0.0, 0.0, 50.0]])
    assert sim.base.dials_A == pytest.approx(A0)
    turned = _real_to_A([[50.0, 0.0, 0.0], [0.0, 50.0, 0.0], [0.0, 0.0, 50.0]])
    other = sim.render(dials_A=turned)
    assert not np.array_equal(other.floatimage, base.floatimage)
    many = sim.render_many([{"dials_A": A0}, {"dials_A": turned}])      # one launch, the panel table shared
    assert np.array_equal(many[0].floatimage, base.floatimage) and np.array_equal(many[1].floatimage,
                                                                                 other.floatimage)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"id": "same", "dials_A": list(A0)}) + "\n"
                    + json.dumps({"id": "turned", "dials_A": list(turned)}) + "\n")
    out = tmp_path / "run"
    assert main(["batch", "--jobs", str(jobs), "--out", str(out), "--format", "float", "--",
                 "-expt", path, "-default_F", "100", "-N", "5", "-device", "cpu"]) == 0
    capsys.readouterr()
    names = sorted(f for f in os.listdir(out) if f.startswith("img_"))
    imgs = [np.fromfile(out / n, dtype=np.float32).reshape(2, 8, 16) for n in names]
    assert np.array_equal(imgs[0], base.floatimage) and np.array_equal(imgs[1], other.floatimage)


def test_panel_sensor_thickness_and_attenuation(tmp_path):
    """Per-panel thickness / mu: the split thick detector is the flags' one; another mu changes its panel only."""
    thick = FLAGS + ["-detector_thick", "300", "-detector_abs", "500", "-detector_thicksteps", "2"]
    cfg = nb.Config.from_args(thick)
    det = prepare(cfg, lambda s: None, write_dump=False).det
    image = _render(thick)
    halves = [_panel_of(det, 8, 0, thickness_mm=0.3, mu_per_mm=2.0), _panel_of(det, 8, 8, thickness_mm=0.3)]
    path = _write(tmp_path / "thick.json", {"panels": halves})
    got = _render(PFLAGS + ["-detector_json", path, "-detector_thicksteps", "2", "-detector_abs", "500"])
    assert np.array_equal(got.reshape(16, 16), image)
    halves[1]["mu_per_mm"] = 20.0       # a denser sensor captures more
    path2 = _write(tmp_path / "thick2.json", {"panels": halves})
    got2 = _render(PFLAGS + ["-detector_json", path2, "-detector_thicksteps", "2", "-detector_abs", "500"])
    assert np.array_equal(got2[0], image[:8]) and got2[1].sum() > image[8:].sum()
    halves[1]["thickness_mm"] = 0
    path3 = _write(tmp_path / "mixed.json", {"panels": halves})
    with pytest.raises(NanoBraggError, match="mix sensors"):
        _render(PFLAGS + ["-detector_json", path3])


def test_outputs_that_hold_one_panel_are_refused_for_several(tmp_path, flat):
    det, _ = flat
    path = _write(tmp_path / "two.json", {"panels": [_panel_of(det, 8, 0), _panel_of(det, 8, 8)]})
    stol = tmp_path / "w.stol"
    stol.write_text("0 2.57\n0.5 2.57\n")
    for extra, words in ((["-psf", "gauss"], "-psf"), (["-background", str(stol)], "-background")):
        with pytest.raises(NanoBraggError, match=words):
            nb.Simulator(nb.Config.from_args(PFLAGS + ["-detector_json", path] + extra), device="cpu").render()
    res = nb.Simulator(nb.Config.from_args(PFLAGS + ["-detector_json", path]), device="cpu").render()
    assert res.int_image().shape == (2, 8, 16) and res.noise_image(seed=1).shape == (2, 8, 16)
    for writer in (nb.write_smv, nb.write_cbf, nb.write_pgm):
        with pytest.raises(NanoBraggError, match="one panel"):
            writer(str(tmp_path / "x"), res)
    assert not os.path.exists(tmp_path / "x")


def test_geometry_flags_that_the_panels_replace_are_refused(tmp_path, flat):
    det, _ = flat
    path = _write(tmp_path / "one.json", {"panels": [_panel_of(det)]})
    base = PFLAGS
    for extra, flag in ((["-distance", "80"], "-distance"), (["-twotheta", "5"], "-twotheta"),
                        (["-pixel", "0.2"], "-pixel")):
        with pytest.raises(NanoBraggError, match="%s does not apply" % flag):
            nb.Simulator(nb.Config.from_args(base + ["-detector_json", path] + extra), device="cpu").render()


def test_cuda_kernel_reads_the_panel_table_as_the_cpu_kernel(tmp_path):
    """The CUDA kernel (numba's CUDA simulator, no GPU needed) renders the panels as the CPU kernel does."""
    from nanobrag_numba import tolerances as T
    from nanobrag_numba.backends import run_kernel
    from nanobrag_numba.kernels import variants as V
    panels = [dict(origin_mm=[30.0, 1.0 + 2.0 * k, -4.0 + 3.0 * k], fast_axis=[0.02 * k, 0, 1],
                   slow_axis=[0, -1, 0], pixel_size_mm=1.0 + 0.2 * k, image_size=[5, 3]) for k in range(3)]
    path = _write(tmp_path / "three.json", {"panels": panels})
    flags = ["-default_F", "100", "-cell", "50", "50", "50", "90", "90", "90", "-N", "3", "-misset", "10", "20",
             "30", "-detector_json", path, "-oversample", "1"]
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", NUMBA_DISABLE_JIT="1")
    out = tmp_path / "sim.npz"
    p = subprocess.run([sys.executable, os.path.join(HERE, "cuda_sim_worker.py"), str(out), str(tmp_path)] + flags,
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    sim = np.load(out)
    prep = nb.Simulator(flags, device="cpu").prepare()
    rows, oob, _ = run_kernel("cpu", prep, prep.params)
    launched = V.Variant(*(int(x) for x in sim["variant"]))
    assert launched == V.variant_of(prep.params) and launched.panels == V.ON
    assert rows[0].max() > 0 and rows.shape == (6, 45)
    np.testing.assert_allclose(sim["rows"], rows, rtol=T.CUDA_SIM_RTOL, atol=0)
    # and the panels are not all the same (the table is read per pixel)
    assert len({tuple(np.round(rows[3, 15 * k:15 * (k + 1)], 12)) for k in range(3)}) == 3


@pytest.mark.slow
@pytest.mark.dials
def test_dials_indexes_a_four_panel_still_and_recovers_the_cell(tmp_path):
    """Render a 4-panel still from an experiment list, dials.import the NXmx, find spots, index: the cell is back.

    Debian's DIALS 3.12 lacks the stills refinement extension (xfel_mono_sim_ext), so
    dials.index / dials.stills_process cannot refine a still; the image is therefore
    written as a 0.1 degree rotation image and indexed with the detector and beam
    fixed (they are exact).  About a minute of CPU.
    """
    if not _dxtbx_available():
        pytest.skip("dxtbx is not importable by %s (apt-get install dials)" % SYSTEM_PYTHON)
    expt = _write(tmp_path / "four.expt", four_panel_expt(192))
    res = nb.Simulator.from_expt(expt, "-default_F 100 -N 10 -dispersion 1 -dispsteps 5 -mosaic 0.2 "
                                 "-mosaic_domains 10 -osc 0.1 -phisteps 1", device="cpu").render()
    nb.write_nxs(str(tmp_path / "four.nxs"), res)
    run = lambda *words: subprocess.run(list(words), cwd=tmp_path, capture_output=True, text=True,  # noqa: E731
                                        timeout=900)
    for cmd in (["dials.import", "four.nxs"], ["dials.find_spots", "imported.expt"],
                ["dials.index", "imported.expt", "strong.refl", "refinement.parameterisation.detector.fix=all",
                 "refinement.parameterisation.beam.fix=all"]):
        p = run(*cmd)
        assert p.returncode == 0, (cmd, p.stdout[-2000:], p.stderr[-2000:])
    script = ("import sys; from dxtbx.model.experiment_list import ExperimentListFactory as F; "
              "print(list(F.from_json_file(sys.argv[1], check_format=False)[0].crystal"
              ".get_unit_cell().parameters()))")
    p = run(SYSTEM_PYTHON, "-c", script, str(tmp_path / "indexed.expt"))
    assert p.returncode == 0, p.stderr[-2000:]
    cell = json.loads(p.stdout.strip().splitlines()[-1])
    assert sorted(cell[:3]) == pytest.approx([50.0, 50.0, 50.0], rel=0.04), cell
    assert cell[3:] == pytest.approx([90.0, 90.0, 90.0], abs=2.5), cell


def test_batch_refuses_one_panel_formats_for_several_panels(tmp_path, flat, monkeypatch, capsys):
    det, _ = flat
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "two.json", {"panels": [_panel_of(det, 8, 0), _panel_of(det, 8, 8)]})
    for fmt in ("smv", "cbf"):
        assert main(["batch", "--random-orientations", "1", "--seed", "1", "--format", fmt, "--out", "run", "--"]
                    + PFLAGS + ["-detector_json", "two.json"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "holds one panel" in err[0], err
    assert not os.path.exists("run")
    # a relative description is found by the batch (made absolute like the other inputs)
    assert main(["batch", "--random-orientations", "1", "--seed", "1", "--format", "float", "--out", "run2", "--"]
                + PFLAGS + ["-detector_json", "two.json"]) == 0
    capsys.readouterr()
    assert os.path.getsize(tmp_path / "run2" / "img_000000.bin") == 16 * 16 * 4


@pytest.mark.slow                       # dials.import: about 20 s
@pytest.mark.dials
def test_expt_from_dials_import_of_our_cbf_renders_the_same_image(tmp_path, monkeypatch):
    """flags -> CBF -> dials.import -> .expt -> -expt: the same detector, beam and image (the frames agree)."""
    if not _dxtbx_available():
        pytest.skip("dxtbx is not importable by %s (apt-get install dials)" % SYSTEM_PYTHON)
    monkeypatch.chdir(tmp_path)
    crystal = ["-default_F", "100", "-cell", "50", "60", "70", "90", "90", "90", "-N", "5", "-misset", "10", "20",
               "30", "-device", "cpu", "-polar", "0.998"]
    flags = crystal + ["-detpixels", "24", "-pixel", "0.2", "-distance", "60", "-twotheta", "5",
                       "-Xbeam", "2.1", "-Ybeam", "2.7"]
    res = nb.Simulator(flags, device="cpu").render()
    nb.write_cbf("flat_00001.cbf", res)        # a numbered name: dials.import wants a template
    p = subprocess.run(["dials.import", "flat_00001.cbf"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    got = nb.Simulator.from_expt("imported.expt", crystal, device="cpu").render()
    assert got.floatimage.shape == res.floatimage.shape
    np.testing.assert_allclose(got.floatimage, res.floatimage, rtol=1e-5, atol=1e-4 * res.floatimage.max())


def test_expt_scan_and_goniometer_give_phi_osc_and_spindle(tmp_path, flat):
    det, _ = flat
    doc = _expt([_dials_panel(det)])
    doc["experiment"][0].update(goniometer=0, scan=0)
    doc["goniometer"] = [{"rotation_axis": [1.0, 0.0, 0.0], "fixed_rotation": [1, 0, 0, 0, 1, 0, 0, 0, 1],
                          "setting_rotation": [0, -1, 0, 1, 0, 0, 0, 0, 1]}]     # 90 degrees about z
    doc["scan"] = [{"image_range": [1, 10], "oscillation": [12.0, 0.5]}]
    path = _write(tmp_path / "s.expt", doc)
    cfg = nb.Config.from_args(["-expt", path, "-default_F", "1"])
    assert np.degrees(cfg.phi0) == pytest.approx(12.0) and np.degrees(cfg.osc) == pytest.approx(0.5)
    # DIALS x turned 90 degrees about DIALS z is DIALS y, which is nanoBragg's y
    assert cfg.spindle_vector == pytest.approx((0.0, 1.0, 0.0), abs=1e-15)
    assert nb.Config.from_args(["-expt", path, "-default_F", "1", "-phi", "3"]).phi0 == pytest.approx(np.radians(3))
    doc["scan"] = [{"oscillation": 5}]
    bad = _write(tmp_path / "bad.expt", doc)
    with pytest.raises(NanoBraggError, match="oscillation"):
        nb.Config.from_args(["-expt", bad, "-default_F", "1"])


def test_geometry_flag_at_its_default_value_is_refused_too(tmp_path, flat):
    det, _ = flat
    path = _write(tmp_path / "one.json", {"panels": [_panel_of(det)]})
    for extra in (["-distance", "100"], ["-fdet_vector", "0", "0", "1"]):     # C's default values
        with pytest.raises(NanoBraggError, match="%s does not apply" % extra[0]):
            nb.Simulator(nb.Config.from_args(PFLAGS + ["-detector_json", path] + extra), device="cpu").render()
