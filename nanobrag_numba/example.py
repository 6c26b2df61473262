"""``nanobrag-numba example``: render a built-in example, and make test HKL files.

The example needs no input files: it writes a deterministic P1 structure-
factor list for a lysozyme-like cell (``example.hkl``), then runs the
command line it prints, which writes C's four files in the current
directory.  ``nanobrag-numba example --hkl-only [PATH]`` only writes the
HKL file (the one the README's examples name).  :func:`write_p1_hkl` is also used by the benchmarks.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np

EXAMPLE_CELL = (79.1, 79.1, 38.4, 90.0, 90.0, 90.0)
EXAMPLE_FLAGS = ("-hkl {hkl} -cell 79.1 79.1 38.4 90 90 90 -misset 10 20 30 -N 10 -lambda 1.0 "
                 "-distance 100 -detpixels 512 -pixel 0.1 -mosaic 0.2 -mosaic_domains 5 -mosaic_seed 7 "
                 "-oversample 1 -seed 1 -noprogress")


def write_p1_hkl(path: str, cell=EXAMPLE_CELL, dmin: float = 3.0, seed: int = 1, F000: float = 500.0) -> int:
    """Write every hkl with d >= dmin of an orthorhombic cell with Wilson-like amplitudes.

    Deterministic for given arguments (numpy's PCG64 generator). Returns the
    number of reflections written.
    """
    a, b, c = cell[:3]
    hmax, kmax, lmax = (int(math.floor(x / dmin)) for x in (a, b, c))
    h, k, l = np.meshgrid(np.arange(-hmax, hmax + 1), np.arange(-kmax, kmax + 1), np.arange(-lmax, lmax + 1),
                          indexing="ij")
    h, k, l = h.ravel(), k.ravel(), l.ravel()
    inv_d2 = (h / a) ** 2 + (k / b) ** 2 + (l / c) ** 2
    keep = inv_d2 <= 1.0 / dmin ** 2
    h, k, l, inv_d2 = h[keep], k[keep], l[keep], inv_d2[keep]
    rng = np.random.Generator(np.random.PCG64(seed))
    # acentric Wilson amplitudes (Rayleigh) with a B = 20 A^2 fall-off
    F = rng.rayleigh(scale=100.0, size=h.size) * np.exp(-20.0 * inv_d2 / 4.0)
    F[(h == 0) & (k == 0) & (l == 0)] = F000
    from .io.atomic import atomic_write_bytes
    lines = "".join("%d %d %d %.2f\n" % row for row in zip(h.tolist(), k.tolist(), l.tolist(), F.tolist()))
    atomic_write_bytes(path, [lines.encode()])
    return int(h.size)


EXAMPLE_HKL = "example.hkl"


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        from .errors import NanoBraggError
        raise NanoBraggError(message)


def write_hkl_only(path: str, force: bool = False) -> int:
    """Write the example's HKL file to ``path`` (refusing to replace another file unless ``force``)."""
    from .errors import NanoBraggError
    if os.path.isdir(path):
        raise NanoBraggError("%s is a folder: give a file name, e.g. %s" % (path, os.path.join(path, EXAMPLE_HKL)))
    if os.path.lexists(path) and not force:
        raise NanoBraggError("%s exists; give another path or add --force to replace it" % path)
    return write_p1_hkl(path, F000=0.0)


def main(argv=None) -> int:
    """Write example.hkl in the current directory and render the example image (or only write the HKL file)."""
    from .errors import NanoBraggError
    parser = _Parser(prog="nanobrag-numba example",
                     description="Render a built-in lysozyme-like example (512x512 pixels) into the current "
                                 "directory, or with --hkl-only just write its structure factors, the HKL file "
                                 "the README's examples use.")
    parser.add_argument("-device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--hkl-only", nargs="?", const=EXAMPLE_HKL, default=None, metavar="PATH",
                        help="only write the example's HKL file (P1, cell %g %g %g 90 90 90, to 3 A) to PATH "
                             "(default %s) and exit" % (EXAMPLE_CELL[0], EXAMPLE_CELL[1], EXAMPLE_CELL[2], EXAMPLE_HKL))
    parser.add_argument("--force", action="store_true", help="with --hkl-only: replace an existing file")
    try:
        args = parser.parse_args(argv)
        if args.force and args.hkl_only is None:
            raise NanoBraggError("--force goes with --hkl-only")
        if args.hkl_only is not None:
            n = write_hkl_only(args.hkl_only, args.force)
            print("wrote %s (%d reflections to 3 A, cell %g %g %g 90 90 90); use it as -hkl %s -cell %g %g %g 90 90 90"
                  % (args.hkl_only, n, *EXAMPLE_CELL[:3], args.hkl_only, *EXAMPLE_CELL[:3]))
            return 0
    except NanoBraggError as exc:
        print("nanobrag-numba: error: %s" % exc, file=sys.stderr)
        return 2
    hkl = EXAMPLE_HKL
    n = write_p1_hkl(hkl, F000=0.0)   # no direct-beam spot: the Bragg spots set the int-image scale
    print("wrote %s (%d reflections to 3 A, cell %g %g %g)" % (hkl, n, *EXAMPLE_CELL[:3]))
    flags = EXAMPLE_FLAGS.format(hkl=hkl).split() + ["-device", args.device]
    print("nanobrag-numba " + " ".join(flags))
    from .cli import main as cli_main
    rc = cli_main(flags)
    if rc == 0:
        print("example done: view image.pgm, or read floatimage.bin (float32, 512x512) in %s" % os.getcwd())
    return rc
