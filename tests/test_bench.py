"""The benchmark suite (bench/): case definitions and evaluation counts; no timing."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)

from bench import cases, run  # noqa: E402
from nanobrag_numba.api import config_from_flags  # noqa: E402


@pytest.fixture(scope="module")
def small_hkl(tmp_path_factory):
    """A small P1 list of the benchmark cell (to 10 A, so the test stays fast)."""
    from nanobrag_numba.example import write_p1_hkl
    path = str(tmp_path_factory.mktemp("bench") / "small.hkl")
    write_p1_hkl(path, cell=cases.CELL, dmin=10.0, seed=1, F000=0.0)
    return path


def _prepare(name, hkl):
    from nanobrag_numba.simulator import prepare
    cfg = config_from_flags(cases.CASES[name].words(hkl) + ["-device", "cpu"])
    return prepare(cfg, lambda s: None, write_dump=False)


def test_case_names_and_defaults():
    assert list(cases.CASES) == ["B1", "B2", "B3", "B4", "B5", "G1"]
    assert cases.CASES["B5"].gpu and not cases.CASES["B5"].run_c and "B5" not in cases.DEFAULT_CUDA
    assert cases.DEFAULT_CPU == ["B1", "B2", "B3", "B4"]
    assert cases.CASES["G1"].gpu and not cases.CASES["G1"].run_c
    assert [n for n, c in cases.CASES.items() if c.cold_start] == ["B4"]
    for c in cases.CASES.values():
        words = c.words("X.hkl")
        assert words[:2] == ["-hkl", "X.hkl"] and "-cell" in words
        assert "-noprogress" in words and "-device" not in words     # the runner adds -device


def test_case_command_lines_parse():
    got = {n: config_from_flags(c.words("X.hkl")) for n, c in cases.CASES.items()}
    b1, b2, b3, b4, b5, g1 = (got[n] for n in ("B1", "B2", "B3", "B4", "B5", "G1"))
    assert (b5.fpixels, b5.spixels, b5.Na, b5.mosaic_domains, b5.oversample) == (256, 256, 10, 5, 1)
    assert (b1.fpixels, b1.spixels, b1.Na, b1.mosaic_domains, b1.oversample) == (1024, 1024, 10, 10, 1)
    assert (b2.fpixels, b2.phisteps, b2.hdivsteps, b2.vdivsteps, b2.dispsteps, b2.mosaic_domains,
            b2.oversample) == (256, 10, 3, 3, 3, 5, 2)
    assert (b3.fpixels, b3.Na, b3.Nb, b3.Nc) == (256, 1, 1, 1)
    assert (b4.fpixels, b4.spixels) == (64, 64)
    assert (g1.fpixels, g1.spixels, g1.oversample, g1.phisteps, g1.mosaic_domains, g1.Na) == (2048, 2048, 2, 10, 10, 10)


def test_evaluation_arithmetic():
    counts = {"pixels": 256 * 256, "subpixels": 4, "sources": 15, "phisteps": 10, "mosaic_domains": 5,
              "thicksteps": 1}
    assert cases.evaluations(counts) == 196_608_000


def test_b4_counts_from_prepare(small_hkl):
    counts = cases.counts_from_prep(_prepare("B4", small_hkl))
    assert counts == {"fpixels": 64, "spixels": 64, "pixels": 4096, "oversample": 1, "subpixels": 1,
                      "sources": 1, "phisteps": 1, "mosaic_domains": 1, "thicksteps": 1}
    assert cases.evaluations(counts) == 4096


def test_b2_has_the_full_3x3_divergence_grid(small_hkl):
    # -square_div keeps all 9 directions of the 3x3 grid (C's default -round_div would drop the corners)
    prep = _prepare("B2", small_hkl)
    assert prep.sources.shape[0] == 9 * 3
    assert cases.evaluations(cases.counts_from_prep(prep)) == 256 * 256 * 4 * 27 * 10 * 5


def test_parse_c_counts():
    text = ("  distance=0.15 detsize=0.1024x0.1024  pixel=0.0004 meters (256x256 pixels)\n"
            "  sensor is 0 m thick in 1 layers with mu= -1\n"
            "  5 divergence steps\n  15 sources\n"
            "  5 mosaic domains over mosaic spread of 0.2 degrees\n"
            "  10 phi steps from 0.5 to 1.5 degrees\n  2x2 pixel oversample steps\n")
    assert cases.parse_c_counts(text) == {"sources": 15, "mosaic_domains": 5, "phisteps": 10, "oversample": 2,
                                          "subpixels": 4, "thicksteps": 1, "divsteps": 5, "fpixels": 256,
                                          "spixels": 256, "pixels": 65536}


def test_runner_options():
    args = run.parse_args(["--cases", "b4,B1", "--threads", "2", "--name", "mine"])
    assert args.case_names == ["B4", "B1"] and args.repeat == 1 and args.device == "cpu"
    assert args.json.endswith(os.path.join("results", "mine.json"))
    assert run.child_env(3)["OMP_NUM_THREADS"] == run.child_env(3)["NUMBA_NUM_THREADS"] == "3"
    with pytest.raises(SystemExit):
        run.parse_args(["--cases", "B9"])


def test_default_result_name_is_new_and_leaves_the_committed_tables_alone(tmp_path, monkeypatch):
    committed = os.path.join(run.RESULTS_DIR, "cpu-2core.json")
    assert os.path.exists(committed) and run.is_committed(committed)
    args = run.parse_args(["--threads", "2"])
    assert args.name.startswith("cpu-2core-") and args.name != "cpu-2core"
    assert not os.path.exists(args.json) and not os.path.exists(args.markdown)
    assert os.path.dirname(args.json) == run.RESULTS_DIR
    # a name taken by an earlier run gets a number
    monkeypatch.setattr(run, "RESULTS_DIR", str(tmp_path))
    first = run.default_name("cpu-2core", now=0)
    (tmp_path / (first + ".md")).write_text("earlier")
    assert run.default_name("cpu-2core", now=0) == first + "-2"


def test_explicit_name_overwrites_only_with_force_when_committed(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        run.parse_args(["--threads", "2", "--name", "cpu-2core"])
    assert info.value.code == 2 and "is a committed result" in capsys.readouterr().err
    args = run.parse_args(["--threads", "2", "--name", "cpu-2core", "--force"])
    assert args.json == os.path.join(run.RESULTS_DIR, "cpu-2core.json")
    # an explicit name may replace a result of our own that git does not track
    mine = tmp_path / "mine.json"
    mine.write_text("{}")
    assert not run.is_committed(str(mine))
    args = run.parse_args(["--name", "x", "--json", str(mine), "--markdown", str(tmp_path / "mine.md")])
    assert args.json == str(mine)


def test_setup_many_benchmark_runs_and_both_methods_are_timed(small_hkl, tmp_path):
    from bench import setup_many
    lines = []
    r = setup_many.measure(k=3, images=6, repeat=1, hkl=small_hkl, log=lines.append)
    assert r["images"] == 6 and r["images_per_launch"] == 3 and "-mosaic_domains 5" in r["flags"]
    for name in ("prepare", "prepare_many"):
        assert r[name]["cpu_ms_per_image"] > 0 and r[name]["images_per_second_cpu"] > 0
    assert len(lines) == 2 and "| `prepare_many` |" in setup_many.markdown(r)
