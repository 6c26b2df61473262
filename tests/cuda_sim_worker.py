"""Run the CUDA kernel in numba's CUDA simulator (pure Python) for test_cuda.py.

Invoked as a subprocess with NUMBA_ENABLE_CUDASIM=1 and NUMBA_DISABLE_JIT=1:
``python cuda_sim_worker.py OUT.npz WORKDIR FLAGS...``; renders through the
CUDA back end and saves the kernel's rows.

``python cuda_sim_worker.py --many OUT.npz WORKDIR OVERRIDES_JSON FLAGS...``
(test_render_many.py): the many-images kernel for the list of overrides
(rows, oob and the number of launches), ``Simulator.render_many`` on the
CUDA back end (images) and the counter-based noise of those images on the
device (seeds 11, 12, ..., adc 40).
"""
import os
import sys

import numpy as np


def many(out, workdir, overrides, flags):
    import json
    os.chdir(workdir)
    import nanobrag_numba as nb
    from nanobrag_numba.backends import run_kernel_many
    from nanobrag_numba.kernels import cuda as kcuda
    from nanobrag_numba.noise import counter_noise_images
    kcuda.THREADS_PER_BLOCK = 16
    overrides = json.loads(overrides)
    launches = []
    launch = kcuda.render_many_cuda

    def counted(*args, **kwargs):
        launches.append(args[3])
        return launch(*args, **kwargs)
    kcuda.render_many_cuda = counted
    sim = nb.Simulator(flags, device="cpu")
    preps = [sim.prepare(**o) for o in overrides]
    rows, oob, _xp = run_kernel_many("cuda", preps, preps[0].params)
    results = sim.render_many(overrides, device="cuda")
    assert all(r.image.backend == "cuda" for r in results)
    images = np.stack([r.floatimage for r in results])
    noise = counter_noise_images(images, [11 + i for i in range(len(results))], preps[0].det.roi, 40.0,
                                 backend="cuda")
    np.savez(out, rows=rows, oob=oob, images=images, noise=noise, launches=np.array(launches))


def main():
    if sys.argv[1] == "--many":
        return many(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
    out, workdir, flags = sys.argv[1], sys.argv[2], sys.argv[3:]
    os.chdir(workdir)
    import nanobrag_numba as nb
    from nanobrag_numba.backends import run_kernel
    from nanobrag_numba.kernels import cuda as kcuda
    kcuda.THREADS_PER_BLOCK = 16    # several blocks even on tiny images
    prep = nb.Simulator(flags, device="cpu").prepare()
    rows, oob, _xp = run_kernel("cuda", prep, prep.params)
    # the compile-time variant that was launched (kernels/variants.py)
    np.savez(out, rows=rows, oob=oob, variant=np.array(kcuda.last_variant, dtype=np.int64))


if __name__ == "__main__":
    main()
