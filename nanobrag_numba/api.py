"""Python API: many images in one process, no files unless asked.

    import nanobrag_numba as nb
    sim = nb.Simulator("-hkl P1.hkl -cell 40 42 45 90 90 90 -N 5 -detpixels 256")
    for angle in range(0, 90, 5):
        res = sim.render(misset=(0.0, 0.0, angle / nb.config.RTD))   # Config fields, SI units
        frames.append(res.floatimage)

The kernels compile once per process (and are cached on disk); the HKL table
is read once per file.  ``Result`` gives the C outputs on demand
(``int_image``, ``noise_image``, ``pgm_image``) and ``write`` writes C's
files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np

from .config import Config

Flags = Union[str, Sequence[str]]


def config_from_flags(flags: Flags, **changes) -> Config:
    """A Config from a nanoBragg command line (string or list of words).

    Keyword arguments then change Config fields (SI units), e.g.
    ``config_from_flags("-hkl P1.hkl -cell 40 42 45 90 90 90", device="cpu")``.
    """
    cfg = Config.from_args(flags)
    return cfg.replace(**changes) if changes else cfg


@dataclass
class Result:
    """One simulated image and C's derived outputs."""

    floatimage: np.ndarray
    prep: object = field(repr=False)
    image: object = field(repr=False)

    @property
    def stats(self):
        """C's max_I, mean, rms and rmsd of the float image."""
        from .simulator import image_stats
        return image_stats(self.prep, self.floatimage)

    def int_image(self, scale: Optional[float] = None) -> np.ndarray:
        """The SMV integer image (C's default scale 55000/max_I unless given)."""
        from .simulator import int_image
        if scale is None or scale <= 0:
            m = self.stats.max_I
            scale = 55000.0 / m if m > 0 else 1.0
        return int_image(self.prep, self.floatimage, scale)

    def noise_image(self, seed: Optional[int] = None) -> np.ndarray:
        """The Poisson-noise image with C's generator (same seed, same image as C)."""
        from .crand import CRandom
        cfg = self.prep.cfg
        noise, _photons, _over = CRandom().noise(self.floatimage, self.prep.det.roi, cfg.adc_offset,
                                                 cfg.seed if seed is None else seed)
        return noise

    def write(self, directory: str = ".", log=None):
        """Write C's files (names from the Config) into ``directory``."""
        from .simulator import write_outputs
        cfg = self.prep.cfg
        names = {}
        for key in ("floatfile", "intfile", "pgmfile", "noisefile"):
            name = getattr(cfg, key)
            names[key] = os.path.join(directory, name) if name else None
        prep = _with_cfg(self.prep, cfg.replace(**names))
        return write_outputs(prep, self.image, log or (lambda s: None))


def _with_cfg(prep, cfg):
    import copy
    new = copy.copy(prep)
    new.cfg = cfg
    return new


class Simulator:
    """Renders images from one base configuration, reusing compiled kernels and tables.

    Parameters
    ----------
    base : Config or flags
        The configuration (or a nanoBragg command line) every image starts from.
    device : str
        ``cpu``, ``cuda`` or ``auto``.
    log : callable, optional
        Receives C's set-up lines (silent by default).
    """

    def __init__(self, base: Union[Config, Flags], device: str = "auto", log=None):
        self.base = base if isinstance(base, Config) else config_from_flags(base)
        self.device = device
        self.log = log or (lambda s: None)
        self._hkl_cache = {}       # HKL tables read, by file
        self._hkl_device = {}      # and their copies on the GPU

    def prepare(self, **changes):
        """The prepared tables for the base Config with some fields changed.

        The HKL table is read (and uploaded to the GPU) once per file and
        Simulator; compiled kernels are shared by the whole process.
        """
        from .simulator import prepare
        cfg = self.base.replace(device=self.device, **changes)
        return prepare(cfg, self.log, hkl_cache=self._hkl_cache, write_dump=False, hkl_device=self._hkl_device)

    def render(self, **changes) -> Result:
        """Render one image; keyword arguments change Config fields (SI units)."""
        from .simulator import render
        prep = self.prepare(**changes)
        image = render(prep, prep.cfg.device)
        return Result(floatimage=image.floatimage, prep=prep, image=image)


def simulate(cfg: Union[Config, Flags], device: str = "auto", log=None) -> Result:
    """Render one image from a Config or a nanoBragg command line."""
    return Simulator(cfg, device=device, log=log).render()


# ---------------------------------------------------------------- writers
def _image(result_or_array):
    return result_or_array.floatimage if isinstance(result_or_array, Result) else np.asarray(result_or_array)


def write_float(path, image) -> None:
    """Write a float image (a Result or an array) as C's raw float32 ``floatimage.bin``."""
    from .io.images import write_float_image
    write_float_image(path, _image(image))


def write_tiff(path, image) -> None:
    """Write a float image (a Result or an array) as a float32 TIFF (tifffile)."""
    from .io.images import write_tiff as _write_tiff
    _write_tiff(path, _image(image))


def write_smv(path, result: Result, data: Optional[np.ndarray] = None, noise: bool = False) -> None:
    """Write an SMV image with C's header for ``result``'s geometry.

    ``data`` defaults to ``result.int_image()``; pass ``result.noise_image()``
    (and ``noise=True``, which only changes C's DENZO header line) for the
    noise image.
    """
    from .geometry import smv_header_values
    from .io.smv import format_smv_header, write_smv as _write_smv
    prep = result.prep
    header = format_smv_header(**smv_header_values(prep.det, prep.cfg.lambda0, prep.cfg.phi0,
                                                   prep.sampling.osc, noise))
    _write_smv(path, result.int_image() if data is None else data, header)


def write_pgm(path, result: Result, scale: Optional[float] = None) -> None:
    """Write C's 8-bit PGM of ``result`` (scale 250/(5 rmsd) unless given)."""
    from .io.images import write_pgm as _write_pgm
    from .simulator import pgm_image
    if scale is None or scale <= 0:
        rmsd = result.stats.rmsd
        scale = 250.0 / (5.0 * rmsd) if rmsd > 0 else 1.0
    _write_pgm(path, pgm_image(result.prep, result.floatimage, scale), scale)


def noise_image(result: Result, seed: Optional[int] = None) -> np.ndarray:
    """C's Poisson-noise image of ``result`` (same seed as C: same image)."""
    return result.noise_image(seed)
