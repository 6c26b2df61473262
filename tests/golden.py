"""Access to the C program's golden outputs (../shared/golden or $NANOBRAGG_GOLDEN).

Tests that need the data call :func:`require` and skip with a clear message
when it is absent.
"""
import gzip
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

CORRECTED = {"phi0_carryover", "oversample_running_multiply", "thick_last_layer_capture",
             "interpolate_global_disable", "water_double_scaling", "twotheta_axis_substring",
             "misset_seed_substring", "pix0_vector_ignored"}
OUTPUT_FLAGS = ["-floatfile", "floatimage.bin", "-intfile", "intimage.img",
                "-noisefile", "noiseimage.img", "-pgmfile", "image.pgm"]


def data_dir(env_var: str, name: str) -> Path:
    """A reference data folder: $``env_var``, else ../shared/``name`` beside the checkout."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / name


def golden_dir() -> Path:
    return data_dir("NANOBRAGG_GOLDEN", "golden")


def available() -> bool:
    return (golden_dir() / "manifest.json").is_file()


def require():
    if not available():
        pytest.skip("golden reference data not found at %s (set NANOBRAGG_GOLDEN to the golden/ "
                    "folder of the shared reference material)" % golden_dir())
    return golden_dir()


def cases():
    """The manifest's cases ([] when the data is absent)."""
    if not available():
        return []
    with open(golden_dir() / "manifest.json") as fh:
        return json.load(fh)["cases"]


def read(case, key) -> bytes:
    with gzip.open(golden_dir() / case["outputs"][key], "rb") as fh:
        return fh.read()


def read_text(case, key) -> str:
    """A stored output that is not gzipped (stdout.txt)."""
    return (golden_dir() / case["outputs"][key]).read_text()


def float_image(case) -> np.ndarray:
    return np.frombuffer(read(case, "float"), dtype="<f4").reshape(case["shape"])


def parse_smv(raw: bytes):
    head = raw[:512].decode("latin-1")
    hb = int(re.search(r"HEADER_BYTES=\s*(\d+)", head).group(1))
    keys = {}
    for line in raw[:hb].decode("latin-1").split("\n"):
        if "=" in line and not line.startswith("{"):
            k, v = line.split("=", 1)
            keys[k.strip()] = v.strip().rstrip(";").strip()
    fast, slow = int(keys["SIZE1"]), int(keys["SIZE2"])
    order = "<" if keys.get("BYTE_ORDER", "little_endian").startswith("little") else ">"
    data = np.frombuffer(raw[hb:hb + 2 * fast * slow], dtype=order + "u2").reshape(slow, fast)
    return keys, data


def parse_pgm(raw: bytes) -> np.ndarray:
    parts = raw.split(b"\n", 4)
    w, h = (int(x) for x in parts[1].split())
    return np.frombuffer(parts[4][:w * h], dtype=np.uint8).reshape(h, w)


def stage(case, workdir: Path):
    """Give ``workdir`` the case's inputs/ (a link) and its prestaged files."""
    root = golden_dir()
    os.symlink(root / "inputs", workdir / "inputs")
    for dst, src in (case.get("prestage") or {}).items():
        (workdir / dst).write_bytes((root / src).read_bytes())


def header_values_equal(a: str, b: str) -> bool:
    try:
        fa = [float(x) for x in a.split(",")]
        fb = [float(x) for x in b.split(",")]
    except ValueError:
        return a == b
    return len(fa) == len(fb) and all(abs(x - y) <= 1e-6 * max(1.0, abs(x)) for x, y in zip(fa, fb))
