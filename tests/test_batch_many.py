"""batch --images-per-launch and --noise-generator (issue 10: many images per launch).

The files of a batch are byte-identical whatever K; the jobs of a group are
rendered in one launch and written by the writer thread; a job that fails
still gets its own error record; the counter generator's noise images do
not depend on K.  CPU only, 32x32 images, no golden data.
"""
import json
import os

import numpy as np
import pytest

from nanobrag_numba import batch

CELL = ["-cell", "40", "42", "45", "90", "90", "90"]
BASE = CELL + ["-N", "4", "-detpixels", "32", "-pixel", "0.4", "-distance", "80", "-mosaic", "0.3",
               "-mosaic_domains", "2", "-device", "cpu", "-seed", "7"]
TIMING = ("seconds", "render_s", "kernel_s", "write_s", "finished", "worker")


@pytest.fixture(scope="module")
def hkl(tmp_path_factory):
    from nanobrag_numba.example import write_p1_hkl
    path = tmp_path_factory.mktemp("hkl") / "P1.hkl"
    write_p1_hkl(str(path), cell=(40, 42, 45, 90, 90, 90), dmin=3.0)
    return str(path)


@pytest.fixture(scope="module")
def jobs_file(tmp_path_factory):
    # orientations, phi and fluence share a launch; a distance and a bad job do not
    jobs = [{"misset_deg": [10, 20, 30]}, {"misset_deg": [5, 0, 60], "phi_deg": 1},
            {"misset_deg": [1, 2, 3], "fluence": 3e23}, {"distance": 0.09, "name": "far"},
            {"misset_deg": [40, 10, 0]}, {"distance": 0}, {"misset_deg": [0, 90, 9], "id": "x"},
            {"mosaic_seed": 5}]
    path = tmp_path_factory.mktemp("jobs") / "jobs.jsonl"
    path.write_text("".join(json.dumps(j) + "\n" for j in jobs))
    return str(path)


def _run(args, hkl, capsys):
    rc = batch.main(args + ["--quiet", "--", "-hkl", hkl] + BASE)
    return rc, capsys.readouterr().err


def _files(out):
    got = {}
    for root, _dirs, names in os.walk(out):
        for n in names:
            if n.endswith((".img", ".tif", ".cbf")):
                with open(os.path.join(root, n), "rb") as fh:
                    got[os.path.relpath(os.path.join(root, n), out)] = fh.read()
    return got


def _manifest(out):
    with open(os.path.join(out, "manifest.jsonl")) as fh:
        recs = [json.loads(line) for line in fh if line.strip()]
    return {r["index"]: {k: v for k, v in r.items() if k not in TIMING} for r in recs}


def _launches(monkeypatch):
    from nanobrag_numba.kernels import cpu
    sizes = []
    many = cpu.render_many

    def count(*a, **k):
        sizes.append(a[-1])
        return many(*a, **k)
    monkeypatch.setattr(cpu, "render_many", count)
    return sizes


@pytest.mark.parametrize("fmt", ["smv", "tiff"])
def test_files_identical_for_k1_and_k4(hkl, jobs_file, tmp_path, capsys, monkeypatch, fmt):
    outs = {}
    errors = {}
    for k in (1, 4):
        out = str(tmp_path / ("k%d" % k))
        sizes = _launches(monkeypatch)
        rc, err = _run(["--jobs", jobs_file, "--out", out, "--format", fmt, "--noise",
                        "--images-per-launch", str(k)], hkl, capsys)
        assert rc == 1          # job 5 (distance 0) fails
        errors[k] = [line for line in err.splitlines() if line and not line.startswith("note:")]
        if k == 1:
            assert sizes == []                  # today's path: one render per job
        else:
            # jobs 0-3: orientations x3 in one launch, the distance alone; 4-7: 4, 6, 7 together (5 failed)
            assert sorted(sizes) == [1, 3, 3]
        outs[k] = out
    f1, f4 = _files(outs[1]), _files(outs[4])
    assert len(f1) == 14 and f1 == f4           # 7 images and 7 noise images, byte for byte
    assert _manifest(outs[1]) == _manifest(outs[4])
    assert errors[1] == errors[4] and len(errors[1]) == 1 and "jobs.jsonl line 6" in errors[1][0]


