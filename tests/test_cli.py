"""The command line: errors are one clear line, no traceback, no files left behind."""
import os
import subprocess
import sys

import numpy as np
import pytest

from nanobrag_numba.cli import main, parse_args
from nanobrag_numba.config import RTD

GOOD = ["-cell", "40", "42", "45", "90", "90", "90", "-N", "3", "-detpixels", "16", "-pixel", "0.4",
        "-distance", "60", "-noprogress", "-seed", "1", "-device", "cpu"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "ok.hkl").write_text("0 0 0 10\n1 0 0 20\n0 1 0 30\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_error(args, capsys):
    rc = main(args)
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2
    assert len(lines) == 1 and lines[0].startswith("nanobrag-numba: error: ")
    assert "Traceback" not in out + err
    return lines[0]


def files(path):
    return sorted(p.name for p in path.iterdir())


def test_missing_hkl_file(workdir, capsys):
    msg = run_error(["-hkl", "nothere.hkl"] + GOOD, capsys)
    assert "nothere.hkl" in msg
    assert files(workdir) == ["ok.hkl"]


def test_malformed_hkl_line_names_the_line(workdir, capsys):
    (workdir / "bad.hkl").write_text("0 0 0 10\n1 0 0 20\n1 1 zero 5\n")
    msg = run_error(["-hkl", "bad.hkl"] + GOOD, capsys)
    assert "bad.hkl" in msg and "line 3" in msg
    assert files(workdir) == ["bad.hkl", "ok.hkl"]


def test_malformed_matrix_line(workdir, capsys):
    (workdir / "A.mat").write_text("0.01 0 0\n0 0.02\n0 0 0.03\n")
    msg = run_error(["-hkl", "ok.hkl", "-mat", "A.mat", "-detpixels", "16", "-device", "cpu"], capsys)
    assert "A.mat line 2" in msg


def test_impossible_cell(workdir, capsys):
    msg = run_error(["-hkl", "ok.hkl", "-cell", "40", "40", "40", "10", "10", "170"] + GOOD[7:], capsys)
    assert "impossible unit cell" in msg
    assert files(workdir) == ["ok.hkl"]


def test_unknown_flag_is_named(workdir, capsys):
    # C ignores -dispstep (and skips the 3): a note by default, an error under -strict
    msg = run_error(["-hkl", "ok.hkl", "-dispstep", "3", "-strict"] + GOOD, capsys)
    assert "-dispstep" in msg and "did you mean -dispsteps" in msg and "-strict" in msg
    assert files(workdir) == ["ok.hkl"]


def test_unknown_flag_is_a_note_without_strict(workdir, capsys):
    assert main(["-hkl", "ok.hkl", "-dispstep", "3"] + GOOD) == 0
    out = capsys.readouterr().out
    notes = [ln for ln in out.splitlines() if ln.startswith("note: unknown flag -dispstep")]
    assert len(notes) == 1 and "did you mean -dispsteps" in notes[0]
    assert "skips '3'" in notes[0]


def test_negative_detpixels(workdir, capsys):
    msg = run_error(["-hkl", "ok.hkl"] + GOOD + ["-detpixels", "-5"], capsys)
    assert "negative" in msg and "-5" in msg


def test_non_numeric_value(workdir, capsys):
    msg = run_error(["-hkl", "ok.hkl"] + GOOD + ["-distance", "far"], capsys)
    assert "-distance" in msg and "far" in msg


def test_detector_too_large_for_memory(workdir, capsys):
    msg = run_error(["-hkl", "ok.hkl"] + GOOD + ["-detpixels", "3000000"], capsys)
    assert "memory" in msg


def test_cuda_without_gpu_is_an_error(workdir, capsys, monkeypatch):
    from nanobrag_numba import backends
    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    msg = run_error(["-hkl", "ok.hkl"] + GOOD + ["-device", "cuda"], capsys)
    assert "CUDA" in msg


def test_error_as_a_subprocess_has_no_traceback(workdir):
    p = subprocess.run([sys.executable, "-m", "nanobrag_numba", "-hkl", "ok.hkl", "-frobnicate", "-strict"],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.startswith("nanobrag-numba: error: unknown flag -frobnicate has no effect")
    assert len(p.stderr.strip().splitlines()) == 1
    assert "Traceback" not in p.stdout + p.stderr


def test_success_writes_the_four_c_files(workdir, capsys):
    assert main(["-hkl", "ok.hkl"] + GOOD) == 0
    assert files(workdir) == ["Fdump.bin", "floatimage.bin", "image.pgm", "intimage.img", "noiseimage.img",
                              "ok.hkl"]
    out = capsys.readouterr().out
    for key in ("max_I = ", "mean= ", "intfile_scale = ", "photons on noise image", "Unit Cell: 40 42 45"):
        assert key in out
    assert np.fromfile(workdir / "floatimage.bin", dtype=np.float32).size == 256


def test_flags_keep_c_semantics():
    cfg = parse_args(["-hkl", "x", "-cell", "40", "-misset", "-12", "33", "7", "-Xbeam", "10",
                      "-close_distance", "55", "-nonoise", "-noisefile", "n.img", "-pgmfile", "p.pgm",
                      "-nopgm", "-detector_absorb", "250", "-dispersion", "3", "-energy", "12398.42"])
    assert cfg.cell == (40.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    assert cfg.misset == pytest.approx((-12 / RTD, 33 / RTD, 7 / RTD))
    assert cfg.Xbeam == pytest.approx(0.010) and cfg.pivot == "SAMPLE"   # the later -close_distance wins
    assert cfg.calculate_noise and cfg.noisefile == "n.img"               # -noisefile after -nonoise
    assert not cfg.write_pgm                                              # -nopgm after -pgmfile
    assert cfg.detector_mu == pytest.approx(1 / 250e-6)
    assert cfg.dispersion == pytest.approx(0.03)
    assert cfg.lambda0 == pytest.approx(1e-10)


def test_quirk_substrings_only_with_c_quirks():
    words = ["-hkl", "x", "-cell", "40", "-misset", "random", "-misset_seed", "7", "-N", "5"]
    plain = parse_args(words)
    assert plain.misset_random and plain.misset_seed == 7
    quirky = parse_args(words + ["-c_quirks"])
    assert not quirky.misset_random
    assert quirky.misset == pytest.approx((7 / RTD, 0.0, 5 / RTD))
    tt = parse_args(["-hkl", "x", "-cell", "40", "-twotheta", "20", "-twotheta_axis", "0", "0", "-1"])
    assert tt.detector_twotheta == pytest.approx(20 / RTD)
    ttq = parse_args(["-hkl", "x", "-cell", "40", "-twotheta", "20", "-twotheta_axis", "0", "0", "-1", "-c_quirks"])
    assert ttq.detector_twotheta == 0.0


def test_help_is_fast_and_imports_no_numba():
    code = "import sys; from nanobrag_numba.cli import help_text; help_text(); print('numba' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.stdout.strip() == "False"


def test_device_auto_without_an_nvidia_driver_does_not_import_numba_cuda():
    import subprocess
    from nanobrag_numba.backends import nvidia_driver_present
    if nvidia_driver_present():
        pytest.skip("this machine has an NVIDIA driver: the probe must ask numba.cuda")
    code = ("import sys; from nanobrag_numba.backends import choose; "
            "print(choose('auto'), 'numba.cuda' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["cpu", "False"]


def test_nvidia_driver_is_seen_by_its_device_files(monkeypatch):
    import glob
    from nanobrag_numba import backends
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(os.path, "exists", lambda p: False)
    monkeypatch.setattr(glob, "glob", lambda pattern: [])
    assert backends.nvidia_driver_present() is False
    assert backends.cuda_available() is False
    monkeypatch.setattr(glob, "glob", lambda pattern: ["/dev/nvidia0"] if pattern == "/dev/nvidia*" else [])
    assert backends.nvidia_driver_present() is True
