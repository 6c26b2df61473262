"""X-ray sources: beam divergence and spectral dispersion, a spectrum, or a source file.

Builds the table of unit source directions and wavelengths that the kernels
loop over, with C's arithmetic and C's printed lines.  A source file holds
``X Y Z weight lambda`` per line (lambda in metres).  C reads the weights
and lets every source count equally; here (:func:`kernel_sources`) each
source counts in proportion to its weight, the weights scaled to sum to the
number of sources so that the single ``/steps`` normalisation keeps the
total fluence, and ``-c_quirks`` keeps C's equal weights (see
docs/differences.md).  A spectrum (``-spectrum FILE`` or the ``spectrum``
setting: wavelengths with weights) replaces the ``-dispersion`` wavelengths:
each divergence direction is combined with each wavelength of the spectrum,
with the wavelength's weight.  Unlike C, a field that is not a number (C
reads it as 0), an infinite value, a source at the sample position and a
wavelength <= 0 are errors naming the line.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from . import vectors as V
from .errors import NanoBraggError

SOURCE_DISTANCE = 10.0


def _div(a, b):
    """IEEE division (C semantics): x/0 is +-inf, 0/0 is nan."""
    if b == 0.0:
        if a == 0.0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def spectrum_pairs(spectrumfile=None, spectrum=None):
    """The spectrum as ``[(wavelength m, weight)]``, or None without one.

    ``spectrumfile`` is read with :func:`nanobrag_numba.io.textcols.read_spectrum`
    (wavelengths in A, converted as ``-lambda`` converts: ``/1e10``);
    ``spectrum`` holds the pairs in metres (the Config setting).  Every
    wavelength must be > 0, every weight >= 0 and one weight > 0.
    """
    if spectrumfile is not None:
        from .io.textcols import read_spectrum
        pairs, _lines = read_spectrum(spectrumfile)
        return [(lam / 1.0e10, w) for lam, w in pairs]
    if spectrum is None:
        return None
    pairs = [(float(lam), float(w)) for lam, w in spectrum]
    if not pairs:
        raise NanoBraggError("spectrum is empty: give at least one (wavelength in m, weight) pair")
    for i, (lam, w) in enumerate(pairs):
        if not (lam > 0.0 and math.isfinite(lam)):
            raise NanoBraggError("spectrum: pair %d has wavelength %g m (must be > 0, in metres)" % (i, lam))
        if not (w >= 0.0 and math.isfinite(w)):
            raise NanoBraggError("spectrum: pair %d has weight %g (weights are finite and >= 0)" % (i, w))
    if not any(w > 0.0 for _, w in pairs):
        raise NanoBraggError("spectrum: every weight is 0 (the spectrum has no intensity)")
    return pairs


def weights_used(cfg) -> bool:
    """Whether the sources count by their weights: a spectrum's always, ``-sourcefile``'s with
    ``-source_weights``; never under ``-c_quirks`` (C's equal weights)."""
    return not cfg.c_quirks and (cfg.spectrum is not None or cfg.spectrumfile is not None or cfg.source_weights)


def kernel_sources(table, weights, equal: bool) -> np.ndarray:
    """The kernel's source table: ``table`` with a fifth column, each source's weight.

    Weights used (``equal`` false, see :func:`weights_used`): scaled to sum
    to the number of sources (so that the one ``/steps`` scale keeps the
    total fluence); exactly 1.0 each when they are all equal (every C input
    without weights, bit for bit).  ``equal``: 1.0 each, C's equal weights.
    """
    n = table.shape[0]
    out = np.empty((n, 5))
    out[:, :4] = table
    w = np.asarray(weights, dtype=np.float64)
    if equal or n == 0 or np.all(w == w[0]):
        out[:, 4] = 1.0
    else:
        out[:, 4] = w * (n / math.fsum(w))
    return out


def build_sources(sourcefile, beam, polar, vert, lambda0, div, disp, round_div: bool,
                  log: Callable[[str], None], source_distance: float = SOURCE_DISTANCE,
                  spectrum=None, check_weights: bool = False):
    """Unit source directions and wavelengths, printing C's lines.

    Parameters
    ----------
    sourcefile : str or None
    beam, polar, vert : 3-tuples
        Beam direction, E-vector and their cross product (unit).
    lambda0 : float
        Central wavelength (m).
    div : tuple
        ``(hdivrange, hdivstep, hdivsteps, vdivrange, vdivstep, vdivsteps)`` after C's
        sampling logic (radians).
    disp : tuple
        ``(dispersion, dispstep, dispsteps)`` (fractions).
    source_distance : float
        Distance of the sources from the sample (m): 10 in nanoBragg,
        ``-source_distance`` in nonBragg.  Only the directions are used.
    spectrum : list of (float, float), optional
        ``(wavelength m, weight)`` pairs (:func:`spectrum_pairs`): they
        replace the dispersion's wavelengths, each with its weight.
    check_weights : bool
        Refuse negative source-file weights, and all-zero ones (naming the
        line), because the weights will be used.

    Returns
    -------
    table : float64[n, 4]
        Unit vector from the sample to each source and its wavelength.
    weights : float64[n]
        The weights as C stores them (1/n for generated sources), or the
        spectrum's weight of each source (see :func:`kernel_sources`).
    divsteps : int
        Number of divergence directions (C prints it), -1 for a source file.
    """
    rows = []
    divsteps = -1
    if sourcefile is not None:
        from .io.textcols import read_numeric_columns
        data, linenos = read_numeric_columns(sourcefile, 5, "source file")
        for (X, Y, Z, I, lam), lineno in zip(data, linenos):
            if math.isnan(X):
                X = -source_distance * beam[0]
            if math.isnan(Y):
                Y = -source_distance * beam[1]
            if math.isnan(Z):
                Z = -source_distance * beam[2]
            if math.isnan(I):
                I = 1.0
            if math.isnan(lam):
                lam = lambda0
            if not lam > 0.0:
                raise NanoBraggError("%s, line %d: a source has wavelength %g m (must be > 0, in metres)"
                                     % (sourcefile, lineno, lam))
            if X == 0.0 and Y == 0.0 and Z == 0.0:
                raise NanoBraggError("%s, line %d: the source is at the sample (X Y Z = 0 0 0), so it has no "
                                     "direction" % (sourcefile, lineno))
            if check_weights and I < 0.0:
                raise NanoBraggError("%s, line %d: a source has weight %g (weights are >= 0; -c_quirks ignores "
                                     "them, as C)" % (sourcefile, lineno, I))
            rows.append((float(X), float(Y), float(Z), float(I), float(lam)))
        if check_weights and not any(r[3] > 0.0 for r in rows):
            raise NanoBraggError("%s: every source has weight 0 (no intensity; -c_quirks ignores the weights, "
                                 "as C)" % sourcefile)
    else:
        hdivrange, hdivstep, hdivsteps, vdivrange, vdivstep, vdivsteps = div
        dispersion, dispstep, dispsteps = disp
        directions = []
        for hdiv_tic in range(hdivsteps):
            for vdiv_tic in range(vdivsteps):
                hdiv = hdivstep * hdiv_tic - hdivrange / 2.0
                vdiv = vdivstep * vdiv_tic - vdivrange / 2.0
                test = _div(_div(hdiv * hdiv - hdivstep * hdivstep / 4.0 * (1 - hdivsteps % 2), hdivrange),
                            hdivrange)
                test += _div(_div(vdiv * vdiv - vdivstep * vdivstep / 4.0 * (1 - vdivsteps % 2), vdivrange),
                             vdivrange)
                if round_div and test * 4.0 > 1.1:
                    continue
                directions.append((hdiv, vdiv))
                log("divergence deviation: %g %g" % (hdiv, vdiv))
        divsteps = len(directions)
        if spectrum is not None:
            lambdas = [lam for lam, _w in spectrum]
        else:
            lambdas = [lambda0 * (1.0 + dispstep * t - dispersion / 2.0) for t in range(dispsteps)]
        for t, lam in enumerate(lambdas):
            log("lambda%d = %.15g" % (t, lam))
        n = divsteps * len(lambdas)
        if n == 0:
            raise NanoBraggError("the divergence settings leave no source direction")
        weight = 1.0 / n
        lam_weights = [w for _lam, w in spectrum] if spectrum is not None else [weight] * len(lambdas)
        start = (-source_distance * beam[0], -source_distance * beam[1], -source_distance * beam[2])
        for hdiv, vdiv in directions:
            vec = V.rotate_axis(V.rotate_axis(start, polar, vdiv), vert, hdiv)
            for lam, w in zip(lambdas, lam_weights):
                rows.append((vec[0], vec[1], vec[2], w, lam))
    log("  created a total of %d sources:" % len(rows))
    table = np.empty((len(rows), 4))
    weights = np.empty(len(rows))
    for i, (X, Y, Z, I, lam) in enumerate(rows):
        u, _ = V.unitize((X, Y, Z))
        table[i] = (u[0], u[1], u[2], lam)
        weights[i] = I
        log("%g %g %g   %g %g" % (X, Y, Z, I, lam))
    return table, weights, divsteps
