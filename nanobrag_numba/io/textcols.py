"""Multi-column text tables read the way nanoBragg's ``read_text_file`` reads them.

Part of the bottom ``io`` layer.  The command line uses
:func:`read_text_columns` for ``-sourcefile`` (5 columns: X Y Z weight lambda)
and ``-stol`` (2 columns: sin(theta)/lambda, F); the simulator then fills in
defaults for the NaN entries.  :func:`c_atof` is the C library ``atof`` used by
both this reader and :func:`nanobrag_numba.io.smv.header_value`.

C semantics reproduced here:

* a line is skipped when nothing but the delimiters ``" \\t,;:!"`` precede its
  newline;
* every other line is one row; its fields are the runs of non-delimiter
  characters, each converted with ``atof`` (so a non-numeric field such as
  ``abc`` or ``#`` reads as 0.0, and ``1.5abc`` as 1.5);
* fields beyond ``ncols`` are ignored, missing trailing fields are NaN.

Deliberate difference from the C program: missing trailing fields are always
NaN.  In C, when the last field of a line runs into the end of the line without
a delimiter in between and is not made only of the characters
``0123456789-+.EGeg`` (``"1.5x\n"``, ``"nan\n"``, anything before a ``"\r\n"``
ending), or when the last line has no newline, the scan skips past the line end
and every remaining column is set to ``atof("") = 0.0`` instead of NaN (checked
against the C binary: a ``-sourcefile`` line ``abc 1.5x`` becomes the source
``0 1.5 0`` with weight 0 and wavelength 0).  Here ``"\r\n"`` is also treated
as a plain line end, so a line holding only ``"\r\n"`` is blank rather than a
row of zeros.  Lines are not split at 10239 characters as ``fgets`` would.
"""

from __future__ import annotations

import math
import re

import numpy as np

from ..errors import NanoBraggError
from . import read_input

__all__ = ["c_atof", "read_text_columns", "read_numeric_columns", "read_spectrum", "DELIMITERS"]

#: Field separators of ``read_text_file`` in nanoBragg.c.
DELIMITERS = " \t,;:!"

_C_SPACE = " \t\n\v\f\r"

_DEC_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_HEX_RE = re.compile(r"([+-]?)0[xX]((?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?\d+)?)")
_SPECIAL_RE = re.compile(r"([+-]?)(infinity|inf|nan(?:\([0-9A-Za-z_]*\))?)", re.IGNORECASE)
_SPLIT_RE = re.compile("[" + re.escape(DELIMITERS) + "]+")


def c_atof(text: str) -> float:
    """Convert the longest numeric prefix of ``text`` like C's ``atof``.

    Leading C white space (space, tab, newline, vertical tab, form feed,
    carriage return) is skipped; then a decimal number, a hexadecimal float
    (``0x1.8p3``), ``inf``/``infinity`` or ``nan`` is read, each with an
    optional sign.  Whatever follows the number is ignored.  If no number can be
    read the result is 0.0, as in C; values too large for a double give
    ``inf``.

    Parameters
    ----------
    text : str
        Text starting at the position ``atof`` would be given.

    Returns
    -------
    float
        The value ``atof`` returns in the C locale.

    Examples
    --------
    >>> c_atof("  12.5;\\n")
    12.5
    >>> c_atof("1e-3abc")
    0.001
    >>> c_atof("abc")
    0.0
    """
    pos = 0
    n = len(text)
    while pos < n and text[pos] in _C_SPACE:
        pos += 1
    m = _HEX_RE.match(text, pos)
    if m:
        body = m.group(2)
        if "p" not in body.lower():
            body += "p0"
        try:
            value = float.fromhex("0x" + body)
        except OverflowError:
            value = math.inf
        return -value if m.group(1) == "-" else value
    m = _SPECIAL_RE.match(text, pos)
    if m:
        value = math.inf if m.group(2).lower().startswith("inf") else math.nan
        return -value if m.group(1) == "-" else value
    m = _DEC_RE.match(text, pos)
    if m:
        return float(m.group(0))
    return 0.0


def _numeric_prefix(text: str) -> bool:
    """True when C's ``atof`` finds a number at the start of ``text`` (not the 0.0 of "no number")."""
    pos = 0
    while pos < len(text) and text[pos] in _C_SPACE:
        pos += 1
    return bool(_HEX_RE.match(text, pos) or _SPECIAL_RE.match(text, pos) or _DEC_RE.match(text, pos))


def _quote(line: str) -> str:
    line = line.rstrip("\r")
    return repr(line if len(line) <= 80 else line[:77] + "...")


