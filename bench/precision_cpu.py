"""Single vs double precision of the physics, measured without a GPU.

Compiles the float32 physics (kernels/physics32.py, the same source with
float32 constants and the delta-form sincg) for the CPU and renders every
non-quirk golden case with it; prints, per case, the correlation and the
maximum relative difference against our float64 image and against C's.
The GPU's own float32 numbers come from bench/gpu_check.py.

    python bench/precision_cpu.py [--markdown PATH]
"""
import argparse
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--markdown")
    args = ap.parse_args(argv)
    import golden
    import nanobrag_numba as nb
    from test_cuda import render_single_on_cpu
    golden.require()
    rows = []
    cwd = os.getcwd()
    for case in golden.cases():
        if case["c_quirk"] in golden.CORRECTED:
            continue
        work = tempfile.mkdtemp(prefix="prec_")
        from pathlib import Path
        golden.stage(case, Path(work))
        os.chdir(work)
        try:
            sim = nb.Simulator(list(case["args"]), device="cpu")
            d = sim.render().floatimage.astype(np.float64)
            s = render_single_on_cpu(sim.prepare()).astype(np.float64)
        finally:
            os.chdir(cwd)
        ref = golden.float_image(case).astype(np.float64)
        m = np.abs(d).max() or 1.0
        rows.append((case["id"], np.corrcoef(d.ravel(), s.ravel())[0, 1], np.abs(s - d).max() / m,
                     np.corrcoef(ref.ravel(), s.ravel())[0, 1]))
    lines = ["| case | 1 - corr single/double | max rel diff single-double | 1 - corr single/C |",
             "| --- | --- | --- | --- |"]
    lines += ["| %s | %.1e | %.2e | %.1e |" % (r[0], 1 - r[1], r[2], 1 - r[3]) for r in rows]
    lines += ["", "cases: %d; worst correlation with C 1 - %.1e (%s); largest max rel diff %.2e (%s)" % (
        len(rows), 1 - min(r[3] for r in rows), min(rows, key=lambda r: r[3])[0],
        max(r[2] for r in rows), max(rows, key=lambda r: r[2])[0])]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
