"""Time ``nanobrag-numba noisify`` (and the C noisify with $NOISIFY_C) on a 2048x2048 image.

    NOISIFY_C=/path/to/noisify python -m bench.noisify_bench [--repeat N] [--size 2048] [--markdown PATH]

The input is a deterministic float image (photons/pixel: exponential
background of mean 50 with a grid of 1e5-photon spots), written to
bench/out/noisify/. Each case runs both programs with the same words in a
fresh process (start-up included, as a user sees it) and the same seeds;
the table gives the best of --repeat runs, the ratio, and whether the noise
images are byte-identical (they should be with -c_quirks, and are by default
whenever the PSF light does not reach the right edge).
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

import numpy as np

CASES = (
    ("poisson", "-calibration 0"),
    ("readout+flicker+calibration", "-readout_noise 3 -flicker 0.02 -calibration 0.03"),
    ("readout+gauss PSF 100um", "-readout_noise 3 -psf gauss -psf_fwhm 100"),
)
HERE = os.path.dirname(os.path.abspath(__file__))


def make_input(path, size):
    rng = np.random.default_rng(0)
    img = rng.exponential(50.0, (size, size)).astype(np.float32)
    img[::97, ::89] = 1e5
    img.astype("<f4").tofile(path)


def run(cmd, cwd):
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit("%s failed (%d): %s" % (cmd[0], p.returncode, p.stderr.strip()[-500:]))
    return dt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--quirks", action="store_true", help="run ours with -c_quirks")
    ap.add_argument("--markdown", help="also write the table here")
    opts = ap.parse_args(argv)
    work = os.path.join(HERE, "out", "noisify")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    make_input(os.path.join(work, "in.bin"), opts.size)
    ours = [sys.executable, "-m", "nanobrag_numba", "noisify"] + (["-c_quirks"] if opts.quirks else [])
    c = os.environ.get("NOISIFY_C")
    rows = ["| case (%dx%d) | ours (s) | C (s) | C/ours | noise image |" % (opts.size, opts.size),
            "|---|---|---|---|---|"]
    for name, words in CASES:
        args = ["-floatfile", "in.bin", "-detpixels", str(opts.size), "-seed", "5", "-calib_seed", "6"] + words.split()
        t_ours = min(run(ours + args + ["-noisefile", "ours.img", "-intfile", "ours_i.img", "-pgmfile", "ours.pgm"],
                         work) for _ in range(opts.repeat))
        t_c = same = ""
        if c:
            tc = min(run([c] + args + ["-noisefile", "c.img", "-intfile", "c_i.img", "-pgmfile", "c.pgm"], work)
                     for _ in range(opts.repeat))
            t_c = "%.2f" % tc
            ratio = "%.2f" % (tc / t_ours)
            with open(os.path.join(work, "ours.img"), "rb") as a, open(os.path.join(work, "c.img"), "rb") as b:
                same = "identical" if a.read() == b.read() else "differs"
        else:
            ratio = ""
        rows.append("| %s | %.2f | %s | %s | %s |" % (name, t_ours, t_c, ratio, same))
    text = "\n".join(rows) + "\n"
    sys.stdout.write(text)
    if opts.markdown:
        with open(opts.markdown, "w") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
