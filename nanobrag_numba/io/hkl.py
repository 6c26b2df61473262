"""Structure-factor tables: ``-hkl`` text files and the binary ``Fdump.bin`` cache.

Part of the bottom ``io`` layer.  The command line reads either an ``h k l F``
text file (:func:`read_hkl`) or, when no ``-hkl`` is given, the cache a previous
run left behind (:func:`read_fdump`); after reading a text file it writes the
cache (:func:`write_fdump`).  The simulator looks structure factors up in
:attr:`HKLTable.F` with ``F[h - h_min, k - k_min, l - l_min]``.

The table has exactly the layout of nanoBragg.c's calloc'ed ``Fhkl``: shape
``(h_range + 1, k_range + 1, l_range + 1)`` with ``range = max - min + 1``, so
every dimension has one extra, always-zero slot at the end (and ``default_F``
fills only ``[0, range)`` in each dimension).

Fdump layout (C ``fprintf(outfile, "%d %d %d %d %d %d\\n\\f", ...)`` followed by
``fwrite`` of each ``l`` row): the six bounds ``h_min h_max k_min k_max l_min
l_max`` as text, ``"\\n\\f"``, then the whole table as native-endian float64,
``l`` fastest.

The text reader is stricter than C's ``fscanf`` loop, which silently stops at
the first token it cannot parse and misreads indices written as ``3.0``: every
non-blank line must hold exactly four numbers, Miller indices must be integral
(``3.0`` is accepted), and the error names the file and the line.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import NanoBraggError
from . import read_input
from .atomic import atomic_write_bytes

__all__ = ["HKLTable", "read_hkl", "write_fdump", "read_fdump", "MAX_TABLE_ELEMENTS"]

#: Refuse tables with more cells than this (2**31 float64 = 16 GiB); such
#: index ranges come from a wrong file, not from a real structure.
MAX_TABLE_ELEMENTS = 2**31

# Numbers accepted in an HKL file (the grammar numpy.loadtxt accepts).
_NUMBER_RE = re.compile(
    rb"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)\Z", re.IGNORECASE
)
_FDUMP_HEADER_RE = re.compile(rb"\s*([+-]?\d+)\s+([+-]?\d+)\s+([+-]?\d+)\s+([+-]?\d+)\s+([+-]?\d+)\s+([+-]?\d+)\n\f")
_INT_LIMIT = 2**31 - 1  # C stores the indices in int


@dataclass
class HKLTable:
    """Structure factors on a dense ``h, k, l`` grid, laid out as in nanoBragg.c.

    Attributes
    ----------
    h_min, h_max, k_min, k_max, l_min, l_max : int
        Index bounds (inclusive).
    F : numpy.ndarray
        C-contiguous ``float64`` array of shape
        ``(h_range + 1, k_range + 1, l_range + 1)``;
        ``F[h - h_min, k - k_min, l - l_min]`` is the structure factor.
    hkls : int
        Number of reflection lines read from a text file, or
        ``h_range * k_range * l_range`` for a table read from an Fdump (as C
        sets it).
    """

    h_min: int
    h_max: int
    k_min: int
    k_max: int
    l_min: int
    l_max: int
    F: np.ndarray
    hkls: int

    @property
    def h_range(self) -> int:
        """``h_max - h_min + 1``."""
        return self.h_max - self.h_min + 1

    @property
    def k_range(self) -> int:
        """``k_max - k_min + 1``."""
        return self.k_max - self.k_min + 1

    @property
    def l_range(self) -> int:
        """``l_max - l_min + 1``."""
        return self.l_max - self.l_min + 1

    @property
    def bounds(self) -> tuple:
        """``(h_min, h_max, k_min, k_max, l_min, l_max)``."""
        return (self.h_min, self.h_max, self.k_min, self.k_max, self.l_min, self.l_max)


def _allocate(path, h_range, k_range, l_range, what):
    shape = (h_range + 1, k_range + 1, l_range + 1)
    cells = shape[0] * shape[1] * shape[2]
    if cells > MAX_TABLE_ELEMENTS:
        raise NanoBraggError(
            f"{what} {path}: index ranges {h_range} x {k_range} x {l_range} are too large for a "
            f"structure-factor table ({cells} cells); check the file"
        )
    try:
        return np.zeros(shape, dtype=np.float64)
    except MemoryError as exc:
        raise NanoBraggError(f"{what} {path}: not enough memory for a {shape} structure-factor table") from exc


def _quote(line: bytes) -> str:
    text = line.decode("latin-1").rstrip("\r\n")
    if len(text) > 80:
        text = text[:77] + "..."
    return repr(text)


def _parse_lines(path, raw: bytes) -> np.ndarray:
    """Line-by-line parse; raises on the first bad line (slow path)."""
    rows = []
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 4:
            raise NanoBraggError(
                f"HKL file {path}, line {lineno}: expected 4 numbers 'h k l F', found {len(fields)} "
                f"field{'s' if len(fields) != 1 else ''}: {_quote(line)}"
            )
        for field in fields:
            if not _NUMBER_RE.match(field):
                raise NanoBraggError(
                    f"HKL file {path}, line {lineno}: {field.decode('latin-1')!r} is not a number: {_quote(line)}"
                )
        values = [float(f) for f in fields]
        for name, field, value in zip("hkl", fields, values):
            if not (np.isfinite(value) and value == round(value)):
                raise NanoBraggError(
                    f"HKL file {path}, line {lineno}: Miller index {name}={field.decode('latin-1')} "
                    f"is not an integer: {_quote(line)}"
                )
            if abs(value) > _INT_LIMIT:
                raise NanoBraggError(
                    f"HKL file {path}, line {lineno}: Miller index {name}={value:g} is out of range: {_quote(line)}"
                )
        if not np.isfinite(values[3]):
            raise NanoBraggError(
                f"HKL file {path}, line {lineno}: F={fields[3].decode('latin-1')} is not a finite number: {_quote(line)}"
            )
        rows.append(values)
    return np.array(rows, dtype=np.float64).reshape(len(rows), 4)


def _parse_fast(path):
    """Vectorised parse with numpy.loadtxt; None when the slow path must decide.

    OSError (missing or unreadable file) propagates to the caller.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = np.loadtxt(path, dtype=np.float64, comments=None, ndmin=2, encoding="latin-1")
    except (ValueError, TypeError, UnicodeError):
        return None
    if table.shape[0] == 0:
        return table.reshape(0, 4)
    if table.shape[1] != 4:
        return None
    idx = table[:, :3]
    if not np.all(np.isfinite(table[:, 3])):
        return None  # the slow path names the line
    if not np.all(np.isfinite(idx)) or not np.all(idx == np.round(idx)) or np.any(np.abs(idx) > _INT_LIMIT):
        return None
    return table.reshape(-1, 4)


