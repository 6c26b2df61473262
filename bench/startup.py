"""Start-up benchmark: the whole B4 command (64x64, bench/cases.py), cold and warm.

    python -m bench.startup [--repeat N] [--cold-repeat N] [--devices auto,cpu] [--threads N]
                            [--name NAME] [--force] [--json PATH] [--markdown PATH]
                            [--commit REV] [--no-c] [--note TEXT]

B4 is the small render whose time is mostly start-up.  For each device in
``--devices`` (our ``-device``), the exact B4 command line is run as a child
process under GNU time:

* cold: ``--cold-repeat`` times, each with ``NUMBA_CACHE_DIR`` set to a new
  empty folder (everything the run needs is compiled);
* warm: ``--repeat`` times with a Numba cache that an untimed run of the
  same command filled first.

Each run records CPU time (user + sys of the program and its children),
wall time and peak RSS (GNU time ``%M``); the table gives the median over
the repetitions (and the range).  With ``$NANOBRAGG_C`` naming the C
nanoBragg, C runs the same words ``--repeat`` times (warm only: it compiles
nothing).  The runs of the devices (and C) alternate, so that all see the
same phases of a shared machine.

Python bytecode: the children run without ``PYTHONDONTWRITEBYTECODE`` so that
the package's modules come from ``.pyc`` files, as in an installed package
(a first untimed run writes them).

Results go to bench/results/NAME.json and NAME.md.  NAME defaults to a new
name (``startup-<threads>core-<host>-<date>-<time>``), so a committed table
is never overwritten by accident; ``--name NAME`` chooses it, and replacing
a committed result also needs ``--force`` (the rule of ``python -m bench``).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if __package__ in (None, ""):
    sys.path.insert(0, ROOT)

from bench import run as _run  # noqa: E402
from bench.cases import CASES  # noqa: E402
from bench.make_hkl import ensure_hkl, sha256  # noqa: E402

CASE = "B4"
DEVICES = ("auto", "cpu")
#: issue 12's targets for B4 with the default device (warm CPU time and peak RSS; cold CPU time)
TARGETS = {"warm_cpu_s": 1.0, "warm_rss_mb": 120.0, "cold_cpu_s": 20.0}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5, help="warm runs per device (default 5); the median is reported")
    p.add_argument("--cold-repeat", type=int, default=1,
                   help="cold runs (empty Numba cache) per device (default 1; each compiles for ~20 s)")
    p.add_argument("--devices", default=",".join(DEVICES), help="our -device values (default auto,cpu)")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="OMP_NUM_THREADS and NUMBA_NUM_THREADS of every child (default: nproc)")
    p.add_argument("--name", default=None,
                   help="result name (default: a new one, startup-<threads>core-<host>-<date>-<time>)")
    p.add_argument("--force", action="store_true", help="replace a committed result of the same name")
    p.add_argument("--json", default=None, help="JSON output (default bench/results/NAME.json)")
    p.add_argument("--markdown", default=None, help="Markdown output (default bench/results/NAME.md)")
    p.add_argument("--commit", default=None, metavar="REV",
                   help="measure the program of this commit (exported as by python -m bench --commit)")
    p.add_argument("--no-c", action="store_true", help="do not run C even when $NANOBRAGG_C is set")
    p.add_argument("--note", default=None, help="a line for the table (e.g. what else ran on the machine)")
    args = p.parse_args(argv)
    devices = [d.strip().lower() for d in args.devices.split(",") if d.strip()]
    bad = [d for d in devices if d not in ("auto", "cpu", "cuda")]
    if bad or not devices:
        p.error("--devices takes auto, cpu and cuda (got %r)" % args.devices)
    if args.repeat < 1 or args.cold_repeat < 0 or args.threads < 1:
        p.error("--repeat and --threads must be at least 1, --cold-repeat at least 0")
    args.device_list = devices
    explicit = args.name is not None
    args.name = args.name or _run.default_name("startup-%dcore" % args.threads)
    args.json = args.json or os.path.join(_run.RESULTS_DIR, args.name + ".json")
    args.markdown = args.markdown or os.path.join(_run.RESULTS_DIR, args.name + ".md")
    for path in (args.json, args.markdown):
        if os.path.exists(path) and not args.force and (_run.is_committed(path) or not explicit):
            p.error("%s is %s; give another --name or add --force to replace it"
                    % (path, "a committed result" if _run.is_committed(path) else "an earlier result"))
    return args


def ours_command() -> List[str]:
    """The ``nanobrag-numba`` beside this Python (its own install), else ``python -m nanobrag_numba``.

    ``python -m bench``'s PATH lookup could find another checkout's command.
    """
    exe = os.path.join(os.path.dirname(sys.executable), "nanobrag-numba")
    if _run.SOURCE_TREE or not os.access(exe, os.X_OK):
        return [sys.executable, "-m", "nanobrag_numba"]
    return [exe]


def child_env(threads: int, cache_dir: str) -> Dict[str, str]:
    env = _run.child_env(threads, {"NUMBA_CACHE_DIR": cache_dir})
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def summarize(runs: List[dict]) -> dict:
    """Median (and range) of CPU time, wall time and peak RSS over ``runs``."""
    out = {"n": len(runs)}
    for key, values in (("cpu_s", [r["cpu_s"] for r in runs]), ("wall_s", [r["wall_s"] for r in runs]),
                        ("rss_mb", [r["rss_bytes"] / 2 ** 20 for r in runs])):
        out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values),
                    "all": [round(v, 4) for v in values]}
    shares = [r["others_cpu_share"] for r in runs if r.get("others_cpu_share") is not None]
    out["others_cpu_share_median"] = statistics.median(shares) if shares else None
    return out


def _timed(cmd, work, env, log) -> dict:
    r = _run.run_timed(cmd, work, env, log)
    if r["rc"] != 0:
        tail = _run.read_text(log).strip().splitlines()[-1:] or [""]
        raise RuntimeError("%s exited with %d (%s); see %s" % (" ".join(cmd[:3]), r["rc"], tail[0], log))
    return r


def measure(args, hkl: str, c_bin: Optional[str], say=print) -> List[dict]:
    """All runs; one result row per (program, device, cold/warm)."""
    words = CASES[CASE].words(hkl)
    ours = ours_command()
    out_dir = os.path.join(_run.OUT_DIR, "startup")
    os.makedirs(out_dir, exist_ok=True)
    label = (args.commit_hash[:12] if args.commit else "tree")
    warm_cache = os.path.join(out_dir, "numba-cache-" + label)
    programs = [("ours", d, ours + words + ["-device", d]) for d in args.device_list]
    rows = []
    for prog, dev, cmd in programs:
        runs = []
        for i in range(args.cold_repeat):
            with tempfile.TemporaryDirectory(prefix="nb-cold-") as empty:
                say("[%s %s] cold run %d/%d (empty Numba cache)" % (prog, dev, i + 1, args.cold_repeat))
                runs.append(_timed(cmd, os.path.join(out_dir, "work", dev), child_env(args.threads, empty),
                                   os.path.join(out_dir, "cold-%s.log" % dev)))
        if runs:
            rows.append({"program": prog, "device": dev, "start": "cold", **summarize(runs)})
    # fill the warm cache (and the .pyc files) untimed, then alternate the programs
    for prog, dev, cmd in programs:
        say("[%s %s] untimed run to fill the cache" % (prog, dev))
        _timed(cmd, os.path.join(out_dir, "work", dev), child_env(args.threads, warm_cache),
               os.path.join(out_dir, "fill-%s.log" % dev))
    if c_bin:
        programs.append(("C", "-", [c_bin] + words))
    warm = {(p, d): [] for p, d, _ in programs}
    for i in range(args.repeat):
        say("warm round %d/%d" % (i + 1, args.repeat))
        for prog, dev, cmd in programs:
            env = child_env(args.threads, warm_cache)
            warm[(prog, dev)].append(_timed(cmd, os.path.join(out_dir, "work", prog + dev), env,
                                            os.path.join(out_dir, "warm-%s%s.log" % (prog, dev))))
    for prog, dev, _ in programs:
        rows.append({"program": prog, "device": dev, "start": "warm", **summarize(warm[(prog, dev)])})
    return rows


def machine_info(args, hkl: str, c_bin: Optional[str]) -> dict:
    import numba
    import numpy
    if args.commit:
        commit, modified = args.commit_hash, []
    else:
        commit = _run.git("rev-parse", "HEAD").strip()
        dirty = _run.git("status", "--porcelain", "--", "nanobrag_numba", "kernels", "setup.cfg")
        modified = [line[3:] for line in dirty.splitlines() if line.strip()]
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit, "program_files_modified": modified,
        "program_source": ("commit %s exported" % args.commit) if args.commit else "the checkout's working tree",
        "loadavg_start": list(os.getloadavg()), "nproc": os.cpu_count(), "cpu_model": _run.cpu_model(),
        "platform": platform.platform(), "python": platform.python_version(),
        "numba": numba.__version__, "numpy": numpy.__version__,
        "threads": args.threads, "repeat": args.repeat, "cold_repeat": args.cold_repeat,
        "case": CASE, "command": " ".join(ours_command() + CASES[CASE].words(os.path.relpath(hkl, ROOT))),
        "hkl": {"file": os.path.relpath(hkl, ROOT), "sha256": sha256(hkl)},
        "c_binary": c_bin, "rss_method": _run.RSS_METHOD, "note": args.note, "targets": TARGETS,
    }


def _range(s: dict, fmt: str) -> str:
    return (fmt + " (" + fmt + "–" + fmt + ")") % (s["median"], s["min"], s["max"])


def markdown(meta: dict, rows: List[dict]) -> str:
    lines = ["# Start-up: B4 (64x64), cold and warm", ""]
    lines.append("`%s`" % meta["command"])
    lines.append("")
    lines.append("Commit %s%s, %s, %d threads, %s, Python %s, Numba %s, NumPy %s; %s."
                 % (meta["commit"][:12], " (modified: %s)" % ", ".join(meta["program_files_modified"])
                    if meta["program_files_modified"] else "", meta["cpu_model"], meta["threads"],
                    meta["date"], meta["python"], meta["numba"], meta["numpy"], meta["program_source"]))
    lines.append("")
    if meta.get("note"):
        lines += ["Note: %s" % meta["note"], ""]
    lines.append("CPU = user + sys of the whole command; medians over n runs (min–max). Cold = empty "
                 "Numba cache (`NUMBA_CACHE_DIR` a new folder); warm = filled by an untimed run. "
                 "Peak RSS: %s. Other processes' share of the machine during the runs (median) in the "
                 "last column." % meta["rss_method"])
    lines.append("")
    lines.append("| program | -device | start | n | CPU s | wall s | peak RSS MB | others' CPU share |")
    lines.append("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        share = r.get("others_cpu_share_median")
        lines.append("| %s | %s | %s | %d | %s | %s | %s | %s |" % (
            r["program"], r["device"], r["start"], r["n"], _range(r["cpu_s"], "%.2f"),
            _range(r["wall_s"], "%.2f"), _range(r["rss_mb"], "%.1f"), "—" if share is None else "%.0f %%" % (100 * share)))
    t = meta["targets"]
    lines.append("")
    lines.append("Targets (issue 12, default device `auto`): warm CPU <= %.1f s, warm peak RSS <= %.0f MB, "
                 "cold CPU < %.0f s." % (t["warm_cpu_s"], t["warm_rss_mb"], t["cold_cpu_s"]))
    got = {(r["device"], r["start"]): r for r in rows if r["program"] == "ours"}
    checks = []
    if ("auto", "warm") in got:
        w = got[("auto", "warm")]
        checks.append("warm CPU %.2f s %s" % (w["cpu_s"]["median"], "met" if w["cpu_s"]["median"] <= t["warm_cpu_s"]
                                                else "NOT met"))
        checks.append("warm RSS %.1f MB %s" % (w["rss_mb"]["median"], "met" if w["rss_mb"]["median"] <= t["warm_rss_mb"]
                                                 else "NOT met"))
    if ("auto", "cold") in got:
        c = got[("auto", "cold")]
        checks.append("cold CPU %.1f s %s" % (c["cpu_s"]["median"], "met" if c["cpu_s"]["median"] < t["cold_cpu_s"]
                                                else "NOT met"))
    if checks:
        lines.append("This run (auto): " + "; ".join(checks) + ".")
    lines.append("")
    lines.append("Rerun: `%s`" % meta["rerun"])
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        c_bin = _run.c_binary(args.no_c)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    _run.SOURCE_TREE = None
    if args.commit:
        _run.SOURCE_TREE, args.commit_hash = _run.export_commit(args.commit)
    hkl = ensure_hkl()
    meta = machine_info(args, hkl, c_bin)
    meta["name"] = args.name
    meta["rerun"] = ("NANOBRAGG_C=%s " % os.environ["NANOBRAGG_C"] if c_bin else "") + \
        "python -m bench.startup " + " ".join(argv)
    t0 = time.perf_counter()
    try:
        rows = measure(args, hkl, c_bin, say=lambda s: print("startup: " + s, flush=True))
    except (RuntimeError, OSError) as exc:
        print("startup: %s" % exc, file=sys.stderr)
        return 1
    meta["total_s"] = time.perf_counter() - t0
    meta["loadavg_end"] = list(os.getloadavg())
    for path in (args.json, args.markdown):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "results": rows}, f, indent=1)
        f.write("\n")
    with open(args.markdown, "w") as f:
        f.write(markdown(meta, rows))
    print("startup: wrote %s and %s (%.0f s)" % (args.json, args.markdown, meta["total_s"]))
    print(_run.read_text(args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
