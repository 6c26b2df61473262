"""Benchmark B5: many images with ``nanobrag-numba batch``, in-process and on local Dask workers.

    python bench/batch_bench.py [--images 200] [--workers 2] [--threads N] [--repeat N] [--name NAME]
    python -m bench.batch_bench ...          (the same)

B5 is 200 images of 256x256 pixels, each a random crystal orientation
(``--random-orientations 200 --seed 1``: Haar-uniform), N = 10, 5 mosaic
domains, the benchmark's HKL file (``bench/make_hkl.py``).  The batch runs
as the installed command in a child process, once per mode:

- ``in-process``: one process, Numba on --threads threads
  (NUMBA_NUM_THREADS, default nproc);
- ``workers``: ``--workers W`` (default 2): a local Dask cluster of W
  single-threaded worker processes, Numba on nproc/W threads each.

For each mode, from the command's wall time and its ``manifest.jsonl``:

- images/s (wall): images / wall time of the whole command (start-up, HKL
  reading, starting the cluster, rendering, writing);
- images/s (steady): (images - 1) / (time between the first and the last
  finished image), i.e. without start-up;
- kernel: median ``kernel_s`` per image (``Image.kernel_seconds``: the kernel
  and the scaling to float32);
- overhead outside the kernel: median of ``render_s - kernel_s`` per image,
  i.e. ``Simulator.render`` minus the kernel (``prepare`` of the image's
  tables and the Result); target <= 5 ms on the CPU;
- write: median ``write_s`` per image (statistics, TIFF, fsync);
- batch overhead per image: 1 / (steady images/s) - median kernel time (in
  the worker modes multiplied by the number of workers): everything the
  batch adds to the kernel, per image.

Checks: every image of every mode is in the manifest exactly once, and the
images of the worker mode are bit-identical to the in-process ones.  The
machine's other load (``others' CPU``, as in ``bench/run.py``) and the load
average are in the table.  Results: bench/results/NAME.md and .json (NAME
defaults to ``batch-<threads>core``).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import statistics
import sys
from typing import List

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if __package__ in (None, ""):
    sys.path.insert(0, ROOT)

from bench.cases import CASES  # noqa: E402
from bench.make_hkl import ensure_hkl, sha256  # noqa: E402
from bench.run import OTHERS_WARN, OUT_DIR, RESULTS_DIR, child_env, cpu_model, git, run_timed  # noqa: E402

B5_FLAGS = CASES["B5"].flags       # one definition of B5 (bench/cases.py; gpu_check.py times it on a GPU)
B5_TITLE = "batch: 256x256 images, random orientations, N=10, 5 mosaic domains"
OVERHEAD_TARGET_S = 0.005


def batch_command() -> List[str]:
    exe = shutil.which("nanobrag-numba")
    return [exe] if exe else [sys.executable, "-m", "nanobrag_numba"]


def read_manifest(out: str) -> List[dict]:
    with open(os.path.join(out, "manifest.jsonl")) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def run_mode(mode: str, args, hkl: str) -> dict:
    """One timed batch (``--repeat`` times, the fastest kept) and its per-image numbers."""
    words = (B5_FLAGS.format(hkl=hkl) + " -device cpu").split()
    extra = ["--workers", str(args.workers)] if mode == "workers" else []
    work = os.path.join(OUT_DIR, "work", "B5")
    best, walls = None, []
    for rep in range(args.repeat):
        out = os.path.join(work, "%s-%d" % (mode, rep))
        shutil.rmtree(out, ignore_errors=True)
        cmd = batch_command() + ["batch", "--random-orientations", str(args.images), "--seed", "1",
                                 "--out", out] + extra + ["--"] + words
        log = os.path.join(work, "%s-%d.log" % (mode, rep))
        r = run_timed(cmd, work, child_env(args.threads), log)
        if r["rc"] != 0:
            raise RuntimeError("the %s batch exited with %d; see %s" % (mode, r["rc"], log))
        walls.append(r["wall_s"])
        if best is not None and r["wall_s"] >= best["wall_s"]:
            continue
        recs = read_manifest(out)
        fin = sorted(x["finished"] for x in recs)
        over = sorted(x["render_s"] - x["kernel_s"] for x in recs)
        best = {
            "mode": mode, "command": " ".join(["nanobrag-numba"] + cmd[len(batch_command()):]).replace(hkl, "P1.hkl")
                       .replace(ROOT + os.sep, ""),
            "wall_s": r["wall_s"], "others_cpu_share": r["others_cpu_share"], "images": len(recs),
            "indexes_once": sorted(x["index"] for x in recs) == list(range(args.images)),
            "steady_s": fin[-1] - fin[0],
            "kernel_s_median": statistics.median(x["kernel_s"] for x in recs),
            "render_s_median": statistics.median(x["render_s"] for x in recs),
            "overhead_s_median": statistics.median(over), "overhead_s_mean": statistics.fmean(over),
            "overhead_s_p95": over[int(0.95 * (len(over) - 1))],
            "write_s_median": statistics.median(x["write_s"] for x in recs),
            "workers": len({x["worker"] for x in recs}), "out": out, "log": os.path.relpath(log, ROOT),
        }
        best["images_per_s_wall"] = len(recs) / r["wall_s"]
        best["images_per_s_steady"] = (len(recs) - 1) / best["steady_s"] if best["steady_s"] > 0 else None
        parallel = args.workers if mode == "workers" else 1
        best["batch_overhead_s"] = (parallel / best["images_per_s_steady"] - best["kernel_s_median"]
                                    if best["images_per_s_steady"] else None)
    best["wall_s_all"] = walls
    return best


def same_images(a: str, b: str, n: int) -> bool:
    """Whether the two batches wrote bit-identical images (tifffile) with the same keys."""
    import numpy as np
    import tifffile
    ra = {r["index"]: r for r in read_manifest(a)}
    rb = {r["index"]: r for r in read_manifest(b)}
    for i in range(n):
        if ra[i]["key"] != rb[i]["key"]:
            return False
        ia = tifffile.imread(os.path.join(a, ra[i]["files"]["image"]))
        ib = tifffile.imread(os.path.join(b, rb[i]["files"]["image"]))
        if not np.array_equal(ia, ib):
            return False
    return True


def _f(x, fmt="%.3f"):
    return "—" if x is None else fmt % x


def markdown(doc: dict) -> str:
    m, rows = doc["meta"], doc["results"]
    share = [r["others_cpu_share"] for r in rows if r.get("others_cpu_share") is not None]
    worst = max(share) if share else None
    lines = [
        "# nanobrag-numba benchmark: %s (B5)" % m["name"], "",
        "- date: %s" % m["date"],
        "- commit: `%s`%s" % (m["commit"], (" + uncommitted changes in " + ", ".join(m["modified"]))
                              if m["modified"] else ""),
        "- machine: %s, nproc %s" % (m["cpu_model"], m["nproc"]),
        "- case B5: %s; %d images, `--random-orientations %d --seed 1`, float32 TIFF output, device cpu"
        % (B5_TITLE, m["images"], m["images"]),
        "- threads: in-process Numba %d threads; workers: %d local Dask workers x 1 Dask thread, Numba %d "
        "thread(s) each" % (m["threads"], m["workers"], max(1, m["threads"] // m["workers"])),
        "- repeat: %d (fastest wall kept); load average (1, 5, 15 min) at start %s, at end %s"
        % (m["repeat"], " ".join("%.2f" % x for x in m["loadavg_start"]),
           " ".join("%.2f" % x for x in m["loadavg_end"])),
        "- other processes' share of the machine during the timed runs: %s%s"
        % (_f(worst and 100 * worst, "%.1f %%"),
           "  \n  **warning: contended; times are inflated**" if (worst or 0) > OTHERS_WARN else ""),
        "- structure factors: %s, sha256 %s…" % (m["hkl"], m["hkl_sha256"][:12]),
        "- rerun: `%s`" % m["rerun"], "",
        "Times per image in milliseconds (medians over the images). images/s (wall): whole command, "
        "start-up and cluster start included; (steady): between the first and the last finished image. "
        "Overhead = `render_s − kernel_s` (Simulator.render outside the kernel; target ≤ %.0f ms). "
        "Batch overhead = workers / steady rate − kernel: everything the batch adds per image "
        "(tables, statistics, TIFF, fsync, manifest, Dask). See bench/batch_bench.py." % (OVERHEAD_TARGET_S * 1e3),
        "",
        "| mode | images | wall s | images/s (wall) | images/s (steady) | kernel ms | overhead ms (median / p95) "
        "| write ms | batch overhead ms | others' CPU | check |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        check = "ok" if r["check_ok"] else "FAIL: " + "; ".join(r["problems"])
        lines.append("| %s | %d | %s | %s | %s | %s | %s / %s | %s | %s | %s | %s |" % (
            r["mode"] + (" (%d workers)" % m["workers"] if r["mode"] == "workers" else ""), r["images"],
            _f(r["wall_s"], "%.2f"), _f(r["images_per_s_wall"], "%.1f"), _f(r["images_per_s_steady"], "%.1f"),
            _f(1e3 * r["kernel_s_median"], "%.1f"), _f(1e3 * r["overhead_s_median"], "%.2f"),
            _f(1e3 * r["overhead_s_p95"], "%.2f"), _f(1e3 * r["write_s_median"], "%.2f"),
            _f(r["batch_overhead_s"] and 1e3 * r["batch_overhead_s"], "%.1f"),
            _f(r["others_cpu_share"] and 100 * r["others_cpu_share"], "%.1f %%"), check))
    lines += ["", "Commands (P1.hkl = the benchmark HKL file):", ""]
    lines += ["- %s: `%s`" % (r["mode"], r["command"]) for r in rows]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python bench/batch_bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=200, help="images per batch (default 200)")
    p.add_argument("--workers", type=int, default=2, help="local Dask workers of the second mode (default 2)")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="NUMBA_NUM_THREADS of the in-process mode (default nproc)")
    p.add_argument("--repeat", type=int, default=1, help="runs per mode, the fastest kept (default 1)")
    p.add_argument("--name", default=None, help="result name (default batch-<threads>core)")
    p.add_argument("--no-workers", action="store_true", help="only the in-process mode (no Dask needed)")
    args = p.parse_args(argv)
    if min(args.images, args.workers, args.threads, args.repeat) < 1 or args.images < 2:
        p.error("--images must be at least 2, the others at least 1")
    args.name = args.name or "batch-%dcore" % args.threads
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    hkl = ensure_hkl()
    dirty = git("status", "--porcelain", "--", "nanobrag_numba", "kernels", "setup.cfg")
    meta = {"name": args.name, "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": git("rev-parse", "HEAD").strip(),
            "modified": [ln[3:] for ln in dirty.splitlines() if ln.strip()],
            "cpu_model": cpu_model(), "nproc": os.cpu_count(), "threads": args.threads, "workers": args.workers,
            "images": args.images, "repeat": args.repeat, "loadavg_start": list(os.getloadavg()),
            "hkl": os.path.relpath(hkl, ROOT), "hkl_sha256": sha256(hkl),
            "rerun": "python bench/batch_bench.py " + " ".join(argv)}
    print("B5: warming the Numba cache with an untimed 2-image batch", flush=True)
    warm = os.path.join(OUT_DIR, "work", "B5", "_warm")
    shutil.rmtree(warm, ignore_errors=True)
    r = run_timed(batch_command() + ["batch", "--random-orientations", "2", "--out", warm, "--"]
                  + (B5_FLAGS.format(hkl=hkl) + " -device cpu").split(), os.path.join(OUT_DIR, "work", "B5"),
                  child_env(args.threads), os.path.join(OUT_DIR, "work", "B5", "warm.log"))
    if r["rc"] != 0:
        print("B5: the warm-up batch failed; see %s" % r["log"], file=sys.stderr)
        return 1
    rows = []
    for mode in ["in-process"] + ([] if args.no_workers else ["workers"]):
        print("B5: %s, %d images" % (mode, args.images), flush=True)
        res = run_mode(mode, args, hkl)
        res["problems"] = [] if res["indexes_once"] and res["images"] == args.images else \
            ["the manifest does not hold every image exactly once"]
        rows.append(res)
        print("B5: %s: %.2f s, %.1f images/s (steady %.1f), overhead %.2f ms/image"
              % (mode, res["wall_s"], res["images_per_s_wall"], res["images_per_s_steady"] or 0,
                 1e3 * res["overhead_s_median"]), flush=True)
    if len(rows) == 2 and not same_images(rows[0]["out"], rows[1]["out"], args.images):
        rows[1]["problems"].append("images differ from the in-process batch")
    for res in rows:
        res["check_ok"] = not res["problems"]
    meta["loadavg_end"] = list(os.getloadavg())
    doc = {"meta": meta, "results": rows}
    os.makedirs(RESULTS_DIR, exist_ok=True)
    base = os.path.join(RESULTS_DIR, args.name)
    with open(base + ".json", "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
    with open(base + ".md", "w") as fh:
        fh.write(markdown(doc))
    print("B5: wrote %s.md and .json" % base)
    print(markdown(doc))
    return 0 if all(r["check_ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
