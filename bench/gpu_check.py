"""The GPU check of issue 3, in one process so that the kernels compile once.

    python bench/gpu_check.py OUTDIR [--sim] [--skip-tests]

1. GPU tests (pytest, marker ``gpu``): golden parity on the device with and
   without ``-c_quirks`` (float64) and the single-precision correlation bar.
2. Single vs double precision on every non-quirk golden case: correlation
   and max relative difference (the numbers of docs/precision.md).
3. Benchmark G1 (bench/cases.py) in float64 and float32: kernel seconds,
   inner evaluations per second, and the CPU kernel's rate on the same
   machine (measured on a band of rows, all cores) for the ratio.
4. Many images per launch (``Simulator.render_many``): images/s of B5
   (256x256, N=10, 5 mosaic domains, uniform random orientations, 64 per
   launch) and of 1024x1024 single shots (B1's flags, random orientations,
   4 per launch), each with its counter-based noise image drawn on the
   device (``--noise-generator counter``); the host set-up
   (``Simulator.prepare_many``: one shared set-up per K orientations), the
   launches and the noise are timed apart (images/s with and without the
   set-up), and one B5 image is compared
   with the CPU's render of it.
Writes OUTDIR/gpu_report.md and gpu_report.json.  ``--sim`` runs a tiny
version in numba's CUDA simulator to check the script itself.
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)


def log(msg):
    print("[gpu_check] " + msg, flush=True)


def device_info():
    from numba import cuda
    dev = cuda.get_current_device()
    name = getattr(dev, "name", "CUDA simulator")
    name = name.decode() if isinstance(name, bytes) else name
    return {"name": str(name), "compute_capability": list(getattr(dev, "compute_capability", (0, 0)))}


def run_gpu_tests(out):
    import pytest
    t0 = time.time()
    rc = pytest.main(["-q", "-m", "gpu", "-p", "no:cacheprovider", os.path.join(ROOT, "tests", "test_cuda.py"),
                      "--junitxml", os.path.join(out, "gpu_tests.xml")])
    return {"exit_code": int(rc), "seconds": round(time.time() - t0, 1)}


def precision_table(golden_root):
    """Single vs double on the device for every non-quirk golden case (and both vs C)."""
    import gzip
    import tempfile
    import nanobrag_numba as nb
    corrected = {"phi0_carryover", "oversample_running_multiply", "thick_last_layer_capture",
                 "interpolate_global_disable", "water_double_scaling", "twotheta_axis_substring",
                 "misset_seed_substring", "pix0_vector_ignored"}
    with open(os.path.join(golden_root, "manifest.json")) as fh:
        cases = [c for c in json.load(fh)["cases"] if c["c_quirk"] not in corrected]
    rows = []
    cwd = os.getcwd()
    for case in cases:
        work = tempfile.mkdtemp(prefix="gpuprec_")
        os.symlink(os.path.join(golden_root, "inputs"), os.path.join(work, "inputs"))
        for dst, src in (case.get("prestage") or {}).items():
            with open(os.path.join(golden_root, src), "rb") as a, open(os.path.join(work, dst), "wb") as b:
                b.write(a.read())
        os.chdir(work)
        try:
            sim = nb.Simulator(list(case["args"]), device="cuda")
            d = sim.render().floatimage.astype(np.float64)
            s = sim.render(precision="single").floatimage.astype(np.float64)
        finally:
            os.chdir(cwd)
        with gzip.open(os.path.join(golden_root, case["outputs"]["float"])) as fh:
            ref = np.frombuffer(fh.read(), dtype="<f4").reshape(case["shape"]).astype(np.float64)
        m = np.abs(d).max() or 1.0
        rows.append({"case": case["id"],
                     "corr_single_double": float(np.corrcoef(d.ravel(), s.ravel())[0, 1]),
                     "maxrel_single_double": float(np.abs(s - d).max() / m),
                     "corr_single_c": float(np.corrcoef(ref.ravel(), s.ravel())[0, 1]),
                     "maxrel_double_c": float(np.abs(d - ref).max() / (np.abs(ref).max() or 1.0))})
    return rows


def bench_g1(sim_mode):
    """G1 on the GPU in both precisions, and the CPU kernel's rate for the ratio."""
    import numba
    import nanobrag_numba as nb
    from nanobrag_numba.backends import run_kernel
    from nanobrag_numba.kernels import cuda as kcuda
    from bench import cases as bc
    from bench.make_hkl import ensure_hkl
    hkl = ensure_hkl()
    words = bc.CASES["G1"].words(hkl)
    if sim_mode:
        words = [w if w != "2048" else "4" for w in words]
        words = [w if w not in ("10",) else "2" for w in words]
    sim = nb.Simulator(words, device="cuda")
    result = {"flags": " ".join(words)}
    for precision in ("double", "single"):
        prep = sim.prepare(precision=precision)
        s = prep.sampling
        evals = (prep.det.fpixels * prep.det.spixels * prep.oversample ** 2 * prep.sources.shape[0]
                 * s.phisteps * s.mosaic_domains * s.thicksteps)
        t0 = time.perf_counter()
        run_kernel("cuda", prep, prep.params)            # compile (first time) and upload the tables
        first = time.perf_counter() - t0
        times = []
        for _ in range(1 if sim_mode else 3):
            t0 = time.perf_counter()
            tables = prep.device_tables[precision]
            params = prep.params
            if precision == "single":
                from nanobrag_numba.kernels.physics import make_kparams
                params = make_kparams(np.float32, **params._asdict())
            kcuda.render_cuda(params, tables, prep.det.fpixels * prep.det.spixels, precision)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        image = nb.simulator.render(prep, "cuda")
        whole = time.perf_counter() - t0
        kernel = min(times)
        result[precision] = {"evaluations": int(evals), "kernel_seconds": kernel, "first_call_seconds": first,
                             "render_seconds": whole, "evals_per_second": evals / kernel,
                             "max_I": float(image.floatimage.max())}
        log("G1 %s: %.3f s kernel, %.3g evaluations/s" % (precision, kernel, evals / kernel))
    # CPU kernel on a band of rows (the whole image would take minutes), all cores
    rows = 4 if sim_mode else 32
    prep = sim.prepare(precision="double", roi=(0, 10 ** 9, 0, rows - 1))
    run_kernel("cpu", prep, prep.params)  # compile/load
    t0 = time.perf_counter()
    run_kernel("cpu", prep, prep.params)
    cpu_s = time.perf_counter() - t0
    s = prep.sampling
    cpu_evals = (prep.det.fpixels * rows * prep.oversample ** 2 * prep.sources.shape[0] * s.phisteps
                 * s.mosaic_domains * s.thicksteps)
    result["cpu"] = {"threads": numba.get_num_threads(), "rows": rows, "seconds": cpu_s,
                     "evals_per_second": cpu_evals / cpu_s}
    for precision in ("double", "single"):
        result[precision]["ratio_to_cpu"] = result[precision]["evals_per_second"] / result["cpu"]["evals_per_second"]
    return result


