"""Kernel time of one case, measured in-process (run by the runner in a child process).

    python bench/probe.py CASE HKL DEVICE REPEAT [IMAGE.npy [SHORT_REPEAT]]

prints one JSON object on its last line of stdout.  Method:

1. parse the case's command line with ``nanobrag_numba.api.config_from_flags``
   (``-device DEVICE`` added);
2. warm-up: ``prepare()`` + ``render()`` of the same case restricted to one
   pixel (``-roi 0 0 0 0``).  The kernel checks the ROI per pixel, so this
   loads (or compiles) exactly the kernel specialisation of the full image
   (and, on CUDA, creates the context) at almost no cost;
3. ``prepare()`` of the full case (timed separately as ``prepare_s``), then
   ``render()`` REPEAT times (at least SHORT_REPEAT times, default 1, when the
   first render's kernel takes under SHORT_KERNEL_S = 0.1 s: the kernels of a
   few ms of B3 and B4 vary by tens of per cent from call to call); the
   kernel time is
   the minimum of
   ``Image.kernel_seconds``: the kernel call over all pixels plus the single
   normalisation pass (one numpy multiply per pixel; on CUDA also the
   transfers back), i.e. everything between the prepared tables and the
   float image.  Nothing is written to disk except IMAGE.npy (the float image,
   for the runner's checks).

The thread count is the environment's ``NUMBA_NUM_THREADS`` (set by the
runner); the child reports what Numba actually used.
"""
from __future__ import annotations

import json
import os
import sys
import time

if __package__ in (None, ""):
    # appended, not prepended: a tree on PYTHONPATH (``--commit``) must win over the checkout
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


SHORT_KERNEL_S = 0.1


def measure(case_name: str, hkl: str, device: str = "cpu", repeat: int = 1, image_path: str = None,
            short_repeat: int = 1) -> dict:
    import numpy as np

    from bench.cases import CASES, counts_from_prep, evaluations
    from nanobrag_numba.api import config_from_flags
    from nanobrag_numba.simulator import prepare, render

    quiet = lambda s: None  # noqa: E731
    case = CASES[case_name]
    words = case.words(hkl) + ["-device", device]

    t0 = time.perf_counter()
    warm_cfg = config_from_flags(words + ["-roi", "0", "0", "0", "0"])
    warm = render(prepare(warm_cfg, quiet, write_dump=False), device)
    warmup_s = time.perf_counter() - t0

    cfg = config_from_flags(words)
    t0 = time.perf_counter()
    prep = prepare(cfg, quiet, write_dump=False)
    prepare_s = time.perf_counter() - t0
    times = []
    img = None
    total = max(1, repeat)
    while len(times) < total:
        img = render(prep, device)
        times.append(img.kernel_seconds)
        if len(times) == 1 and times[0] < SHORT_KERNEL_S:
            total = max(total, short_repeat)
    counts = counts_from_prep(prep)
    fimg = img.floatimage
    if image_path:
        np.save(image_path, fimg)
    threads = None
    if img.backend == "cpu":
        import numba
        threads = numba.get_num_threads()
    import nanobrag_numba
    return {
        "module_file": os.path.abspath(nanobrag_numba.__file__),
        "case": case_name, "device": device, "backend": img.backend, "warm_backend": warm.backend,
        "numba_threads": threads, "warmup_s": warmup_s, "prepare_s": prepare_s,
        "kernel_s": min(times), "kernel_s_all": times,
        "counts": counts, "evaluations": evaluations(counts),
        "interpolate": bool(prep.interpolate),
        "image_sum": float(np.sum(fimg, dtype=np.float64)),
        "image_finite": bool(np.isfinite(fimg).all()),
    }


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (4, 5, 6):
        print(__doc__, file=sys.stderr)
        return 2
    case, hkl, device, repeat = argv[:4]
    res = measure(case, hkl, device, int(repeat), (argv[4] or None) if len(argv) >= 5 else None,
                  int(argv[5]) if len(argv) == 6 else 1)
    sys.stdout.write(json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
