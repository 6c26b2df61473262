"""Property-based fuzz of the input readers (issue 9): any bytes give data or one clear error.

Each reader is fed arbitrary text and bytes (and mutations of a valid file);
it must either return its data or raise :class:`NanoBraggError` with a
one-line message, never any other exception.  No rendering here.
"""
import os
import tempfile

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from nanobrag_numba.config import Config, apply_header_defaults  # noqa: E402
from nanobrag_numba.crystal import read_matrix_numbers  # noqa: E402
from nanobrag_numba.errors import NanoBraggError  # noqa: E402
from nanobrag_numba.io.hkl import read_fdump, read_hkl  # noqa: E402
from nanobrag_numba.io.smv import header_value, read_smv  # noqa: E402
from nanobrag_numba.io.textcols import read_numeric_columns, read_spectrum, read_text_columns  # noqa: E402

SETTINGS = settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# text made of the characters that matter to the parsers, so that near-valid files are common
NUMBERISH = st.text(alphabet="0123456789 \t\n\r.,;:!+-eEinfaxXp#\x00\x0c", max_size=300)
ANY_TEXT = st.text(max_size=300)
ANY_BYTES = st.binary(max_size=600)
CONTENT = st.one_of(NUMBERISH.map(lambda t: t.encode("latin-1")), ANY_TEXT.map(lambda t: t.encode("utf-8")),
                    ANY_BYTES)


def _file(data: bytes) -> str:
    fd, path = tempfile.mkstemp(prefix="fuzz_")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


def _either(read, data):
    """Run ``read(path)`` on a file holding ``data``: data or one-line NanoBraggError, nothing else."""
    path = _file(data)
    try:
        return read(path)
    except NanoBraggError as exc:
        text = str(exc)
        assert text and "\n" not in text and "Traceback" not in text
        return None
    finally:
        os.unlink(path)


def _hkl_like():
    row = st.tuples(st.integers(-5, 5), st.integers(-5, 5), st.integers(-5, 5),
                    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["x", "", "1e999"])))
    return st.lists(row, min_size=0, max_size=20).map(
        lambda rows: "".join("%s %s %s %s\n" % r for r in rows).encode("latin-1"))


@SETTINGS
@given(st.one_of(CONTENT, _hkl_like()))
def test_fuzz_hkl(data):
    table = _either(read_hkl, data)
    if table is not None:
        assert np.isfinite(table.F).all() and table.hkls > 0


@SETTINGS
@given(CONTENT, st.binary(max_size=64))
def test_fuzz_fdump(data, tail):
    header = b"-1 1 0 0 0 1\n\f"
    for blob in (data, header + data, header + np.zeros(4 * 2 * 3).tobytes() + tail):
        table = _either(read_fdump, blob)
        if table is not None:
            assert np.isfinite(table.F).all()


@SETTINGS
@given(st.one_of(CONTENT, st.lists(st.floats(), max_size=12).map(
    lambda xs: "\n".join(" ".join(repr(x) for x in xs[i:i + 3]) for i in range(0, len(xs), 3)).encode())))
def test_fuzz_matrix(data):
    rows = _either(read_matrix_numbers, data)
    if rows is not None:
        assert len(rows) == 3 and all(len(r) == 3 and all(np.isfinite(r)) for r in rows)


@SETTINGS
@given(CONTENT)
def test_fuzz_sourcefile(data):
    strict = _either(lambda p: read_numeric_columns(p, 5, "source file"), data)
    if strict is not None:
        table, lines = strict
        assert table.shape == (len(lines), 5) and not np.isinf(table).any()
    loose = _either(lambda p: read_text_columns(p, 2), data)   # -stol and C's own reading
    if loose is not None:
        assert loose.shape[1] == 2


@SETTINGS
@given(st.one_of(CONTENT, st.lists(st.tuples(st.floats(), st.floats()), max_size=8).map(
    lambda rows: "".join("%r, %r # x\n" % r for r in rows).encode())))
def test_fuzz_spectrum(data):
    got = _either(read_spectrum, data)
    if got is not None:
        pairs, lines = got
        assert len(pairs) == len(lines) >= 1
        assert all(lam > 0 and np.isfinite(lam) and w >= 0 and np.isfinite(w) for lam, w in pairs)
        assert any(w > 0 for _, w in pairs)


def _smv_blob(header_lines, data):
    text = b"{\nHEADER_BYTES=512;\n" + header_lines + b"}\f"
    return text[:512] + b" " * max(0, 512 - len(text)) + data


@SETTINGS
@given(st.one_of(CONTENT, st.tuples(NUMBERISH, st.binary(max_size=600)).map(
    lambda t: _smv_blob(("SIZE1=%s;\nSIZE2=%s;\n" % (t[0][:8], t[0][-8:]) + t[0]).encode("latin-1"), t[1]))))
def test_fuzz_smv(data):
    img = _either(read_smv, data)
    if img is not None:
        assert img.data.shape == (img.height, img.width) and img.data.dtype == np.uint16
        for key in ("PIXEL_SIZE", "DISTANCE", "BEAM_CENTER_X", "ORGX"):
            header_value(img.header_text, key)     # a float, whatever the text

        def header(path):       # -img / -mask: the header then fills a Config, which is validated
            cfg = Config(hklfile="P1.hkl", cell=(40.0, 40.0, 40.0, 0.0, 0.0, 0.0))
            apply_header_defaults(cfg, path, mask=True)
            cfg.validate()
        _either(header, data)
