"""Noise images of many float images: the generators of ``batch --noise-generator``.

* ``c`` (the default, and the only one for single images, the command
  line's ``-noisefile`` and ``Result.noise_image``): C's serial generator,
  bit for bit the C program's noise image (:class:`nanobrag_numba.crand.CRandom`).
* ``counter``: a counter-based generator (Philox4x32-10 keyed by the noise
  seed, counter = pixel index; Poisson deviates by inversion below a mean
  of 10 and by Hörmann's PTRS from 10 on), so every pixel of every image is
  drawn independently, in one parallel launch on the CPU or on the GPU.
  The algorithm is specified in ``kernels/noise_counter.py`` and
  docs/differences.md; it does not give C's numbers.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import NanoBraggError

GENERATORS = ("c", "counter")


def counter_noise_images(images, seeds: Sequence[int], roi, adc_offset: float, backend: str = "cpu",
                         device_images=None) -> np.ndarray:
    """The counter-based noise images of K float images (one launch).

    Parameters
    ----------
    images : array [K, slow, fast] (or a list of K 2-D arrays)
        The float images (photons per pixel), host arrays.
    seeds : list of int
        The noise seed of each image (the Philox key: the seed modulo 2^64).
    roi : (xmin, xmax, ymin, ymax)
        Inclusive region of interest (as ``Detector.roi``); pixels outside are 0.
    adc_offset : float
        Added to every deviate before the 65535 clip (C's ``-adc``).
    backend : str
        ``cpu`` (all cores) or ``cuda`` (a numba.cuda kernel; no cupy needed).
    device_images : list, optional
        With ``cuda``: the images already on the device (each a float32 row,
        e.g. ``Image.device_image`` of ``render_many`` with cupy), used
        instead of uploading ``images``.

    Returns
    -------
    numpy.ndarray
        uint16 [K, slow, fast].
    """
    stack = images if isinstance(images, np.ndarray) else np.stack([np.asarray(i) for i in images])
    if stack.ndim != 3:
        raise NanoBraggError("counter_noise_images needs K images of the same 2-D shape, got an array of shape %s"
                             % (stack.shape,))
    k, spixels, fpixels = stack.shape
    if len(seeds) != k:
        raise NanoBraggError("counter_noise_images: %d seeds for %d images" % (len(seeds), k))
    from .kernels.noise_counter import philox_keys
    keys = philox_keys(seeds)
    xmin, xmax, ymin, ymax = (int(v) for v in roi)
    if backend == "cuda":
        from .kernels import cuda as kcuda
        flat = None
        if device_images is not None and all(d is not None for d in device_images):
            import cupy
            flat = cupy.stack([cupy.asarray(d).reshape(-1) for d in device_images])
        if flat is None:
            flat = np.ascontiguousarray(stack.reshape(k, spixels * fpixels), dtype=np.float32)
        out = kcuda.noise_images_cuda(flat, keys, fpixels, (xmin, xmax, ymin, ymax), float(adc_offset))
        return out.copy_to_host().reshape(k, spixels, fpixels)
    from .kernels.noise_counter import noise_images_cpu
    flat = np.ascontiguousarray(stack.reshape(k, spixels * fpixels), dtype=np.float32)
    out = np.empty((k, spixels * fpixels), dtype=np.uint16)
    noise_images_cpu(flat, keys, fpixels, xmin, xmax, ymin, ymax, float(adc_offset), out)
    return out.reshape(k, spixels, fpixels)
