"""nanobrag-numba: nanoBragg's diffraction images from Numba CPU and CUDA kernels.

Command line: ``nanobrag-numba`` (or ``nanoBragg``) takes the C program's
flags and writes the C program's files.  Python::

    import nanobrag_numba as nb
    cfg = nb.config_from_flags("-hkl P1.hkl -cell 40 42 45 90 90 90 -N 5 -detpixels 64")
    result = nb.simulate(cfg)            # float32 image in result.floatimage
    noisy = nb.noisify(result, readout=3, psf="gauss", seed=1)   # the C program noisify's images

Heavy modules (Numba kernels) are imported on first use.
"""
__version__ = "0.1.0"

_API = ("config_from_flags", "simulate", "Simulator", "Result", "write_float", "write_tiff", "write_smv",
        "write_cbf", "write_nxs", "write_pgm", "noise_image")
_NOISE = ("noisify", "NoisifyResult")
__all__ = ["Config", "NanoBraggError", "background", "__version__"] + list(_API) + list(_NOISE)


def __getattr__(name):
    if name == "Config":
        from .config import Config
        return Config
    if name == "NanoBraggError":
        from .errors import NanoBraggError
        return NanoBraggError
    if name in _NOISE:
        from . import noise_models
        return getattr(noise_models, name)
    if name == "background":
        from .amorphous import background
        return background
    if name in _API:
        from . import api
        return getattr(api, name)
    raise AttributeError("module 'nanobrag_numba' has no attribute %r" % name)