def test_counter_noise_independent_of_k_and_resumable(hkl, tmp_path, capsys):
    outs = []
    for k in (1, 3):
        out = str(tmp_path / ("k%d" % k))
        rc, _err = _run(["--random-orientations", "5", "--out", out, "--format", "smv", "--noise",
                         "--noise-generator", "counter", "--images-per-launch", str(k)], hkl, capsys)
        assert rc == 0
        outs.append(out)
    a, b = _files(outs[0]), _files(outs[1])
    assert len(a) == 10 and a == b
    recs = _manifest(outs[0])
    assert all(r["noise_generator"] == "counter" for r in recs.values())
    # the counter noise differs from C's generator's (same seeds)
    c_out = str(tmp_path / "c")
    assert _run(["--random-orientations", "5", "--out", c_out, "--format", "smv", "--noise"], hkl, capsys)[0] == 0
    c_files = _files(c_out)
    assert {k: v for k, v in c_files.items() if not k.startswith("noise")} == \
        {k: v for k, v in a.items() if not k.startswith("noise")}
    assert all(c_files[k] != a[k] for k in a if k.startswith("noise"))
    assert "noise_generator" not in next(iter(_manifest(c_out).values()))
    # another generator is another job key: the rerun redoes the noise images with C's generator
    rc, err = batch.main(["--random-orientations", "5", "--out", outs[0], "--format", "smv", "--noise", "--",
                          "-hkl", hkl] + BASE), capsys.readouterr().err
    assert rc == 0 and "0 already done" in err and _files(outs[0]) == c_files


def test_counter_noise_matches_the_api(hkl, tmp_path, capsys):
    import nanobrag_numba as nb
    from nanobrag_numba.noise import counter_noise_images
    out = str(tmp_path / "o")
    assert _run(["--phi-series", "0", "1", "2", "--out", out, "--format", "smv", "--noise", "--noise-generator",
                 "counter", "--images-per-launch", "2"], hkl, capsys)[0] == 0
    from nanobrag_numba.io.smv import read_smv
    sim = nb.Simulator(["-hkl", hkl] + BASE)
    for i in range(2):
        res = sim.render(phi0=float(i) / nb.config.RTD, seed=7 + i)
        want = counter_noise_images(res.floatimage[None], [7 + i], res.prep.det.roi, res.prep.cfg.adc_offset)[0]
        got = read_smv(os.path.join(out, "noise", "img_%06d.img" % i)).data.reshape(want.shape)
        assert np.array_equal(got, want)


@pytest.mark.parametrize("args, text", [
    (["--images-per-launch", "0"], "--images-per-launch must be at least 1"),
    (["--noise-generator", "counter"], "--noise-generator counter chooses the generator of --noise images; add --noise"),
    (["--noise", "--noise-generator", "philox"], "argument --noise-generator: invalid choice: 'philox'"),
])
def test_usage_errors(hkl, tmp_path, capsys, args, text):
    rc = batch.main(["--random-orientations", "2", "--out", str(tmp_path / "o")] + args + ["--", "-hkl", hkl] + BASE)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("nanobrag-numba batch: error: " + text)
    assert not os.path.exists(tmp_path / "o")


