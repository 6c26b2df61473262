"""Run the background's CUDA kernel in numba's CUDA simulator for test_nonbragg.py.

``python cuda_background_worker.py OUT.npz FLAGS...`` (with NUMBA_ENABLE_CUDASIM=1): sets up the
nonBragg run of FLAGS on the table in OUT.npz.table.npy and saves the kernel's rows.
"""
import sys

import numpy as np


def main():
    out, flags = sys.argv[1], sys.argv[2:]
    from nanobrag_numba import amorphous as A
    from nanobrag_numba import nonbragg as NB
    from nanobrag_numba.kernels import cuda_background
    rows = np.load(out + ".table.npy")
    setup = NB.prepare(NB.parse_args(flags, need_stol=False), log=lambda s: None, table=A.stol_table(rows))
    t = setup.table
    p = A.bg_params(setup.det, setup.oversample, setup.cfg.point_pixel, setup.cfg.curved_detector,
                    setup.cfg.nopolar, setup.cfg.polarization, setup.sources.shape[0], t.nstols)
    res = cuda_background.render(p, setup.sources, setup.weights, t.stol_of, t.F_of, 7, threads_per_block=16)
    np.savez(out, rows=res)


if __name__ == "__main__":
    main()
