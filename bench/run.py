"""Benchmark runner: nanobrag-numba against the C nanoBragg on named cases.

    python -m bench [--cases B1,B2] [--threads N] [--repeat N] [--device cpu|cuda]
                    [--name NAME] [--json PATH] [--markdown PATH] [--commit REV] [--no-c]
    python bench/run.py ...          (the same)

For every case (``bench/cases.py``), with OMP_NUM_THREADS = NUMBA_NUM_THREADS
= --threads for every child process:

1. ours, in-process kernel time: ``bench/probe.py`` in a child process
   (prepare() + render() after a one-pixel warm-up, ``Image.kernel_seconds``,
   rendered --repeat times, at least --short-repeat times when a render takes
   under SHORT_KERNEL_S), which also saves our float image and the loop counts;
2. C (when $NANOBRAGG_C names the binary): the full command line (wall time,
   peak RSS, float image, its printed loop counts), then the same with
   ``-roi 0 0 0 0`` (one pixel).  C prints no timing: its kernel time is
   taken from the LD_PRELOAD shim ``bench/c_kernel_timer.c`` (built with
   ``cc`` into bench/out/), which times C's one OpenMP parallel region, the
   pixel loop, by wrapping libgomp's ``GOMP_parallel``; the difference of the
   two wall times is kept as a cross-check, and is the kernel estimate when
   the shim cannot be built or the binary makes no ``GOMP_parallel`` call (a
   build without OpenMP).  The two run alternately; pairs shorter than
   SHORT_S are repeated --short-repeat times (minimum kept);
3. the check: our image is finite and not empty, C's loop counts equal ours,
   and the correlation of our float image with C's is at least CORR_MIN;
   a case that fails is marked FAIL in the table and the runner exits 1;
4. ours, the whole command ``nanobrag-numba ... -device DEVICE`` (wall time,
   peak RSS; its float image must equal the in-process one), and the same
   with ``-roi 0 0 0 0`` (the same wall-minus-one-pixel estimate as for C,
   a cross-check of the method);
5. cases with ``cold_start`` (B4) also run the command once more with an
   empty Numba cache (NUMBA_CACHE_DIR = a new temporary folder).

Peak RSS comes from GNU time's ``%M`` (see ``run_timed``).  With
--repeat N every timed run is done N times and the minimum is kept.  The
results go to bench/results/NAME.json and NAME.md.  NAME defaults to a new
name each run (``cpu-<threads>core-<host>-<date>-<time>``, or ``cuda-...``),
so the committed tables are never overwritten by accident; ``--name NAME``
chooses it, and replacing a committed result also needs ``--force``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if __package__ in (None, ""):
    sys.path.insert(0, ROOT)

from bench.cases import CASES, DEFAULT_CPU, DEFAULT_CUDA, parse_c_counts  # noqa: E402
from bench.make_hkl import ensure_hkl, sha256  # noqa: E402
from bench.probe import SHORT_KERNEL_S  # noqa: E402

OUT_DIR = os.path.join(HERE, "out")
RESULTS_DIR = os.path.join(HERE, "results")
CORR_MIN = 0.999          # float-image correlation with C needed to pass the check
ONE_PIXEL = ["-roi", "0", "0", "0", "0"]
SHORT_S = 1.0             # C runs shorter than this are repeated at least SHORT_REPEAT times (--short-repeat),
SHORT_REPEAT = 20         # and so are our in-process renders shorter than probe.SHORT_KERNEL_S (0.1 s: B3, B4)
KERNEL_TIMER_SRC = os.path.join(HERE, "c_kernel_timer.c")
KERNEL_TIMER_SO = os.path.join(OUT_DIR, "c_kernel_timer.so")
KERNEL_TIMER_ENV = "NB_KERNEL_TIMER_OUT"
OTHERS_WARN = 0.05        # share of the machine used by other processes above which the table warns
NOISE_S = 0.005           # C kernel estimates below NOISE_S or below NOISE_FRACTION x C's one-pixel
NOISE_FRACTION = 0.1      # wall time are start-up jitter: shown as "< x (noise)", no rate or ratio


# ---------------------------------------------------------------- processes

SOURCE_TREE: Optional[str] = None   # an exported commit (--commit), imported ahead of the installed package


def child_env(threads: int, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of every child: the same thread count for C (OpenMP) and us (Numba)."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["NUMBA_NUM_THREADS"] = str(threads)
    path = [SOURCE_TREE] if SOURCE_TREE else []
    path += [ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(path)
    if extra:
        env.update(extra)
    return env


def gnu_time() -> Optional[str]:
    """GNU time, if installed: it forks the measured program from its own small process."""
    exe = shutil.which("time", path="/usr/bin:/bin:/usr/local/bin")
    if not exe:
        return None
    try:
        p = subprocess.run([exe, "-f", "%M", "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return exe if p.returncode == 0 and p.stderr.strip().splitlines()[-1:] and \
        p.stderr.strip().splitlines()[-1].isdigit() else None


GNU_TIME = gnu_time()
RSS_METHOD = ("GNU time %M (peak RSS of the program itself)" if GNU_TIME else
              "os.wait4 ru_maxrss (upper bound: Linux charges the runner's RSS at spawn to the child)")


def busy_cpu_seconds() -> Optional[float]:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def build_kernel_timer(dest: str = KERNEL_TIMER_SO, src: str = KERNEL_TIMER_SRC) -> dict:
    """Compile the LD_PRELOAD shim ``bench/c_kernel_timer.c`` into DEST.

    Returns {"so": DEST or None, "cc": the compiler command, "error": why not
    (None when built)}.  The compiler is $CC, else cc, gcc or clang on PATH.
    """
    cc = shlex.split(os.environ.get("CC", "")) or \
        [next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), "cc")]
    cmd = cc + ["-O2", "-shared", "-fPIC", "-o", dest + ".tmp", src, "-ldl"]
    info = {"so": None, "cc": " ".join(cmd).replace(dest + ".tmp", dest), "error": None}
    if not shutil.which(cc[0]):
        info["error"] = "no C compiler (%s) to build %s" % (cc[0], os.path.basename(src))
        return info
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        info["error"] = "%s failed: %s" % (cc[0], exc)
        return info
    if p.returncode != 0 or not os.path.isfile(dest + ".tmp"):
        last = (p.stderr.strip().splitlines() or ["exit status %d" % p.returncode])[-1]
        info["error"] = "%s could not build %s: %s" % (cc[0], os.path.basename(src), last)
        return info
    os.replace(dest + ".tmp", dest)
    info["so"] = dest
    return info


def read_kernel_timer(path: str, program: Optional[str] = None) -> dict:
    """The shim's report: {"loaded": lines found, "regions": GOMP_parallel calls, "seconds": their time or None}.

    Every process that loaded the shim wrote one line, ending in its exe;
    with PROGRAM only the lines of that executable count (GNU time, the
    wrapper, loads the shim too).  The time is the sum over the counted
    lines; ``seconds`` is None when none of them entered a parallel region.
    """
    loaded, regions, seconds = 0, 0, 0.0
    want = os.path.realpath(program) if program else None
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        head, _, exe = line.partition(" exe=")
        words = dict(w.split("=", 1) for w in head.split()[1:] if "=" in w)
        if not line.startswith("nb_kernel_timer ") or "regions" not in words or "seconds" not in words:
            continue
        if want and os.path.realpath(exe) != want:
            continue
        loaded += 1
        n = int(words["regions"])
        if n > 0:
            regions += n
            seconds += float(words["seconds"])
    return {"loaded": loaded, "regions": regions, "seconds": seconds if regions else None}


def kernel_timer_env(env: Dict[str, str], so: str, out: str) -> Dict[str, str]:
    """ENV with the shim preloaded (ahead of any LD_PRELOAD already set) and its report going to OUT."""
    env = dict(env)
    env["LD_PRELOAD"] = so + ((":" + env["LD_PRELOAD"]) if env.get("LD_PRELOAD") else "")
    env[KERNEL_TIMER_ENV] = out
    return env


def run_timed(cmd: List[str], cwd: str, env: Dict[str, str], log_path: str,
              kernel_timer: Optional[str] = None) -> dict:
    """Run one child; its wall time, exit status and peak RSS.

    With ``kernel_timer`` (the shim's .so) the child runs with it preloaded,
    and the result also has ``kernel_timer`` (``read_kernel_timer``).

    Peak RSS: with GNU time, its ``%M`` of the program.  ``ru_maxrss`` of
    ``os.wait4`` on a child started from this (large) Python process is not
    usable on Linux: the exec records the spawning memory map's high-water
    mark, so a 6 MB C program reports the runner's ~100 MB.  GNU time forks
    the program from its own small process, which gives the program's own
    peak (checked against /proc VmHWM).  Without GNU time the wait4 value is
    kept as an upper bound.
    """
    os.makedirs(cwd, exist_ok=True)
    rss_file = log_path + ".rss"
    timer_file = log_path + ".ktimer"
    if kernel_timer:
        if os.path.exists(timer_file):
            os.remove(timer_file)
        env = kernel_timer_env(env, kernel_timer, timer_file)
    full = ([GNU_TIME, "-f", "%M %U %S", "-o", rss_file] + cmd) if GNU_TIME else cmd
    with open(log_path, "wb") as log:
        busy0 = busy_cpu_seconds()
        t0 = time.perf_counter()
        proc = subprocess.Popen(full, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        busy1 = busy_cpu_seconds()
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    cpu = usage.ru_utime + usage.ru_stime
    if GNU_TIME:
        with open(rss_file) as f:
            last = f.read().split()[-3:]      # "%M %U %S" is the last line
        rss = int(last[0]) * 1024
        os.remove(rss_file)
    # the share of the machine that other processes used meanwhile (contention: inflated wall times)
    others = None
    if busy0 is not None and busy1 is not None and wall > 0:
        others = max(0.0, (busy1 - busy0) - cpu) / (wall * (os.cpu_count() or 1))
    res = {"wall_s": wall, "cpu_s": cpu, "others_cpu_share": others, "rc": proc.returncode,
           "rss_bytes": int(rss), "log": log_path}
    if kernel_timer:
        res["kernel_timer"] = read_kernel_timer(timer_file, shutil.which(cmd[0]) or cmd[0])
        if os.path.exists(timer_file):
            os.remove(timer_file)
    return res


def _summary(runs: List[dict], cmd: List[str], log_path: str) -> dict:
    bad = [r for r in runs if r["rc"] != 0]
    if bad:
        raise RuntimeError("%s exited with %d; see %s" % (" ".join(cmd[:1]), bad[0]["rc"], log_path))
    res = {"wall_s": min(r["wall_s"] for r in runs), "wall_s_all": [r["wall_s"] for r in runs],
           "cpu_s_all": [r["cpu_s"] for r in runs],
           "others_cpu_share_all": [r["others_cpu_share"] for r in runs],
           "rss_bytes": max(r["rss_bytes"] for r in runs), "log": os.path.relpath(log_path, ROOT)}
    timers = [r["kernel_timer"] for r in runs if "kernel_timer" in r]
    if timers:
        # the timed kernel: the minimum, like the wall times; None unless every run was timed
        timed = [t["seconds"] for t in timers]
        res["kernel_timed_s"] = min(timed) if None not in timed else None
        res["kernel_timed_s_all"] = timed
        res["kernel_regions_all"] = [t["regions"] for t in timers]
        res["kernel_timer_loaded_all"] = [t["loaded"] for t in timers]
    return res


def run_best(cmd, cwd, env, log_path, repeat: int) -> dict:
    """``run_timed`` REPEAT times: the minimum wall time, the largest peak RSS."""
    return _summary([run_timed(cmd, cwd, env, log_path) for _ in range(max(1, repeat))], cmd, log_path)


def run_pair(full: tuple, one: tuple, env, repeat: int, short_repeat: int = 1,
             kernel_timer: Optional[str] = None) -> Tuple[dict, dict]:
    """The full command and its one-pixel twin, alternately, REPEAT times each (minimum kept).

    ``full`` and ``one`` are (command, folder, log).  Alternating them makes
    both see the same slow and fast phases of the machine, so that the
    difference of their minima (the kernel estimate) is not an artefact of
    when each ran.  When the full command takes less than SHORT_S, the pair
    is run at least ``short_repeat`` times.  ``kernel_timer``: the shim,
    preloaded into both (see ``run_timed``).
    """
    runs_full, runs_one = [], []
    total = max(1, repeat)
    while len(runs_full) < total:
        runs_full.append(run_timed(full[0], full[1], env, full[2], kernel_timer))
        runs_one.append(run_timed(one[0], one[1], env, one[2], kernel_timer))
        if len(runs_full) == 1 and runs_full[0]["wall_s"] < SHORT_S:
            total = max(total, short_repeat)
    return _summary(runs_full, full[0], full[2]), _summary(runs_one, one[0], one[2])


def ours_command() -> List[str]:
    """``nanobrag-numba`` from PATH; ``python -m nanobrag_numba`` for an exported commit."""
    exe = shutil.which("nanobrag-numba")
    return [exe] if exe and not SOURCE_TREE else [sys.executable, "-m", "nanobrag_numba"]


def export_commit(rev: str) -> Tuple[str, str]:
    """Extract the program (nanobrag_numba/ and kernels/) of commit REV into bench/out/src/.

    The result is an importable tree: ``nanobrag_numba/`` with ``kernels/``
    placed at ``nanobrag_numba/kernels`` (where the installed package maps
    it).  Returns (directory, full commit hash).  The checkout itself is not
    touched.
    """
    import io
    import tarfile
    commit = git("rev-parse", "--verify", rev + "^{commit}").strip()
    if not commit:
        raise SystemExit("bench: --commit %s is not a commit of %s" % (rev, ROOT))
    dest = os.path.join(OUT_DIR, "src", commit[:12])
    stamp = os.path.join(dest, ".complete")
    if not os.path.exists(stamp):
        shutil.rmtree(dest, ignore_errors=True)
        data = subprocess.run(["git", "archive", "--format=tar", commit, "nanobrag_numba", "kernels"],
                              cwd=ROOT, capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = []
            for m in tar.getmembers():
                if m.name.startswith("kernels"):
                    m.name = "nanobrag_numba/" + m.name
                members.append(m)
            try:
                tar.extractall(dest, members=members, filter="data")
            except TypeError:   # Python without extraction filters (our own git archive: trusted)
                tar.extractall(dest, members=members)
        open(stamp, "w").close()
    return dest, commit


def read_text(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()


# ---------------------------------------------------------------- checks

def read_float_image(path: str, fpixels: int, spixels: int):
    import numpy as np
    return np.fromfile(path, dtype="<f4").reshape(spixels, fpixels)


def compare_images(ours, ref) -> dict:
    """Correlation and largest difference (relative to the reference's maximum) of two float images."""
    import numpy as np
    a = ours.astype(np.float64).ravel()
    b = ref.astype(np.float64).ravel()
    if a.std() == 0.0 or b.std() == 0.0:
        corr = 1.0 if np.array_equal(a, b) else 0.0
    else:
        corr = float(np.corrcoef(a, b)[0, 1])
    scale = float(np.abs(b).max()) or 1.0
    return {"corr": corr, "max_rel_diff": float(np.abs(a - b).max() / scale),
            "sum_ratio": float(a.sum() / b.sum()) if b.sum() else None}


# ---------------------------------------------------------------- one case

def run_case(name: str, hkl: str, args, c_bin: Optional[str]) -> dict:
    import numpy as np

    case = CASES[name]
    work = os.path.join(OUT_DIR, "work", name)
    if os.path.isdir(work):
        shutil.rmtree(work)
    os.makedirs(work)
    env = child_env(args.threads)
    words = case.words(hkl)
    res = {"case": name, "title": case.title, "flags": case.flags.format(hkl="P1.hkl"),
           "command": " ".join(case.words("P1.hkl")), "check": {"ok": True, "problems": []}}
    problems = res["check"]["problems"]

    def say(msg):
        print("[%s] %s" % (name, msg), flush=True)

    # 1. ours, in-process kernel time (and the reference image of ours)
    say("in-process kernel time (prepare + render after a one-pixel warm-up)")
    probe_img = os.path.join(work, "ours_probe.npy")
    probe_log = os.path.join(work, "ours_probe.log")
    cmd = [sys.executable, os.path.join(HERE, "probe.py"), name, hkl, args.device, str(args.repeat), probe_img,
           str(args.short_repeat)]
    r = run_timed(cmd, work, env, probe_log)
    if r["rc"] != 0:
        raise RuntimeError("the in-process probe of %s failed; see %s" % (name, probe_log))
    probe = json.loads(read_text(probe_log).strip().splitlines()[-1])
    probe["others_cpu_share"], probe["wall_s"] = r["others_cpu_share"], r["wall_s"]
    res["ours_probe"] = probe
    if SOURCE_TREE and not probe["module_file"].startswith(SOURCE_TREE + os.sep):
        raise RuntimeError("the probe imported %s, not the exported commit" % probe["module_file"])
    counts = probe["counts"]
    res["counts"], res["evaluations"] = counts, probe["evaluations"]
    ours_img = np.load(probe_img)
    if not probe["image_finite"]:
        problems.append("our image has non-finite pixels")
    if not probe["image_sum"] > 0.0:
        problems.append("our image is empty")
    if probe["numba_threads"] not in (None, args.threads):
        problems.append("Numba ran %s threads, not %d" % (probe["numba_threads"], args.threads))
    say("kernel %.4f s (%d evaluations; minimum of %d renders)"
        % (probe["kernel_s"], probe["evaluations"], len(probe["kernel_s_all"])))

    # 2. C, full image and one pixel
    if c_bin and (case.run_c or args.force_c):
        timer = getattr(args, "kernel_timer_so", None)
        say("C: full image and one pixel (-roi 0 0 0 0), alternately%s"
            % (", kernel timed by the preloaded %s" % os.path.basename(timer) if timer else ""))
        cdir = os.path.join(work, "c")
        c_full, c_roi = run_pair(([c_bin] + words, cdir, os.path.join(work, "c_full.log")),
                                 ([c_bin] + words + ONE_PIXEL, os.path.join(work, "c_roi"),
                                  os.path.join(work, "c_roi.log")), env, args.repeat, args.short_repeat,
                                 timer)
        c_text = read_text(os.path.join(work, "c_full.log"))
        c_counts = parse_c_counts(c_text)
        c_img = read_float_image(os.path.join(cdir, "floatimage.bin"), counts["fpixels"], counts["spixels"])
        res["c"] = {"full": c_full, "roi": c_roi, "counts": c_counts,
                    "kernel_s_est": c_full["wall_s"] - c_roi["wall_s"],
                    "kernel_s_timed": c_full.get("kernel_timed_s")}
        res["c"]["kernel_timer"] = kernel_timer_verdict(timer, getattr(args, "kernel_timer_error", None), c_full)
        if res["c"]["kernel_s_timed"] is not None and res["c"]["kernel_s_timed"] > c_full["wall_s"]:
            problems.append("C's timed kernel %.4f s exceeds its wall time %.4f s"
                            % (res["c"]["kernel_s_timed"], c_full["wall_s"]))
        # 3. the check against C
        for key in ("pixels", "oversample", "sources", "phisteps", "mosaic_domains", "thicksteps"):
            if key in c_counts and c_counts[key] != counts[key]:
                problems.append("C's %s = %d, ours %d" % (key, c_counts[key], counts[key]))
            elif key not in c_counts:
                problems.append("C's %s not found in its output" % key)
        cmp = compare_images(ours_img, c_img)
        res["vs_c"] = cmp
        if not cmp["corr"] >= CORR_MIN:
            problems.append("correlation with C %.6f < %g" % (cmp["corr"], CORR_MIN))
        say("C wall %.3f s, kernel (timed) %s s, wall - one-pixel %.3f s; corr(ours, C) = %.6f"
            % (c_full["wall_s"], _f(res["c"]["kernel_s_timed"], "%.4f"), res["c"]["kernel_s_est"], cmp["corr"]))
        if res["c"]["kernel_timer"] != "timed":
            say("C kernel not timed directly: %s" % res["c"]["kernel_timer"])

    # 4. ours, the whole command
    dev = ["-device", args.device]
    say("ours: whole command, full image and one pixel (-roi 0 0 0 0), alternately")
    odir = os.path.join(work, "ours")
    o_full, o_roi = run_pair((ours_command() + words + dev, odir, os.path.join(work, "ours_full.log")),
                             (ours_command() + words + dev + ONE_PIXEL, os.path.join(work, "ours_roi"),
                              os.path.join(work, "ours_roi.log")), env, args.repeat)
    cli_img = read_float_image(os.path.join(odir, "floatimage.bin"), counts["fpixels"], counts["spixels"])
    same = compare_images(cli_img, ours_img)
    if same["max_rel_diff"] != 0.0:
        problems.append("the command's image differs from the in-process one (max rel diff %.3g)"
                        % same["max_rel_diff"])
    res["ours"] = {"full": o_full, "roi": o_roi, "kernel_s": probe["kernel_s"],
                   "kernel_s_wall_minus_roi": o_full["wall_s"] - o_roi["wall_s"],
                   "cli_vs_in_process": same}

    # 5. cold start: an empty Numba cache
    if case.cold_start:
        colds = []
        for _ in range(max(1, args.repeat)):
            cache = tempfile.mkdtemp(prefix="numba-cold-", dir=work)
            say("ours: cold start (NUMBA_CACHE_DIR=%s)" % os.path.relpath(cache, ROOT))
            colds.append(run_best(ours_command() + words + dev, os.path.join(work, "ours_cold"),
                                  child_env(args.threads, {"NUMBA_CACHE_DIR": cache}),
                                  os.path.join(work, "ours_cold.log"), 1))
            shutil.rmtree(cache, ignore_errors=True)
        best = min(colds, key=lambda r: r["wall_s"])
        best["wall_s_all"] = [c["wall_s"] for c in colds]
        res["ours"]["cold"] = best

    n = res["evaluations"]
    res["ours"]["evals_per_s"] = n / probe["kernel_s"] if probe["kernel_s"] > 0 else None
    if "c" in res:
        c = res["c"]
        est = c["kernel_s_est"]
        # below the jitter of process starts the difference means nothing: no rate, no ratio
        noise = max(NOISE_S, NOISE_FRACTION * c["roi"]["wall_s"])
        c["kernel_noise_s"] = noise
        c["kernel_resolved"] = est > noise          # of the estimate
        ok = probe["kernel_s"] > 0
        res["ratio_kernel_est"] = est / probe["kernel_s"] if c["kernel_resolved"] and ok else None
        if c["kernel_s_timed"] is not None:         # the direct measurement wins where there is one
            ck = c["kernel_s_timed"]
            c["kernel_source"] = "timed"
            res["ratio_kernel"] = ck / probe["kernel_s"] if ok else None
            c["evals_per_s"] = n / ck if ck > 0 else None
        else:
            c["kernel_source"] = "estimate"
            res["ratio_kernel"] = res["ratio_kernel_est"]
            c["evals_per_s"] = n / est if c["kernel_resolved"] else None
        res["ratio_wall"] = c["full"]["wall_s"] / o_full["wall_s"]
    res["check"]["ok"] = not problems
    say("ours wall %.3f s; check %s" % (o_full["wall_s"], "ok" if not problems else "FAIL: " + "; ".join(problems)))
    return res


def kernel_timer_verdict(so: Optional[str], build_error: Optional[str], full: dict) -> str:
    """"timed", or why C's kernel could not be timed directly (then the wall-minus-one-pixel estimate is used)."""
    if not so:
        return "the shim was not built (%s)" % (build_error or "no C compiler")
    if full.get("kernel_timed_s") is not None:
        return "timed"
    if not all(full.get("kernel_timer_loaded_all") or [0]):
        return ("the shim was not loaded into the C program (a static binary?): "
                "the C kernel cannot be timed directly")
    return ("the C program made no GOMP_parallel call (built without OpenMP, or with another OpenMP "
            "runtime): the C kernel cannot be timed directly")


# ---------------------------------------------------------------- machine and report

def git(*argv) -> str:
    try:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpu_name() -> Optional[str]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def machine_info(args, hkl: str, c_bin: Optional[str]) -> dict:
    import numba
    import numpy
    if args.commit:
        commit, modified, source = args.commit_hash, [], "commit %s exported to %s" % (
            args.commit, os.path.relpath(SOURCE_TREE, ROOT))
    else:
        dirty = git("status", "--porcelain", "--", "nanobrag_numba", "kernels", "setup.cfg")
        commit = git("rev-parse", "HEAD").strip()
        modified = [line[3:] for line in dirty.splitlines() if line.strip()]
        source = "the installed (editable) package, i.e. the checkout's working tree"
    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "program_files_modified": modified,
        "program_source": source,
        "loadavg_start": list(os.getloadavg()),
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(), "numba": numba.__version__, "numpy": numpy.__version__,
        "threads": args.threads, "repeat": args.repeat, "short_repeat": args.short_repeat, "short_s": SHORT_S,
        "short_kernel_s": SHORT_KERNEL_S,
        "device": args.device,
        "ours_command": " ".join(ours_command()),
        "hkl": {"file": os.path.relpath(hkl, ROOT), "sha256": sha256(hkl),
                "reflections": sum(1 for _ in open(hkl))},
        "c_binary": c_bin, "c_binary_sha256": sha256(c_bin) if c_bin else None,
        "corr_min": CORR_MIN,
        "rss_method": RSS_METHOD,
    }
    if args.device == "cuda":
        info["gpu"] = gpu_name()
    return info


def _f(x, fmt="%.3f"):
    return "—" if x is None else fmt % x


def _mib(b):
    return None if b is None else b / 2 ** 20


KERNEL_TIMED_TEXT = ("the time of its OpenMP pixel loop (`GOMP_parallel`), timed in the process by the "
                     "preloaded shim `bench/c_kernel_timer.c`")


def _kfmt(x) -> str:
    """Kernel times under 0.1 s with 4 decimals (B3, B4: a few ms), others with 3."""
    return "%.4f" if x is not None and x < 0.1 else "%.3f"


def _c_kernel_source(c: Optional[dict]) -> Optional[str]:
    """"timed", "estimate" (also for results written before the shim existed) or None (C not run)."""
    if not c:
        return None
    return c.get("kernel_source") or ("timed" if c.get("kernel_s_timed") is not None else "estimate")


def _c_kernel_cell(c: Optional[dict], mark: str = "") -> str:
    """C's kernel time in the main table: timed, else the estimate (MARK added), or its noise bound."""
    if not c:
        return "—"
    if _c_kernel_source(c) == "timed":
        return _f(c["kernel_s_timed"], _kfmt(c["kernel_s_timed"]))
    if c["kernel_resolved"]:
        return _f(c["kernel_s_est"]) + mark
    return "< %.3f (noise)" % c["kernel_noise_s"]


def _others_runs(r: dict) -> List[Tuple[float, float]]:
    """(wall, others' share) of every timed run of a case."""
    pairs = []
    probe = r.get("ours_probe", {})
    if probe.get("others_cpu_share") is not None and probe.get("wall_s"):
        pairs.append((probe["wall_s"], probe["others_cpu_share"]))
    for prog in ("ours", "c"):
        for kind in ("full", "roi", "cold"):
            d = r.get(prog, {}).get(kind, {})
            pairs += [(w, x) for w, x in zip(d.get("wall_s_all", []), d.get("others_cpu_share_all", []))
                      if x is not None]
    return pairs


def others_share(results: List[dict]) -> Optional[float]:
    """The time-weighted share of the machine other processes used during the timed runs.

    Weighted by wall time, so that a blip during a 0.1 s run does not stand
    for the whole case.
    """
    pairs = [p for r in results for p in _others_runs(r)]
    wall = sum(w for w, _x in pairs)
    return sum(w * x for w, x in pairs) / wall if wall > 0 else None


def markdown(meta: dict, results: List[dict]) -> str:
    m = meta
    errors = [r for r in results if "error" in r]
    results = [r for r in results if "error" not in r]
    share_all = others_share(results)
    mod = m["program_files_modified"]
    lines = [
        "# nanobrag-numba benchmark: %s" % m["name"], "",
        "- date: %s" % m["date"],
        "- commit: `%s`%s (program measured: %s)"
        % (m["commit"], (" + uncommitted changes in " + ", ".join(mod)) if mod else "", m["program_source"]),
        "- machine: %s, nproc %s; %s" % (m["cpu_model"], m["nproc"], m["platform"]),
        "- threads: %d for both programs (OMP_NUM_THREADS = NUMBA_NUM_THREADS = %d); device %s%s"
        % (m["threads"], m["threads"], m["device"], (" (%s)" % m["gpu"]) if m.get("gpu") else ""),
        "- repeat: %d (minimum kept)%s; Python %s, Numba %s, NumPy %s; peak RSS: %s"
        % (m["repeat"],
           (", at least %d for C's command pairs under %g s and our renders under %g s"
            % (m["short_repeat"], m["short_s"], m["short_kernel_s"])) if "short_repeat" in m else "",
           m["python"], m["numba"], m["numpy"], m["rss_method"]),
        "- load average (1, 5, 15 min) at start %s, at end %s; run took %.0f s"
        % (" ".join("%.2f" % x for x in m["loadavg_start"]),
           " ".join("%.2f" % x for x in m["loadavg_end"]), m["total_s"]),
        "- other processes' share of the machine during the timed runs (/proc/stat, time-weighted): %s%s"
        % (_f(share_all and 100 * share_all, "%.1f %%"),
           "  \n  **warning: contended; times are inflated and the ratios less reliable**"
           if (share_all or 0) > OTHERS_WARN else ""),
        "- C reference: %s" % (("`%s` (sha256 %s…)" % (m["c_binary"], m["c_binary_sha256"][:12]))
                               if m["c_binary"] else "not run (set NANOBRAGG_C)"),
        "- structure factors: %s, %d reflections, sha256 %s…"
        % (m["hkl"]["file"], m["hkl"]["reflections"], m["hkl"]["sha256"][:12]),
        "- rerun: `%s`" % m["rerun"]]
    timer = m.get("c_kernel_timer")
    if timer is not None:
        lines.append("- C kernel: %s" % (
            "timed in the C process by the preloaded shim `%s` (the time of its OpenMP pixel loop, "
            "libgomp's `GOMP_parallel`)" % timer["source"] if timer.get("so") else
            "not timed directly, %s: the wall-minus-one-pixel estimate" % timer.get("error")))
    timed_any = any(_c_kernel_source(r.get("c")) == "timed" for r in results)
    # results written before the shim existed have no timed field: their cross-check table keeps its old columns
    timed_cols = any("kernel_s_timed" in (r.get("c") or {}) for r in results)
    est_any = any(_c_kernel_source(r.get("c")) == "estimate" for r in results)
    lines += [
        "",
        "Times in seconds, RSS in MiB, Meval/s = 10^6 inner evaluations per second of kernel time. "
        "Ours: kernel = in-process `render()` time; C: kernel = %s. C/ours > 1: ours is faster. "
        "See bench/README.md." % " or ".join(
            ([KERNEL_TIMED_TEXT] if timed_any else []) +
            (["wall − wall with `-roi 0 0 0 0` (estimate%s)" % (", marked est." if timed_any else "")]
             if est_any or not timed_any else [])),
        "",
        "| case | evaluations | ours wall | ours kernel | ours Meval/s | ours RSS | C wall | %s "
        "| C Meval/s | C RSS | C/ours wall | C/ours kernel | corr(ours, C) | check |"
        % ("C kernel" if timed_any else "C kernel (est.)"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        o, c = r["ours"], r.get("c")
        meps = lambda e: None if e is None else e / 1e6  # noqa: E731
        check = "ok" if r["check"]["ok"] else "FAIL: " + "; ".join(r["check"]["problems"])
        mark = " est." if timed_any and _c_kernel_source(c) == "estimate" else ""
        ratio = r.get("ratio_kernel")
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["case"], "{:,}".format(r["evaluations"]),
            _f(o["full"]["wall_s"]), _f(o["kernel_s"], _kfmt(o["kernel_s"])), _f(meps(o["evals_per_s"]), "%.2f"),
            _f(_mib(o["full"]["rss_bytes"]), "%.0f"),
            _f(c and c["full"]["wall_s"]), _c_kernel_cell(c, mark),
            _f(c and meps(c["evals_per_s"]), "%.2f"), _f(c and _mib(c["full"]["rss_bytes"]), "%.0f"),
            _f(r.get("ratio_wall"), "%.2f"), _f(ratio, "%.2f") + (mark if ratio is not None else ""),
            _f(r.get("vs_c", {}).get("corr"), "%.6f"), check))
    notes = [(r["case"], r["c"]["kernel_timer"]) for r in results
             if r.get("c") and r["c"].get("kernel_timer") not in (None, "timed")]
    if notes and not (timer and not timer.get("so")):      # a build failure is said once, above
        lines += [""] + ["%s: C kernel not timed directly: %s." % n for n in notes]
    colds = [r for r in results if "cold" in r["ours"]]
    if colds:
        lines += ["", "Start-up (whole command; cold = empty Numba cache, so every kernel is compiled):", "",
                  "| case | ours cold wall | ours warm wall | C wall |", "|---|---:|---:|---:|"]
        for r in colds:
            lines.append("| %s | %s | %s | %s |" % (r["case"], _f(r["ours"]["cold"]["wall_s"]),
                                                    _f(r["ours"]["full"]["wall_s"]),
                                                    _f(r.get("c") and r["c"]["full"]["wall_s"])))
    lines += ["", "Method cross-check (wall of the one-pixel run, and the wall-minus-one-pixel estimate "
                  "applied to ours too%s; others' CPU: the share of the machine other processes used during "
                  "the case's timed runs, time-weighted):"
              % ("; C's kernel timed by the shim in the full and in the one-pixel run" if timed_cols else ""), "",
              "| case | ours prepare | ours kernel (in-process) | ours one-pixel wall | ours wall − one-pixel "
              "| C one-pixel wall |%s C wall − one-pixel |%s max rel diff vs C | C RSS one-pixel "
              "| ours RSS one-pixel "
              "| others' CPU |" % (" C kernel (timed) |" if timed_cols else "",
                                   " C one-pixel kernel (timed) |" if timed_cols else ""),
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if timed_cols else "")]
    for r in results:
        o, c = r["ours"], r.get("c")
        share = others_share([r])
        timed = (" %s |" % _f(c and c.get("kernel_s_timed"), _kfmt(c and c.get("kernel_s_timed"))),
                 " %s |" % _f(c and c["roi"].get("kernel_timed_s"), "%.5f")) if timed_cols else ("", "")
        lines.append("| %s | %s | %s | %s | %s | %s |%s %s |%s %s | %s | %s | %s |" % (
            r["case"], _f(r["ours_probe"]["prepare_s"]), _f(o["kernel_s"], _kfmt(o["kernel_s"])),
            _f(o["roi"]["wall_s"]), _f(o["kernel_s_wall_minus_roi"]), _f(c and c["roi"]["wall_s"]),
            timed[0], _f(c and c["kernel_s_est"]), timed[1],
            _f(r.get("vs_c", {}).get("max_rel_diff"), "%.2g"),
            _f(c and _mib(c["roi"]["rss_bytes"]), "%.0f"), _f(_mib(o["roi"]["rss_bytes"]), "%.0f"),
            _f(share and 100 * share, "%.1f %%")))
    lines += ["", "Cases (loop counts from our prepare(); C's printed counts are checked to match):", "",
              "| case | what | pixels | sub-pixels | sources | phi steps | mosaic domains | command |",
              "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        n = r["counts"]
        lines.append("| %s | %s | %dx%d | %d | %d | %d | %d | `%s` |" % (
            r["case"], r["title"], n["fpixels"], n["spixels"], n["subpixels"], n["sources"], n["phisteps"],
            n["mosaic_domains"], r["command"]))
    if errors:
        lines += ["", "Cases that did not run to the end:", ""]
        lines += ["- %s: %s" % (r["case"], r["error"]) for r in errors]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=None,
                   help="comma-separated case names (default: %s on cpu, %s on cuda)"
                        % (",".join(DEFAULT_CPU), ",".join(DEFAULT_CUDA)))
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="OMP_NUM_THREADS and NUMBA_NUM_THREADS for both programs (default: nproc)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each timing; the minimum is kept (default 1)")
    p.add_argument("--short-repeat", type=int, default=SHORT_REPEAT,
                   help="at least this many runs of C's command pairs that take under %g s and of our "
                        "in-process renders that take under %g s (B3, B4; default %d)"
                        % (SHORT_S, SHORT_KERNEL_S, SHORT_REPEAT))
    p.add_argument("--no-kernel-timer", action="store_true",
                   help="do not preload bench/c_kernel_timer.c into C: C's kernel is the wall-minus-one-pixel "
                        "estimate only")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="our -device (default cpu)")
    p.add_argument("--name", default=None,
                   help="result name (default: a new one, cpu-<threads>core-<host>-<date>-<time> or cuda-...)")
    p.add_argument("--force", action="store_true", help="replace a committed result of the same name")
    p.add_argument("--json", default=None, help="JSON output (default bench/results/NAME.json)")
    p.add_argument("--markdown", default=None, help="Markdown output (default bench/results/NAME.md)")
    p.add_argument("--commit", default=None, metavar="REV",
                   help="measure the program of this commit (git archive into bench/out/src/) instead of "
                        "the working tree; e.g. --commit HEAD for a table that matches a commit")
    p.add_argument("--from-json", default=None, metavar="PATH",
                   help="only rewrite the Markdown table from an earlier JSON result (no runs)")
    p.add_argument("--no-c", action="store_true", help="do not run C even when $NANOBRAGG_C is set")
    p.add_argument("--force-c", action="store_true", help="run C also for cases marked run_c=False (G1)")
    args = p.parse_args(argv)
    names = (args.cases.split(",") if args.cases else (DEFAULT_CUDA if args.device == "cuda" else DEFAULT_CPU))
    names = [n.strip().upper() for n in names if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        p.error("unknown case(s) %s; known: %s" % (", ".join(unknown), ", ".join(CASES)))
    if args.threads < 1 or args.repeat < 1 or args.short_repeat < 1:
        p.error("--threads, --repeat and --short-repeat must be at least 1")
    args.case_names = names
    base = "cuda" if args.device == "cuda" else "cpu-%dcore" % args.threads
    explicit = args.name is not None
    args.name = args.name or default_name(base)
    args.json = args.json or os.path.join(RESULTS_DIR, args.name + ".json")
    args.markdown = args.markdown or os.path.join(RESULTS_DIR, args.name + ".md")
    if not args.from_json:
        for path in (args.json, args.markdown):
            if os.path.exists(path) and not args.force and (is_committed(path) or not explicit):
                p.error("%s is %s; give another --name or add --force to replace it"
                        % (path, "a committed result" if is_committed(path) else "an earlier result"))
    return args


def default_name(base: str, now: Optional[float] = None) -> str:
    """A result name no earlier run used: BASE-HOST-YYYYmmdd-HHMMSS (a number added if taken)."""
    import socket
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname().split(".")[0]) or "host"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    name = "%s-%s-%s" % (base, host, stamp)
    n = 1
    while any(os.path.exists(os.path.join(RESULTS_DIR, name + ext)) for ext in (".json", ".md")):
        n += 1
        name = "%s-%s-%s-%d" % (base, host, stamp, n)
    return name


