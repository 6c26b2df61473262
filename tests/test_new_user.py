"""A new user's first steps (issue 9): the example HKL file, the README's commands, the extras.

Fast: no image is rendered.
"""
import configparser
import os
import re

import pytest

from nanobrag_numba.example import EXAMPLE_HKL, main as example_main, write_p1_hkl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _err_lines(capsys):
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def test_hkl_only_writes_the_example_hkl_and_nothing_else(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert example_main(["--hkl-only"]) == 0
    assert "-hkl example.hkl -cell 79.1 79.1 38.4 90 90 90" in capsys.readouterr().out
    assert os.listdir(tmp_path) == [EXAMPLE_HKL]
    write_p1_hkl(str(tmp_path / "ref.hkl"), F000=0.0)            # the full example's own file
    assert (tmp_path / EXAMPLE_HKL).read_bytes() == (tmp_path / "ref.hkl").read_bytes()
    assert example_main(["--hkl-only", "sub.hkl"]) == 0
    assert (tmp_path / "sub.hkl").read_bytes() == (tmp_path / "ref.hkl").read_bytes()


def test_hkl_only_never_replaces_a_file_without_force(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.hkl").write_text("1 2 3 4.5\n")
    assert example_main(["--hkl-only", "mine.hkl"]) == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and err[0].startswith("nanobrag-numba: error: mine.hkl exists") and "--force" in err[0]
    assert (tmp_path / "mine.hkl").read_text() == "1 2 3 4.5\n"
    assert example_main(["--hkl-only", "mine.hkl", "--force"]) == 0
    assert (tmp_path / "mine.hkl").stat().st_size > 100000
    assert example_main(["--hkl-only", str(tmp_path)]) == 2 and "is a folder" in _err_lines(capsys)[0]
    assert example_main(["--force"]) == 2 and "--force goes with --hkl-only" in _err_lines(capsys)[0]
    assert example_main(["--bogus"]) == 2 and len(_err_lines(capsys)) == 1
    assert sorted(os.listdir(tmp_path)) == ["mine.hkl"]


def test_readme_examples_name_the_hkl_file_that_example_writes():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    names = set(re.findall(r"-hkl\s+(\S+?)[\s\"]", text))
    assert names == {EXAMPLE_HKL}, names
    assert "nanobrag-numba example --hkl-only" in text
    assert "python -m pytest -q -rs" in text


def test_cuda_wheels_are_in_the_gpu_extra_not_the_test_extra():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    extras = {k: [r.strip() for r in v.splitlines() if r.strip()] for k, v in cfg["options.extras_require"].items()}
    assert not [r for r in extras["test"] if "cu13" in r or "cuda" in r]
    assert any(r.startswith("hypothesis") for r in extras["test"])
    assert any("numba-cuda[cu13]" in r for r in extras["gpu"])
    assert "-rs" in cfg["tool:pytest"]["addopts"].split()
