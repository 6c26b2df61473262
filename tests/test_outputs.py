"""Output files are never destructive and a run leaves nothing behind (issue 9).

Devices and pipes are written in place, symbolic links are followed and
kept, an output naming an input or another output is refused before anything
is read, the images and Fdump.bin are written together (an error or SIGTERM
leaves none of them and no temporary file), and temporaries of a killed run
are removed by the next one.

Tests that need a character device never touch the real /dev/null or
/dev/full as root (a regression would replace them): they use a copy made
with mknod in the test's folder, or skip.
"""
import os
import signal
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from nanobrag_numba import batch
from nanobrag_numba.cli import main
from nanobrag_numba.errors import NanoBraggError
from nanobrag_numba.io import atomic
from nanobrag_numba.io.smv import write_smv

FLAGS = ["-cell", "40", "42", "45", "90", "90", "90", "-N", "5", "-detpixels", "16", "-noprogress",
         "-seed", "1", "-device", "cpu"]
HKL = "".join("%d %d %d %g\n" % (h, k, l, 10 + abs(h) + 2 * abs(k) + 3 * abs(l))
              for h in range(-3, 4) for k in range(-3, 4) for l in range(-3, 4))
MAT = "0.025 0 0\n0 0.0238 0\n0 0 0.0222\n"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "P1.hkl").write_text(HKL)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def files(path):
    return sorted(p.name for p in path.iterdir())


def one_error_line(capsys, rc):
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("nanobrag-numba: error: "), err
    assert "Traceback" not in out + err
    return lines[0]


def char_device(tmp_path, name, minor):
    """A character device like /dev/null (minor 3) or /dev/full (minor 7) that a bug may replace safely."""
    if os.geteuid() != 0:
        return "/dev/" + name          # an ordinary user cannot replace a file in /dev
    path = str(tmp_path / name)
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
    except (OSError, AttributeError) as exc:
        pytest.skip("cannot make a copy of /dev/%s to write to as root: %s" % (name, exc))
    return path


def reference_float(tmp_path):
    """The float image of the standard run, rendered once into its own folder."""
    ref = tmp_path / "ref"
    ref.mkdir(exist_ok=True)
    (ref / "P1.hkl").write_text(HKL)
    cwd = os.getcwd()
    os.chdir(ref)
    try:
        assert main(["-hkl", "P1.hkl", "-nopgm", "-nonoise"] + FLAGS) == 0
    finally:
        os.chdir(cwd)
    return (ref / "floatimage.bin").read_bytes()


# ---------------------------------------------------------------- devices, pipes, links


def test_fifo_output_is_written_in_place(workdir, capsys):
    expected = reference_float(workdir)
    os.mkfifo("pipe")
    got = []
    reader = threading.Thread(target=lambda: got.append(open("pipe", "rb").read()), daemon=True)
    reader.start()
    assert main(["-hkl", "P1.hkl", "-floatfile", "pipe", "-nopgm", "-nonoise"] + FLAGS) == 0
    reader.join(10)
    assert got == [expected]
    assert stat.S_ISFIFO(os.lstat("pipe").st_mode)
    assert not [n for n in os.listdir() if n.endswith(".tmp")]


def test_devices_stay_devices(workdir, tmp_path, capsys):
    null = char_device(tmp_path, "null", 3)
    args = ["-hkl", "P1.hkl", "-floatfile", null, "-intfile", null, "-pgmfile", null, "-noisefile", null,
            "-dump", null] + FLAGS
    assert main(args) == 0
    assert stat.S_ISCHR(os.stat(null).st_mode)
    assert files(workdir) == ["P1.hkl"] + (["null"] if null.startswith(str(tmp_path)) else [])


def test_full_device_is_one_error_and_nothing_is_left(workdir, tmp_path, capsys):
    full = char_device(tmp_path, "full", 7)
    before = files(workdir)
    msg = one_error_line(capsys, main(["-hkl", "P1.hkl", "-noisefile", full] + FLAGS))
    assert "no space left" in msg.lower() and full in msg
    assert stat.S_ISCHR(os.stat(full).st_mode)
    # the noise image is written last: Fdump.bin and the three images staged before it are gone too
    assert files(workdir) == before