def is_committed(path: str) -> bool:
    """Whether git tracks ``path`` (when git cannot tell, an existing file in the checkout counts as committed)."""
    full = os.path.realpath(path)
    if os.path.commonpath([full, os.path.realpath(ROOT)]) != os.path.realpath(ROOT):
        return False                  # outside the checkout: not one of its files
    try:
        p = subprocess.run(["git", "ls-files", "--error-unmatch", full], cwd=ROOT,
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return os.path.exists(path)
    if p.returncode == 0:
        return True
    return "did not match" not in p.stderr and os.path.exists(path)


def c_binary(no_c: bool):
    """The C program named by $NANOBRAGG_C (absolute), None without it or with --no-c; ValueError if not executable."""
    c_bin = None if no_c else os.environ.get("NANOBRAGG_C")
    if not c_bin:
        return None
    c_bin = shutil.which(c_bin) or c_bin
    if not (os.path.isfile(c_bin) and os.access(c_bin, os.X_OK)):
        raise ValueError("NANOBRAGG_C=%s is not an executable file" % c_bin)
    return os.path.abspath(c_bin)


def rerun_command(args, argv) -> str:
    env = "NANOBRAGG_C=%s " % os.environ["NANOBRAGG_C"] if os.environ.get("NANOBRAGG_C") and not args.no_c else ""
    return env + "python -m bench " + " ".join(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            doc = json.load(f)
        doc["meta"].pop("others_cpu_share_max", None)    # a summary of older versions; recomputed now
        md = args.markdown if "--markdown" in argv else os.path.splitext(args.from_json)[0] + ".md"
        with open(md, "w") as f:
            f.write(markdown(doc["meta"], doc["results"]))
        print("bench: wrote %s from %s" % (md, args.from_json))
        return 0
    try:
        c_bin = c_binary(args.no_c)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    global SOURCE_TREE
    SOURCE_TREE = None
    if args.commit:
        SOURCE_TREE, args.commit_hash = export_commit(args.commit)
    hkl = ensure_hkl()
    args.kernel_timer_so, args.kernel_timer_error = None, None
    if c_bin:
        if args.no_kernel_timer:
            args.kernel_timer_error = "--no-kernel-timer"
        else:
            built = build_kernel_timer()
            args.kernel_timer_so, args.kernel_timer_error = built["so"], built["error"]
            if built["error"]:
                print("bench: %s; C's kernel time will be the wall-minus-one-pixel estimate" % built["error"],
                      file=sys.stderr)
    meta = machine_info(args, hkl, c_bin)
    if c_bin:
        meta["c_kernel_timer"] = {"source": os.path.relpath(KERNEL_TIMER_SRC, ROOT),
                                  "so": args.kernel_timer_so and os.path.relpath(args.kernel_timer_so, ROOT),
                                  "error": args.kernel_timer_error}
    meta["name"] = args.name
    meta["cases"] = args.case_names
    meta["rerun"] = rerun_command(args, argv)
    print("bench: cases %s, %d threads, repeat %d (short runs %d), device %s, C: %s"
          % (",".join(args.case_names), args.threads, args.repeat, args.short_repeat, args.device,
             c_bin or "not run"), flush=True)
    # make sure every kernel of the command is in the on-disk cache before any wall time is taken
    print("bench: warming the Numba cache with one untimed B4 command", flush=True)
    warm = os.path.join(OUT_DIR, "work", "_warm")
    r = run_timed(ours_command() + CASES["B4"].words(hkl) + ["-device", args.device], warm,
                  child_env(args.threads), os.path.join(OUT_DIR, "warm.log"))
    if r["rc"] != 0:
        tail = read_text(r["log"]).strip().splitlines()[-1:] or [""]
        print("bench: the warm-up command failed (%s); see %s" % (tail[0], r["log"]), file=sys.stderr)
        return 1
    results = []
    t0 = time.perf_counter()
    for name in args.case_names:
        try:
            results.append(run_case(name, hkl, args, c_bin))
        except (RuntimeError, OSError, ValueError) as exc:   # one broken case must not lose the others
            print("[%s] ERROR: %s" % (name, exc), flush=True)
            results.append({"case": name, "error": str(exc), "check": {"ok": False, "problems": [str(exc)]}})
    meta["total_s"] = time.perf_counter() - t0
    meta["loadavg_end"] = list(os.getloadavg())
    doc = {"meta": meta, "results": results}
    for path in (args.json, args.markdown):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    with open(args.markdown, "w") as f:
        f.write(markdown(meta, results))
    print("bench: wrote %s and %s (%.0f s)" % (args.json, args.markdown, meta["total_s"]))
    print(read_text(args.markdown))
    return 0 if all(r["check"]["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
