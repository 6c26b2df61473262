"""CUDA kernels of noisify's detector noise with the counter-based generator (``noisify_counter.py``).

One GPU thread per pixel (per row for the row sums); every kernel calls the
``@njit(inline="always")`` per-pixel functions the CPU drivers call, so the
CPU and numba's CUDA simulator give identical integers.  :class:`CudaOps`
is the device half of ``noise_models._counter_pipeline`` (arrays stay on the
device between the steps; only the row sums come back).  Built on first use
in a process.
"""
import os

import numpy as np
from numba import cuda

from . import noisify_counter as K

THREADS_PER_BLOCK = int(os.environ.get("NANOBRAGG_CUDA_TPB", "128"))
_KERNELS = {}


def _build():
    counts_pixel, pixel_index = K.counts_pixel, K.pixel_index
    psf_setup_pixel, edge_wrap_source = K.psf_setup_pixel, K.edge_wrap_source
    row_sum_max, psf_pixel, adu_pixel = K.row_sum_max, K.psf_pixel, K.adu_pixel

    @cuda.jit
    def counts_kernel(photons, counts, xpixels, ox, oy, stride, flicker, calibration, k0, k1, c0, c1):
        i = cuda.grid(1)
        if i < photons.shape[0]:
            counts_pixel(photons, counts, i, pixel_index(i, xpixels, ox, oy, stride), flicker, calibration,
                         k0, k1, c0, c1)

    @cuda.jit
    def psf_setup_kernel(image, radii, lost, kind, fwhm_pixels, user_radius, maxwidth):
        i = cuda.grid(1)
        if i < image.shape[0]:
            psf_setup_pixel(image, radii, lost, i, kind, fwhm_pixels, user_radius, maxwidth)

    @cuda.jit
    def edge_wrap_kernel(image, radii, table, xpixels, ypixels, touched):
        i = cuda.grid(1)
        if i < image.shape[0]:
            edge_wrap_source(image, radii, table, xpixels, ypixels, i, touched)

    @cuda.jit
    def row_stats_kernel(values, xpixels, sums, maxima):
        y = cuda.grid(1)
        if y < sums.shape[0]:
            row_sum_max(values, y, xpixels, sums, maxima)

    @cuda.jit
    def psf_kernel(image, out, xpixels, ypixels, table, radii, rmax, edge_wrap, add):
        i = cuda.grid(1)
        if i < image.shape[0]:
            psf_pixel(image, out, i, xpixels, ypixels, table, radii, rmax, edge_wrap, add)

    @cuda.jit
    def adu_kernel(counts, xpixels, ox, oy, stride, gain, adc, readout, k0, k1, wrap_negative, n16, n32, flags):
        i = cuda.grid(1)
        if i < counts.shape[0]:
            adu_pixel(counts, i, pixel_index(i, xpixels, ox, oy, stride), gain, adc, readout, k0, k1,
                      wrap_negative, n16, n32, flags)

    _KERNELS.update(counts=counts_kernel, psf_setup=psf_setup_kernel, edge_wrap=edge_wrap_kernel,
                    row_stats=row_stats_kernel, psf=psf_kernel, adu=adu_kernel)


class CudaOps:
    """The steps of the counter noise pipeline on the device (numba device arrays)."""

    name = "cuda"

    def __init__(self, threads_per_block=None):
        if not _KERNELS:
            _build()
        self.tpb = threads_per_block or THREADS_PER_BLOCK

    def _launch(self, name, n, *args):
        if n:
            _KERNELS[name][(n + self.tpb - 1) // self.tpb, self.tpb](*args)

    def asarray(self, a, dtype=None):
        if isinstance(a, np.ndarray):
            return cuda.to_device(np.ascontiguousarray(a, dtype=dtype or a.dtype))
        if not cuda.is_cuda_array(a):
            raise TypeError("not a device array")
        return a if hasattr(a, "copy_to_host") else cuda.as_cuda_array(a)

    def empty(self, n, dtype):
        return cuda.device_array(n, dtype=dtype)

    def to_host(self, a):
        return a.copy_to_host()

    def counts(self, photons, counts, *args):
        self._launch("counts", photons.shape[0], photons, counts, *args)

    def psf_setup(self, image, radii, lost, *args):
        self._launch("psf_setup", image.shape[0], image, radii, lost, *args)

    def edge_wrap(self, image, radii, table, xpixels, ypixels, touched):
        self._launch("edge_wrap", image.shape[0], image, radii, self.asarray(table), xpixels, ypixels, touched)

    def row_stats(self, values, xpixels, ypixels):
        sums = cuda.device_array(ypixels, dtype=np.float64)
        maxima = cuda.device_array(ypixels, dtype=np.float64)
        self._launch("row_stats", ypixels, values, xpixels, sums, maxima)
        return sums.copy_to_host(), maxima.copy_to_host()

    def psf(self, image, out, xpixels, ypixels, table, *args):
        self._launch("psf", image.shape[0], image, out, xpixels, ypixels, self.asarray(table), *args)

    def adu(self, counts, *args):
        self._launch("adu", counts.shape[0], counts, *args)

    def synchronize(self):
        cuda.synchronize()