def test_dev_stdout_goes_through_the_descriptor(workdir, capfdbinary):
    expected = reference_float(workdir)
    capfdbinary.readouterr()
    assert main(["-hkl", "P1.hkl", "-floatfile", "/dev/stdout", "-nopgm", "-nonoise"] + FLAGS) == 0
    out = capfdbinary.readouterr().out
    assert expected in out and b"max_I = " in out
    assert os.path.islink("/dev/stdout") or stat.S_ISCHR(os.stat("/dev/stdout").st_mode)
    assert sorted(files(workdir)) == ["Fdump.bin", "P1.hkl", "intimage.img", "ref"]


def test_symlink_stays_a_symlink(workdir, capsys):
    os.mkdir("real")
    (workdir / "real" / "img.bin").write_bytes(b"old")
    os.symlink(os.path.join("real", "img.bin"), "link.bin")
    assert main(["-hkl", "P1.hkl", "-floatfile", "link.bin", "-nopgm", "-nonoise"] + FLAGS) == 0
    assert os.path.islink("link.bin")
    assert (workdir / "real" / "img.bin").stat().st_size == 16 * 16 * 4
    assert files(workdir / "real") == ["img.bin"]


def test_replacing_a_file_keeps_its_permissions(tmp_path):
    target = tmp_path / "old.bin"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    atomic.atomic_write_bytes(target, [b"new"])
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o640


# ---------------------------------------------------------------- outputs naming inputs


def _mask(path):
    header = b"{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=little_endian;\nTYPE=unsigned_short;\nSIZE1=16;\nSIZE2=16;\n}\n"
    write_smv(path, np.ones((16, 16), np.uint16), header + b" " * (512 - len(header)))


@pytest.mark.parametrize("extra, flags", [
    (["-floatfile", "P1.hkl"], ("-floatfile", "-hkl")),
    (["-mask", "mask.img", "-intfile", "mask.img"], ("-intfile", "-mask")),
    (["-mat", "A.mat", "-pgmfile", "A.mat"], ("-pgmfile", "-mat")),
    (["-img", "mask.img", "-noisefile", "./sub/../mask.img"], ("-noisefile", "-img")),
    (["-sourcefile", "src.txt", "-floatfile", "src.txt"], ("-floatfile", "-sourcefile")),
    (["-dump", "P1.hkl"], ("-dump", "-hkl")),
    (["-floatfile", "hkl_link"], ("-floatfile", "-hkl")),
    (["-floatfile", "o.bin", "-intfile", "o.bin"], ("-floatfile", "-intfile")),
    (["-pgmfile", "intimage.img"], ("-intfile", "-pgmfile")),
])
def test_output_naming_an_input_or_another_output_is_refused(workdir, capsys, extra, flags):
    _mask("mask.img")
    (workdir / "A.mat").write_text(MAT)
    (workdir / "src.txt").write_text("0 0 -1 1 1e-10\n")
    os.mkdir("sub")
    os.symlink("P1.hkl", "hkl_link")
    before = {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()}
    args = ["-hkl", "P1.hkl"] + FLAGS + extra
    if "-mat" in extra:
        args = ["-hkl", "P1.hkl"] + FLAGS[7:] + extra
    msg = one_error_line(capsys, main(args))
    assert all(f in msg for f in flags), msg
    after = {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()}
    assert after == before                 # inputs byte for byte, and no Fdump.bin or image


def test_the_dump_read_without_hkl_is_an_input(workdir, capsys):
    assert main(["-hkl", "P1.hkl", "-nopgm", "-nonoise", "-floatfile", "f.bin"] + FLAGS) == 0
    dump = (workdir / "Fdump.bin").read_bytes()
    capsys.readouterr()
    msg = one_error_line(capsys, main(["-floatfile", "Fdump.bin"] + FLAGS))
    assert "-floatfile" in msg and "-dump" in msg
    assert (workdir / "Fdump.bin").read_bytes() == dump


