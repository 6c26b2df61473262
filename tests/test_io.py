"""Tests of the bottom ``io`` layer: SMV, float/PGM/TIFF images, HKL/Fdump, text columns.

Tests that compare against the C program's golden outputs look for them in
``$NANOBRAGG_GOLDEN`` or ``../shared/golden`` next to the checkout and are
skipped (with the reason) when neither exists; every other test builds its own
small files in ``tmp_path``.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import sys
import time

import numpy as np
import pytest

import golden

from nanobrag_numba.errors import NanoBraggError
from nanobrag_numba.io.atomic import atomic_write_bytes
from nanobrag_numba.io.hkl import HKLTable, read_fdump, read_hkl, write_fdump
from nanobrag_numba.io.images import (
    format_pgm_header,
    read_float_image,
    read_pgm,
    write_float_image,
    write_pgm,
    write_tiff,
)
from nanobrag_numba.io.smv import (
    SMV_HEADER_BYTES,
    format_smv_header,
    header_value,
    native_byte_order,
    read_smv,
    write_smv,
)
from nanobrag_numba.io.textcols import c_atof, read_text_columns


GOLDEN = golden.golden_dir()
needs_golden = pytest.mark.skipif(
    not (GOLDEN / "manifest.json").is_file(),
    reason=f"golden reference outputs not found at {GOLDEN} (set NANOBRAGG_GOLDEN)",
)


def _manifest():
    with open(GOLDEN / "manifest.json") as handle:
        return json.load(handle)


# ---------------------------------------------------------------- SMV

HEADER_KW = dict(
    fast=1024,
    slow=1000,
    pixel_size_mm=0.172,
    distance_mm=100,
    wavelength_A=0.9795,
    beam_center_x_mm=88.064,
    beam_center_y_mm=86.1,
    adxv_center_x_mm=88.15,
    adxv_center_y_mm=85.928,
    mosflm_center_x_mm=85.928,
    mosflm_center_y_mm=88.064,
    denzo_x_beam_mm=86.1,
    denzo_y_beam_mm=88.236,
    dials_origin_mm=(-88.236, 86.1, -100),
    xds_orgx=513.5,
    xds_orgy=501.5,
    close_distance_mm=99.5,
    phi_deg=12.5,
    osc_start_deg=12.5,
    osc_range_deg=0.1,
    twotheta_deg=-15,
)


def _parse_golden_header(header: bytes) -> dict:
    """Turn a C-written SMV header back into format_smv_header arguments."""
    text = header.decode("ascii")
    values = {}
    for line in text.split("\n"):
        if "=" in line:
            key, value = line.split("=", 1)
            values[key] = value.rstrip(";")
    return dict(
        fast=int(values["SIZE1"]),
        slow=int(values["SIZE2"]),
        pixel_size_mm=float(values["PIXEL_SIZE"]),
        distance_mm=float(values["DISTANCE"]),
        wavelength_A=float(values["WAVELENGTH"]),
        beam_center_x_mm=float(values["BEAM_CENTER_X"]),
        beam_center_y_mm=float(values["BEAM_CENTER_Y"]),
        adxv_center_x_mm=float(values["ADXV_CENTER_X"]),
        adxv_center_y_mm=float(values["ADXV_CENTER_Y"]),
        mosflm_center_x_mm=float(values["MOSFLM_CENTER_X"]),
        mosflm_center_y_mm=float(values["MOSFLM_CENTER_Y"]),
        denzo_x_beam_mm=float(values["DENZO_X_BEAM"]),
        denzo_y_beam_mm=float(values["DENZO_Y_BEAM"]),
        dials_origin_mm=tuple(float(v) for v in values["DIALS_ORIGIN"].split(",")),
        xds_orgx=float(values["XDS_ORGX"]),
        xds_orgy=float(values["XDS_ORGY"]),
        close_distance_mm=float(values["CLOSE_DISTANCE"]),
        phi_deg=float(values["PHI"]),
        osc_start_deg=float(values["OSC_START"]),
        osc_range_deg=float(values["OSC_RANGE"]),
        twotheta_deg=float(values["TWOTHETA"]),
        byte_order=values["BYTE_ORDER"],
    )


def test_smv_header_layout():
    header = format_smv_header(**HEADER_KW, byte_order="little_endian")
    assert len(header) == SMV_HEADER_BYTES == 512
    text = header.decode("ascii")
    assert text.startswith("{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=little_endian;\nTYPE=unsigned_short;\nSIZE1=1024;\n")
    assert "\nPIXEL_SIZE=0.172;\nDISTANCE=100;\nWAVELENGTH=0.9795;\n" in text
    assert "\nDIALS_ORIGIN=-88.236,86.1,-100\nXDS_ORGX=513.5;\n" in text  # no ';' on DIALS_ORIGIN
    assert "\nTWOTHETA=-15;\nDETECTOR_SN=000;\nBEAMLINE=fake;\n}\f" in text
    body_end = text.index("}\f") + 2
    assert set(text[body_end:]) == {" "}
    # %g keeps 6 significant digits exactly as C does
    header = format_smv_header(**{**HEADER_KW, "wavelength_A": 1.23456789, "phi_deg": 1e-7})
    assert b"WAVELENGTH=1.23457;" in header and b"PHI=1e-07;" in header
    # default byte order is this machine's
    assert ("BYTE_ORDER=%s;" % native_byte_order()).encode() in format_smv_header(**HEADER_KW)


# Values printed by the C binary for "-detpixels 8 -pixel 0.0732 -distance 250.123
# -lambda 0.97949 -Xbeam 0.312457 -Ybeam 0.313123 -phi 123.456 -osc 0.1
# -twotheta -12.3457": its header text is 546 bytes, so C wrote it unpadded while
# announcing HEADER_BYTES=512 (the file was 546 + 2*64 = 674 bytes long).
OVERFLOW_KW = dict(
    fast=8,
    slow=8,
    pixel_size_mm=0.0732,
    distance_mm=244.339,
    wavelength_A=0.97949,
    beam_center_x_mm=0.312457,
    beam_center_y_mm=0.313123,
    adxv_center_x_mm=0.349723,
    adxv_center_y_mm=1.47322,
    mosflm_center_x_mm=-0.924219,
    mosflm_center_y_mm=0.313123,
    denzo_x_beam_mm=-0.887619,
    denzo_y_beam_mm=0.349723,
    dials_origin_mm=(-0.349723, 0.340985, -250.048),
    xds_orgx=5.27764,
    xds_orgy=-725.315,
    close_distance_mm=244.339,
    phi_deg=123.456,
    osc_start_deg=123.456,
    osc_range_deg=0.1,
    twotheta_deg=-12.3457,
    byte_order="little_endian",
)


def test_smv_header_overflow_modes(tmp_path):
    c_bytes = format_smv_header(**OVERFLOW_KW, overflow="c")
    assert len(c_bytes) == 546
    assert c_bytes.startswith(b"{\nHEADER_BYTES=512;\n") and c_bytes.endswith(b"\nBEAMLINE=fake;\n}\f")
    with pytest.raises(ValueError, match="546 bytes, more than 512"):
        format_smv_header(**OVERFLOW_KW, overflow="error")

    header = format_smv_header(**OVERFLOW_KW)  # default: a valid, longer header
    assert len(header) == 1024
    assert header.startswith(b"{\nHEADER_BYTES=1024;\nDIM=2;\n")
    assert header.rstrip(b" ") == c_bytes.replace(b"HEADER_BYTES=512;", b"HEADER_BYTES=1024;")
    data = np.arange(64, dtype=np.uint16).reshape(8, 8)
    write_smv(tmp_path / "long.img", data, header)
    img = read_smv(tmp_path / "long.img")
    assert img.header_size == 1024
    np.testing.assert_array_equal(img.data, data)
    assert header_value(img.header_text, "TWOTHETA") == -12.3457
    assert header_value(img.header_text, "XDS_ORGY") == -725.315

    with pytest.raises(ValueError, match="3 components"):
        format_smv_header(**{**HEADER_KW, "dials_origin_mm": (1.0, 2.0)})
    with pytest.raises(ValueError, match="overflow"):
        format_smv_header(**HEADER_KW, overflow="truncate")


def test_smv_write_read_roundtrip(tmp_path):
    header = format_smv_header(**HEADER_KW)
    rng = np.random.default_rng(7)
    data = rng.integers(0, 65536, size=(1000, 1024), dtype=np.uint16)
    data[0, 0], data[-1, -1] = 65535, 40
    path = tmp_path / "image.img"
    write_smv(path, data, header)
    raw = path.read_bytes()
    assert len(raw) == 512 + 2 * 1000 * 1024
    assert raw[:512] == header
    assert raw[512:514] == np.uint16(65535).tobytes()

    img = read_smv(path)
    assert (img.width, img.height, img.header_size, img.swapped) == (1024, 1000, 512, False)
    assert img.data.dtype == np.uint16 and img.data.shape == (1000, 1024)
    np.testing.assert_array_equal(img.data, data)

    t = img.header_text
    expected = {
        "HEADER_BYTES": 512,
        "DIM": 2,
        "SIZE1": 1024,
        "SIZE2": 1000,
        "PIXEL_SIZE": 0.172,
        "WAVELENGTH": 0.9795,
        "BEAM_CENTER_X": 88.064,
        "BEAM_CENTER_Y": 86.1,
        "ADXV_CENTER_X": 88.15,
        "ADXV_CENTER_Y": 85.928,
        "MOSFLM_CENTER_X": 85.928,
        "MOSFLM_CENTER_Y": 88.064,
        "DENZO_X_BEAM": 86.1,
        "DENZO_Y_BEAM": 88.236,
        "DIALS_ORIGIN": -88.236,  # atof stops at the first ','
        "XDS_ORGX": 513.5,
        "XDS_ORGY": 501.5,
        "ORGX": 513.5,  # substring of XDS_ORGX, as nanoBragg reads it
        "ORGY": 501.5,
        "CLOSE_DISTANCE": 99.5,
        # "DISTANCE" also matches inside "CLOSE_DISTANCE", which comes later:
        "DISTANCE": 99.5,
        "PHI": 12.5,
        "OSC_START": 12.5,
        "OSC_RANGE": 0.1,
        "TWOTHETA": -15,
        "DETECTOR_SN": 0,
        "TYPE": 0.0,  # atof("unsigned_short")
    }
    for key, value in expected.items():
        assert header_value(t, key) == value, key
    origin_line = [line for line in t.split("\n") if line.startswith("DIALS_ORIGIN=")][0]
    assert tuple(float(v) for v in origin_line[len("DIALS_ORIGIN="):].split(",")) == (-88.236, 86.1, -100.0)


def test_write_smv_rejects_bad_data(tmp_path):
    header = format_smv_header(**{**HEADER_KW, "fast": 4, "slow": 3})
    with pytest.raises(ValueError, match="uint16"):
        write_smv(tmp_path / "a.img", np.zeros((3, 4), np.float32), header)
    with pytest.raises(ValueError, match="SIZE1"):
        write_smv(tmp_path / "a.img", np.zeros((3, 5), np.uint16), header)
    assert list(tmp_path.iterdir()) == []


def test_read_smv_byte_swapped(tmp_path):
    other = "big_endian" if sys.byteorder == "little" else "little_endian"
    header = format_smv_header(**{**HEADER_KW, "fast": 3, "slow": 2, "byte_order": other})
    values = np.array([[1, 2, 258], [40, 65535, 1000]], dtype=np.uint16)
    (tmp_path / "swapped.img").write_bytes(header + values.byteswap().tobytes())
    img = read_smv(tmp_path / "swapped.img")
    assert img.swapped
    np.testing.assert_array_equal(img.data, values)


def test_read_smv_errors(tmp_path):
    with pytest.raises(NanoBraggError, match="missing.img"):
        read_smv(tmp_path / "missing.img")

    text = tmp_path / "notes.img"
    text.write_bytes(b"this is not an image\n" * 40)
    with pytest.raises(NanoBraggError, match=r"notes\.img does not look like an ADSC/SMV"):
        read_smv(text)

    header = format_smv_header(**{**HEADER_KW, "fast": 10, "slow": 10})
    short = tmp_path / "short.img"
    short.write_bytes(header[:300])
    with pytest.raises(NanoBraggError, match=r"short\.img is too short"):
        read_smv(short)

    truncated = tmp_path / "truncated.img"
    truncated.write_bytes(header + b"\0" * 150)
    with pytest.raises(NanoBraggError, match=r"truncated\.img is truncated.*needs? 712"):
        read_smv(truncated)

    nosize = tmp_path / "nosize.img"
    nosize.write_bytes(b"{\nHEADER_BYTES=512;\n}\f".ljust(512) + b"\0" * 8)
    with pytest.raises(NanoBraggError, match="SIZE1"):
        read_smv(nosize)


def test_read_smv_header_bytes_1024(tmp_path):
    text = b"{\nHEADER_BYTES=1024;\nDIM=2;\nBYTE_ORDER=%s;\nSIZE1=2;\nSIZE2=2;\n" % native_byte_order().encode()
    text = text.ljust(700) + b"DISTANCE=123.5;\n}\f"
    data = np.array([[5, 6], [7, 8]], np.uint16)
    path = tmp_path / "big_header.img"
    path.write_bytes(text.ljust(1024) + data.tobytes())
    img = read_smv(path)
    assert img.header_size == 1024 and len(img.header_text) == 1024
    assert header_value(img.header_text, "DISTANCE") == 123.5  # beyond byte 512
    np.testing.assert_array_equal(img.data, data)


def test_header_value_c_semantics():
    both = "DISTANCE=100;\nCLOSE_DISTANCE=75;\n"
    assert header_value(both, "DISTANCE") == 75.0  # last occurrence, inside CLOSE_DISTANCE
    assert header_value("CLOSE_DISTANCE=75;\nDISTANCE=100;\n", "DISTANCE") == 100.0
    assert math.isnan(header_value(both, "WAVELENGTH"))
    assert header_value("PHI\n", "PHI") == 0.0  # keyword but no '=' after it
    assert header_value("PHI;\nOSC=3.5;\n", "PHI") == 3.5  # the next '=' may be on a later line
    assert header_value("PHI=abc;\n", "PHI") == 0.0
    assert header_value("PHI=  -1.5e2;\n", "PHI") == -150.0
    assert math.isnan(header_value("X=1;\0PHI=10;\n", "PHI"))  # C strings stop at NUL
    assert header_value(b"SIZE1=96;\n", "SIZE1") == 96.0
    with pytest.raises(ValueError):
        header_value(both, "")


@needs_golden
def test_header_value_on_golden_inputs():
    hdr = read_smv(GOLDEN / "inputs" / "hdr.img")
    assert (hdr.width, hdr.height, hdr.data.shape) == (100, 120, (120, 100))
    t = hdr.header_text
    assert header_value(t, "PIXEL_SIZE") == 0.25
    assert header_value(t, "DISTANCE") == 75.0
    assert header_value(t, "CLOSE_DISTANCE") == 75.0
    assert header_value(t, "WAVELENGTH") == 1.2
    assert header_value(t, "BEAM_CENTER_X") == 15.0
    assert header_value(t, "BEAM_CENTER_Y") == 12.5
    assert header_value(t, "ORGX") == 60.5
    assert header_value(t, "ORGY") == 50.5
    assert header_value(t, "PHI") == 10.0
    assert header_value(t, "OSC_RANGE") == 0.4
    assert header_value(t, "TWOTHETA") == 0.0
    assert math.isnan(header_value(t, "MOSFLM_CENTER_X"))

    mask = read_smv(GOLDEN / "inputs" / "mask.img")
    assert (mask.width, mask.height) == (96, 80)
    t = mask.header_text
    assert header_value(t, "DISTANCE") == 90.0
    assert math.isnan(header_value(t, "CLOSE_DISTANCE"))
    assert header_value(t, "PIXEL_SIZE") == 0.3
    assert header_value(t, "WAVELENGTH") == 1.0
    assert header_value(t, "BEAM_CENTER_X") == 12.15
    assert header_value(t, "BEAM_CENTER_Y") == 14.25
    assert math.isnan(header_value(t, "PHI"))
    assert set(np.unique(mask.data)) <= {0, 1}
    assert 0 < int(mask.data.sum()) < 96 * 80


@needs_golden
def test_smv_header_matches_every_golden_image():
    checked = 0
    for case in _manifest()["cases"]:
        for kind in ("int", "noise"):
            rel = case["outputs"].get(kind)
            if not rel:
                continue
            with gzip.open(GOLDEN / "cases" / case["id"] / os.path.basename(rel)) as handle:
                golden = handle.read(512)
            ours = format_smv_header(**_parse_golden_header(golden))
            assert ours == golden, (case["id"], kind)
            checked += 1
    assert checked >= 74


@needs_golden
def test_read_golden_intimage(tmp_path):
    case = next(c for c in _manifest()["cases"] if c["id"] == "geom_mosflm_default")
    path = tmp_path / "intimage.img"
    path.write_bytes(gzip.decompress((GOLDEN / "cases" / case["id"] / "intimage.img.gz").read_bytes()))
    img = read_smv(path)
    slow, fast = case["shape"]
    assert img.data.shape == (slow, fast) == (64, 64)
    assert header_value(img.header_text, "BEAM_CENTER_X") == 13.0
    assert header_value(img.header_text, "DIALS_ORIGIN") == -13.2
    assert img.data.min() >= 40  # adc offset 40, no ROI
    # writing it back reproduces the C file byte for byte
    write_smv(tmp_path / "copy.img", img.data, img.header_text.encode("latin-1"))
    assert (tmp_path / "copy.img").read_bytes() == path.read_bytes()


# ---------------------------------------------------------------- float, PGM, TIFF


def test_float_image_roundtrip(tmp_path):
    image = np.arange(12, dtype=np.float64).reshape(3, 4) * 0.5 + 1e-3
    write_float_image(tmp_path / "f.bin", image)
    raw = (tmp_path / "f.bin").read_bytes()
    assert len(raw) == 48
    assert raw[4:8] == np.float32(0.501).tobytes()
    back = read_float_image(tmp_path / "f.bin", shape=(3, 4))
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, image.astype(np.float32))
    assert read_float_image(tmp_path / "f.bin").shape == (12,)
    with pytest.raises(NanoBraggError, match="shape"):
        read_float_image(tmp_path / "f.bin", shape=(5, 5))
    (tmp_path / "odd.bin").write_bytes(b"\0" * 7)
    with pytest.raises(NanoBraggError, match="multiple of 4"):
        read_float_image(tmp_path / "odd.bin")
    with pytest.raises(NanoBraggError, match="nothere.bin"):
        read_float_image(tmp_path / "nothere.bin")


@needs_golden
def test_read_golden_float_image():
    case = next(c for c in _manifest()["cases"] if c["id"] == "geom_mosflm_default")
    raw = gzip.decompress((GOLDEN / "cases" / case["id"] / "floatimage.bin.gz").read_bytes())
    slow, fast = case["shape"]
    image = np.frombuffer(raw, dtype="<f4").reshape(slow, fast)
    assert float(image.max()) == pytest.approx(case["float_max"], rel=1e-6)


def test_pgm_header_bytes_exact(tmp_path):
    assert format_pgm_header(64, 48, 0.1050423) == b"P5\n64 48\n# pixels scaled by 0.105042\n255\n"
    assert format_pgm_header(3, 2, 250) == b"P5\n3 2\n# pixels scaled by 250\n255\n"
    image = np.array([[0, 1, 255], [7, 128, 254]], dtype=np.uint8)
    write_pgm(tmp_path / "x.pgm", image, 1.5e-5)
    raw = (tmp_path / "x.pgm").read_bytes()
    assert raw == b"P5\n3 2\n# pixels scaled by 1.5e-05\n255\n" + bytes([0, 1, 255, 7, 128, 254])
    pgm = read_pgm(tmp_path / "x.pgm")
    assert (pgm.width, pgm.height, pgm.maxval, pgm.pgm_scale) == (3, 2, 255, 1.5e-5)
    np.testing.assert_array_equal(pgm.data, image)
    with pytest.raises(ValueError, match="uint8"):
        write_pgm(tmp_path / "y.pgm", image.astype(np.int16), 1.0)


def test_read_pgm_errors(tmp_path):
    (tmp_path / "a.pgm").write_bytes(b"P2\n1 1\n255\n0\n")
    with pytest.raises(NanoBraggError, match="P5"):
        read_pgm(tmp_path / "a.pgm")
    (tmp_path / "b.pgm").write_bytes(b"P5\n4 4\n255\n" + b"\0" * 10)
    with pytest.raises(NanoBraggError, match="truncated"):
        read_pgm(tmp_path / "b.pgm")


@needs_golden
def test_golden_pgm_rewrites_identically(tmp_path):
    case = next(c for c in _manifest()["cases"] if c["id"] == "geom_mosflm_default")
    raw = gzip.decompress((GOLDEN / "cases" / case["id"] / "image.pgm.gz").read_bytes())
    (tmp_path / "c.pgm").write_bytes(raw)
    pgm = read_pgm(tmp_path / "c.pgm")
    assert pgm.data.shape == tuple(case["shape"])
    assert pgm.pgm_scale == 0.105042
    write_pgm(tmp_path / "ours.pgm", pgm.data, pgm.pgm_scale)
    assert (tmp_path / "ours.pgm").read_bytes() == raw


def test_write_tiff(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    image = (np.arange(20, dtype=np.float64).reshape(4, 5) ** 2) / 7.0
    write_tiff(tmp_path / "x.tif", image)
    back = tifffile.imread(tmp_path / "x.tif")
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, image.astype(np.float32))


# ---------------------------------------------------------------- atomic writes


def test_atomic_write_failure_leaves_nothing(tmp_path):
    def chunks():
        yield b"first part "
        raise RuntimeError("simulated failure midway")

    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError, match="midway"):
        atomic_write_bytes(target, chunks())
    assert list(tmp_path.iterdir()) == []

    target.write_bytes(b"old contents")
    with pytest.raises(RuntimeError):
        atomic_write_bytes(target, chunks())
    assert target.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_atomic_write_success_and_bad_directory(tmp_path):
    target = tmp_path / "ok.bin"
    atomic_write_bytes(target, [b"ab", bytearray(b"cd"), np.array([1, 2], dtype="<u2")])
    assert target.read_bytes() == b"abcd\x01\x00\x02\x00"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.bin"]
    with pytest.raises(NanoBraggError, match="no_such_dir"):
        atomic_write_bytes(tmp_path / "no_such_dir" / "x.bin", [b"x"])


# ---------------------------------------------------------------- HKL and Fdump


@needs_golden
def test_read_hkl_p1():
    table = read_hkl(GOLDEN / "inputs" / "P1.hkl")
    assert table.hkls == 18033
    assert table.bounds == (-15, 15, -16, 16, -17, 17)
    assert (table.h_range, table.k_range, table.l_range) == (31, 33, 35)
    assert table.F.shape == (32, 34, 36) and table.F.dtype == np.float64
    assert table.F.flags.c_contiguous
    F = table.F
    assert F[-15 + 15, -3 + 16, -2 + 17] == 51.32  # line 1: -15 -3 -2 51.32
    assert F[-15 + 15, -3 + 16, -1 + 17] == 89.37  # line 2
    assert F[0 + 15, 0 + 16, 0 + 17] == 300.0  # F000
    assert F[1 + 15, 2 + 16, 3 + 17] == 25.55
    assert F[15 + 15, 3 + 16, 2 + 17] == 77.72  # last line
    assert not F[-1].any() and not F[:, -1].any() and not F[:, :, -1].any()
    assert np.count_nonzero(F) == 18033


@needs_golden
def test_fdump_matches_golden_byte_for_byte(tmp_path):
    golden = GOLDEN / "inputs" / "Fdump.bin"
    from_dump = read_fdump(golden)
    from_hkl = read_hkl(GOLDEN / "inputs" / "P1.hkl")
    assert from_dump.bounds == from_hkl.bounds
    np.testing.assert_array_equal(from_dump.F, from_hkl.F)
    assert from_dump.hkls == 31 * 33 * 35  # C sets hkls = h_range*k_range*l_range
    write_fdump(tmp_path / "Fdump.bin", from_hkl)
    assert (tmp_path / "Fdump.bin").read_bytes() == golden.read_bytes()


@needs_golden
def test_read_hkl_sparse_with_default_F():
    table = read_hkl(GOLDEN / "inputs" / "sparse.hkl", default_F=7.5)
    assert table.hkls == 49
    assert table.bounds == (-5, 3, -4, 4, -6, 2)
    F = table.F
    assert F.shape == (10, 10, 10)
    assert F[-5 + 5, -4 + 4, -6 + 6] == 389.4
    inner = F[:9, :9, :9]
    assert np.count_nonzero(inner != 7.5) == 49
    assert not F[9].any() and not F[:, 9].any() and not F[:, :, 9].any()


def _write(path, text):
    path.write_text(text)
    return path


def test_hkl_small_file_and_fdump_roundtrip(tmp_path):
    path = _write(tmp_path / "s.hkl", "\n1 2 3 10.5\n  -1 0 2\t7\n\n1.0 2 3.0 11.25\n0 0 0 100\n   \n")
    table = read_hkl(path)
    assert table.hkls == 4
    assert table.bounds == (-1, 1, 0, 2, 0, 3)
    assert table.F.shape == (4, 4, 5)
    assert table.F[1 + 1, 2, 3] == 11.25  # the later line for 1 2 3 wins
    assert table.F[-1 + 1, 0, 2] == 7.0
    assert table.F[0 + 1, 0, 0] == 100.0
    assert np.count_nonzero(table.F) == 3
    write_fdump(tmp_path / "F.bin", table)
    raw = (tmp_path / "F.bin").read_bytes()
    assert raw.startswith(b"-1 1 0 2 0 3\n\f")
    assert len(raw) == len(b"-1 1 0 2 0 3\n\f") + 4 * 4 * 5 * 8
    back = read_fdump(tmp_path / "F.bin")
    assert back.bounds == table.bounds and back.hkls == 3 * 3 * 4
    np.testing.assert_array_equal(back.F, table.F)


def test_hkl_default_F_layout(tmp_path):
    path = _write(tmp_path / "d.hkl", "0 0 0 5\n1 1 1 6\n")
    table = read_hkl(path, default_F=2.0)
    F = table.F
    assert F.shape == (3, 3, 3)
    assert F[0, 0, 0] == 5.0 and F[1, 1, 1] == 6.0
    assert F[0, 1, 0] == 2.0 and F[1, 0, 1] == 2.0
    assert not F[2].any() and not F[:, 2].any() and not F[:, :, 2].any()


def test_hkl_malformed_line_reports_line_number(tmp_path):
    path = _write(tmp_path / "bad.hkl", "1 2 3 10\n\n2 3 4\n3 4 5 6\n")
    with pytest.raises(NanoBraggError) as err:
        read_hkl(path)
    message = str(err.value)
    assert "bad.hkl" in message and "line 3" in message and "'2 3 4'" in message
    assert "\n" not in message

    path = _write(tmp_path / "bad2.hkl", "1 2 3 10\n1 2 3 4 5\n")
    with pytest.raises(NanoBraggError, match="line 2.*found 5"):
        read_hkl(path)

    path = _write(tmp_path / "bad3.hkl", "1 2 3 10\n2 2 3 10\nh k l F\n")
    with pytest.raises(NanoBraggError, match=r"line 3: 'h' is not a number"):
        read_hkl(path)


def test_hkl_non_integral_index_is_error(tmp_path):
    path = _write(tmp_path / "frac.hkl", "1 2 3 10\n1 2.5 3 10\n")
    with pytest.raises(NanoBraggError, match=r"frac\.hkl, line 2: Miller index k=2\.5 is not an integer"):
        read_hkl(path)
    path = _write(tmp_path / "nan.hkl", "nan 2 3 10\n")
    with pytest.raises(NanoBraggError, match="line 1: Miller index h=nan"):
        read_hkl(path)


def test_hkl_missing_and_empty(tmp_path):
    with pytest.raises(NanoBraggError, match="cannot open HKL file .*nope.hkl"):
        read_hkl(tmp_path / "nope.hkl")
    path = _write(tmp_path / "empty.hkl", "\n  \n\n")
    with pytest.raises(NanoBraggError, match=r"no reflections in HKL file .*empty\.hkl"):
        read_hkl(path)


def test_hkl_crlf(tmp_path):
    path = tmp_path / "crlf.hkl"
    path.write_bytes(b"1 0 0 3.5\r\n0 1 0 4.5\r\n")
    table = read_hkl(path)
    assert table.hkls == 2 and table.F[1, 0, 0] == 3.5 and table.F[0, 1, 0] == 4.5


def test_hkl_large_file_is_fast(tmp_path):
    rng = np.random.default_rng(3)
    n = 500_000
    idx = rng.integers(-40, 41, size=(n, 3))
    F = np.round(rng.random(n) * 1000, 2)
    lines = [f"{h} {k} {l} {f:.2f}" for (h, k, l), f in zip(idx.tolist(), F.tolist())]
    path = tmp_path / "big.hkl"
    path.write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    table = read_hkl(path)
    elapsed = time.perf_counter() - start
    assert table.hkls == n
    # later lines win for repeated hkl
    expected = {}
    for (h, k, l), f in zip(idx.tolist(), F.tolist()):
        expected[(h, k, l)] = f
    sample = list(expected.items())[:: max(1, len(expected) // 500)]
    for (h, k, l), f in sample:
        assert table.F[h - table.h_min, k - table.k_min, l - table.l_min] == f
    assert elapsed < 5.0, f"read_hkl took {elapsed:.2f} s for {n} lines"


def test_fdump_errors(tmp_path):
    table = HKLTable(0, 1, 0, 1, 0, 1, np.arange(27, dtype=np.float64).reshape(3, 3, 3), 8)
    write_fdump(tmp_path / "F.bin", table)
    raw = (tmp_path / "F.bin").read_bytes()
    (tmp_path / "short.bin").write_bytes(raw[:-8])
    with pytest.raises(NanoBraggError, match=r"short\.bin.*truncated"):
        read_fdump(tmp_path / "short.bin")
    (tmp_path / "long.bin").write_bytes(raw + b"\0" * 8)
    with pytest.raises(NanoBraggError, match="too long"):
        read_fdump(tmp_path / "long.bin")
    (tmp_path / "junk.bin").write_bytes(b"hello world\n" * 10)
    with pytest.raises(NanoBraggError, match=r"junk\.bin is not a structure-factor dump"):
        read_fdump(tmp_path / "junk.bin")
    (tmp_path / "inverted.bin").write_bytes(b"2 1 0 1 0 1\n\f")
    with pytest.raises(NanoBraggError, match="bad index bounds"):
        read_fdump(tmp_path / "inverted.bin")
    with pytest.raises(NanoBraggError, match="cannot open Fdump file"):
        read_fdump(tmp_path / "absent.bin")
    with pytest.raises(ValueError, match="shape"):
        write_fdump(tmp_path / "x.bin", HKLTable(0, 1, 0, 1, 0, 1, np.zeros((2, 2, 2)), 8))


# ---------------------------------------------------------------- text columns


@needs_golden
def test_text_columns_sources():
    table = read_text_columns(GOLDEN / "inputs" / "sources.txt", 5)
    assert table.shape == (6, 5)
    np.testing.assert_array_equal(table[0], [-10, 0, 0, 1, 1e-10])
    np.testing.assert_array_equal(table[5], [-10, 0.002, 0.002, 1.5, 9.9e-11])
    np.testing.assert_array_equal(table[:, 3], [1, 0.5, 2, 1, 0.25, 1.5])
    stol = read_text_columns(GOLDEN / "inputs" / "water.stol", 2)
    assert stol.shape[1] == 2 and stol[0, 0] == 0.0 and stol[0, 1] == 2.6286


def test_text_columns_c_semantics(tmp_path):
    path = _write(
        tmp_path / "src.txt",
        "\n"
        "   \t\n"
        ",,; -1 2,3;4:5!6 7\n"  # any run of " \t,;:!" separates; extra fields ignored
        "1 2\n"  # missing columns -> NaN
        "\n"
        "abc 1.5x 2e3\n"  # atof: non-numbers read as 0, trailing junk ignored
        "  7   \n"
        "8 9 10 11 12",  # no final newline
    )
    table = read_text_columns(path, 5)
    assert table.shape == (5, 5)
    np.testing.assert_array_equal(table[0], [-1, 2, 3, 4, 5])
    np.testing.assert_array_equal(table[1, :2], [1, 2])
    assert np.isnan(table[1, 2:]).all()
    np.testing.assert_array_equal(table[2, :3], [0.0, 1.5, 2000.0])
    assert np.isnan(table[2, 3:]).all()
    assert table[3, 0] == 7 and np.isnan(table[3, 1:]).all()
    np.testing.assert_array_equal(table[4], [8, 9, 10, 11, 12])

    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"1 2\r\n\r\n3\r\n")
    table = read_text_columns(crlf, 2)
    assert table.shape == (2, 2) and table[0, 1] == 2 and table[1, 0] == 3 and np.isnan(table[1, 1])


def test_text_columns_errors(tmp_path):
    with pytest.raises(NanoBraggError, match="cannot open text file .*absent.txt"):
        read_text_columns(tmp_path / "absent.txt", 5)
    path = _write(tmp_path / "blank.txt", "\n \t,,\n\n")
    with pytest.raises(NanoBraggError, match=r"no data lines in .*blank\.txt"):
        read_text_columns(path, 2)


def test_c_atof():
    assert c_atof("12.5;") == 12.5
    assert c_atof(" \t\n-3e2x") == -300.0
    assert c_atof(".5") == 0.5
    assert c_atof("5.") == 5.0
    assert c_atof("1e") == 1.0
    assert c_atof("e5") == 0.0
    assert c_atof("") == 0.0
    assert c_atof("0x1.8p1") == 3.0
    assert c_atof("0x") == 0.0
    assert c_atof("-inf") == -math.inf
    assert c_atof("Infinity") == math.inf
    assert math.isnan(c_atof("nan(123)"))
    assert c_atof("1e999") == math.inf
    assert c_atof("unsigned_short") == 0.0