def _read_rows(path, ncols: int, strict: bool, what: str):
    ncols = int(ncols)
    if ncols < 1:
        raise ValueError(f"ncols must be at least 1, got {ncols}")
    path, raw = read_input(path, what)
    text = raw.decode("latin-1")
    rows = []
    linenos = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if line.endswith("\r"):
            line = line[:-1]
        body = line.lstrip(DELIMITERS)
        if not body:
            continue
        row = [math.nan] * ncols
        for i, field in enumerate(_SPLIT_RE.split(body)[:ncols]):
            if not field:
                continue
            row[i] = c_atof(field)
            if strict and not _numeric_prefix(field):
                raise NanoBraggError(f"{path}, line {lineno}: {field[:40]!r} is not a number: {_quote(line)}")
            if strict and math.isinf(row[i]):
                raise NanoBraggError(f"{path}, line {lineno}: {field[:40]!r} is not a finite number: {_quote(line)}")
        rows.append(row)
        linenos.append(lineno)
    if not rows:
        raise NanoBraggError(f"no data lines in {path}: expected lines of {ncols} numbers")
    return np.array(rows, dtype=np.float64).reshape(len(rows), ncols), linenos


def read_numeric_columns(path, ncols: int, what: str = "text file"):
    """Like :func:`read_text_columns`, but refuse what C would silently read as 0 or infinity.

    A field with no number at its start (C's ``atof`` gives 0.0: a stray
    header line, text garbage, a binary file) or an infinite value is an
    error naming the file, the line and the field.  ``nan`` stays allowed:
    C uses it for "not given" (the simulator fills in the default).

    Returns
    -------
    table : numpy.ndarray
        ``float64`` array of shape ``(nlines, ncols)``.
    linenos : list of int
        The 1-based line of each row (for later messages).

    Raises
    ------
    NanoBraggError
        If the file cannot be opened, holds no data lines, or a field is
        not a finite number.
    """
    return _read_rows(path, ncols, True, what)


def read_text_columns(path, ncols: int) -> np.ndarray:
    """Read a delimited numeric text file into an ``(nlines, ncols)`` array.

    Implements ``read_text_file`` of nanoBragg.c (see the module docstring for
    the exact rules): one row per non-blank line, fields separated by any run
    of ``" \\t,;:!"``, values converted with C ``atof``, extra fields ignored,
    missing fields NaN.

    Parameters
    ----------
    path : str or os.PathLike
        Text file to read.
    ncols : int
        Number of columns to return (5 for ``-sourcefile``, 2 for ``-stol``).

    Returns
    -------
    numpy.ndarray
        ``float64`` array of shape ``(nlines, ncols)``.

    Raises
    ------
    NanoBraggError
        If the file cannot be opened or contains no data lines.
    ValueError
        If ``ncols`` is not a positive integer.
    """
    return _read_rows(path, ncols, False, "text file")[0]


_SPECTRUM_SPLIT = re.compile(r"[\s,]+")


def read_spectrum(path):
    """A ``-spectrum`` file: lines of ``wavelength(A) weight`` (this port's own format, strict).

    * ``#`` starts a comment that runs to the end of the line; blank lines
      (and lines holding only a comment) are skipped;
    * every other line holds exactly two numbers, separated by white space
      and/or commas: the wavelength in Angstrom (> 0) and its relative
      weight (>= 0; only the ratios matter);
    * at least one line, and at least one weight > 0.

    Anything else (text, a third column, ``nan``/``inf``) is an error
    naming the file and the line: unlike C's ``read_text_file``, nothing is
    read as 0.

    Returns
    -------
    pairs : list of (float, float)
        ``(wavelength in A, weight)`` per line, in file order.
    linenos : list of int
        The 1-based line of each pair.

    Raises
    ------
    NanoBraggError
        One line naming the file, the line and the problem.
    """
    path, raw = read_input(path, "spectrum file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NanoBraggError(f"{path} is not a text file (expected lines of 'wavelength(A) weight')") from None
    pairs = []
    linenos = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        fields = [f for f in _SPECTRUM_SPLIT.split(body) if f]
        if len(fields) != 2:
            raise NanoBraggError(f"{path}, line {lineno}: expected 2 numbers (wavelength in A, weight), "
                                 f"got {len(fields)}: {_quote(line)}")
        values = []
        for field in fields:
            if _SPECIAL_RE.fullmatch(field):
                raise NanoBraggError(f"{path}, line {lineno}: {field[:40]!r} is not a finite number: "
                                     f"{_quote(line)}")
            if not _DEC_RE.fullmatch(field):
                raise NanoBraggError(f"{path}, line {lineno}: {field[:40]!r} is not a number: {_quote(line)}")
            v = float(field)
            if not math.isfinite(v):        # 1e999
                raise NanoBraggError(f"{path}, line {lineno}: {field[:40]!r} is not a finite number: "
                                     f"{_quote(line)}")
            values.append(v)
        lam, weight = values
        if not lam > 0.0:
            raise NanoBraggError(f"{path}, line {lineno}: wavelength {lam:g} A (must be > 0, in Angstrom)")
        if weight < 0.0:
            raise NanoBraggError(f"{path}, line {lineno}: weight {weight:g} is negative (weights are >= 0)")
        pairs.append((lam, weight))
        linenos.append(lineno)
    if not pairs:
        raise NanoBraggError(f"no data lines in {path}: expected lines of 'wavelength(A) weight'")
    if not any(w > 0.0 for _, w in pairs):
        raise NanoBraggError(f"{path}: every weight is 0 (the spectrum has no intensity)")
    return pairs, linenos
