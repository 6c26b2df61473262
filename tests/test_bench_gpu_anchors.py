"""The same-card anchors of the GPU check (bench/gpu_anchors.py, issue 10): plan, flag checks, parsing,
the nanobrag_torch worker on a stand-in package; no GPU, nvcc or torch needed."""
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)

from bench import cases, gpu_anchors as ga  # noqa: E402

SCRIPT = os.path.join(ROOT, "bench", "gpu_anchors.py")
G1 = cases.CASES["G1"].words("P1.hkl")

# what the two real parsers look like, reduced to the lines the checks read
C_PARSER = """
    if(strstr(argv[i], "-hkl") && (argc > (i+1)))
    if(strstr(argv[i], "-mosaic_dom") && (argc > (i+1)))
    if(0==strcmp(argv[i], "-N") && (argc > (i+1)))
"""
TORCH_PARSER = """
    parser.add_argument('-hkl', type=str)
    parser.add_argument('-mosaic', '-mosaici', '-mosaic_spr', type=float, dest='mosaic')
    parser.add_argument('-mosaic_dom', type=int,
                        help='Number of mosaic domains')
    parser.add_argument('-N', type=int)
    parser.add_argument('-device', choices=['cpu', 'cuda'])
    parser.add_argument('-dtype', choices=['float32', 'float64'])
    parser.add_argument('-pixel_batch_size', '--pixel-batch-size', type=int)
"""


def test_torch_words_and_flag_check():
    # its parser has no -mosaic_domains and abbreviations are off: the G1 words would be refused
    words = ["-hkl", "x", "-mosaic", "0.2", "-mosaic_domains", "10", "-N", "10"]
    assert ga.check_torch_flags(words, TORCH_PARSER) == ["-mosaic_domains"]
    tw = ga.torch_words(words, "float64", 4)
    assert ga.check_torch_flags(tw, TORCH_PARSER) == []
    assert tw[-6:] == ["-device", "cuda", "-dtype", "float64", "-pixel_batch_size", "4"]
    assert "-mosaic_dom" in tw and "-mosaic_domains" not in tw
    assert tw[:4] == words[:4] and "0.2" in tw          # values untouched


def test_c_flag_check():
    # C matches substrings (strstr) except where it compares exactly (strcmp)
    assert ga.check_c_flags(["-hkl", "a", "-mosaic_domains", "3", "-N", "10"], C_PARSER) == []
    assert ga.check_c_flags(["-Nx", "1", "-dtype", "float64"], C_PARSER) == ["-Nx", "-dtype"]
    assert ga.c_words(["-N", "1"], "single", roi0=True) == ["-N", "1", "-precision", "single", "-roi", "0", "0", "0",
                                                            "0"]


def test_parse_kernel_ms():
    assert ga.parse_kernel_ms("warning\nKERNEL_MS 1234.500000\n") == 1234.5
    assert ga.parse_kernel_ms("KERNEL_MS 1\nKERNEL_MS 2.5\n") == 2.5
    assert ga.parse_kernel_ms("no kernel line\n") is None


def test_summarise_torch_drops_the_warm_up_chunk():
    rec = {"chunks": [{"rows": 2, "seconds": 10.0, "evaluations": 100},
                      {"rows": 2, "seconds": 1.0, "evaluations": 100},
                      {"rows": 2, "seconds": 1.0, "evaluations": 100}]}
    s = ga.summarise_torch(rec)
    assert s["samples_per_s"] == 100.0 and s["rows_done"] == 6
    assert s["samples_per_s_all_chunks"] == 300 / 12.0
    assert ga.summarise_torch({"chunks": []}) == {}


def test_build_commands():
    b = ga.build_commands("NVCC", "S", "B", "sm_90")
    cu = [c for c in b["compile"] if c[-3].endswith("nanoBraggCUDA.cu")]
    assert sorted(c[4] for c in cu) == ["-DNB_PRECISION=1", "-DNB_PRECISION=2"]
    assert all("-arch=sm_90" in c for c in cu) and "-arch=sm_90" in b["link"]
    assert set(b["link"]) >= {os.path.join("B", o) for o in ("nanoBragg.o", "nanoBraggCPU.o",
                                                               "nanoBraggCUDA_double.o", "nanoBraggCUDA_single.o")}


def _fake_sources(tmp_path):
    c = tmp_path / "bl831" / "cuda" / "src"
    c.mkdir(parents=True)
    for name in ga.C_REQUIRED:
        (c / name).write_text("/* %s */\n%s" % (name, C_PARSER if name == "nanoBragg.c" else ""))
    t = tmp_path / "hoidn" / "src" / "nanobrag_torch"
    t.mkdir(parents=True)
    (t / "__init__.py").write_text("")
    (t / "__main__.py").write_text(TORCH_PARSER)
    return tmp_path / "bl831", tmp_path / "hoidn"


