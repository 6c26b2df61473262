"""Parity with the C program over the golden cases (in-process command line).

Each case runs ``nanobrag-numba`` with the C command line in a fresh
directory and compares all four outputs with the C program's files, with the
bars of ``nanobrag_numba.tolerances``: with ``-c_quirks`` every case, without
it every case whose ``c_quirk`` we do not correct.
"""
import numpy as np
import pytest

import golden
from nanobrag_numba import tolerances as T
from nanobrag_numba.cli import main

CASES = golden.cases()
DEFAULT_CASES = [c for c in CASES if c["c_quirk"] not in golden.CORRECTED]


def run_case(case, workdir, monkeypatch, quirks):
    golden.stage(case, workdir)
    monkeypatch.chdir(workdir)
    args = golden.OUTPUT_FLAGS + list(case["args"]) + (["-c_quirks"] if quirks else [])
    rc = main(args + ["-device", "cpu"])
    assert rc == 0


def compare(case, workdir):
    ref = golden.float_image(case).astype(np.float64)
    ours = np.fromfile(workdir / "floatimage.bin", dtype="<f4").reshape(case["shape"]).astype(np.float64)
    if ref.std() > 0:
        corr = np.corrcoef(ref.ravel(), ours.ravel())[0, 1]
        assert corr >= T.FLOAT_CORR_MIN
    mref = np.abs(ref).max()
    assert np.abs(ours - ref).max() <= T.FLOAT_MAXREL * mref
    if ref.sum() != 0:
        assert abs(ours.sum() / ref.sum() - 1.0) <= T.FLOAT_SUMREL

    kr, ir = golden.parse_smv(golden.read(case, "int"))
    kc, ic = golden.parse_smv((workdir / "intimage.img").read_bytes())
    assert ic.shape == ir.shape
    assert np.abs(ic.astype(np.int64) - ir.astype(np.int64)).max() <= T.INT_MAXDIFF
    assert set(kr) == set(kc)
    bad = [k for k in kr if not golden.header_values_equal(kr[k], kc[k])]
    assert bad == []

    if "noise" in case["outputs"]:
        _, nr = golden.parse_smv(golden.read(case, "noise"))
        _, nc = golden.parse_smv((workdir / "noiseimage.img").read_bytes())
        assert (nr == nc).mean() >= T.NOISE_IDENTICAL_MIN
    else:
        assert not (workdir / "noiseimage.img").exists()
    if "pgm" in case["outputs"]:
        pr = golden.parse_pgm(golden.read(case, "pgm"))
        pc = golden.parse_pgm((workdir / "image.pgm").read_bytes())
        assert np.abs(pr.astype(int) - pc.astype(int)).max() <= T.PGM_MAXDIFF
    else:
        assert not (workdir / "image.pgm").exists()


def same_stdout(case, ours):
    """Our standard output is C's, line for line, but for our own lines and C's mmap addresses."""
    ref = [ln for ln in golden.read_text(case, "stdout").splitlines() if "mmap(" not in ln]
    ours = [ln for ln in ours.splitlines() if not ln.startswith(("rendering on ", "note: "))]
    assert ours == ref


@pytest.mark.golden
@pytest.mark.parametrize("case", CASES or [None], ids=[c["id"] for c in CASES] or ["no-golden-data"])
def test_parity_with_c_quirks(case, tmp_path, monkeypatch, capsys):
    golden.require()
    run_case(case, tmp_path, monkeypatch, quirks=True)
    compare(case, tmp_path)
    same_stdout(case, capsys.readouterr().out)


@pytest.mark.golden
@pytest.mark.parametrize("case", DEFAULT_CASES or [None], ids=[c["id"] for c in DEFAULT_CASES] or ["no-golden-data"])
def test_parity_default(case, tmp_path, monkeypatch, capsys):
    golden.require()
    run_case(case, tmp_path, monkeypatch, quirks=False)
    compare(case, tmp_path)


@pytest.mark.golden
def test_every_golden_case_is_covered():
    golden.require()
    assert len(CASES) == 74
    assert len(DEFAULT_CASES) == 59