def read_hkl(path, default_F: float = 0.0) -> HKLTable:
    """Read an ``h k l F`` text file into a nanoBragg structure-factor table.

    Parameters
    ----------
    path : str or os.PathLike
        Text file with one reflection per line: three integer Miller indices
        and the structure factor, separated by white space.  Blank lines are
        skipped.
    default_F : float, optional
        Value for reflections absent from the file.  As in C it fills only
        ``[0, range)`` in each dimension; the extra last slot stays 0.

    Returns
    -------
    HKLTable
        Bounds from the smallest and largest index on any line, the dense
        table (a later line for the same ``hkl`` overrides an earlier one), and
        ``hkls`` = number of reflection lines.

    Raises
    ------
    NanoBraggError
        If the file cannot be opened, a line does not hold exactly four
        numbers, a Miller index is not an integer or F is NaN or infinite
        (message gives the line number and quotes the line), or there are no
        reflections.
    """
    path = os.fspath(path)
    try:
        table = _parse_fast(path)
        if table is None:
            with open(path, "rb") as handle:
                raw = handle.read()
            if b"\r" in raw:
                raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            table = _parse_lines(path, raw)
    except OSError as exc:
        raise NanoBraggError(f"cannot open HKL file {path}: {exc.strerror or exc}") from exc
    if table.shape[0] == 0:
        raise NanoBraggError(f"no reflections in HKL file {path}: expected lines 'h k l F'")

    idx = table[:, :3].astype(np.int64)
    F_values = table[:, 3]
    lo = idx.min(axis=0)
    hi = idx.max(axis=0)
    h_min, k_min, l_min = (int(v) for v in lo)
    h_max, k_max, l_max = (int(v) for v in hi)
    h_range, k_range, l_range = (int(v) for v in hi - lo + 1)
    F = _allocate(path, h_range, k_range, l_range, "HKL file")
    if default_F != 0.0:
        F[:h_range, :k_range, :l_range] = default_F

    rel = idx - lo
    flat = (rel[:, 0] * (k_range + 1) + rel[:, 1]) * (l_range + 1) + rel[:, 2]
    # later lines win: keep the last occurrence of every flat index
    rev_unique, rev_first = np.unique(flat[::-1], return_index=True)
    last = len(flat) - 1 - rev_first
    F.reshape(-1)[rev_unique] = F_values[last]
    return HKLTable(h_min, h_max, k_min, k_max, l_min, l_max, F, int(table.shape[0]))


