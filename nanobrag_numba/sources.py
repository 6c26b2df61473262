"""X-ray sources: beam divergence and spectral dispersion, or a source file.

Builds the table of unit source directions and wavelengths that the kernels
loop over, with C's arithmetic and C's printed lines.  A source file holds
``X Y Z weight lambda`` per line (lambda in metres); as in C the weights are
read but every source counts equally (see docs/differences.md).  Unlike C,
a field that is not a number (C reads it as 0), an infinite value, a source
at the sample position and a wavelength <= 0 are errors naming the line.
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


def build_sources(sourcefile, beam, polar, vert, lambda0, div, disp, round_div: bool,
                  log: Callable[[str], None], source_distance: float = SOURCE_DISTANCE):
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

    Returns
    -------
    table : float64[n, 4]
        Unit vector from the sample to each source and its wavelength.
    weights : float64[n]
        The weights as C stores them (not used by the physics).
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
            rows.append((float(X), float(Y), float(Z), float(I), float(lam)))
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
        lambdas = [lambda0 * (1.0 + dispstep * t - dispersion / 2.0) for t in range(dispsteps)]
        for t, lam in enumerate(lambdas):
            log("lambda%d = %.15g" % (t, lam))
        n = divsteps * dispsteps
        if n == 0:
            raise NanoBraggError("the divergence settings leave no source direction")
        weight = 1.0 / n
        start = (-source_distance * beam[0], -source_distance * beam[1], -source_distance * beam[2])
        for hdiv, vdiv in directions:
            vec = V.rotate_axis(V.rotate_axis(start, polar, vdiv), vert, hdiv)
            for lam in lambdas:
                rows.append((vec[0], vec[1], vec[2], weight, lam))
    log("  created a total of %d sources:" % len(rows))
    table = np.empty((len(rows), 4))
    weights = np.empty(len(rows))
    for i, (X, Y, Z, I, lam) in enumerate(rows):
        u, _ = V.unitize((X, Y, Z))
        table[i] = (u[0], u[1], u[2], lam)
        weights[i] = I
        log("%g %g %g   %g %g" % (X, Y, Z, I, lam))
    return table, weights, divsteps
