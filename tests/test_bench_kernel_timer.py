"""The C kernel timer of the benchmark runner: the LD_PRELOAD shim bench/c_kernel_timer.c, and the table.

The shim is built and preloaded into a tiny OpenMP test program (no nanoBragg
binary needed); the table tests render made-up results with and without the
timed field (results written before the shim existed have none).
"""
import copy
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)

from bench import run  # noqa: E402

# one parallel region that spins for about SPIN_S seconds, then a second, tiny one; nothing timed outside
OMP_PROGRAM = textwrap.dedent(r"""
    #include <stdio.h>
    #include <time.h>
    static double now(void) {
        struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec;
    }
    int main(void) {
        double sum = 0.0;
        #pragma omp parallel for reduction(+:sum)
        for (int i = 0; i < 2; i++) {
            double t0 = now();
            while (now() - t0 < 0.05) sum += 1.0;
        }
        #pragma omp parallel for reduction(+:sum)
        for (int i = 0; i < 4; i++) sum += i;
        printf("out %d\n", sum > 0);
        return 0;
    }
""")
PLAIN_PROGRAM = "#include <stdio.h>\nint main(void) { printf(\"out 1\\n\"); return 0; }\n"


def _cc():
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler (cc/gcc) on PATH to build the shim and the OpenMP test program")
    return cc


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(shim .so, OpenMP program, program without OpenMP) in a temporary folder."""
    cc = _cc()
    tmp = tmp_path_factory.mktemp("ktimer")
    info = run.build_kernel_timer(dest=str(tmp / "c_kernel_timer.so"))
    assert info["error"] is None and os.path.isfile(info["so"]), info
    src = tmp / "omp.c"
    src.write_text(OMP_PROGRAM)
    exe = str(tmp / "omp")
    p = subprocess.run([cc, "-O1", "-fopenmp", "-o", exe, str(src)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip("cannot build an OpenMP program (no libgomp?): %s"
                    % (p.stderr.strip().splitlines() or ["?"])[-1])
    nm = subprocess.run(["nm", "-D", exe], capture_output=True, text=True) if shutil.which("nm") else None
    if nm is not None and "GOMP_parallel" not in nm.stdout:
        pytest.skip("the compiler's OpenMP runtime is not libgomp (no GOMP_parallel import)")
    (tmp / "plain.c").write_text(PLAIN_PROGRAM)
    plain = str(tmp / "plain")
    subprocess.run([cc, "-O1", "-o", plain, str(tmp / "plain.c")], check=True)
    return info["so"], exe, plain, tmp


def _timed(built, exe, gnu_time=False):
    so, _exe, _plain, tmp = built
    out = str(tmp / ("t-%s.txt" % os.path.basename(exe)))
    if os.path.exists(out):
        os.remove(out)
    env = run.kernel_timer_env(dict(os.environ, OMP_NUM_THREADS="2"), so, out)
    cmd = ([run.GNU_TIME, "-f", "%M", "-o", str(tmp / "rss")] if gnu_time else []) + [exe]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    return p, out


def test_shim_times_the_parallel_regions_and_leaves_the_output_alone(built):
    _so, exe, _plain, _tmp = built
    plain = subprocess.run([exe], env=dict(os.environ, OMP_NUM_THREADS="2"), capture_output=True, text=True)
    p, out = _timed(built, exe)
    assert p.returncode == 0 and (p.stdout, p.stderr) == (plain.stdout, plain.stderr) == ("out 1\n", "")
    assert os.path.isfile(out)
    got = run.read_kernel_timer(out, exe)
    assert got["loaded"] == 1 and got["regions"] == 2
    # the spinning region takes >= 0.05 s; the whole process (with its start) well under a few seconds
    assert 0.05 <= got["seconds"] < 5.0


def test_shim_report_of_the_wrapper_is_not_the_programs(built):
    if not run.GNU_TIME:
        pytest.skip("no GNU time (the runner's wrapper) installed")
    _so, exe, _plain, _tmp = built
    p, out = _timed(built, exe, gnu_time=True)
    assert p.returncode == 0
    with open(out) as f:
        lines = f.read().splitlines()
    assert len(lines) == 2                              # GNU time's line (regions=0) and the program's
    assert run.read_kernel_timer(out, exe)["regions"] == 2
    assert run.read_kernel_timer(out, run.GNU_TIME) == {"loaded": 1, "regions": 0, "seconds": None}


def test_program_without_openmp_is_told_apart(built):
    _so, _exe, plain, _tmp = built
    p, out = _timed(built, plain)
    assert p.returncode == 0 and p.stdout == "out 1\n"
    got = run.read_kernel_timer(out, plain)
    assert got == {"loaded": 1, "regions": 0, "seconds": None}
    full = run._summary([{"wall_s": 0.1, "cpu_s": 0.1, "others_cpu_share": 0.0, "rc": 0, "rss_bytes": 1,
                          "kernel_timer": got}], [plain], str(_tmp / "log"))
    assert full["kernel_timed_s"] is None
    assert "no GOMP_parallel call" in run.kernel_timer_verdict("x.so", None, full)
    assert "not loaded" in run.kernel_timer_verdict(
        "x.so", None, dict(full, kernel_timer_loaded_all=[0]))
    assert "not built (no C compiler" in run.kernel_timer_verdict(None, "no C compiler (cc)", full)


def test_run_timed_reports_the_minimum_timed_kernel(built):
    _so, exe, _plain, tmp = built
    so = built[0]
    env = dict(os.environ, OMP_NUM_THREADS="2")
    runs = [run.run_timed([exe], str(tmp / "w"), env, str(tmp / "w.log"), so) for _ in range(2)]
    assert all(r["rc"] == 0 and r["kernel_timer"]["regions"] == 2 for r in runs)
    assert not os.path.exists(str(tmp / "w.log.ktimer"))        # the report file is read and removed
    s = run._summary(runs, [exe], str(tmp / "w.log"))
    assert s["kernel_timed_s"] == min(r["kernel_timer"]["seconds"] for r in runs)
    assert s["kernel_timed_s"] <= s["wall_s"]


def test_shim_not_built_without_a_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    info = run.build_kernel_timer(dest=str(tmp_path / "x.so"))
    assert info["so"] is None and "no C compiler" in info["error"]
    assert not os.path.exists(str(tmp_path / "x.so"))


# ---------------------------------------------------------------- the table

def _result(case, c_kernel_est, c_timed=None, with_field=True, roi_wall=0.15):
    side = {"wall_s": 1.0, "rss_bytes": 5 << 20, "wall_s_all": [1.0], "others_cpu_share_all": [0.0]}
    c = {"full": dict(side, wall_s=roi_wall + c_kernel_est), "roi": dict(side, wall_s=roi_wall),
         "kernel_s_est": c_kernel_est, "counts": {}}
    noise = max(run.NOISE_S, run.NOISE_FRACTION * roi_wall)
    c["kernel_noise_s"], c["kernel_resolved"] = noise, c_kernel_est > noise
    ours_k = 0.01
    ck = c_timed if c_timed is not None else (c_kernel_est if c["kernel_resolved"] else None)
    if with_field:
        c["kernel_s_timed"] = c_timed
        c["roi"]["kernel_timed_s"] = 1e-5 if c_timed is not None else None
        c["kernel_source"] = "timed" if c_timed is not None else "estimate"
    c["evals_per_s"] = 1000 / ck if ck else None
    return {"case": case, "title": case, "command": "-x", "evaluations": 1000, "check": {"ok": True, "problems": []},
            "counts": {"fpixels": 8, "spixels": 8, "subpixels": 1, "sources": 1, "phisteps": 1,
                       "mosaic_domains": 1},
            "ours_probe": {"prepare_s": 0.1, "wall_s": 1.0, "others_cpu_share": 0.0},
            "ours": {"full": side, "roi": side, "kernel_s": ours_k, "kernel_s_wall_minus_roi": 0.0,
                     "evals_per_s": 1000 / ours_k},
            "c": c, "vs_c": {"corr": 1.0, "max_rel_diff": 0.0},
            "ratio_wall": 1.0, "ratio_kernel": (ck / ours_k) if ck else None}


META = {"name": "t", "date": "d", "commit": "abc", "program_files_modified": [], "program_source": "tree",
        "cpu_model": "cpu", "nproc": 2, "platform": "p", "threads": 2, "device": "cpu", "repeat": 3,
        "python": "3", "numba": "0", "numpy": "2", "rss_method": "GNU time", "loadavg_start": [0, 0, 0],
        "loadavg_end": [0, 0, 0], "total_s": 1.0, "c_binary": "/c", "c_binary_sha256": "0" * 64,
        "hkl": {"file": "P1.hkl", "reflections": 1, "sha256": "0" * 64}, "rerun": "python -m bench"}


def _row(md, case):
    return next(line for line in md.splitlines() if line.startswith("| %s |" % case))


def test_table_with_the_timed_kernel():
    meta = dict(META, short_repeat=20, short_s=1.0, short_kernel_s=0.1,
                c_kernel_timer={"source": "bench/c_kernel_timer.c", "so": "bench/out/c_kernel_timer.so",
                                "error": None})
    res = [_result("B1", 1.097, c_timed=1.05), _result("B3", 0.004, c_timed=0.0123)]
    md = run.markdown(meta, res)
    assert "| C kernel | C Meval/s |" in md and "C kernel (est.)" not in md
    assert "timed in the C process by the preloaded shim `bench/c_kernel_timer.c`" in md
    assert "at least 20 for C's command pairs under 1 s and our renders under 0.1 s" in md
    b3 = _row(md, "B3").split(" | ")
    # the timed 12.3 ms is shown and gives the ratio, where the estimate (4 ms) is below the noise
    assert b3[7] == "0.0123" and b3[11] == "1.23" and "noise" not in _row(md, "B3")
    assert "| C kernel (timed) | C wall − one-pixel | C one-pixel kernel (timed) |" in md
    cross = [line for line in md.splitlines() if line.startswith("| B1 |")][1].split(" | ")
    assert cross[6:9] == ["1.050", "1.097", "0.00001"]


def test_table_falls_back_to_the_estimate_and_says_why():
    meta = dict(META, c_kernel_timer={"source": "bench/c_kernel_timer.c", "so": "bench/out/c_kernel_timer.so",
                                      "error": None})
    b2 = _result("B2", 2.0)                                   # the C program made no GOMP_parallel call
    b2["c"]["kernel_timer"] = "the C program made no GOMP_parallel call (...): the C kernel cannot be timed directly"
    md = run.markdown(meta, [_result("B1", 1.097, c_timed=1.05), b2])
    row = _row(md, "B2").split(" | ")
    assert row[7] == "2.000 est." and row[11] == "200.00 est."
    assert "B2: C kernel not timed directly: the C program made no GOMP_parallel call" in md
    # the shim could not be built: said once in the header, every C kernel is the estimate
    meta = dict(META, c_kernel_timer={"source": "bench/c_kernel_timer.c", "so": None,
                                      "error": "no C compiler (cc) to build c_kernel_timer.c"})
    md = run.markdown(meta, [_result("B1", 1.097), _result("B3", 0.004)])
    assert "- C kernel: not timed directly, no C compiler (cc) to build c_kernel_timer.c" in md
    assert "| C kernel (est.) |" in md and "< 0.015 (noise)" in _row(md, "B3")
    assert _row(md, "B1").split(" | ")[7] == "1.097"


def test_table_of_results_written_before_the_shim():
    old = [_result("B1", 1.097, with_field=False), _result("B4", 0.002, with_field=False)]
    before = copy.deepcopy(old)
    md = run.markdown(dict(META), old)
    assert old == before
    assert "| C kernel (est.) |" in md and "C kernel (timed)" not in md and "- C kernel:" not in md
    assert "C: kernel = wall − wall with `-roi 0 0 0 0` (estimate)" in md
    assert "| C one-pixel wall | C wall − one-pixel | max rel diff vs C |" in md
    assert _row(md, "B1").split(" | ")[7] == "1.097" and "< 0.015 (noise)" in _row(md, "B4")


def test_from_json_rerenders_a_committed_result(tmp_path):
    src = os.path.join(run.RESULTS_DIR, "cpu-2core-variants.json")
    if not os.path.exists(src):
        pytest.skip("bench/results/cpu-2core-variants.json is not in this checkout")
    out = tmp_path / "old.md"
    assert run.main(["--from-json", src, "--markdown", str(out)]) == 0
    md = out.read_text()
    assert "| C kernel (est.) |" in md and "< 0.014 (noise)" in md and "| B2 |" in md
