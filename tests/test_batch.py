"""Batch rendering: the API, the ``batch`` subcommand, resume after a crash, Dask workers.

No golden data: a small P1 HKL file is written into a temporary folder.
Images are 48x48 or 64x64 pixels so that the whole module runs in well
under a minute and a half on 2 cores (most of it is starting processes and
Dask workers).  The Dask tests skip when dask.distributed is not installed.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import nanobrag_numba as nb
from nanobrag_numba import batch
from nanobrag_numba.cli import main as cli_main
from nanobrag_numba.config import RTD

tifffile = pytest.importorskip("tifffile")

CELL = ["-cell", "40", "42", "45", "90", "90", "90"]
LIGHT = CELL + ["-N", "5", "-detpixels", "48", "-pixel", "0.3", "-distance", "80", "-mosaic", "0.3",
                "-mosaic_domains", "2", "-oversample", "1", "-device", "cpu"]
# about 35 ms per image on 2 cores: slow enough to kill a batch in the middle
HEAVY = CELL + ["-N", "5", "-detpixels", "64", "-pixel", "0.3", "-distance", "80", "-mosaic", "0.3",
                "-mosaic_domains", "12", "-oversample", "2", "-device", "cpu"]
NO_FILES = ["-nonoise", "-nopgm", "-noprogress"]


def _needs_dask():
    return pytest.importorskip("distributed", reason="dask.distributed is not installed "
                                                     "(pip install 'nanobrag-numba[cluster]')")


@pytest.fixture(scope="module")
def hkl(tmp_path_factory):
    from nanobrag_numba.example import write_p1_hkl
    path = tmp_path_factory.mktemp("hkl") / "P1.hkl"
    write_p1_hkl(str(path), cell=(40, 42, 45, 90, 90, 90), dmin=3.0)
    return str(path)


def light(hkl):
    return ["-hkl", hkl] + LIGHT


def heavy(hkl):
    return ["-hkl", hkl] + HEAVY


def manifest(out):
    with open(os.path.join(out, "manifest.jsonl")) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def image(out, rec):
    return tifffile.imread(os.path.join(out, rec["files"]["image"]))


def run_batch(args, base, capsys=None):
    rc = batch.main(args + ["--quiet", "--"] + base)
    err = capsys.readouterr().err if capsys else ""
    return rc, err


def cli_float_image(flags, tmp_path, tag):
    """The float image of the in-process command line (same code as the installed command)."""
    path = str(tmp_path / ("%s.bin" % tag))
    rc = cli_main(flags + NO_FILES + ["-floatfile", path, "-intfile", str(tmp_path / ("%s.img" % tag))])
    assert rc == 0
    return np.fromfile(path, dtype=np.float32)


@pytest.fixture(scope="module")
def orient8(hkl, tmp_path_factory):
    """An in-process batch of 8 random orientations (the reference of several tests)."""
    out = str(tmp_path_factory.mktemp("orient8"))
    assert batch.main(["--random-orientations", "8", "--seed", "3", "--out", out, "--quiet", "--"]
                      + light(hkl)) == 0
    return out


@pytest.fixture(scope="module")
def heavy_ref(hkl, tmp_path_factory):
    """The first 24 images of the heavy random-orientation batch, rendered in-process."""
    out = str(tmp_path_factory.mktemp("heavyref"))
    assert batch.main(["--random-orientations", "24", "--seed", "5", "--out", out, "--quiet", "--"]
                      + heavy(hkl)) == 0
    return {r["index"]: image(out, r) for r in manifest(out)}


# ---------------------------------------------------------------- API

def test_api_render_equals_cli_image(hkl, tmp_path):
    flags = light(hkl) + ["-misset", "10", "20", "30", "-seed", "1"]
    p = subprocess.run([sys.executable, "-m", "nanobrag_numba"] + flags + NO_FILES
                       + ["-floatfile", "f.bin", "-intfile", "i.img"], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    cli = np.fromfile(tmp_path / "f.bin", dtype=np.float32).reshape(48, 48)
    res = nb.Simulator(flags, device="cpu").render()
    assert res.floatimage.dtype == np.float32
    assert np.array_equal(res.floatimage, cli)


def _mat_file(tmp_path):
    rows = [[0.0201, 0.0032, -0.0011], [-0.0024, 0.0215, 0.0040], [0.0013, -0.0036, 0.0199]]
    path = tmp_path / "A.mat"
    path.write_text("".join(" ".join(repr(v) for v in r) + "\n" for r in rows))
    return str(path), tuple(v for r in rows for v in r)


def test_overrides_equal_fresh_renders(hkl, tmp_path):
    mat, numbers = _mat_file(tmp_path)
    sim = nb.Simulator(light(hkl), device="cpu")      # one Simulator: nothing leaks between renders
    cases = [
        (["-misset", "10", "20", "30"], dict(misset=(10 / RTD, 20 / RTD, 30 / RTD))),
        (["-phi", "3"], dict(phi0=3 / RTD)),
        (["-distance", "90"], dict(distance=90 / 1000.0)),
        (["-lambda", "1.2"], dict(lambda0=1.2 / 1.0e10)),
        (["-N", "3"], dict(Na=3, Nb=3, Nc=3)),
        (["-mosaic_seed", "99"], dict(mosaic_seed=99)),
        (["-Xbeam", "6", "-Ybeam", "8"], dict(Xbeam=6 / 1000.0, Ybeam=8 / 1000.0)),
        (["-mat", mat], dict(matrix=numbers)),
    ]
    plain = sim.render().floatimage
    for flags, changes in cases:
        fresh = nb.Simulator(light(hkl) + flags, device="cpu").render().floatimage
        got = sim.render(**changes).floatimage
        assert np.array_equal(got, fresh), flags
        assert not np.array_equal(got, plain), flags     # the override did change the image
    assert np.array_equal(sim.render().floatimage, plain)


# ---------------------------------------------------------------- the batch command

def test_random_orientations_equal_separate_cli_runs(hkl, orient8, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)        # the command line writes Fdump.bin into the current folder
    recs = sorted(manifest(orient8), key=lambda r: r["index"])
    assert [r["index"] for r in recs] == list(range(8))
    for rec in recs:
        deg = rec["job"]["misset_deg"]
        assert rec["overrides"]["misset"] == [d / RTD for d in deg]
        cli = cli_float_image(light(hkl) + ["-misset"] + [repr(d) for d in deg], tmp_path, rec["name"])
        got = image(orient8, rec)
        assert got.dtype == np.float32 and got.shape == (48, 48)
        assert np.array_equal(got.ravel(), cli), rec["name"]
    capsys.readouterr()
    # the orientations differ from each other
    assert len({tuple(r["job"]["misset_deg"]) for r in recs}) == 8


def test_c_orientations_are_cs_random_misset():
    from nanobrag_numba.crand import CRandom
    angles = batch.random_orientations(3, 7, "c")
    for i, deg in enumerate(angles):
        _umat, rad = CRandom().random_misset(7 + i)
        assert np.allclose(np.array(deg) / RTD, rad, rtol=0, atol=1e-14)


def test_uniform_orientations_are_uniform_and_reproduce_the_matrix():
    from nanobrag_numba.vectors import rotate_xyz
    mats = batch.uniform_rotations(4000, 11)
    assert np.allclose(np.einsum("nij,nkj->nik", mats, mats), np.eye(3), atol=1e-12)
    # Haar measure: the image of any fixed unit vector is uniform on the sphere, so each
    # matrix element is uniform on [-1, 1] (C's generator fails this: it favours R22 near 1)
    counts = np.histogram(mats[:, 2, 2], bins=8, range=(-1, 1))[0]
    assert counts.min() > 400 and counts.max() < 600, counts
    # the first rotations do not depend on how many are drawn
    assert np.array_equal(batch.uniform_rotations(5, 11), mats[:5])
    v = (0.3, -0.5, 0.8)
    for deg, m in zip(batch.random_orientations(50, 11), mats[:50]):
        assert np.allclose(rotate_xyz(v, *(d / RTD for d in deg)), m @ np.array(v), atol=1e-12)


def test_rerun_skips_finished_images(hkl, orient8, capsys):
    before = {e: os.stat(os.path.join(orient8, e)).st_mtime_ns for e in os.listdir(orient8)
              if e.endswith(".tif")}
    rc = batch.main(["--random-orientations", "8", "--seed", "3", "--out", orient8, "--"] + light(hkl))
    err = capsys.readouterr().err
    assert rc == 0
    assert "8 already done, 0 to render" in err
    assert len(manifest(orient8)) == 8
    after = {e: os.stat(os.path.join(orient8, e)).st_mtime_ns for e in before}
    assert after == before


def test_jobs_file_phi_series_and_noise(hkl, tmp_path):
    out = str(tmp_path / "phi")
    assert batch.main(["--phi-series", "1", "0.5", "3", "--noise", "--format", "float", "--out", out,
                       "--quiet", "--"] + light(hkl) + ["-seed", "40"]) == 0
    sim = nb.Simulator(light(hkl), device="cpu")
    for rec in manifest(out):
        i = rec["index"]
        assert rec["overrides"]["phi0"] == (1 + 0.5 * i) / RTD
        res = sim.render(phi0=(1 + 0.5 * i) / RTD)
        got = np.fromfile(os.path.join(out, rec["files"]["image"]), dtype=np.float32).reshape(48, 48)
        assert np.array_equal(got, res.floatimage)
        assert rec["noise_seed"] == 40 + i
        from nanobrag_numba.io.smv import read_smv
        noise = read_smv(os.path.join(out, rec["files"]["noise"])).data.reshape(48, 48)
        assert np.array_equal(noise, res.noise_image(40 + i))


def test_malformed_job_lines_are_reported_and_the_rest_runs(hkl, tmp_path, capsys):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join([
        '{"id": "a", "misset_deg": [10, 20, 30]}',
        '{"id": "b", "misset_deg": [10, 20]}',
        '',
        'this is not json',
        '{"distance": 0.09, "name": "far"}',
        '{"distnace": 0.09}',
        '{"lambda0": "1A"}',
        '{"phi_deg": 2, "id": 7}',
    ]) + "\n")
    out = str(tmp_path / "out")
    rc = batch.main(["--jobs", str(jobs), "--out", out, "--quiet", "--"] + light(hkl))
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 1
    label = str(jobs)
    expect = {2: "misset_deg must be a list of 3 numbers", 4: "not valid JSON",
              6: "unknown key 'distnace' (did you mean 'distance'?)", 7: "lambda0 must be a number"}
    assert len(err) == len(expect)
    ids = {2: ' (id "b")'}       # a job's id names it in its message, even when the line is bad
    for line, text in expect.items():
        hits = [e for e in err if e.startswith("nanobrag-numba batch: %s line %d%s: " % (label, line,
                                                                                     ids.get(line, "")))]
        assert len(hits) == 1 and text in hits[0], (line, err)
    recs = {r["line"]: r for r in manifest(out)}
    assert sorted(recs) == [1, 5, 8]
    assert recs[1]["id"] == "a" and recs[8]["id"] == 7 and recs[5]["files"]["image"] == "far.tif"
    sim = nb.Simulator(light(hkl), device="cpu")
    assert np.array_equal(image(out, recs[5]), sim.render(distance=0.09).floatimage)
    assert np.array_equal(image(out, recs[1]), sim.render(misset=(10 / RTD, 20 / RTD, 30 / RTD)).floatimage)


@pytest.mark.parametrize("args, text", [
    (["--random-orientations", "2", "--out", "x"], "after --"),
    (["--random-orientations", "2", "--jobs", "j", "--out", "x", "--"], "exactly one of"),
    (["--random-orientations", "2", "--"], "--out DIR is required"),
    (["--phi-series", "0", "a", "2", "--out", "x", "--"], "--phi-series"),
    (["--random-orientations", "2", "--out", "x", "--workers", "2", "--scheduler", "tcp://h:1", "--"],
     "one or the other"),
    (["--jobs", "nothere.jsonl", "--out", "x", "--", "-default_F", "1", "-cell", "40"],
     "cannot read the jobs file nothere.jsonl"),
    (["--random-orientations", "2", "--out", "x", "--", "-floatfile", "f.bin"], "-floatfile has no meaning"),
    (["--random-orientations", "2", "--out", "x", "--", "-cell", "40"], "no structure factors"),
])
def test_usage_errors_are_one_line(args, text, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = batch.main(args)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("nanobrag-numba batch: error: ") and text in err[0], err


def test_missing_dask_is_a_clear_error(hkl, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)     # import distributed -> ImportError
    rc = batch.main(["--random-orientations", "1", "--out", str(tmp_path), "--workers", "2", "--"] + light(hkl))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "pip install 'nanobrag-numba[cluster]'" in err[-1]


def test_subcommand_is_dispatched_by_the_cli(hkl, tmp_path):
    p = subprocess.run([sys.executable, "-m", "nanobrag_numba", "batch", "--random-orientations", "2",
                        "--out", "o", "--format", "smv", "--"] + light(hkl), cwd=tmp_path,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "images/s" in p.stderr
    assert sorted(os.listdir(tmp_path / "o")) == [".batch.lock", "batch.json", "img_000000.img",
                                                  "img_000001.img", "manifest.jsonl"]


# ---------------------------------------------------------------- crashes

def _wait_for_first_image(out, proc, timeout=60.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if os.path.isdir(out) and any(e.endswith(".tif") and not e.startswith(".") for e in os.listdir(out)):
            return
        if proc.poll() is not None:
            return
        time.sleep(0.005)
    raise AssertionError("no image appeared in %s" % out)


def _check_complete(out, n, reference):
    recs = manifest(out)
    assert sorted(r["index"] for r in recs) == list(range(n))        # each job exactly once
    for r in recs:
        got = image(out, r)
        assert got.shape == (64, 64) and got.dtype == np.float32
        assert os.path.getsize(os.path.join(out, r["files"]["image"])) == r["bytes"]["image"]
        if r["index"] in reference:
            assert np.array_equal(got, reference[r["index"]]), r["index"]
    assert not [e for e in os.listdir(out) if e.endswith(".tmp")]


def test_killed_batch_loses_and_duplicates_nothing_after_rerun(hkl, heavy_ref, tmp_path):
    out = str(tmp_path / "out")
    cmd = [sys.executable, "-m", "nanobrag_numba", "batch", "--random-orientations", "40", "--seed", "5",
           "--out", out, "--quiet", "--"] + heavy(hkl)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for_first_image(out, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the batch finished before it could be killed"
    first = manifest(out)
    assert len(first) < 40
    p = subprocess.run(cmd[:-len(heavy(hkl)) - 2] + ["--"] + heavy(hkl), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "%d already done, %d to render" % (len(first), 40 - len(first)) in p.stderr
    _check_complete(out, 40, heavy_ref)


# ---------------------------------------------------------------- Dask

def test_local_cluster_equals_in_process(hkl, orient8, tmp_path):
    _needs_dask()
    out = str(tmp_path / "dask")
    p = subprocess.run([sys.executable, "-m", "nanobrag_numba", "batch", "--random-orientations", "8",
                        "--seed", "3", "--out", out, "--workers", "2", "--chunk", "3", "--"] + light(hkl),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    recs = manifest(out)
    assert sorted(r["index"] for r in recs) == list(range(8))
    assert len({r["worker"] for r in recs}) >= 1
    ref = {r["index"]: r for r in manifest(orient8)}
    for r in recs:
        assert r["key"] == ref[r["index"]]["key"]
        assert np.array_equal(image(out, r), image(orient8, ref[r["index"]]))


def test_killed_worker_loses_and_duplicates_nothing(hkl, heavy_ref, tmp_path):
    distributed = _needs_dask()
    import logging
    out = str(tmp_path / "out")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.CRITICAL, env={"NUMBA_NUM_THREADS": "1"}) as cluster, \
            distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
        cmd = [sys.executable, "-m", "nanobrag_numba", "batch", "--random-orientations", "24", "--seed", "5",
               "--out", out, "--scheduler", cluster.scheduler_address, "--chunk", "2", "--quiet", "--"] + heavy(hkl)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _wait_for_first_image(out, proc)
        os.kill(next(iter(pids.values())), signal.SIGKILL)
        _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err       # the scheduler re-ran the lost chunk elsewhere
    _check_complete(out, 24, heavy_ref)


# ---------------------------------------------------------------- bad input (issue 9)

def _one_error_line(capsys):
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def test_base_that_cannot_make_an_image_is_one_line_and_leaves_nothing(hkl, tmp_path, capsys):
    out = tmp_path / "out"
    rc = batch.main(["--random-orientations", "2", "--out", str(out), "--"] + light(hkl) + ["-distance", "0"])
    err = _one_error_line(capsys)
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("nanobrag-numba batch: error: the base flags cannot make an image: ")
    problem = err[0].split("make an image: ", 1)[1]
    assert not problem.startswith(("ZeroDivisionError", "ValueError", "TypeError")) and "Traceback" not in problem
    assert not out.exists()


def test_job_that_cannot_make_an_image_names_the_job_and_leaves_no_file(hkl, tmp_path, capsys):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"id": "zero", "distance": 0}\n{"id": "ok", "phi_deg": 1}\n')
    out = tmp_path / "out"
    rc = batch.main(["--jobs", str(jobs), "--out", str(out), "--quiet", "--"] + light(hkl))
    err = _one_error_line(capsys)
    assert rc == 1
    assert len(err) == 1 and err[0].startswith('nanobrag-numba batch: %s line 1 (id "zero"): ' % jobs), err
    problem = err[0].split('(id "zero"): ', 1)[1]
    assert problem and not problem.startswith(("ZeroDivisionError", "ValueError", "TypeError"))
    recs = manifest(str(out))
    assert [r["id"] for r in recs] == ["ok"]
    assert sorted(e for e in os.listdir(out) if e.endswith(".tif")) == ["img_000001.tif"]


def test_a_job_failing_after_its_first_file_leaves_no_file_outside_the_manifest(hkl, tmp_path, capsys,
                                                                                  monkeypatch):
    from nanobrag_numba import api
    real = api.write_smv

    def failing(path, result, data=None, noise=False):
        if noise and "img_000001" in str(path):
            raise nb.NanoBraggError("cannot write %s: No space left on device" % path)
        return real(path, result, data=data, noise=noise)

    monkeypatch.setattr(api, "write_smv", failing)
    out = tmp_path / "out"
    rc = batch.main(["--random-orientations", "3", "--noise", "--out", str(out), "--quiet", "--"] + light(hkl))
    err = _one_error_line(capsys)
    assert rc == 1 and len(err) == 1 and "job 1 (img_000001): cannot write" in err[0], err
    recs = manifest(str(out))
    assert sorted(r["index"] for r in recs) == [0, 2]
    named = {f for r in recs for f in r["files"].values()}
    on_disk = {os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs
               if f.endswith((".tif", ".img"))}
    assert on_disk == named          # the failed job's image (written before its noise) was removed


def test_too_many_jobs_are_refused_before_anything_is_allocated(hkl, tmp_path, capsys):
    import resource
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    rc = batch.main(["--random-orientations", "1000000000", "--out", str(tmp_path / "o"), "--"] + light(hkl))
    err = _one_error_line(capsys)
    assert rc == 2 and len(err) == 1 and "at most" in err[0] and "GiB" in err[0], err
    assert time.perf_counter() - t0 < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024    # KiB: no 22 GiB array
    assert not (tmp_path / "o").exists()
    rc = batch.main(["--phi-series", "0", "1", "1000000000", "--out", str(tmp_path / "o"), "--"] + light(hkl))
    assert rc == 2 and "at most" in _one_error_line(capsys)[0]


def test_job_limit_follows_the_available_memory():
    gib = 2 ** 30
    assert batch.max_jobs(8 * gib) == int(8 * gib * batch.MAX_JOB_MEMORY_SHARE) // batch.JOB_BYTES
    batch.check_job_count(batch.max_jobs(8 * gib), "n", memory=8 * gib)
    with pytest.raises(nb.NanoBraggError, match="at most %d jobs" % batch.max_jobs(8 * gib)):
        batch.check_job_count(batch.max_jobs(8 * gib) + 1, "n", memory=8 * gib)


def test_uniform_rotations_in_blocks_are_the_same_rotations():
    whole = batch.uniform_rotations(10, 4)
    blocks = np.concatenate(list(batch._uniform_rotation_chunks(10, 4, chunk=3)))
    assert np.array_equal(whole, blocks)


def test_file_names_end_in_the_frame_number(hkl, tmp_path):
    import re
    out = tmp_path / "out"
    assert batch.main(["--phi-series", "0", "1", "3", "--format", "smv", "--noise", "--out", str(out), "--quiet",
                       "--"] + light(hkl)) == 0
    recs = sorted(manifest(str(out)), key=lambda r: r["index"])
    assert [r["files"] for r in recs] == [{"image": "img_%06d.img" % i, "noise": "noise/img_%06d.img" % i}
                                          for i in range(3)]
    # dxtbx-style template detection: every file of a folder matches PREFIX + digits + extension, one template
    for folder in (out, out / "noise"):
        names = sorted(e for e in os.listdir(folder) if e.endswith(".img"))
        templates = {re.sub(r"(\d+)(\.img)$", lambda m: "#" * len(m.group(1)) + m.group(2), n) for n in names}
        assert templates == {"img_######.img"}, names


def test_rerun_renders_again_what_an_older_naming_wrote(hkl, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--phi-series", "0", "1", "2", "--noise", "--out", str(out), "--quiet", "--"] + light(hkl)
    assert batch.main(args) == 0
    first = manifest(str(out))
    # the same batch as written by the old naming (NAME_noise.img next to the image)
    for rec in first:
        os.rename(out / rec["files"]["noise"], out / (rec["name"] + "_noise.img"))
        rec["files"]["noise"] = rec["name"] + "_noise.img"
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in first))
    assert batch.main(args[:-len(light(hkl)) - 2] + ["--"] + light(hkl)) == 0
    assert "0 already done, 2 to render" in capsys.readouterr().err
    last = {r["index"]: r for r in manifest(str(out))}
    assert [last[i]["files"]["noise"] for i in range(2)] == ["noise/img_000000.img", "noise/img_000001.img"]
    # and a second rerun finds everything done under the new names
    assert batch.main(args[:-len(light(hkl)) - 2] + ["--"] + light(hkl)) == 0
    assert "2 already done, 0 to render" in capsys.readouterr().err


def test_stale_noise_temporaries_are_removed(hkl, tmp_path):
    out = tmp_path / "out"
    args = ["--phi-series", "0", "1", "1", "--noise", "--out", str(out), "--quiet", "--"] + light(hkl)
    assert batch.main(args) == 0
    stale = out / "noise" / ".img_000000.img.k1ll3d.tmp"        # what a writer killed mid-write leaves
    other = out / "noise" / ".someone_else.img.x.tmp"
    stale.write_bytes(b"half")
    other.write_bytes(b"not ours")
    assert batch.main(args) == 0
    assert not stale.exists() and other.exists()


def test_base_flags_with_a_c_spelling_run_with_a_note(tmp_path, capsys):
    # -matrix is C's -mat (substring match); the batch says how it read it
    from nanobrag_numba.batch import main as batch_main
    mat = tmp_path / "A.mat"
    mat.write_text("-0.0122 0.0025 0.0001\n0.0013 0.0128 -0.0035\n0.0004 0.0011 0.0230\n0 0 0\n0 0 0\n")
    rc = batch_main(["--phi-series", "0", "1", "1", "--out", str(tmp_path / "o"), "--quiet", "--",
                     "-default_F", "10", "-matrix", str(mat), "-N", "2", "-detpixels", "8", "-noprogress"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "note: -matrix read as -mat" in err