# ---------------------------------------------------------------- errors after the HKL is read


def test_missing_output_folder_is_refused_before_anything(workdir, capsys):
    msg = one_error_line(capsys, main(["-hkl", "P1.hkl", "-pgmfile", "nodir/x.pgm"] + FLAGS))
    assert "-pgmfile" in msg and "does not exist" in msg
    assert files(workdir) == ["P1.hkl"]
    assert "reading" not in capsys.readouterr().out


def test_failure_writing_a_late_output_removes_the_earlier_ones(workdir, capsys, monkeypatch):
    (workdir / "intimage.img").write_bytes(b"older run")
    from nanobrag_numba.io import images

    def broken(*args, **kwargs):
        raise NanoBraggError("cannot write image.pgm: simulated failure")

    monkeypatch.setattr(images, "write_pgm", broken)
    msg = one_error_line(capsys, main(["-hkl", "P1.hkl"] + FLAGS))
    assert "simulated failure" in msg
    # no Fdump.bin, no float image, and the older intimage.img is untouched
    assert files(workdir) == ["P1.hkl", "intimage.img"]
    assert (workdir / "intimage.img").read_bytes() == b"older run"


def test_seed_out_of_range_is_refused_before_rendering(workdir, capsys):
    msg = one_error_line(capsys, main(["-hkl", "P1.hkl"] + FLAGS[:-4] + ["-seed", "99999999999999999999"]))
    assert "-seed" in msg
    assert files(workdir) == ["P1.hkl"]


def test_free_space_is_checked(tmp_path, monkeypatch):
    class Full:
        f_bavail = f_bfree = 10
        f_frsize = 4096

    monkeypatch.setattr(atomic.os, "statvfs", lambda path: Full())
    with pytest.raises(NanoBraggError, match="no space left for the outputs"):
        atomic.check_free_space([("-floatfile", str(tmp_path / "f.bin"), 10 ** 6)])
    atomic.check_free_space([("-floatfile", str(tmp_path / "f.bin"), 100)])


def test_transaction_is_all_or_nothing(tmp_path):
    old = tmp_path / "b.bin"
    old.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic.output_transaction():
            atomic.atomic_write_bytes(tmp_path / "a.bin", [b"a"])
            atomic.atomic_write_bytes(old, [b"new"])
            raise KeyboardInterrupt
    assert files(tmp_path) == ["b.bin"] and old.read_bytes() == b"old"
    with atomic.output_transaction():
        atomic.atomic_write_bytes(tmp_path / "a.bin", [b"a"])
        atomic.atomic_write_bytes(old, [b"new"])
        staged = [n for n in files(tmp_path) if n.endswith(".tmp")]
        assert len(staged) == 2 and [n for n in files(tmp_path) if n not in staged] == ["b.bin"]
        assert old.read_bytes() == b"old"
    assert files(tmp_path) == ["a.bin", "b.bin"] and old.read_bytes() == b"new"


# ---------------------------------------------------------------- stale temporaries


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead, live = _dead_pid(), os.getppid()
    names = [".x.%d.tmp" % dead, ".x.%d.ab_c12.tmp" % dead, ".x.%d.tmp" % live, ".y.%d.tmp" % dead,
             ".x.oldnaming.tmp", "x"]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    assert atomic.remove_stale_temporaries(tmp_path, ["x"]) == 2
    assert files(tmp_path) == sorted([".x.%d.tmp" % live, ".y.%d.tmp" % dead, ".x.oldnaming.tmp", "x"])
    # a batch holding its folder's lock removes every temporary of its names
    assert batch.remove_stale_temporaries(str(tmp_path), ["x"]) == 2
    assert files(tmp_path) == [".y.%d.tmp" % dead, "x"]


