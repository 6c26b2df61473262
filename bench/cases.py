"""The benchmark cases: each one is a nanoBragg command line.

Every case uses the same structure factors: a deterministic P1 list of a
lysozyme-like cell (79.1 79.1 38.4 90 90 90) to 2 A, written by
``bench/make_hkl.py`` into the git-ignored ``bench/out/``.  ``{hkl}`` in a
command line is replaced by that file's path.

Flags common to every case (``COMMON``): ``-noprogress`` so that both
programs run their pixel loop in one pass (our progress meter splits the
kernel call into 20 chunks), and ``-seed 1`` so that the noise image is the
same from run to run.  Both programs get exactly the same words.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping

CELL = (79.1, 79.1, 38.4, 90.0, 90.0, 90.0)
HKL_DMIN = 2.0          # A
HKL_SEED = 1
HKL_F000 = 0.0          # no direct-beam spot: the Bragg spots dominate the image correlation check
HKL_NAME = "P1_lyso_2A.hkl"

XTAL = "-hkl {hkl} -cell 79.1 79.1 38.4 90 90 90"
COMMON = "-noprogress -seed 1"


@dataclass(frozen=True)
class Case:
    """One benchmark case.

    name : short id (B1, ...)
    title : what it measures, one line
    flags : the nanoBragg command line, ``{hkl}`` standing for the HKL file
    gpu : a GPU-sized case, not in the default CPU list
    run_c : run the C reference for it (off where C would take hours)
    cold_start : also time a start with an empty Numba cache
    """

    name: str
    title: str
    flags: str
    gpu: bool = False
    run_c: bool = True
    cold_start: bool = False

    def words(self, hkl: str) -> List[str]:
        """The command line as a list of words, with the HKL path filled in."""
        return (self.flags.format(hkl=hkl) + " " + COMMON).split()


_CASES = [
    Case("B1", "single shot, 1024x1024, N=10, 10 mosaic domains",
         XTAL + " -misset 10 20 30 -N 10 -distance 150 -detpixels 1024 -pixel 0.1 "
                "-mosaic 0.1 -mosaic_domains 10 -oversample 1"),
    Case("B2", "rotation: 10 phi steps, divergence x dispersion sources, oversample 2, 256x256",
         XTAL + " -misset 10 20 30 -N 10 -distance 150 -detpixels 256 -pixel 0.4 "
                "-phi 0.5 -osc 1 -phisteps 10 -hdivrange 0.5 -vdivrange 0.5 -divsteps 3 -square_div "
                "-dispersion 0.5 -dispsteps 3 -mosaic 0.2 -mosaic_domains 5 -oversample 2"),
    Case("B3", "SAXS: N=1 (tricubic interpolation of F), 256x256 at 300 mm",
         XTAL + " -misset 10 20 30 -N 1 -distance 300 -detpixels 256 -pixel 0.4"),
    Case("B4", "tiny: 64x64, default settings (start-up time)",
         XTAL + " -detpixels 64", cold_start=True),
    Case("B5", "many images: 256x256, N=10, 5 mosaic domains, one random orientation per image "
               "(Simulator.render_many; bench/gpu_check.py draws the orientations)",
         XTAL + " -N 10 -distance 150 -detpixels 256 -pixel 0.4 -mosaic 0.2 -mosaic_domains 5 -oversample 1",
         gpu=True, run_c=False),
    Case("G1", "GPU: 2048x2048, oversample 2, 3x3 divergence x 3 wavelengths, 10 phi, 10 mosaic, N=10",
         XTAL + " -misset 10 20 30 -N 10 -distance 150 -detpixels 2048 -pixel 0.1 "
                "-phi 0.5 -osc 1 -phisteps 10 -hdivrange 0.5 -vdivrange 0.5 -divsteps 3 -square_div "
                "-dispersion 0.5 -dispsteps 3 -mosaic 0.2 -mosaic_domains 10 -oversample 2",
         gpu=True, run_c=False),
]

CASES: Dict[str, Case] = {c.name: c for c in _CASES}
DEFAULT_CPU = ["B1", "B2", "B3", "B4"]
DEFAULT_CUDA = ["B1", "B2", "B3", "B4", "G1"]

# the factors of one image's inner evaluations, in the kernel's loop order
COUNT_KEYS = ("pixels", "subpixels", "sources", "phisteps", "mosaic_domains", "thicksteps")


def evaluations(counts: Mapping[str, int]) -> int:
    """Inner evaluations of one image.

    pixels x sub-pixels (oversample^2) x sources x phi steps x mosaic domains
    x sensor layers: the number of times the innermost body (one lattice
    factor and one structure factor) runs.  The sensor-layer factor is 1 in
    every case here (no ``-detector_thick``).
    """
    n = 1
    for key in COUNT_KEYS:
        n *= int(counts[key])
    return n


def counts_from_prep(prep) -> Dict[str, int]:
    """The loop counts of a ``nanobrag_numba.simulator.Prepared`` image."""
    det, s = prep.det, prep.sampling
    return {
        "fpixels": int(det.fpixels), "spixels": int(det.spixels),
        "pixels": int(det.fpixels) * int(det.spixels),
        "oversample": int(prep.oversample), "subpixels": int(prep.oversample) ** 2,
        "sources": int(prep.sources.shape[0]),
        "phisteps": int(s.phisteps), "mosaic_domains": int(s.mosaic_domains),
        "thicksteps": int(s.thicksteps),
    }


def parse_c_counts(text: str) -> Dict[str, int]:
    """The same counts from the summary the C program prints (missing keys are left out)."""
    import re
    pats = {
        "sources": r"^\s+(\d+) sources\s*$",
        "mosaic_domains": r"^\s+(\d+) mosaic domains over mosaic spread",
        "phisteps": r"^\s+(\d+) phi steps from",
        "oversample": r"^\s+(\d+)x\d+ pixel oversample steps",
        "thicksteps": r"sensor is \S+ m thick in (\d+) layers",
        "divsteps": r"^\s+(\d+) divergence steps",
    }
    out = {}
    for key, pat in pats.items():
        m = re.search(pat, text, re.M)
        if m:
            out[key] = int(m.group(1))
    m = re.search(r"\((\d+)x(\d+) pixels\)", text)
    if m:
        out["fpixels"], out["spixels"] = int(m.group(1)), int(m.group(2))
        out["pixels"] = out["fpixels"] * out["spixels"]
    if "oversample" in out:
        out["subpixels"] = out["oversample"] ** 2
    return out
