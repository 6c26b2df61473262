"""Access to the noisify/nonBragg golden outputs (../shared/golden_suite or $NANOBRAGG_GOLDEN_SUITE).

Like :mod:`golden` for nanoBragg's data: tests that need the data call
:func:`require` and skip with a clear message when it is absent.
"""
import gzip
import json
import os
from pathlib import Path

import pytest

from golden import data_dir

#: noisify/nonBragg rows of the manifest's glossary that we correct by default (docs/differences.md)
CORRECTED = {"psf_edge_wrap", "noiseless_int32_clipped", "pgm_negative_wrap", "nopgm_ignored",
             "odet_vector_ignored", "pix0_vector_ignored", "img_stats_count",
             "stolout_uninitialised_columns", "curved_det_needs_arg", "pgm_double_write"}
#: the output flags every case was run with, before its own arguments (manifest run_convention)
OUTPUT_FLAGS = {"noisify": ["-intfile", "intimage.img", "-noisefile", "noiseimage.img", "-pgmfile", "image.pgm"],
                "nonBragg": ["-floatfile", "floatimage.bin", "-intfile", "intimage.img",
                             "-noisefile", "noiseimage.img", "-pgmfile", "image.pgm"]}
FILES = {"float": "floatimage.bin", "int": "intimage.img", "noise": "noiseimage.img", "pgm": "image.pgm",
         "stol": "output.stol"}


def suite_dir() -> Path:
    return data_dir("NANOBRAGG_GOLDEN_SUITE", "golden_suite")


def available() -> bool:
    return (suite_dir() / "manifest.json").is_file()


def require():
    if not available():
        pytest.skip("golden_suite reference data not found at %s (set NANOBRAGG_GOLDEN_SUITE to the "
                    "golden_suite/ folder of the shared reference material)" % suite_dir())
    return suite_dir()


def cases(program=None):
    """The manifest's cases, optionally of one program ([] when the data is absent)."""
    if not available():
        return []
    with open(suite_dir() / "manifest.json") as fh:
        all_cases = json.load(fh)["cases"]
    return [c for c in all_cases if program is None or c["program"].lower() == program.lower()]


def corrected_rows(case):
    return sorted(set(case.get("c_quirks") or ()) & CORRECTED)


def read(case, key) -> bytes:
    with gzip.open(suite_dir() / case["outputs"][key], "rb") as fh:
        return fh.read()


def stage(workdir: Path):
    """Give ``workdir`` the suite's inputs/ (a link), as the cases were run."""
    os.symlink(suite_dir() / "inputs", workdir / "inputs")
