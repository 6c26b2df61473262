"""Impossible values, table blow-ups and bad input files end in one clear error (issue 9).

Every case runs the command line in-process (``cli.main``) in an empty
directory holding only its inputs, and checks: exit status 2, exactly one
``nanobrag-numba: error: ...`` line on stderr, no traceback, and nothing
left behind (no images, no Fdump.bin).  The same input through the Python
API raises :class:`NanoBraggError`.  A few inputs that C renders well (zero
detector vectors) are checked to keep running.  No test here needs golden
data; the renders use a 16x16 detector.
"""
import math
import os

import numpy as np
import pytest

import nanobrag_numba as nb
from nanobrag_numba import cli, simulator
from nanobrag_numba.config import Config
from nanobrag_numba.errors import NanoBraggError

BASE = ["-hkl", "P1.hkl", "-cell", "40", "42", "45", "90", "90", "90", "-N", "5", "-detpixels", "16"]
GIB = 2 ** 30


def _write_hkl(path, f_text=None):
    lines = []
    for h in range(-2, 3):
        for k in range(-2, 3):
            for l in range(-2, 3):
                lines.append("%d %d %d %g" % (h, k, l, 100 + h + k + l))
    if f_text is not None:
        lines[7] = "0 0 1 %s" % f_text
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    from nanobrag_numba.kernels import _cache
    monkeypatch.setattr(_cache, "_announced", True)   # no compile note, whatever the state of the cache
    monkeypatch.chdir(tmp_path)
    _write_hkl(tmp_path / "P1.hkl")
    return tmp_path


def _snapshot(d):
    return {p: (d / p).read_bytes() for p in sorted(os.listdir(d))}