def write_fdump(path, table: HKLTable) -> None:
    """Write the binary structure-factor cache exactly as nanoBragg.c does.

    Parameters
    ----------
    path : str or os.PathLike
        Output file (nanoBragg's default name is ``Fdump.bin``), written
        atomically.
    table : HKLTable
        Table whose ``F`` has shape ``(h_range+1, k_range+1, l_range+1)``.

    Raises
    ------
    ValueError
        If ``table.F`` does not have the shape its bounds imply.
    NanoBraggError
        If the file cannot be written.
    """
    shape = (table.h_range + 1, table.k_range + 1, table.l_range + 1)
    if tuple(np.shape(table.F)) != shape:
        raise ValueError(f"HKLTable.F has shape {np.shape(table.F)}, but its bounds imply {shape}")
    header = b"%d %d %d %d %d %d\n\f" % tuple(int(v) for v in table.bounds)
    data = np.ascontiguousarray(table.F, dtype=np.dtype("=f8"))
    atomic_write_bytes(path, (header, data))


def read_fdump(path) -> HKLTable:
    """Read a structure-factor cache written by :func:`write_fdump` or nanoBragg.

    Parameters
    ----------
    path : str or os.PathLike
        Fdump file: ``"h_min h_max k_min k_max l_min l_max\\n\\f"`` then
        ``(h_range+1)(k_range+1)(l_range+1)`` native float64, ``l`` fastest.

    Returns
    -------
    HKLTable
        The table; ``hkls = h_range * k_range * l_range`` as C sets it.

    Raises
    ------
    NanoBraggError
        If the file cannot be opened, the six-integer header is malformed, the
        bounds are inverted, or the data are truncated or too long.

    Notes
    -----
    C reads the header with ``fscanf("%d%d%d%d%d%d\\n\\f")``, where ``\\n`` and
    ``\\f`` both skip *any* amount of white space: if the first stored double
    began with a white-space byte C would swallow it.  Here the data start
    right after the first ``"\\n\\f"``, which is where C's writer puts them.
    """
    path, raw = read_input(path, "Fdump file")
    m = _FDUMP_HEADER_RE.match(raw[:256])
    if not m:
        raise NanoBraggError(
            f"{path} is not a structure-factor dump: expected 'h_min h_max k_min k_max l_min l_max' then newline "
            "and form feed (delete it or give -hkl to rebuild it)"
        )
    bounds = [int(v) for v in m.groups()]
    h_min, h_max, k_min, k_max, l_min, l_max = bounds
    h_range, k_range, l_range = h_max - h_min + 1, k_max - k_min + 1, l_max - l_min + 1
    if min(h_range, k_range, l_range) < 1:
        raise NanoBraggError(f"{path}: bad index bounds {bounds} in structure-factor dump")
    F = _allocate(path, h_range, k_range, l_range, "Fdump file")
    offset = m.end()
    have = len(raw) - offset
    if have != F.nbytes:
        state = "truncated" if have < F.nbytes else "too long"
        raise NanoBraggError(
            f"{path}: structure-factor dump is {state}: {have} bytes of data, bounds {bounds} need {F.nbytes} "
            "(delete it or give -hkl to rebuild it)"
        )
    F[...] = np.frombuffer(raw, dtype=np.dtype("=f8"), count=F.size, offset=offset).reshape(F.shape)
    if not np.all(np.isfinite(F)):
        bad = np.argwhere(~np.isfinite(F))[0]
        raise NanoBraggError(
            f"{path}: structure-factor dump holds F={F[tuple(bad)]:g} at h,k,l = "
            f"{bad[0] + h_min},{bad[1] + k_min},{bad[2] + l_min} (delete it or give -hkl to rebuild it)"
        )
    return HKLTable(h_min, h_max, k_min, k_max, l_min, l_max, F, h_range * k_range * l_range)
