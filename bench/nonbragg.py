"""Time the amorphous background: ``nanobrag-numba nonbragg`` on a 2048x2048 detector (issue 13's bench case).

    python -m bench.nonbragg [--repeat 3] [--threads 2] [--device cpu|cuda] [--markdown PATH]
    NONBRAGG_C=/path/to/nonBragg python -m bench.nonbragg      # also the C program, same words

Each program runs in a fresh empty folder with the same command line (water
table, 2048x2048 pixels of 0.1 mm at 100 mm, noise image on); the minimum
wall time of ``--repeat`` runs is reported, with the ratio C / ours.  The
water table is the golden suite's (``../shared/golden_suite/inputs/water.stol``
or ``$NANOBRAGG_GOLDEN_SUITE``) or, without it, a synthetic water-like table.
Speed is measured here, never asserted in the tests.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
WORDS = "-detpixels 2048 -pixel 0.1 -distance 100 -lambda 1 -thickness 0.1 -flux 1e12 -exposure 1 " \
        "-beamsize 0.1 -seed 1 -noprogress"


def water_table(folder):
    root = os.environ.get("NANOBRAGG_GOLDEN_SUITE") or os.path.join(HERE, "..", "..", "shared", "golden_suite")
    src = os.path.join(root, "inputs", "water.stol")
    dst = os.path.join(folder, "water.stol")
    if os.path.isfile(src):
        shutil.copy(src, dst)
    else:
        stol = np.linspace(0.0, 0.5, 10000)
        np.savetxt(dst, np.column_stack([stol, 2.57 + 6.0 * np.exp(-((stol - 0.16) / 0.05) ** 2)]))
    return dst


def time_run(cmd, folder, env):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit("%s failed: %s" % (cmd[0], p.stderr.strip()[-500:]))
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--markdown", help="also write the table to this file")
    args = ap.parse_args(argv)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), NUMBA_NUM_THREADS=str(args.threads))
    work = tempfile.mkdtemp(prefix="nbbench_")
    try:
        table = water_table(work)
        words = ["-stol", table] + WORDS.split()
        ours = [sys.executable, "-m", "nanobrag_numba", "nonbragg"] + words + ["-device", args.device]
        time_run(ours, work, env)                       # compile / warm the cache
        rows = [("nanobrag-numba nonbragg (%s, %d threads)" % (args.device, args.threads),
                 min(time_run(ours, work, env) for _ in range(args.repeat)))]
        c = os.environ.get("NONBRAGG_C")
        if c:
            rows.append(("nonBragg.c", min(time_run([c] + words, work, env) for _ in range(args.repeat))))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = ["| program | wall s (min of %d), 2048x2048 background + noise |" % args.repeat, "|---|---|"]
    lines += ["| %s | %.2f |" % r for r in rows]
    if len(rows) == 2:
        lines.append("| ratio C / ours | %.1f |" % (rows[1][1] / rows[0][1]))
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
