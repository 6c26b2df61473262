"""Run the CUDA kernel in numba's CUDA simulator (pure Python) for test_cuda.py.

Invoked as a subprocess with NUMBA_ENABLE_CUDASIM=1 and NUMBA_DISABLE_JIT=1:
``python cuda_sim_worker.py OUT.npz WORKDIR FLAGS...``; renders through the
CUDA back end and saves the kernel's rows.
"""
import os
import sys

import numpy as np


def main():
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