def test_help_documents_the_options(capsys):
    assert batch.main(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--images-per-launch K" in out and "Philox4x32-10" in out and "PTRS" in out


def test_writer_error_stops_the_batch(hkl, tmp_path, capsys, monkeypatch):
    # the manifest cannot be appended (disk full): the batch stops with that one line, exit status 2
    from nanobrag_numba.errors import NanoBraggError

    def full(self, record):
        raise NanoBraggError("cannot append to %s: No space left on device" % self.path)
    monkeypatch.setattr(batch.Manifest, "append", full)
    rc = batch.main(["--random-orientations", "6", "--out", str(tmp_path / "o"), "--images-per-launch", "2",
                     "--", "-hkl", hkl] + BASE)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("nanobrag-numba batch: error: cannot append to")


def test_default_images_per_launch():
    assert batch.images_per_launch({}, 256 * 256, "cpu") == 1
    assert batch.images_per_launch({}, 256 * 256, "cuda") == 64
    assert batch.images_per_launch({}, 1024 * 1024, "cuda") == 4
    assert batch.images_per_launch({}, 4096 * 4096, "cuda") == 1
    assert batch.images_per_launch({"images_per_launch": 5}, 4096 * 4096, "cpu") == 5


def test_images_are_written_by_one_background_thread(hkl, tmp_path, capsys, monkeypatch):
    import threading
    threads = []
    write = batch.write_job

    def spy(*a, **k):
        threads.append(threading.current_thread().name)
        return write(*a, **k)
    monkeypatch.setattr(batch, "write_job", spy)
    rc, _err = _run(["--random-orientations", "5", "--out", str(tmp_path / "o"), "--images-per-launch", "2"],
                    hkl, capsys)
    assert rc == 0 and threads == ["nanobrag-batch-writer"] * 5
    assert batch.WRITE_QUEUE == 2


def test_interrupt_during_a_launch_leaves_finished_images_only(hkl, tmp_path, capsys, monkeypatch):
    # Ctrl-C while the second group renders: the first group is written and in the manifest, no temporaries
    from nanobrag_numba.api import Simulator
    calls = []
    render = Simulator.render_prepared

    def interrupted(self, preps, *a, **k):
        calls.append(len(preps))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return render(self, preps, *a, **k)
    monkeypatch.setattr(Simulator, "render_prepared", interrupted)
    out = tmp_path / "o"
    rc = batch.main(["--random-orientations", "6", "--out", str(out), "--images-per-launch", "2", "--format",
                     "smv", "--", "-hkl", hkl] + BASE)
    err = capsys.readouterr().err
    assert rc == 130 and "interrupted" in err
    names = sorted(os.listdir(out))
    assert names == sorted([".batch.lock", "batch.json", "manifest.jsonl", "img_000000.img", "img_000001.img"])
    assert sorted(_manifest(str(out))) == [0, 1]
    monkeypatch.setattr(Simulator, "render_prepared", render)
    assert batch.main(["--random-orientations", "6", "--out", str(out), "--images-per-launch", "2", "--format",
                       "smv", "--quiet", "--", "-hkl", hkl] + BASE) == 0
    assert sorted(_manifest(str(out))) == [0, 1, 2, 3, 4, 5]


def test_render_chunk_the_dask_task_uses_the_pipeline(hkl, tmp_path, monkeypatch):
    # the task a Dask worker runs: K=3 gives the records and files of K=1, one record per job, in job order
    base = batch.base_config(["-hkl", hkl] + BASE)
    jobs = []
    for i, deg in enumerate(([0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10])):
        payload = {"index": i, "name": "img_%06d" % i, "id": None, "line": None, "key": "k%d" % i,
                   "overrides": {"misset": tuple(d / 57.29577951308232 for d in deg), "seed": 3 + i},
                   "noise_seed": 3 + i, "source": {"misset_deg": deg}, "extra": {}}
        jobs.append(payload)
    jobs.insert(2, dict(jobs[0], index=9, name="bad", overrides={"distance": -0.0}))
    records = {}
    for k in (1, 3):
        out = tmp_path / ("k%d" % k)
        out.mkdir()
        ctx = {"config": base, "device": "cpu", "out": str(out), "format": "smv", "noise": True,
               "flags": ["-hkl", hkl] + BASE, "numba_threads": None, "images_per_launch": k,
               "noise_generator": "counter"}
        sizes = _launches(monkeypatch)
        recs = batch.render_chunk(ctx, jobs)
        assert sizes == ([] if k == 1 else [2, 2])
        records[k] = [{key: v for key, v in r.items() if key not in TIMING} for r in recs]
        assert [r["index"] for r in recs] == [j["index"] for j in jobs]
    assert records[1] == records[3]
    assert sum(not r["ok"] for r in records[1]) == 1
    assert _files(str(tmp_path / "k1")) == _files(str(tmp_path / "k3"))



def _failing_group_launches(monkeypatch, fail_alone=None):
    """Simulator.render_prepared fails for every launch of more than one image (and for the
    ``fail_alone``-th launch of one image, counting from 0): the batch's fallback to one launch per
    image is taken for every group.  Returns the sizes of the launches asked for."""
    from nanobrag_numba.api import Simulator
    render = Simulator.render_prepared
    calls = []

    def flaky(self, preps, *a, **k):
        calls.append(len(preps))
        if len(preps) > 1:
            raise RuntimeError("boom in the group launch")
        if fail_alone is not None and calls.count(1) == fail_alone + 1:
            raise RuntimeError("this one fails alone too")
        return render(self, preps, *a, **k)
    monkeypatch.setattr(Simulator, "render_prepared", flaky)
    return calls


def test_failed_group_launch_is_noted_and_each_image_still_rendered(hkl, tmp_path, capsys, monkeypatch):
    ref = str(tmp_path / "k1")          # the reference: K=1, no group launches
    assert _run(["--random-orientations", "4", "--out", ref, "--format", "smv"], hkl, capsys)[0] == 0
    calls = _failing_group_launches(monkeypatch)
    out = str(tmp_path / "k2")
    rc, err = _run(["--random-orientations", "4", "--out", out, "--format", "smv", "--images-per-launch", "2"],
                   hkl, capsys)
    assert rc == 0 and calls == [2, 1, 1, 2, 1, 1]
    # one note per failed group on stderr (even with --quiet), naming its jobs and the launch's error
    notes = [line for line in err.splitlines() if "launch group" in line]
    assert len(notes) == 2, err
    for note, jobs in zip(notes, ("0, 1", "2, 3")):
        assert note.startswith("nanobrag-numba batch: note: launch group of 2 images (jobs %s) failed (" % jobs)
        assert "boom in the group launch" in note and note.endswith("); rendered them one by one")
    # the images are those of K=1, and every manifest record says its group's launch failed
    assert len(_files(out)) == 4 and _files(out) == _files(ref)
    recs = _manifest(out)
    for i, r in recs.items():
        fb = r.pop(batch.LAUNCH_FALLBACK)
        assert fb["jobs"] == ([0, 1] if i < 2 else [2, 3]) and "boom in the group launch" in fb["error"]
    assert recs == _manifest(ref)


def test_failed_group_launch_dask_task_records(hkl, tmp_path, monkeypatch):
    # the Dask task (render_chunk): each job's record carries the group's failure, a job failing alone too
    base = batch.base_config(["-hkl", hkl] + BASE)
    jobs = [{"index": i, "name": "img_%06d" % i, "id": None, "line": None, "key": "k%d" % i,
             "overrides": {"misset": (0.1 * i, 0.0, 0.0), "seed": 3 + i}, "noise_seed": 3 + i,
             "source": {}, "extra": {}} for i in range(3)]
    _failing_group_launches(monkeypatch, fail_alone=1)
    ctx = {"config": base, "device": "cpu", "out": str(tmp_path), "format": "smv", "noise": False,
           "flags": ["-hkl", hkl] + BASE, "numba_threads": None, "images_per_launch": 3}
    recs = batch.render_chunk(ctx, jobs)
    assert [r["ok"] for r in recs] == [True, False, True]
    assert "this one fails alone too" in recs[1]["error"]
    for r in recs:
        assert r[batch.LAUNCH_FALLBACK]["jobs"] == [0, 1, 2]
        assert "boom in the group launch" in r[batch.LAUNCH_FALLBACK]["error"]
    note = batch.launch_fallback_note(recs[0][batch.LAUNCH_FALLBACK])
    assert note.startswith("launch group of 3 images (jobs 0, 1, 2) failed (") and note.endswith(
        "); rendered them one by one")
    assert sorted(os.listdir(tmp_path)) == ["img_000000.img", "img_000002.img"]
