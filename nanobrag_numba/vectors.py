"""Host-side 3-vector helpers that repeat the C program's arithmetic exactly.

The geometry and crystal set-up run once per image on the host, in plain
Python floats (IEEE double, like C) and with ``math`` (the C library), so
that every vector the kernels receive carries the same bits as in nanoBragg.
Vectors are 3-tuples ``(x, y, z)``; the magnitude that C keeps in element 0
is returned separately where C uses it.
"""
import math

Vec = tuple


def dot(u, v):
    """Inner product, summed in C's order (x, then y, then z)."""
    return u[0] * v[0] + u[1] * v[1] + u[2] * v[2]


def cross(u, v):
    """Cross product ``u x v``."""
    return (u[1] * v[2] - u[2] * v[1],
            u[2] * v[0] - u[0] * v[2],
            u[0] * v[1] - u[1] * v[0])


def magnitude(v):
    """Euclidean length, ``sqrt(x*x + y*y + z*z)``."""
    return math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])


def unitize(v):
    """Return ``(unit vector, length)``; a zero vector stays zero (as C)."""
    mag = magnitude(v)
    if mag != 0.0:
        return (v[0] / mag, v[1] / mag, v[2] / mag), mag
    return (0.0, 0.0, 0.0), mag


def scale(v, s):
    """``s * v`` component by component (C's ``vector_scale``)."""
    return (s * v[0], s * v[1], s * v[2])


def rescale(v, new_magnitude):
    """Force the length of ``v`` to ``new_magnitude`` (C's ``vector_rescale``)."""
    old = magnitude(v)
    if old <= 0.0:
        old = 1.0
    return (new_magnitude / old * v[0], new_magnitude / old * v[1], new_magnitude / old * v[2])


def rotate_xyz(v, phix, phiy, phiz):
    """Rotate about x, then y, then z (radians); a zero angle is skipped."""
    x, y, z = v
    if phix != 0:
        c, s = math.cos(phix), math.sin(phix)
        y, z = y * c + z * -s, y * s + z * c
    if phiy != 0:
        c, s = math.cos(phiy), math.sin(phiy)
        x, z = x * c + y * 0 + z * s, x * -s + y * 0 + z * c
    if phiz != 0:
        c, s = math.cos(phiz), math.sin(phiz)
        x, y = x * c + y * -s, x * s + y * c
    return (x, y, z)


def rotate_axis(v, axis, phi):
    """Rotate ``v`` by ``phi`` radians about ``axis`` (Rodrigues, C's order)."""
    sinphi = math.sin(phi)
    cosphi = math.cos(phi)
    d = (axis[0] * v[0] + axis[1] * v[1] + axis[2] * v[2]) * (1.0 - cosphi)
    return (axis[0] * d + v[0] * cosphi + (-axis[2] * v[1] + axis[1] * v[2]) * sinphi,
            axis[1] * d + v[1] * cosphi + (+axis[2] * v[0] - axis[0] * v[2]) * sinphi,
            axis[2] * d + v[2] * cosphi + (-axis[1] * v[0] + axis[0] * v[1]) * sinphi)


def rotate_umat(v, umat):
    """Multiply ``v`` by a row-major 3x3 matrix given as 9 numbers."""
    return (umat[0] * v[0] + umat[1] * v[1] + umat[2] * v[2],
            umat[3] * v[0] + umat[4] * v[1] + umat[5] * v[2],
            umat[6] * v[0] + umat[7] * v[1] + umat[8] * v[2])