#: (case, images per launch, images timed) of the render_many benchmark; --sim: tiny versions
MANY_PLANS = (("B5", 64, 2048), ("B1", 4, 32))
MANY_PLANS_SIM = (("B5", 2, 2), ("B1", 2, 2))


def _sim_words(words):
    """A tiny version of a case for the CUDA simulator (4x4 pixels, N=2, 2 domains)."""
    out = list(words)
    for flag, value in (("-detpixels", "4"), ("-N", "2"), ("-mosaic_domains", "2")):
        if flag in out:
            out[out.index(flag) + 1] = value
    return out


def bench_many(sim_mode):
    """Images/s through Simulator.render_many with counter-based noise on the device (B5 and 1024x1024)."""
    import nanobrag_numba as nb
    from nanobrag_numba import batch
    from nanobrag_numba.config import RTD
    from nanobrag_numba.noise import counter_noise_images
    from bench import cases as bc
    from bench.make_hkl import ensure_hkl
    hkl = ensure_hkl()
    result = {}
    for name, k, total in (MANY_PLANS_SIM if sim_mode else MANY_PLANS):
        words = bc.CASES[name].words(hkl)
        if sim_mode:
            words = _sim_words(words)
        sim = nb.Simulator(words, device="cuda")
        angles = batch.random_orientations(total + k, 1)
        overrides = [{"misset": tuple(a / RTD for a in m), "misset_random": False} for m in angles]
        seeds = list(range(1, total + k + 1))

        def one_launch(lo):
            t0 = time.perf_counter()
            preps = sim.prepare_many(overrides[lo:lo + k])     # the set-up shared by the K orientations
            t1 = time.perf_counter()
            results = sim.render_prepared(preps, keep_device=True)
            t2 = time.perf_counter()
            prep = results[0].prep
            noise = counter_noise_images([r.floatimage for r in results], seeds[lo:lo + k], prep.det.roi,
                                         prep.cfg.adc_offset, backend="cuda",
                                         device_images=[r.image.device_image for r in results])
            t3 = time.perf_counter()
            return results, noise, (t1 - t0, t2 - t1, t3 - t2)

        t0 = time.perf_counter()
        warm, warm_noise, _ = one_launch(0)           # compiles the kernels, uploads the HKL table
        first_s = time.perf_counter() - t0
        spent = [0.0, 0.0, 0.0]
        for lo in range(k, k + total, k):
            _r, _n, times = one_launch(lo)
            spent = [a + b for a, b in zip(spent, times)]
        prep_s, render_s, noise_s = spent
        rec = {"flags": " ".join(words), "images": total, "images_per_launch": k, "first_launch_seconds": first_s,
               "prepare_seconds": prep_s, "render_seconds": render_s, "noise_seconds": noise_s,
               "images_per_second": total / (prep_s + render_s + noise_s),
               "images_per_second_device": total / (render_s + noise_s),
               "cupy": _has_cupy(),
               "max_I_first": float(warm[0].floatimage.max()), "noise_max_first": int(warm_noise[0].max())}
        if name == "B5":
            cpu = sim.render(device="cpu", **overrides[0]).floatimage.astype(np.float64)
            gpu = warm[0].floatimage.astype(np.float64)
            rec["max_rel_diff_to_cpu"] = float(np.abs(gpu - cpu).max() / (np.abs(cpu).max() or 1.0))
            rec["noise_equal_to_cpu"] = bool(np.array_equal(
                warm_noise[0], counter_noise_images(gpu[None].astype(np.float32), seeds[:1], warm[0].prep.det.roi,
                                                    warm[0].prep.cfg.adc_offset, backend="cpu")[0]))
        result[name] = rec
        log("render_many %s: %d images, %d per launch: %.0f images/s (%.0f on the device; set-up %.1f ms/image)"
            % (name, total, k, rec["images_per_second"], rec["images_per_second_device"], 1000 * prep_s / total))
    return result