def test_prepare_then_dry_run(tmp_path):
    c_from, t_from = _fake_sources(tmp_path)
    carry = tmp_path / "carry"
    out = subprocess.run([sys.executable, SCRIPT, "prepare", "--carry", str(carry), "--c-from", str(c_from),
                          "--torch-from", str(t_from)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert sorted(os.listdir(carry / "nanoBragg-cuda" / "src")) == sorted(ga.C_REQUIRED)
    assert (carry / "nanobrag_torch" / "src" / "nanobrag_torch" / "__main__.py").is_file()
    out = subprocess.run([sys.executable, SCRIPT, "run", str(tmp_path / "out"), "--dry-run", "--carry", str(carry)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    c, t = plan["nanoBraggCUDA"], plan["nanobrag_torch"]
    assert c["present"] and t["present"]
    assert len(c["compile"]) == 4 and "-arch=sm_90" in c["link"]
    # 2 full runs and one -roi 0 0 0 0 run per precision, each on the G1 words
    assert len(c["runs"]) == 6 and sum(r.endswith("-roi 0 0 0 0") for r in c["runs"]) == 2
    assert all(" ".join(plan["g1_words"]) in r for r in c["runs"])
    assert [("-dtype float64" in r, "-dtype float32" in r) for r in t["runs"]] == [(True, False), (False, True)]
    assert all("-mosaic_dom 10" in r and "-device cuda" in r for r in t["runs"])
    # the stand-in parsers know only a few flags: the check names the others
    assert "-detpixels" in c["unknown_flags"] and "-mosaic_domains" not in c["unknown_flags"]
    assert "-detpixels" in t["unknown_flags"] and "-mosaic_dom" not in t["unknown_flags"]
    assert t["hooks_missing"] == ["simulator.py"]
    assert not (tmp_path / "out").exists()          # a dry run writes nothing


@pytest.mark.skipif(not os.path.isdir(os.path.join(ROOT, "gpu_carry")),
                    reason="no ./gpu_carry (python bench/gpu_anchors.py prepare)")
def test_dry_run_on_the_real_carry():
    """Every G1 flag is one the fetched C parser and the torch CLI know (the torch CLI refuses others)."""
    out = subprocess.run([sys.executable, SCRIPT, "run", os.path.join(ROOT, "bench", "out", "anchors-dry-run"),
                          "--dry-run"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    for key in ("nanoBraggCUDA", "nanobrag_torch"):
        assert plan[key]["present"], key
        assert plan[key]["unknown_flags"] == [], key
    assert plan["nanobrag_torch"]["hooks_missing"] == []


FAKE_SIM = """
import time
DELAY = %r
class _Shape:
    def __init__(self, *shape):
        self.shape = shape
class _Cfg:
    spixels = 8
class _Det:
    config = _Cfg()
class Simulator:
    def __init__(self):
        self.detector = _Det()
    def _compute_chunk_intensity(self, pixel_coords_meters, rot_a, rot_b, rot_c, rot_a_star, rot_b_star,
                                 rot_c_star, n_sources, source_directions, source_wavelengths_A, source_weights,
                                 steps, oversample, oversample_omega):
        time.sleep(DELAY)
        return pixel_coords_meters
    def run(self, pixel_batch_size=None):
        for s in range(0, 8, pixel_batch_size):
            self._compute_chunk_intensity(pixel_coords_meters=_Shape(pixel_batch_size, 16, 3),
                rot_a=_Shape(3, 2, 3), rot_b=None, rot_c=None, rot_a_star=None, rot_b_star=None,
                rot_c_star=None, n_sources=5, source_directions=None, source_wavelengths_A=None,
                source_weights=None, steps=1, oversample=2, oversample_omega=False)
        return None
"""
FAKE_MAIN = """
import sys
from .simulator import Simulator
def main():
    argv = sys.argv[1:]
    if "-mosaic_domains" in argv:
        sys.exit(2)
    try:
        Simulator().run(pixel_batch_size=int(argv[argv.index("-pixel_batch_size") + 1]))
    except Exception:          # as its CLI does
        sys.exit(1)
"""


def test_torch_hook_check():
    assert ga.check_torch_hooks(textwrap.dedent(FAKE_SIM % 0.0)) == []
    assert ga.check_torch_hooks("class Simulator:\n    def run(self, batch=None): pass\n") == [
        "Simulator._compute_chunk_intensity", "Simulator.run(pixel_batch_size)"]
    assert ga.check_torch_hooks("x = 1\n") == ["class Simulator"]


def _fake_torch_carry(tmp_path, delay):
    pkg = tmp_path / "carry" / "nanobrag_torch" / "src" / "nanobrag_torch"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "simulator.py").write_text(textwrap.dedent(FAKE_SIM % delay))
    (pkg / "__main__.py").write_text(textwrap.dedent(FAKE_MAIN))
    (tmp_path / "carry" / "nanobrag_torch" / "SOURCE.txt").write_text("stand-in\n")
    return str(tmp_path / "carry")


def test_torch_anchor_times_every_chunk(tmp_path):
    carry = _fake_torch_carry(tmp_path, 0.0)
    res = ga.anchor_torch(carry, G1, None, rows=2, budget_s=30, deadline=time.time() + 600)
    for dtype in ("float64", "float32"):
        r = res[dtype]
        assert not r.get("error"), r
        assert r["complete"] and r["rows_done"] == 8 and len(r["chunks"]) == 4
        assert r["counts"]["sources"] == 5 and r["counts"]["fpixels"] == 16
        assert r["evaluations_done"] == 8 * 16 * 4 * 5 * 3 * 2      # rows x F x oversample^2 x sources x phi x mos
        assert "-mosaic_dom 10" in r["command"] and "-dtype %s" % dtype in r["command"]


def test_torch_anchor_budget_stops_the_render(tmp_path):
    carry = _fake_torch_carry(tmp_path, 0.3)
    res = ga.anchor_torch(carry, G1, None, rows=1, budget_s=0.1, deadline=time.time() + 600)
    r = res["float64"]
    assert not r.get("error"), r
    assert not r["complete"] and r["stopped"].startswith("chunk budget")
    assert r["rows_done"] == 1 and r["samples_per_s"] > 0
    assert "(chunk budget" in ga.markdown({"nanobrag_torch": res})


def test_c_anchor_with_a_stand_in_binary(tmp_path, monkeypatch):
    """KERNEL_MS and the printed counts give samples/s; a -roi 0 0 0 0 run gives the wall estimate."""
    exe = tmp_path / "nanoBraggCUDA"
    exe.write_text(textwrap.dedent("""\
        #!/bin/sh
        echo "  (2048x2048 pixels)"
        echo "  27 sources"
        echo "  10 mosaic domains over mosaic spread of 0.2 degrees"
        echo "  10 phi steps from 0.5 to 1.5 degrees"
        echo "  2x2 pixel oversample steps"
        echo "thick0 = 0 um"
        case "$*" in *"-roi 0 0 0 0"*) echo "KERNEL_MS 0.01" >&2 ;; *) echo "KERNEL_MS 2000.0" >&2 ;; esac
        """))
    exe.chmod(0o755)
    carry = tmp_path / "carry" / "nanoBragg-cuda"
    carry.mkdir(parents=True)
    (carry / "SOURCE.txt").write_text("stand-in\n")
    monkeypatch.setattr(ga, "build_c", lambda *a: {"exe": str(exe), "arch": "sm_90", "nvcc_version": "x"})
    res = ga.anchor_c(str(tmp_path / "carry"), G1, None, repeat=2, deadline=time.time() + 600)
    evals = 2048 * 2048 * 4 * 27 * 10 * 10
    for precision in ("double", "single"):
        r = res[precision]
        assert not r.get("error"), r
        assert r["evaluations"] == evals and r["kernel_s"] == 2.0 and r["samples_per_s"] == evals / 2.0
        assert len(r["runs"]) == 3 and r["runs"][-1]["roi0"] and "wall_minus_roi0_s" in r
    assert "| nanoBraggCUDA | single | %.3g |" % (evals / 2.0) in ga.markdown({"nanoBraggCUDA": res})


def test_a_failing_anchor_is_reported_not_fatal(tmp_path, monkeypatch):
    monkeypatch.setattr(ga, "our_counts", lambda words: None)
    monkeypatch.setattr(ga, "gpu_name", lambda: "stand-in GPU")
    import bench.make_hkl
    monkeypatch.setattr(bench.make_hkl, "ensure_hkl", lambda *a: str(tmp_path / "P1.hkl"))
    out = tmp_path / "out"
    rc = ga.main(["run", str(out), "--carry", str(tmp_path / "empty"), "--budget-s", "60"])
    assert rc == 0
    rep = json.loads((out / "gpu_anchors.json").read_text())
    assert "prepare" in rep["nanoBraggCUDA"]["error"] and "prepare" in rep["nanobrag_torch"]["error"]
    md = (out / "gpu_anchors.md").read_text()
    assert "stand-in GPU" in md and md.count("prepare") >= 4
