"""SMV (ADSC) images: the 512-byte header nanoBragg writes, and GetFrame/ValueOf.

Part of the bottom ``io`` layer.  The command line and the simulator compute
the geometry numbers; this module only formats and parses them:

* :func:`format_smv_header` produces, byte for byte, the header that
  nanoBragg.c prints with ``fprintf`` before ``-intfile`` and ``-noisefile``
  images (same keys, same order, ``%g`` numbers, ``DIALS_ORIGIN`` without the
  trailing ``;``, ``"}\\f"`` and space padding up to 512 bytes);
* :func:`write_smv` appends the ``uint16`` pixels in native byte order, as C's
  ``fwrite`` does, and writes the file atomically;
* :func:`read_smv` follows C's ``GetFrame`` (used for ``-mask`` and ``-img``)
  but fails cleanly on files that C would misread;
* :func:`header_value` is C's ``ValueOf``: the value after the LAST occurrence
  of a keyword *substring*.  ``"DISTANCE"`` therefore also matches inside
  ``"CLOSE_DISTANCE"`` and ``"ORGX"`` inside ``"XDS_ORGX"``; that is what the C
  program reads and is kept on purpose.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from ..errors import NanoBraggError
from . import read_input
from .atomic import atomic_write_bytes
from .textcols import c_atof

__all__ = [
    "SMV_HEADER_BYTES",
    "SMVImage",
    "native_byte_order",
    "format_smv_header",
    "write_smv",
    "read_smv",
    "header_value",
]

#: Size of the header nanoBragg writes (and assumes first when reading).
SMV_HEADER_BYTES = 512

# GetFrame compares the first 12 characters of this string.
_SMV_MAGIC = b"{\nHEADER_BYTES="[:12]


def native_byte_order() -> str:
    """Return this machine's SMV byte-order word.

    Returns
    -------
    str
        ``"little_endian"`` or ``"big_endian"``, as C's ``get_byte_order``.
    """
    return "little_endian" if sys.byteorder == "little" else "big_endian"


def _g(value) -> str:
    """Format a number like C's ``%g`` (Python's ``%g`` is the same)."""
    return "%g" % float(value)


def format_smv_header(
    *,
    fast,
    slow,
    pixel_size_mm,
    distance_mm,
    wavelength_A,
    beam_center_x_mm,
    beam_center_y_mm,
    adxv_center_x_mm,
    adxv_center_y_mm,
    mosflm_center_x_mm,
    mosflm_center_y_mm,
    denzo_x_beam_mm,
    denzo_y_beam_mm,
    dials_origin_mm,
    xds_orgx,
    xds_orgy,
    close_distance_mm,
    phi_deg,
    osc_start_deg,
    osc_range_deg,
    twotheta_deg,
    byte_order=None,
    overflow="extend",
) -> bytes:
    """Format the 512-byte SMV header exactly as nanoBragg.c writes it.

    Every value is printed as given with ``%g`` (``fast`` and ``slow`` with
    ``%d``); the caller does the unit conversions and the convention-dependent
    arithmetic (e.g. C writes ``MOSFLM_CENTER_X = (Sbeam - 0.5*pixel)*1000``).

    Parameters
    ----------
    fast, slow : int
        ``SIZE1`` (fast pixels) and ``SIZE2`` (slow pixels).
    pixel_size_mm, distance_mm : float
        ``PIXEL_SIZE`` and ``DISTANCE``.
    wavelength_A : float
        ``WAVELENGTH`` in Angstrom.
    beam_center_x_mm, beam_center_y_mm : float
        ``BEAM_CENTER_X`` / ``BEAM_CENTER_Y`` (C: Xbeam, Ybeam in mm).
    adxv_center_x_mm, adxv_center_y_mm : float
        ``ADXV_CENTER_X`` / ``ADXV_CENTER_Y``.
    mosflm_center_x_mm, mosflm_center_y_mm : float
        ``MOSFLM_CENTER_X`` / ``MOSFLM_CENTER_Y``.
    denzo_x_beam_mm, denzo_y_beam_mm : float
        ``DENZO_X_BEAM`` / ``DENZO_Y_BEAM``.
    dials_origin_mm : sequence of 3 floats
        ``DIALS_ORIGIN=x,y,z`` (the only line without a trailing ``;``).
    xds_orgx, xds_orgy : float
        ``XDS_ORGX`` / ``XDS_ORGY`` in pixels.
    close_distance_mm : float
        ``CLOSE_DISTANCE``.
    phi_deg, osc_start_deg, osc_range_deg : float
        ``PHI``, ``OSC_START`` and ``OSC_RANGE`` (C writes phi0 for both of
        the first two).
    twotheta_deg : float
        ``TWOTHETA``.
    byte_order : str, optional
        ``BYTE_ORDER`` text; default :func:`native_byte_order`.
    overflow : {"extend", "c", "error"}, optional
        What to do when the text does not fit in 512 bytes.  The fixed text is
        410 bytes, so this happens with realistic non-round numbers (about 5
        characters per value on average is all that fits).  C then writes the
        longer text with no padding while still announcing
        ``HEADER_BYTES=512``, so every reader (C's own ``GetFrame`` included)
        takes header bytes for pixels.  ``"extend"`` (default) announces and
        pads to the next multiple of 512 bytes instead, which gives a valid
        file; ``"c"`` returns C's unpadded bytes; ``"error"`` raises.

    Returns
    -------
    bytes
        The key lines, ``"}\\f"``, then spaces up to 512 bytes; identical to
        C's header whenever it fits in 512 bytes.

    Raises
    ------
    ValueError
        If ``dials_origin_mm`` does not have 3 entries, ``overflow`` is
        unknown, or the text does not fit and ``overflow="error"``.
    """
    if overflow not in ("extend", "c", "error"):
        raise ValueError(f"overflow must be 'extend', 'c' or 'error', got {overflow!r}")
    if byte_order is None:
        byte_order = native_byte_order()
    origin = tuple(dials_origin_mm)
    if len(origin) != 3:
        raise ValueError(f"dials_origin_mm must have 3 components, got {len(origin)}")
    body = (
        "DIM=2;\nBYTE_ORDER=%s;\nTYPE=unsigned_short;\n" % byte_order
        + "SIZE1=%d;\nSIZE2=%d;\nPIXEL_SIZE=%s;\nDISTANCE=%s;\n"
        % (int(fast), int(slow), _g(pixel_size_mm), _g(distance_mm))
        + "WAVELENGTH=%s;\n" % _g(wavelength_A)
        + "BEAM_CENTER_X=%s;\nBEAM_CENTER_Y=%s;\n" % (_g(beam_center_x_mm), _g(beam_center_y_mm))
        + "ADXV_CENTER_X=%s;\nADXV_CENTER_Y=%s;\n" % (_g(adxv_center_x_mm), _g(adxv_center_y_mm))
        + "MOSFLM_CENTER_X=%s;\nMOSFLM_CENTER_Y=%s;\n" % (_g(mosflm_center_x_mm), _g(mosflm_center_y_mm))
        + "DENZO_X_BEAM=%s;\nDENZO_Y_BEAM=%s;\n" % (_g(denzo_x_beam_mm), _g(denzo_y_beam_mm))
        + "DIALS_ORIGIN=%s,%s,%s\n" % tuple(_g(v) for v in origin)
        + "XDS_ORGX=%s;\nXDS_ORGY=%s;\n" % (_g(xds_orgx), _g(xds_orgy))
        + "CLOSE_DISTANCE=%s;\n" % _g(close_distance_mm)
        + "PHI=%s;\nOSC_START=%s;\nOSC_RANGE=%s;\n" % (_g(phi_deg), _g(osc_start_deg), _g(osc_range_deg))
        + "TWOTHETA=%s;\n" % _g(twotheta_deg)
        + "DETECTOR_SN=000;\n"
        + "BEAMLINE=fake;\n"
        + "}\f"
    )
    size = SMV_HEADER_BYTES
    raw = ("{\nHEADER_BYTES=%d;\n%s" % (size, body)).encode("ascii")
    if len(raw) > size:
        if overflow == "error":
            raise ValueError(f"SMV header text is {len(raw)} bytes, more than {SMV_HEADER_BYTES}")
        if overflow == "c":
            return raw
        while len(raw) > size:
            size += SMV_HEADER_BYTES
            raw = ("{\nHEADER_BYTES=%d;\n%s" % (size, body)).encode("ascii")
    return raw + b" " * (size - len(raw))


def write_smv(path, data_uint16, header_bytes) -> None:
    """Write an SMV image: the header bytes, then the pixels.

    Parameters
    ----------
    path : str or os.PathLike
        Output file; written atomically (temporary file + ``os.replace``).
    data_uint16 : numpy.ndarray
        ``uint16`` array of shape ``(slow, fast)``; written in native byte
        order, fast index fastest, like C's ``fwrite``.
    header_bytes : bytes
        The header, normally from :func:`format_smv_header`.

    Raises
    ------
    ValueError
        If the data is not a 2-D ``uint16`` array, or the header's
        ``SIZE1``/``SIZE2`` disagree with its shape.
    NanoBraggError
        If the file cannot be written.
    """
    data = np.asarray(data_uint16)
    if data.dtype.kind != "u" or data.dtype.itemsize != 2:
        raise ValueError(f"SMV pixel data must be uint16, got {data.dtype}")
    if data.ndim != 2:
        raise ValueError(f"SMV pixel data must be 2-D (slow, fast), got shape {data.shape}")
    header = bytes(header_bytes)
    text = header.decode("latin-1")
    for key, size in (("SIZE1", data.shape[1]), ("SIZE2", data.shape[0])):
        value = header_value(text, key)
        if value == value and int(value) != size:  # present and not NaN
            raise ValueError(f"header {key}={value:g} does not match data shape {data.shape} (slow, fast)")
    data = np.ascontiguousarray(data, dtype=np.dtype("=u2"))
    atomic_write_bytes(path, (header, data))


@dataclass(frozen=True)
class SMVImage:
    """An SMV image as read by :func:`read_smv`.

    Attributes
    ----------
    header_text : str
        The first ``header_size`` bytes decoded as Latin-1.
    header_size : int
        ``HEADER_BYTES`` from the header.
    width : int
        ``SIZE1`` (fast pixels).
    height : int
        ``SIZE2`` (slow pixels).
    data : numpy.ndarray
        ``uint16`` pixels of shape ``(height, width)`` in native byte order.
    swapped : bool
        Whether the file's byte order differed from this machine's and the
        pixels were byte-swapped.
    """

    header_text: str
    header_size: int
    width: int
    height: int
    data: np.ndarray
    swapped: bool = False


def read_smv(path) -> SMVImage:
    """Read an SMV image the way nanoBragg's ``GetFrame`` does.

    The file must begin like an ADSC header (C compares the first 12
    characters of ``"{\\nHEADER_BYTES="``).  ``HEADER_BYTES``, ``SIZE1`` and
    ``SIZE2`` come from :func:`header_value` (``DETECTOR_DIMENSIONS`` for both
    when ``SIZE1`` is 0, as in C); the pixels start at ``HEADER_BYTES`` and are
    byte-swapped when the last ``BYTE_ORDER=`` value does not start with the
    first 10 characters of this machine's byte-order word.  Unlike C, a file
    shorter than its header plus ``2*width*height`` bytes is an error instead
    of being padded with zeros.

    Parameters
    ----------
    path : str or os.PathLike
        SMV file.

    Returns
    -------
    SMVImage
        Header text, sizes and pixel array.

    Raises
    ------
    NanoBraggError
        If the file is missing or unreadable, is not an SMV file, has an
        unusable header, or is truncated.  The message names the file.
    """
    path, raw = read_input(path, "SMV image")
    if len(raw) < SMV_HEADER_BYTES:
        raise NanoBraggError(
            f"{path} is too short for an SMV image: {len(raw)} bytes, less than a {SMV_HEADER_BYTES}-byte header"
        )
    if not raw.startswith(_SMV_MAGIC):
        raise NanoBraggError(f"{path} does not look like an ADSC/SMV image: it does not start with '{{' HEADER_BYTES=")
    header_size_value = header_value(raw[:SMV_HEADER_BYTES].decode("latin-1"), "HEADER_BYTES")
    if not np.isfinite(header_size_value) or int(header_size_value) <= 0:
        raise NanoBraggError(f"{path}: bad HEADER_BYTES value in the SMV header")
    header_size = int(header_size_value)
    if len(raw) < header_size:
        raise NanoBraggError(f"{path} is truncated: {len(raw)} bytes, shorter than its {header_size}-byte header")
    header_text = raw[:header_size].decode("latin-1")

    # byte order: last BYTE_ORDER= value compared over 10 characters, as C does
    key = "BYTE_ORDER="
    c_text = header_text.split("\0", 1)[0]
    pos = c_text.rfind(key)
    if pos >= 0:
        swapped = not c_text[pos + len(key):].startswith(native_byte_order()[:10])
    else:
        swapped = False  # C would crash here; assume the native order

    def _size(keyword):
        value = header_value(header_text, keyword)
        if not np.isfinite(value):
            return 0
        return int(value)

    width = _size("SIZE1")
    height = _size("SIZE2")
    if width == 0:
        width = height = _size("DETECTOR_DIMENSIONS")
    if width <= 0 or height <= 0:
        raise NanoBraggError(f"{path}: the SMV header has no usable SIZE1/SIZE2 (got {width} x {height})")
    offset = (header_size // 2) * 2  # C indexes the data as unsigned short from header_size/2
    needed = offset + 2 * width * height
    if len(raw) < needed:
        raise NanoBraggError(
            f"{path} is truncated: {len(raw)} bytes, but a {header_size}-byte header and "
            f"{width} x {height} 16-bit pixels need {needed}"
        )
    order = "<" if sys.byteorder == "little" else ">"
    if swapped:
        order = ">" if order == "<" else "<"
    data = np.frombuffer(raw, dtype=np.dtype(order + "u2"), count=width * height, offset=offset)
    data = data.astype(np.uint16).reshape(height, width)
    return SMVImage(
        header_text=header_text,
        header_size=header_size,
        width=width,
        height=height,
        data=data,
        swapped=swapped,
    )


def header_value(header_text: str, keyword: str) -> float:
    """Read a number from an SMV header exactly like nanoBragg's ``ValueOf``.

    Finds the LAST occurrence of ``keyword`` as a plain substring, then the
    next ``'='`` after it (possibly on a later line), and converts what
    follows with C ``atof``.  As in C, the text is considered only up to its
    first NUL character.

    Parameters
    ----------
    header_text : str
        Header text (e.g. :attr:`SMVImage.header_text`).
    keyword : str
        Key to look for, e.g. ``"DISTANCE"``.  Substring semantics: it also
        matches ``"CLOSE_DISTANCE"``, and the last occurrence wins.

    Returns
    -------
    float
        The value; NaN if the keyword does not occur, 0.0 if no ``'='``
        follows it, 0.0 if no number follows the ``'='``.

    Raises
    ------
    ValueError
        If ``keyword`` is empty (C would loop forever).

    Examples
    --------
    >>> header_value("DISTANCE=100;\\nCLOSE_DISTANCE=75;\\n", "DISTANCE")
    75.0
    >>> header_value("PHI=10;\\n", "TWOTHETA")
    nan
    """
    if not keyword:
        raise ValueError("header keyword must not be empty")
    if isinstance(header_text, (bytes, bytearray)):
        header_text = bytes(header_text).decode("latin-1")
    text = header_text.split("\0", 1)[0]
    pos = text.find(keyword)
    if pos < 0:
        return float("nan")
    # C repeats strstr from just after each match, so overlapping matches are
    # skipped (rfind could return a later, overlapping one): walk like C.
    while True:
        nxt = text.find(keyword, pos + len(keyword))
        if nxt < 0:
            break
        pos = nxt
    start = pos + len(keyword)
    eq = text.find("=", start)
    if eq < 0:
        return 0.0
    return c_atof(text[eq + 1:])