def test_a_run_removes_the_temporaries_a_killed_run_left(workdir, capsys):
    dead = _dead_pid()
    stale = ".floatimage.bin.%d.k7f3_x2a.tmp" % dead
    (workdir / stale).write_bytes(b"\0" * 100)
    assert main(["-hkl", "P1.hkl", "-nopgm", "-nonoise"] + FLAGS) == 0
    assert stale not in os.listdir()
    assert not [n for n in os.listdir() if n.endswith(".tmp")]


def test_temporary_names_carry_the_pid(tmp_path):
    seen = []

    def chunks():
        seen.extend(n for n in os.listdir(tmp_path) if n.endswith(".tmp"))
        yield b"x"

    atomic.atomic_write_bytes(tmp_path / "f.bin", chunks())
    assert len(seen) == 1 and seen[0].startswith(".f.bin.%d." % os.getpid())


# ---------------------------------------------------------------- SIGTERM


def _command(tmp_path, *extra):
    return subprocess.Popen([sys.executable, "-m", "nanobrag_numba", "-hkl", "P1.hkl"] + FLAGS[:9] +
                            ["-seed", "1", "-device", "cpu"] + list(extra),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_line(proc, start, timeout=120.0):
    t0 = time.monotonic()
    for line in proc.stdout:
        if line.startswith(start):
            return
        assert time.monotonic() - t0 < timeout
    raise AssertionError("the run ended before printing %r: %s" % (start, proc.stderr.read()))


def _terminate_when(proc, ready):
    """Send SIGTERM once ``ready()`` returns; the run must end with status 143 and one line."""
    try:
        ready()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == ["nanobrag-numba: terminated"]


def test_sigterm_during_a_render_exits_143_and_leaves_nothing(workdir):
    proc = _command(workdir, "-detpixels", "1024", "-oversample", "2")
    _terminate_when(proc, lambda: _wait_for_line(proc, "rendering on"))   # printed just before the kernel starts
    assert files(workdir) == ["P1.hkl"]


def test_sigterm_while_writing_removes_the_staged_files(workdir):
    os.mkfifo("pipe")                       # no reader: the run blocks in open() while writing the SMV
    proc = _command(workdir, "-detpixels", "16", "-intfile", "pipe")

    def float_image_staged():
        t0 = time.monotonic()
        while not any(n.startswith(".floatimage.bin.") for n in os.listdir(workdir)):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() - t0 < 120
            time.sleep(0.02)

    _terminate_when(proc, float_image_staged)
    assert files(workdir) == ["P1.hkl", "pipe"]


# ---------------------------------------------------------------- batch


def test_batch_without_dask_creates_no_folder(workdir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)     # import distributed -> ImportError
    rc = batch.main(["--random-orientations", "1", "--out", "new", "--workers", "2", "--", "-hkl", "P1.hkl"]
                    + FLAGS)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "Dask" in err[0]
    assert files(workdir) == ["P1.hkl"]


def test_batch_removes_stale_settings_temporaries(workdir, capsys):
    os.mkdir("out")
    stale = "out/.batch.json.%d.tmp" % os.getpid()     # even a live pid: the batch holds the folder's lock
    open(stale, "w").close()
    assert batch.main(["--random-orientations", "1", "--out", "out", "--quiet", "--", "-hkl", "P1.hkl"]
                      + FLAGS) == 0
    assert not [n for n in os.listdir("out") if n.endswith(".tmp")]


def test_stdout_closed_by_its_reader_is_one_line_and_leaves_nothing(workdir):
    # `nanobrag-numba ... -floatfile /dev/stdout | head -c 10`: 256 KB of image cannot fit in the pipe
    proc = _command(workdir, "-detpixels", "256", "-floatfile", "/dev/stdout", "-nonoise")
    proc.stdout.read(10)
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 2, err
    assert err.strip().splitlines() == [
        "nanobrag-numba: error: standard output was closed before the run finished (broken pipe)"]
    assert files(workdir) == ["P1.hkl"]
