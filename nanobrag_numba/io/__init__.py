"""Readers and writers of nanoBragg's file formats (SMV, raw float, PGM, HKL, Fdump, CBF, NXmx, text columns)."""
import os

from ..errors import NanoBraggError


def read_input(path, what):
    """``(path, bytes)`` of an input file; an unreadable one is a NanoBraggError naming ``what`` and the file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            return path, handle.read()
    except OSError as exc:
        raise NanoBraggError(f"cannot open {what} {path}: {exc.strerror or exc}") from exc
