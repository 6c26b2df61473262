"""Run noisify's counter-generator noise models on numba's CUDA simulator for test_noisify_counter.py.

``python cuda_noisify_worker.py OUT.npz`` (with NUMBA_ENABLE_CUDASIM=1, NUMBA_DISABLE_JIT=1): reads the
image and the cases (JSON keyword sets of ``nanobrag_numba.noisify``) from OUT.npz.in.npz, runs each with
``generator="counter", device="cuda"`` and saves every case's noise image, counts, totals, notes and log.
"""
import json
import sys

import numpy as np


def main():
    out = sys.argv[1]
    import nanobrag_numba as nb
    from nanobrag_numba.kernels import cuda_noisify
    cuda_noisify.THREADS_PER_BLOCK = 16      # several blocks even on tiny images
    launched = []
    launch = cuda_noisify.CudaOps._launch

    def counted(self, name, n, *args):
        launched.append(name)
        return launch(self, name, n, *args)
    cuda_noisify.CudaOps._launch = counted
    data = np.load(out + ".in.npz")
    image = data["image"]
    cases = json.loads(str(data["cases"]))
    saved = {}
    for n, kw in enumerate(cases):
        r = nb.noisify(image, generator="counter", device="cuda", **kw)
        saved["noise%d" % n] = r.noise_image
        saved["counts%d" % n] = r.counts
        saved["meta%d" % n] = np.array(json.dumps([r.photons_before_psf, r.photons_total, r.overloads, r.notes,
                                                   r.log]))
    np.savez(out, launched=np.array(sorted(set(launched))), **saved)


if __name__ == "__main__":
    main()
