"""Write the benchmark's structure factors (deterministic; not committed).

    python bench/make_hkl.py [PATH]

writes a P1 list of a lysozyme-like cell (79.1 79.1 38.4 90 90 90) to 2 A,
about 126 000 reflections, with ``nanobrag_numba.example.write_p1_hkl``
(numpy PCG64, seed 1; F000 = 0).  Default path: ``bench/out/P1_lyso_2A.hkl``.
"""
from __future__ import annotations

import hashlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "out")

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(HERE))
from bench.cases import CELL, HKL_DMIN, HKL_F000, HKL_NAME, HKL_SEED  # noqa: E402


def default_path() -> str:
    return os.path.join(OUT_DIR, HKL_NAME)


def write_hkl(path: str) -> int:
    """Write the benchmark HKL file to ``path``; returns the number of reflections."""
    from nanobrag_numba.example import write_p1_hkl
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return write_p1_hkl(path, cell=CELL, dmin=HKL_DMIN, seed=HKL_SEED, F000=HKL_F000)


def ensure_hkl(path: str = None) -> str:
    """Regenerate the HKL file (cheap, under a second) and return its absolute path.

    It is always rewritten, so a stale or edited file cannot change the
    benchmark; the content is a function of the generator's arguments only.
    """
    path = os.path.abspath(path or default_path())
    write_hkl(path)
    return path


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = os.path.abspath(argv[0] if argv else default_path())
    n = write_hkl(path)
    print("wrote %s: %d reflections (d >= %g A), sha256 %s" % (path, n, HKL_DMIN, sha256(path)[:16]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
