"""Background + detector noise of a 2048x2048 image on the GPU (issue 13, point 5), with CPU rows to compare.

    python -m bench.noise_gpu [--size 2048] [--repeat 5] [--out DIR] [--sim] [--cpu-only]

The case resonet runs for every shot: the amorphous (water) background of
bench/nonbragg.py's detector (nonBragg's kernel, ``nb.background``) and
noisify's detector model on it -- Poisson, read-out noise 3 ADU, 3 %
calibration error, Gaussian PSF of 46 um -- with the counter generator
(``nb.noisify(..., generator="counter")``'s passes, ``noise_models.counter_pipeline``).

Rows (each the best of ``--repeat``, after a warm-up that compiles):

* ``cuda``: the background kernel on the GPU (rows copied back, as
  ``nb.background(device="cuda")`` returns them) and the noise on the GPU
  (photons uploaded, the 16-bit noise image copied back);
* ``cpu``: the same on all CPU cores;
* ``cpu, C's generator``: the noise of ``nb.noisify``'s default (C's serial
  streams, bit for bit the C program).

images/s = 1 / (background s + noise s); the noise alone is reported too
(the background of a fixed geometry can be computed once per run).  Whether
the GPU's noise image equals the CPU's for the same photons is recorded
(libdevice's exp/log/cos may differ from the C library's in the last bit:
see docs/differences.md).  ``--sim`` runs a 16x16 version in numba's CUDA
simulator to check this script.  Used by bench/gpu_check.py (its last step;
writes OUTDIR/noise_gpu.md and returns the record for gpu_report.json).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

#: noisify's model of the case (the API's names)
NOISE = {"readout": 3.0, "calibration": 0.03, "flicker": 0.0, "psf": "gauss", "psf_fwhm_um": 46.0, "psf_radius": 0,
         "gain": 1.0, "adc": 40.0}
PIXEL_MM = 0.1


def _words(size):
    from bench.nonbragg import WORDS
    words = WORDS.split()
    words[words.index("-detpixels") + 1] = str(size)
    return words


def _noise(ops, photons, size, seed):
    """One noise image with the counter generator through ``ops``; returns (uint16 image, seconds)."""
    from nanobrag_numba.noise_models import counter_pipeline, psf_fwhm_pixels
    kw = dict(NOISE)
    fwhm = psf_fwhm_pixels(kw.pop("psf_fwhm_um"), PIXEL_MM)
    t0 = time.perf_counter()
    dev = ops.asarray(np.ascontiguousarray(photons.ravel(), dtype=np.float32))
    out = counter_pipeline(ops, dev, size, size, seed=seed, fwhm_pixels=fwhm, **kw)
    img = ops.to_host(out["n16"])
    ops.synchronize()
    return img.reshape(size, size), time.perf_counter() - t0


def _background(words, table, device):
    import nanobrag_numba as nb
    t0 = time.perf_counter()
    img = nb.background(words, table, device=device)
    return img, time.perf_counter() - t0


def measure(device, size, repeat, table):
    """Best-of-``repeat`` seconds of the background and of the counter noise on ``device``."""
    from nanobrag_numba.noise_models import counter_ops
    words = _words(size)
    ops = counter_ops(device)
    t0 = time.perf_counter()
    photons, _ = _background(words, table, device)
    first_noise, _ = _noise(ops, photons, size, 1)
    first = time.perf_counter() - t0
    bg = min(_background(words, table, device)[1] for _ in range(repeat))
    noise = min(_noise(ops, photons, size, 2 + n)[1] for n in range(repeat))
    return {"device": device, "size": size, "first_call_seconds": first, "background_seconds": bg,
            "noise_seconds": noise, "images_per_second": 1.0 / (bg + noise), "noise_images_per_second": 1.0 / noise,
            "photons_mean": float(photons.mean()), "noise_mean": float(first_noise.mean())}, photons, first_noise


def measure_c_generator(photons, repeat):
    import nanobrag_numba as nb
    times = []
    for n in range(repeat):
        t0 = time.perf_counter()
        nb.noisify(photons, seed=2 + n, pixel_mm=PIXEL_MM, **NOISE)
        times.append(time.perf_counter() - t0)
    return {"device": "cpu, C's generator", "noise_seconds": min(times), "noise_images_per_second": 1.0 / min(times)}


def bench(sim_mode=False, out=None, size=None, repeat=None, gpu=True):
    """The GPU and CPU rows; writes OUT/noise_gpu.md when ``out`` is given. Never raises (an error is recorded).

    ``gpu=False`` measures the CPU rows only (a machine without a GPU).
    """
    import numba
    size = size or (16 if sim_mode else 2048)
    repeat = repeat or (1 if sim_mode else 5)
    work = tempfile.mkdtemp(prefix="noise_gpu_")
    rec = {"size": size, "repeat": repeat, "noise_model": NOISE, "pixel_mm": PIXEL_MM,
           "cpu_threads": numba.get_num_threads(), "rows": []}
    try:
        from bench.nonbragg import water_table
        table = water_table(work)
        if gpu:
            gpu, photons, gpu_noise = measure("cuda", size, repeat, table)
            rec["rows"].append(gpu)
        cpu, cpu_photons, _ = measure("cpu", size, repeat, table)
        rec["rows"].append(cpu)
        rec["rows"].append(measure_c_generator(cpu_photons, min(repeat, 2)))
        if not gpu:
            return rec
        from nanobrag_numba.noise_models import CpuOps
        same, _ = _noise(CpuOps(), photons, size, 1)
        rec["noise_equal_to_cpu"] = bool(np.array_equal(same, gpu_noise))
        rec["background_max_rel_diff_to_cpu"] = float(np.abs(photons.astype(np.float64) - cpu_photons).max()
                                                      / (np.abs(cpu_photons).max() or 1.0))
        rec["gpu_speedup"] = gpu["images_per_second"] / cpu["images_per_second"]
    except Exception as exc:        # the GPU check goes on; the report says what failed
        rec["error"] = "%s: %s" % (type(exc).__name__, exc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if out:
            with open(os.path.join(out, "noise_gpu.md"), "w") as fh:
                fh.write(markdown(rec))
    return rec


def markdown(rec):
    lines = ["## Background + noise, %dx%d (bench/noise_gpu.py)" % (rec["size"], rec["size"]), "",
             "water background (nonBragg kernel) + counter-generator noise: Poisson, read-out 3 ADU, calibration "
             "3 %%, Gaussian PSF 46 um; best of %d; CPU on %d threads" % (rec["repeat"], rec["cpu_threads"]), ""]
    if "error" in rec:
        lines += ["ERROR: " + rec["error"], ""]
    lines += ["| device | background s | noise s | images/s | noise images/s |", "| --- | --- | --- | --- | --- |"]
    for r in rec["rows"]:
        bg = r.get("background_seconds")
        lines.append("| %s | %s | %.4f | %s | %.1f |" % (
            r["device"], "%.4f" % bg if bg is not None else "-", r["noise_seconds"],
            "%.1f" % r["images_per_second"] if "images_per_second" in r else "-", r["noise_images_per_second"]))
    if "noise_equal_to_cpu" in rec:
        lines += ["", "GPU noise image equal to the CPU's (same photons): %s; background max rel diff GPU/CPU %.2e; "
                  "GPU / CPU images/s %.1f" % (rec["noise_equal_to_cpu"], rec["background_max_rel_diff_to_cpu"],
                                               rec["gpu_speedup"])]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int)
    ap.add_argument("--repeat", type=int)
    ap.add_argument("--out", help="folder for noise_gpu.md and noise_gpu.json")
    ap.add_argument("--sim", action="store_true", help="16x16 in numba's CUDA simulator (checks this script)")
    ap.add_argument("--cpu-only", action="store_true", help="the CPU rows only (no GPU here)")
    args = ap.parse_args(argv)
    if args.sim:     # before numba is imported: the simulator runs the kernels (and their functions) in Python
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
        os.environ["NUMBA_DISABLE_JIT"] = "1"
    rec = bench(args.sim, args.out, args.size, args.repeat, gpu=not args.cpu_only)
    if args.out:
        with open(os.path.join(args.out, "noise_gpu.json"), "w") as fh:
            json.dump(rec, fh, indent=1)
    sys.stdout.write(markdown(rec))
    return 1 if "error" in rec else 0


if __name__ == "__main__":
    sys.exit(main())