def _has_cupy():
    try:
        import cupy  # noqa: F401
        return True
    except Exception:
        return False


def write_report(out, report):
    with open(os.path.join(out, "gpu_report.json"), "w") as fh:
        json.dump(report, fh, indent=1)
    lines = ["# GPU check", "", "- device: %s (compute capability %s)" % (report["device"]["name"],
                                                                          report["device"]["compute_capability"]),
             "- host: %s, %s CPU cores; python %s" % (platform.node(), os.cpu_count(), platform.python_version()),
             "- commit: %s; date %s" % (report["commit"], report["date"]), ""]
    if "tests" in report:
        lines += ["## GPU tests", "", "pytest -m gpu tests/test_cuda.py: exit code %d in %.0f s (junit in "
                  "gpu_tests.xml)" % (report["tests"]["exit_code"], report["tests"]["seconds"]), ""]
    if report.get("precision"):
        rows = report["precision"]
        lines += ["## Single vs double precision (golden non-quirk cases)", "",
                  "| case | corr single/double | max rel single-double | corr single/C | max rel double-C |",
                  "| --- | --- | --- | --- | --- |"]
        for r in rows:
            lines.append("| %s | %.7f | %.2e | %.7f | %.2e |" % (r["case"], r["corr_single_double"],
                                                              r["maxrel_single_double"], r["corr_single_c"],
                                                              r["maxrel_double_c"]))
        lines += ["", "worst: corr single/C %.7f, max rel single-double %.2e" % (
            min(r["corr_single_c"] for r in rows), max(r["maxrel_single_double"] for r in rows)), ""]
    b = report.get("bench")
    if b:
        lines += ["## Benchmark G1", "", "`%s`" % b["flags"], "",
                  "| precision | evaluations | kernel s | evaluations/s | ratio to CPU kernel |",
                  "| --- | --- | --- | --- | --- |"]
        for precision in ("double", "single"):
            r = b[precision]
            lines.append("| %s | %.3g | %.3f | %.3g | %.0f |" % (precision, r["evaluations"], r["kernel_seconds"],
                                                              r["evals_per_second"], r["ratio_to_cpu"]))
        c = b["cpu"]
        lines += ["", "CPU kernel: %.3g evaluations/s on %d threads (first %d rows of G1)." % (
            c["evals_per_second"], c["threads"], c["rows"]), ""]
    m = report.get("many")
    if m:
        lines += ["## Many images per launch (Simulator.render_many, counter-based noise on the device)", "",
                  "| case | images | per launch | images/s | images/s on the device | set-up ms/image | "
                  "render s | noise s |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, r in m.items():
            lines.append("| %s | %d | %d | %.0f | %.0f | %.2f | %.3f | %.3f |" % (
                name, r["images"], r["images_per_launch"], r["images_per_second"], r["images_per_second_device"],
                1000 * r["prepare_seconds"] / r["images"], r["render_seconds"], r["noise_seconds"]))
        if "B5" in m and "max_rel_diff_to_cpu" in m["B5"]:
            lines += ["", "B5 image 0: max rel diff to the CPU render %.2e; counter noise equal to the CPU's: %s"
                      % (m["B5"]["max_rel_diff_to_cpu"], m["B5"]["noise_equal_to_cpu"])]
        lines += ["", "images/s counts the host set-up (Simulator.prepare_many of each launch's images, "
                  "Python), the launches and the noise; 'on the device' leaves the set-up out.", ""]
    with open(os.path.join(out, "gpu_report.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--sim", action="store_true", help="tiny run in the CUDA simulator (checks this script)")
    ap.add_argument("--skip-tests", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.sim:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    import subprocess
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip() or "unknown"
    report = {"commit": commit, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "device": device_info()}
    golden_root = os.environ.get("NANOBRAGG_GOLDEN") or os.path.join(os.path.dirname(ROOT), "shared", "golden")
    if not args.sim and not args.skip_tests:
        log("GPU tests ...")
        report["tests"] = run_gpu_tests(args.out)
        write_report(args.out, report)
    if not args.sim and os.path.exists(os.path.join(golden_root, "manifest.json")):
        log("single vs double on the golden cases ...")
        report["precision"] = precision_table(golden_root)
        write_report(args.out, report)
    log("benchmark G1 ...")
    report["bench"] = bench_g1(args.sim)
    write_report(args.out, report)
    log("render_many: B5 and 1024x1024 single shots ...")
    report["many"] = bench_many(args.sim)
    write_report(args.out, report)
    log("background + noise 2048x2048 (bench/noise_gpu.py: OUTDIR/noise_gpu.md) ...")
    from bench import noise_gpu
    report["noise_gpu"] = noise_gpu.bench(args.sim, out=args.out)
    write_report(args.out, report)
    log("report: %s" % os.path.join(args.out, "gpu_report.md"))
    return 0 if report.get("tests", {}).get("exit_code", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
