"""Raw float images, 8-bit PGM previews and TIFF output.

Part of the bottom ``io`` layer; the command line calls these for
``-floatfile`` and ``-pgmfile``, the Python API may also use
:func:`write_tiff`.  The simulator does the arithmetic (scaling, clipping,
truncation to ``uint8``); the functions here only put bytes on disk, atomically,
in the layouts nanoBragg.c uses:

* float image: ``slow*fast`` native-endian ``float32``, fast index fastest, no
  header (``fwrite(floatimage, sizeof(float), pixels, outfile)``);
* PGM: ``"P5\\n<fast> <slow>\\n# pixels scaled by <%g of pgm_scale>\\n255\\n"``
  then one byte per pixel.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass

import numpy as np

from ..errors import NanoBraggError
from . import read_input
from .atomic import atomic_write_bytes

__all__ = [
    "write_float_image",
    "read_float_image",
    "format_pgm_header",
    "write_pgm",
    "read_pgm",
    "PGMImage",
    "write_tiff",
]


def write_float_image(path, image) -> None:
    """Write a raw ``float32`` image (nanoBragg ``-floatfile`` layout).

    Parameters
    ----------
    path : str or os.PathLike
        Output file, written atomically.
    image : array_like
        Image of shape ``(slow, fast)`` (any shape is accepted; it is written
        in C order).  It is converted to native-endian ``float32``.

    Raises
    ------
    NanoBraggError
        If the file cannot be written.
    """
    data = np.ascontiguousarray(image, dtype=np.dtype("=f4"))
    atomic_write_bytes(path, (data,))


def read_float_image(path, shape=None) -> np.ndarray:
    """Read a raw native-endian ``float32`` image.

    Parameters
    ----------
    path : str or os.PathLike
        File written by :func:`write_float_image` or nanoBragg ``-floatfile``.
    shape : tuple of int, optional
        ``(slow, fast)``; when given the file must hold exactly that many
        values and the result is reshaped to it.

    Returns
    -------
    numpy.ndarray
        ``float32`` array, 1-D when ``shape`` is None.

    Raises
    ------
    NanoBraggError
        If the file cannot be read, its size is not a multiple of 4 bytes, or
        it does not match ``shape``.
    """
    path, raw = read_input(path, "float image")
    if len(raw) % 4:
        raise NanoBraggError(f"{path} is not a float32 image: its size {len(raw)} is not a multiple of 4 bytes")
    data = np.frombuffer(raw, dtype=np.dtype("=f4")).copy()
    if shape is not None:
        shape = tuple(int(s) for s in shape)
        if int(np.prod(shape)) != data.size:
            raise NanoBraggError(
                f"{path} holds {data.size} float32 values, but shape {shape} needs {int(np.prod(shape))}"
            )
        data = data.reshape(shape)
    return data


def format_pgm_header(fast: int, slow: int, pgm_scale: float) -> bytes:
    """Return the PGM header nanoBragg writes.

    Parameters
    ----------
    fast, slow : int
        Image width and height in pixels.
    pgm_scale : float
        Scale printed in the comment line with ``%g`` (C's ``%lg``).

    Returns
    -------
    bytes
        ``b"P5\\n<fast> <slow>\\n# pixels scaled by <scale>\\n255\\n"``.
    """
    return b"P5\n%d %d\n# pixels scaled by %s\n255\n" % (int(fast), int(slow), (b"%g" % float(pgm_scale)))


def write_pgm(path, image_uint8, pgm_scale: float) -> None:
    """Write an 8-bit binary PGM (nanoBragg ``-pgmfile``).

    Parameters
    ----------
    path : str or os.PathLike
        Output file, written atomically.
    image_uint8 : numpy.ndarray
        ``uint8`` array of shape ``(slow, fast)`` (already scaled and
        truncated by the caller).
    pgm_scale : float
        Scale recorded in the header comment.

    Raises
    ------
    ValueError
        If the image is not a 2-D ``uint8`` array.
    NanoBraggError
        If the file cannot be written.
    """
    data = np.asarray(image_uint8)
    if data.dtype != np.uint8:
        raise ValueError(f"PGM pixel data must be uint8, got {data.dtype}")
    if data.ndim != 2:
        raise ValueError(f"PGM pixel data must be 2-D (slow, fast), got shape {data.shape}")
    header = format_pgm_header(data.shape[1], data.shape[0], pgm_scale)
    atomic_write_bytes(path, (header, np.ascontiguousarray(data)))


@dataclass(frozen=True)
class PGMImage:
    """A binary PGM as read by :func:`read_pgm`.

    Attributes
    ----------
    data : numpy.ndarray
        Pixels of shape ``(height, width)``: ``uint8`` when ``maxval`` < 256,
        otherwise ``uint16`` (big-endian in the file, native here).
    maxval : int
        Maximum grey value from the header.
    pgm_scale : float or None
        Number from a ``# pixels scaled by X`` comment, if present.
    comments : tuple of str
        All comment lines, without the ``#``.
    """

    data: np.ndarray
    maxval: int
    pgm_scale: float | None
    comments: tuple

    @property
    def width(self) -> int:
        """Number of fast pixels."""
        return int(self.data.shape[1])

    @property
    def height(self) -> int:
        """Number of slow pixels."""
        return int(self.data.shape[0])


_PGM_WS = b" \t\n\v\f\r"
_SCALE_RE = re.compile(r"pixels scaled by\s+(\S+)")


def read_pgm(path) -> PGMImage:
    """Read a binary (``P5``) PGM file.

    Parameters
    ----------
    path : str or os.PathLike
        PGM file, e.g. one written by :func:`write_pgm` or by nanoBragg.

    Returns
    -------
    PGMImage
        Pixels, maximum value, and the scale from nanoBragg's comment line.

    Raises
    ------
    NanoBraggError
        If the file cannot be read, is not a P5 PGM, or is truncated.
    """
    path, raw = read_input(path, "PGM image")
    if not raw.startswith(b"P5"):
        raise NanoBraggError(f"{path} is not a binary PGM image: it does not start with 'P5'")
    pos = 2
    fields = []
    comments = []
    n = len(raw)
    while len(fields) < 3:
        while pos < n and raw[pos] in _PGM_WS:
            pos += 1
        if pos < n and raw[pos : pos + 1] == b"#":
            end = raw.find(b"\n", pos)
            end = n if end < 0 else end
            comments.append(raw[pos + 1 : end].decode("latin-1").strip())
            pos = end
            continue
        start = pos
        while pos < n and raw[pos] not in _PGM_WS and raw[pos : pos + 1] != b"#":
            pos += 1
        token = raw[start:pos]
        if not token.isdigit():
            raise NanoBraggError(f"{path}: malformed PGM header (expected width, height and maxval)")
        fields.append(int(token))
    if pos >= n or raw[pos] not in _PGM_WS:
        raise NanoBraggError(f"{path}: malformed PGM header (no white space after maxval)")
    pos += 1  # exactly one white-space character before the pixels
    width, height, maxval = fields
    if width <= 0 or height <= 0 or not 0 < maxval < 65536:
        raise NanoBraggError(f"{path}: bad PGM size {width} x {height} or maxval {maxval}")
    dtype = np.dtype(np.uint8) if maxval < 256 else np.dtype(">u2")
    needed = width * height * dtype.itemsize
    if n - pos < needed:
        raise NanoBraggError(f"{path} is truncated: {n - pos} bytes of pixels, {width} x {height} need {needed}")
    data = np.frombuffer(raw, dtype=dtype, count=width * height, offset=pos)
    data = data.astype(np.uint8 if maxval < 256 else np.uint16).reshape(height, width)
    scale = None
    for comment in comments:
        m = _SCALE_RE.search(comment)
        if m:
            try:
                scale = float(m.group(1))
            except ValueError:
                scale = None
    return PGMImage(data=data, maxval=maxval, pgm_scale=scale, comments=tuple(comments))


def write_tiff(path, image) -> None:
    """Write a ``float32`` image as a single-page TIFF (Python API extra).

    Parameters
    ----------
    path : str or os.PathLike
        Output file, written atomically.
    image : array_like
        2-D image of shape ``(slow, fast)``, or the panel stack ``(panels, slow, fast)`` of a
        multi-panel detector (one TIFF page per panel); converted to ``float32``.

    Raises
    ------
    NanoBraggError
        If :mod:`tifffile` is not installed or the file cannot be written.
    ValueError
        If the image is not 2-D.
    """
    try:
        import tifffile
    except ImportError as exc:  # pragma: no cover - tifffile is a dependency
        raise NanoBraggError(f"cannot write {os.fspath(path)}: TIFF output needs the 'tifffile' package") from exc
    data = np.ascontiguousarray(image, dtype=np.float32)
    if data.ndim not in (2, 3):
        raise ValueError(f"TIFF image must be 2-D (slow, fast) or a panel stack (panels, slow, fast), "
                         f"got shape {data.shape}")
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, data)
    atomic_write_bytes(path, (buffer.getbuffer(),))