def _fails(capsys, workdir, flags, *expect):
    """Run the CLI, check the one-line error and that the inputs are all that is left."""
    before = _snapshot(workdir)
    capsys.readouterr()
    rc = cli.main(flags)
    out, err = capsys.readouterr()
    assert rc == 2, (out[-2000:], err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nanobrag-numba: error: "), err
    assert "Traceback" not in out + err
    for word in expect:
        assert word in lines[0], lines[0]
    assert _snapshot(workdir) == before          # nothing written, inputs untouched
    with pytest.raises(NanoBraggError) as info:
        nb.Simulator(Config.from_args(flags), device="cpu").render()
    assert "\n" not in str(info.value)
    assert _snapshot(workdir) == before
    return lines[0]


@pytest.fixture
def small_memory(monkeypatch):
    """A machine with 4 GiB available, so the table limits do not depend on the test machine."""
    monkeypatch.setattr(simulator, "memory_bytes", lambda: 4 * GIB)


# ------------------------------------------------------------------ impossible values
@pytest.mark.parametrize("extra, expect", [
    (["-distance", "0"], ["-distance 0", "through the sample"]),
    (["-close_distance", "0"], ["-close_distance 0"]),
    (["-beam_vector", "0", "0", "0"], ["-beam_vector 0 0 0", "no direction"]),
    (["-pix0_vector", "0", "0", "0"], ["-pix0_vector 0 0 0", "detector plane"]),
    (["-N", "1e300"], ["automatic oversampling", "-oversample"]),
    (["-N", "1e12"], ["1.35e+11-fold", "limit of 1000"]),
    (["-seed", "99999999999999999999"], ["-seed 99999999999999999999 ", "C's int"]),
    (["-seed", "2147483648"], ["-seed 2147483648"]),
    (["-mosaic_seed", "-2147483648"], ["-mosaic_seed"]),
    (["-misset", "random", "-misset_seed", "4294967296"], ["-misset_seed"]),
    (["-twotheta", "inf"], ["-twotheta", "finite"]),
    (["-fdet_vector", "inf", "0", "1"], ["-fdet_vector", "finite"]),
])
def test_impossible_values(capsys, workdir, extra, expect):
    _fails(capsys, workdir, BASE + extra, *expect)


def test_seed_limits_are_cs_int(workdir):
    """The largest seeds C's atoi keeps are accepted (validation only, no render)."""
    for seed in (2147483647, -2147483647, 0):
        Config.from_args(BASE + ["-seed", str(seed)]).validate()
    with pytest.raises(NanoBraggError, match="whole number"):
        Config.from_args(BASE).replace(seed=1.5).validate()


def test_api_rejects_non_finite_fields(workdir):
    cfg = Config.from_args(BASE)
    for name in ("Na", "distance", "phi0", "Xbeam", "default_F"):
        with pytest.raises(NanoBraggError, match="finite"):
            nb.Simulator(cfg.replace(**{name: math.nan}), device="cpu").render()
    with pytest.raises(NanoBraggError, match="finite"):
        nb.Simulator(cfg.replace(Na=10 ** 400), device="cpu").render()


def test_pix0_vector_ignored_with_c_quirks(workdir):
    """With -c_quirks -pix0_vector 0 0 0 is ignored, as in C: the image is the CUSTOM one without it."""
    a = nb.Simulator(Config.from_args(BASE + ["-pix0_vector", "0", "0", "0", "-c_quirks"]), device="cpu").render()
    b = nb.Simulator(Config.from_args(BASE + ["-beam_vector", "1", "0", "0", "-c_quirks"]), device="cpu").render()
    assert np.array_equal(a.floatimage, b.floatimage) and a.floatimage.max() > 0


@pytest.mark.parametrize("flag", ["-fdet_vector", "-sdet_vector", "-odet_vector", "-polar_vector",
                                  "-spindle_axis", "-twotheta_axis"])
def test_zero_vectors_that_c_renders_still_run(workdir, flag):
    """C renders these deterministically (checked bit for bit against C built without FMA): keep running."""
    img = nb.Simulator(Config.from_args(BASE + [flag, "0", "0", "0", "-phi", "1"]), device="cpu").render()
    assert np.isfinite(img.floatimage).all() and img.floatimage.max() > 0


# ------------------------------------------------------------------ tables that would not fit
@pytest.mark.parametrize("extra, expect", [
    (["-phisteps", "1000000000"], ["-phisteps 1000000000", "GiB"]),
    (["-phisteps", "10000", "-mosaic_domains", "10000", "-mosaic", "1"],
     ["-phisteps 10000 x -mosaic_domains 10000", "6.7 GiB"]),
    (["-divsteps", "1000000", "-divergence", "1"], ["-hdivsteps 1000000 x -vdivsteps 1000000"]),
    (["-dispsteps", "100000000", "-dispersion", "1"], ["-dispsteps 100000000"]),
])
def test_tables_too_large_for_memory(capsys, workdir, small_memory, extra, expect):
    line = _fails(capsys, workdir, BASE + extra, *expect)
    assert "4.0 GiB of memory available" in line


def test_huge_tables_that_fit_are_built(workdir, monkeypatch):
    """The estimate refuses only what does not fit: the same -phisteps x -mosaic_domains fits in more memory."""
    monkeypatch.setattr(simulator, "memory_bytes", lambda: 4 * GIB)
    cfg = Config.from_args(BASE + ["-phisteps", "200", "-mosaic_domains", "1000", "-mosaic", "1", "-osc", "1"])
    prep = simulator.prepare(cfg, lambda s: None, write_dump=False)
    assert prep.rot.shape == (201, 1000, 9)
    monkeypatch.setattr(simulator, "memory_bytes", lambda: 10 * 2 ** 20)
    with pytest.raises(NanoBraggError, match="200 phi steps|cell orientations"):
        simulator.prepare(cfg, lambda s: None, write_dump=False)


def test_rotation_table_matches_scalar_formula(workdir):
    """The vectorised mosaic rotation gives the bits of vectors.rotate_umat (C's order)."""
    from nanobrag_numba import vectors as V
    cfg = Config.from_args(BASE + ["-phisteps", "3", "-osc", "3", "-mosaic_domains", "7", "-mosaic", "2"])
    prep = simulator.prepare(cfg, lambda s: None, write_dump=False)
    umats = prep.crand.__class__().mosaic_umats(prep.sampling.mosaic_spread, 7, cfg.mosaic_seed)
    cell = (prep.crystal.a, prep.crystal.b, prep.crystal.c)
    for t, phi in enumerate(prep.phis):
        rotated = [V.rotate_axis(v, prep.det.spindle, phi) if phi != 0.0 else v for v in cell]
        for m in range(7):
            u = [float(x) for x in umats[m]]
            want = np.array([x for v in rotated for x in V.rotate_umat(v, u)])
            assert want.tobytes() == prep.rot[t, m].tobytes()


# ------------------------------------------------------------------ bad input files
def test_garbage_sourcefile(capsys, workdir):
    (workdir / "src.txt").write_text("this is not\na source file\n")
    _fails(capsys, workdir, BASE + ["-sourcefile", "src.txt"], "src.txt, line 1", "'this' is not a number")


def test_sourcefile_at_sample_and_infinite(capsys, workdir):
    (workdir / "src.txt").write_text("-10 0 0 1 1e-10\n0 0 0 1 1e-10\n")
    _fails(capsys, workdir, BASE + ["-sourcefile", "src.txt"], "src.txt, line 2", "no direction")
    (workdir / "src.txt").write_text("-10 0 0 1 1e-10\n\n-10 inf 0 1 1e-10\n")
    _fails(capsys, workdir, BASE + ["-sourcefile", "src.txt"], "src.txt, line 3", "finite")


def test_good_sourcefile_still_reads(workdir):
    (workdir / "src.txt").write_text("-10 0 0 1 1e-10\n-10 0.004 0 nan nan\n")   # nan: C's "not given"
    prep = simulator.prepare(Config.from_args(BASE + ["-sourcefile", "src.txt"]), lambda s: None, write_dump=False)
    assert prep.sources.shape == (2, 5) and prep.sources[1, 3] == 1e-10


@pytest.mark.parametrize("f_text", ["nan", "inf", "-Infinity"])
def test_hkl_non_finite_F(capsys, workdir, f_text):
    _write_hkl(workdir / "P1.hkl", f_text)
    _fails(capsys, workdir, BASE, "P1.hkl, line 8", "not a finite number")


@pytest.mark.parametrize("text, expect", [
    ("0.01 0 0\n0 0.01 0\n0 0 nan\n", "line 3"),
    ("0.01 0 0\n0 abc 0\n0 0 0.01\n", "'abc' is not a finite number"),
    ("0.01 0 0\n0 0.01 0\n", "found 6"),
    ("\x00\xff\xfe garbage\n", "line 1"),
    ("0.01 0 0\n0.02 0 0\n0 0 0.01\n", "is singular"),      # a* and b* parallel: no crystal (C: NaN image)
])
def test_bad_matrix_file(capsys, workdir, text, expect):
    (workdir / "A.mat").write_bytes(text.encode("latin-1"))
    _fails(capsys, workdir, ["-hkl", "P1.hkl", "-mat", "A.mat", "-N", "5", "-detpixels", "16"], "A.mat", expect)


def test_singular_matrix_setting_is_one_error(workdir):
    sim = nb.Simulator(["-hkl", "P1.hkl", "-cell", "40", "40", "40", "90", "90", "90", "-detpixels", "8"],
                       device="cpu")
    with pytest.raises(NanoBraggError, match="the orientation matrix is singular"):
        sim.prepare(matrix=(1, 0, 0, 2, 0, 0, 0, 0, 1))


def test_matrix_read_as_c_reads_it(workdir):
    """C's fscanf takes the first nine numbers whatever the line breaks."""
    from nanobrag_numba.crystal import read_matrix_numbers
    (workdir / "one.mat").write_text("1 2 3 4 5 6 7 8 9 10\n")
    (workdir / "three.mat").write_text("1 2 3\n4 5 6\n7 8 9\n 0.1 0.2\n")
    assert read_matrix_numbers("one.mat") == read_matrix_numbers("three.mat") == ([1, 2, 3], [4, 5, 6], [7, 8, 9])


def _smv(width, height, extra=b"", data=True):
    header = b"{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=little_endian;\nTYPE=unsigned_short;\n" \
        + b"SIZE1=%d;\nSIZE2=%d;\nPIXEL_SIZE=0.1;\n" % (width, height) + extra + b"}\f"
    header += b" " * (512 - len(header))
    return header + (np.ones(width * height, dtype="<u2").tobytes() if data else b"")


@pytest.mark.parametrize("blob, expect", [
    (_smv(16, 16, data=False), "truncated"),
    (_smv(16, 16, b"DISTANCE=0;\n"), "-distance 0"),
    (_smv(16, 16, b"WAVELENGTH=inf;\n"), "-lambda"),
    (_smv(16, 16, b"BEAM_CENTER_X=inf;\n"), "-Xbeam"),
    (b"not an image" * 50, "does not look like"),
])
def test_bad_mask_file(capsys, workdir, blob, expect):
    (workdir / "mask.img").write_bytes(blob)
    flags = [w for w in BASE if w not in ("-detpixels", "16")] + ["-mask", "mask.img"]
    before = _snapshot(workdir)
    capsys.readouterr()
    assert cli.main(flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nanobrag-numba: error: ") and expect in err[0], err
    assert _snapshot(workdir) == before


# ------------------------------------------------------------------ nothing left behind
def test_no_fdump_after_error_after_reading_hkl(capsys, workdir):
    """An error once the HKL is read (here: the GPU-only precision on the CPU) leaves no Fdump.bin."""
    _fails_cli_only(capsys, workdir, BASE + ["-device", "cpu", "-precision", "single"], "-precision single")


def _fails_cli_only(capsys, workdir, flags, expect):
    before = _snapshot(workdir)
    capsys.readouterr()
    assert cli.main(flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0], err
    assert _snapshot(workdir) == before


def test_fdump_written_with_the_images(capsys, workdir):
    """prepare() only keeps the table; write_outputs writes Fdump.bin with the images, as C's bytes."""
    from nanobrag_numba.io.hkl import read_fdump
    prep = simulator.prepare(Config.from_args(BASE), lambda s: None)
    assert prep.fdump is not None and not (workdir / "Fdump.bin").exists()
    assert cli.main(BASE + ["-device", "cpu"]) == 0
    assert read_fdump(workdir / "Fdump.bin").bounds == (-2, 2, -2, 2, -2, 2)


# ------------------------------------------------------------------ the kernel cache
def test_unwritable_cache_compiles_in_memory(monkeypatch, capsys):
    """No writable cache directory anywhere: Numba's "cannot cache function" becomes an in-memory compile."""
    import numba
    from numba.core import caching

    from nanobrag_numba.kernels import _cache, crand

    def deny(self):
        raise PermissionError(13, "Read-only file system", self.get_cache_path())

    monkeypatch.setattr(caching._CacheLocator, "ensure_cache_path", deny)
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(_cache, "UNCACHED", [])
    fn = numba.njit(cache=True)(crand.gammln.py_func)     # a kernel defined in kernels/: raised before
    assert _cache.UNCACHED == ["gammln"]
    assert fn(5.0) == pytest.approx(math.log(24.0), rel=1e-6)   # compiled and run without any cache (float, as C)
    monkeypatch.setattr(_cache, "_announced", False)
    _cache.announce_compile()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note: ") and "compiling them in memory" in err[0]

    def outside():
        return 1
    with pytest.raises(RuntimeError, match="cannot cache function"):   # only kernels/ falls back
        numba.njit(cache=True)(outside)


def test_compile_announcement(monkeypatch, capsys):
    """One line before compiling when the on-disk cache will miss, nothing when it will hit."""
    import numba

    from nanobrag_numba.kernels import _cache, cpu
    fresh = numba.njit(cache=True)(cpu.first_phi_loop_pixel.py_func)   # not compiled in this process
    monkeypatch.setattr(_cache, "_kernel_dispatchers", lambda: [fresh])
    monkeypatch.setattr(_cache, "UNCACHED", [])
    monkeypatch.setattr(fresh._cache._cache_file, "_load_index", lambda: {("sig",): "x.nbc"})
    assert _cache.cache_will_hit()
    monkeypatch.setattr(_cache, "_announced", False)
    _cache.announce_compile()
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(fresh._cache._cache_file, "_load_index", lambda: {})
    assert not _cache.cache_will_hit()
    monkeypatch.setattr(_cache, "_announced", False)
    _cache.announce_compile()
    _cache.announce_compile()                     # once per process
    assert capsys.readouterr().err == "note: compiling kernels, first run only, about %d s\n" % _cache.COMPILE_SECONDS
    monkeypatch.setattr(_cache, "_announced", False)
    _cache.announce_compile(seconds=16)
    assert capsys.readouterr().err == "note: compiling kernels, first run only, about 16 s\n"
