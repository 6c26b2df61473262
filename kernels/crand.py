"""Bit-for-bit Numba ports of nanoBragg's random-number generators.

This is the bottom layer of the random-number stack.  Nothing here does I/O
or allocates in the hot paths; every function is ``@njit(cache=True)`` and can
be called from other Numba kernels (``kernels/noise.py``) or, through the thin
Python wrapper :mod:`nanobrag_numba.crand`, from ordinary Python.

The C program keeps its generator state in ``static`` variables that are
shared by *all* random streams of one process.  Here that state is kept
explicitly in small numpy arrays that the caller owns and passes in:

``tab`` : int64 array, shape ``(TAB_SIZE,)`` == ``(33,)``
    ``tab[0:32]`` is the ran1 shuffle table ``iv[NTAB]`` and ``tab[32]`` is
    ``iy``.  One table is shared by every stream (the C statics), create it
    with :func:`new_table` (all zeros, i.e. "never initialised", ``iy == 0``).
``idum`` : int64 array, shape ``(1,)``
    The per-stream seed word ``*idum`` (C ``long``).  A stream whose
    ``idum[0] <= 0`` -- or any stream while ``iy == 0`` -- re-initialises the
    *shared* table on its next draw, exactly like C.  A user seed ``N`` given
    as ``-seed N`` on the C command line is stored as ``idum[0] = -N``.
``fst`` : float32 array, shape ``(FSTATE_SIZE,)`` == ``(6,)``
    The float statics of the deviate generators, created by
    :func:`new_fstate`:

    ============  ========================================  ============
    index         meaning (C static)                        initial
    ============  ========================================  ============
    ``FS_SQ``     poidev ``sq``                              0
    ``FS_ALXM``   poidev ``alxm``                            0
    ``FS_G``      poidev ``g``                               0
    ``FS_OLDM``   poidev ``oldm``                            -1
    ``FS_ISET``   gaussdev ``iset`` (0 or 1, stored as float) 0
    ``FS_GSET``   gaussdev ``gset``                          0
    ============  ========================================  ============

Precision follows C's usual arithmetic conversions on x86-64 (SSE, no FMA):
float op float is evaluated in float32, anything involving a double literal
or a double libm call is evaluated in float64 and rounded to float32 where C
stores into a ``float``.  The float32 ``powf`` of ``mosaic_rotation_umat`` is
reached through ``float32 ** float32`` which Numba lowers to libm ``powf``.
"""

import math

import numpy as np
from numba import njit

# ran1 constants (Numerical Recipes, Park-Miller minimal standard + Bays-Durham shuffle)
IA = 16807
IM = 2147483647
AM = 1.0 / IM
IQ = 127773
IR = 2836
NTAB = 32
NDIV = 1 + (IM - 1) // NTAB
EPS = 1.2e-7
RNMX = 1.0 - EPS

#: length of the shared ran1 table array (iv[32] followed by iy)
TAB_SIZE = NTAB + 1
#: index of ``iy`` in the table array
TAB_IY = NTAB

#: indices into the float32 deviate-state array
FS_SQ = 0
FS_ALXM = 1
FS_G = 2
FS_OLDM = 3
FS_ISET = 4
FS_GSET = 5
#: length of the float32 deviate-state array
FSTATE_SIZE = 6

_GAMMLN_COF = (76.18009172947146, -86.50532032941677,
               24.01409824083091, -1.231739572450155,
               0.1208650973866179e-2, -0.5395239384953e-5)

_ONE_THIRD_F = np.float32(1.0 / 3.0)


def new_table():
    """Return a fresh, uninitialised shared ran1 table.

    Returns
    -------
    numpy.ndarray
        int64 array of shape ``(TAB_SIZE,)``, all zero (``iy == 0`` means the
        next draw of any stream initialises it, as for a fresh C process).
    """
    return np.zeros(TAB_SIZE, dtype=np.int64)


def new_fstate():
    """Return fresh float32 statics for ``poidev`` and ``gaussdev``.

    Returns
    -------
    numpy.ndarray
        float32 array of shape ``(FSTATE_SIZE,)`` with C's initial values
        (``oldm = -1``, everything else 0).
    """
    fst = np.zeros(FSTATE_SIZE, dtype=np.float32)
    fst[FS_OLDM] = -1.0
    return fst


def new_idum(seed):
    """Return the per-stream seed word for a user-facing seed.

    Parameters
    ----------
    seed : int
        The number given on the C command line (``-seed N`` etc.).

    Returns
    -------
    numpy.ndarray
        int64 array of shape ``(1,)`` holding ``-seed`` (C: ``seed = -atoi(...)``).
    """
    return np.array([-int(seed)], dtype=np.int64)


@njit(cache=True, inline="always")
def _cdiv(a, b):
    """C integer division (truncates toward zero) for int64 operands."""
    q = a // b
    if q < 0 and q * b != a:
        q += 1
    return q


@njit(cache=True)
def ran1(idum, tab):
    """Uniform deviate on (0, 1): Numerical Recipes ``ran1``, bit-exact.

    Parameters
    ----------
    idum : numpy.ndarray
        int64 ``(1,)`` per-stream seed word, updated in place.  ``idum[0] <= 0``
        (or a never-initialised table) re-initialises the shared table; C sets
        ``idum = 1`` when ``-idum < 1`` (so 0 and every positive value seen
        with an uninitialised table start like seed 1) and ``-idum`` otherwise.
    tab : numpy.ndarray
        int64 ``(TAB_SIZE,)`` shared shuffle table (``iv[0:32]``, ``iy``).

    Returns
    -------
    numpy.float32
        ``(float)(AM*iy)``, clipped to ``(float)(1 - 1.2e-7)``.
    """
    if idum[0] <= 0 or tab[TAB_IY] == 0:
        if -idum[0] < 1:
            idum[0] = 1
        else:
            idum[0] = -idum[0]
        for j in range(NTAB + 7, -1, -1):
            k = _cdiv(idum[0], IQ)
            idum[0] = IA * (idum[0] - k * IQ) - IR * k
            if idum[0] < 0:
                idum[0] += IM
            if j < NTAB:
                tab[j] = idum[0]
        tab[TAB_IY] = tab[0]
    k = _cdiv(idum[0], IQ)
    idum[0] = IA * (idum[0] - k * IQ) - IR * k
    if idum[0] < 0:
        idum[0] += IM
    j = _cdiv(tab[TAB_IY], NDIV)
    tab[TAB_IY] = tab[j]
    tab[j] = idum[0]
    temp = np.float32(AM * np.float64(tab[TAB_IY]))
    if np.float64(temp) > RNMX:
        return np.float32(RNMX)
    return temp


@njit(cache=True)
def gammln(xx):
    """ln(Gamma(xx)) (Lanczos, Numerical Recipes), float in / float out.

    Parameters
    ----------
    xx : float
        Argument; rounded to float32 first (C parameter type ``float``).

    Returns
    -------
    numpy.float32
        The double result rounded to float32, as C returns it.
    """
    x = np.float64(np.float32(xx))
    y = x
    tmp = x + 5.5
    tmp -= (x + 0.5) * math.log(tmp)
    ser = 1.000000000190015
    for j in range(6):
        y += 1.0
        ser += _GAMMLN_COF[j] / y
    return np.float32(-tmp + math.log(2.5066282746310005 * ser / x))


@njit(cache=True)
def gaussdev(idum, tab, fst):
    """Normal deviate (rms 1) by Box-Muller, with C's static spare value.

    Parameters
    ----------
    idum : numpy.ndarray
        int64 ``(1,)`` stream seed word.
    tab : numpy.ndarray
        int64 ``(TAB_SIZE,)`` shared ran1 table.
    fst : numpy.ndarray
        float32 ``(FSTATE_SIZE,)`` statics; uses ``FS_ISET`` and ``FS_GSET``.

    Returns
    -------
    numpy.float32
        The deviate.
    """
    if fst[FS_ISET] == 0:
        while True:
            v1 = np.float32(2.0 * np.float64(ran1(idum, tab)) - 1.0)
            v2 = np.float32(2.0 * np.float64(ran1(idum, tab)) - 1.0)
            rsq = v1 * v1 + v2 * v2
            if not (rsq >= np.float32(1.0) or rsq == np.float32(0.0)):
                break
        drsq = np.float64(rsq)
        fac = np.float32(math.sqrt(-2.0 * math.log(drsq) / drsq))
        fst[FS_GSET] = v1 * fac
        fst[FS_ISET] = 1.0
        return v2 * fac
    fst[FS_ISET] = 0.0
    return fst[FS_GSET]


@njit(cache=True)
def poidev(xm, idum, tab, fst):
    """Poisson deviate with mean ``xm``, bit-exact port of C ``poidev``.

    Direct (multiplicative) method for ``xm < 12``, Lorentzian rejection for
    ``12 <= xm <= 1e6`` and ``xm + sqrt(xm)*gaussdev`` above 1e6.  The cached
    quantities are recomputed only when ``xm`` differs from the previous call
    (C statics ``oldm``, ``g``, ``sq``, ``alxm``, kept in ``fst``).

    Parameters
    ----------
    xm : float
        Mean; rounded to float32 (C parameter type ``float``).
    idum : numpy.ndarray
        int64 ``(1,)`` stream seed word.
    tab : numpy.ndarray
        int64 ``(TAB_SIZE,)`` shared ran1 table.
    fst : numpy.ndarray
        float32 ``(FSTATE_SIZE,)`` deviate statics.

    Returns
    -------
    numpy.float32
        The deviate (integer valued except in the Gaussian branch).
    """
    xm = np.float32(xm)
    dxm = np.float64(xm)
    if dxm > 1.0e6:
        return np.float32(dxm + math.sqrt(dxm) * np.float64(gaussdev(idum, tab, fst)))
    if dxm < 12.0:
        if xm != fst[FS_OLDM]:
            fst[FS_OLDM] = xm
            fst[FS_G] = np.float32(math.exp(-dxm))
        g = fst[FS_G]
        em = np.float32(-1.0)
        t = np.float32(1.0)
        while True:
            em = em + np.float32(1.0)
            t = t * ran1(idum, tab)
            if not (t > g):
                break
        return em
    if xm != fst[FS_OLDM]:
        fst[FS_OLDM] = xm
        fst[FS_SQ] = np.float32(math.sqrt(2.0 * dxm))
        fst[FS_ALXM] = np.float32(math.log(dxm))
        fst[FS_G] = xm * fst[FS_ALXM] - gammln(np.float32(dxm + 1.0))
    sq = fst[FS_SQ]
    alxm = fst[FS_ALXM]
    g = fst[FS_G]
    while True:
        while True:
            y = np.float32(math.tan(math.pi * np.float64(ran1(idum, tab))))
            em = sq * y + xm
            if not (em < np.float32(0.0)):
                break
        em = np.float32(np.floor(np.float64(em)))
        lg = em * alxm - gammln(np.float32(np.float64(em) + 1.0)) - g
        t = np.float32(0.9 * (1.0 + np.float64(y * y)) * math.exp(np.float64(lg)))
        if not (ran1(idum, tab) > t):
            break
    return em


@njit(cache=True)
def uniform3Ddev(idum, tab, out):
    """Random unit vector (C ``uniform3Ddev``), cube rejection.

    Parameters
    ----------
    idum : numpy.ndarray
        int64 ``(1,)`` stream seed word.
    tab : numpy.ndarray
        int64 ``(TAB_SIZE,)`` shared ran1 table.
    out : numpy.ndarray
        float32 ``(3,)``, receives the unit vector ``dx, dy, dz``.

    Returns
    -------
    numpy.float32
        The length ``dr`` (0.01 <= dr <= 1) of the accepted point.
    """
    dr = np.float32(0.0)
    dx = np.float32(0.0)
    dy = np.float32(0.0)
    dz = np.float32(0.0)
    while dr > np.float32(1.0) or np.float64(dr) < 1e-2:
        dx = np.float32(2.1 * (np.float64(ran1(idum, tab)) - 0.5))
        dy = np.float32(2.1 * (np.float64(ran1(idum, tab)) - 0.5))
        dz = np.float32(2.1 * (np.float64(ran1(idum, tab)) - 0.5))
        dr = np.float32(math.sqrt(np.float64(dx * dx + dy * dy + dz * dz)))
    out[0] = dx / dr
    out[1] = dy / dr
    out[2] = dz / dr
    return dr


@njit(cache=True)
def mosaic_rotation_umat(mosaicity, umat, idum, tab):
    """Random rotation on a spherical cap (C ``mosaic_rotation_umat``).

    Consumes three ``ran1`` draws.  ``rot = mosaicity*powf(1-r3*r3, 1/3)`` is
    evaluated in float32 with libm ``powf``; everything else is double.

    Parameters
    ----------
    mosaicity : float
        Cap size in radians; rounded to float32 (C parameter type ``float``).
        C passes ``90.0`` (used as radians) for a random orientation.
    umat : numpy.ndarray
        float64 ``(9,)`` output, row-major rotation matrix.
    idum : numpy.ndarray
        int64 ``(1,)`` stream seed word.
    tab : numpy.ndarray
        int64 ``(TAB_SIZE,)`` shared ran1 table.
    """
    mos = np.float32(mosaicity)
    r1 = 2.0 * np.float64(ran1(idum, tab)) - 1.0
    r2 = 2.0 * np.float64(ran1(idum, tab)) - 1.0
    r3 = 2.0 * np.float64(ran1(idum, tab)) - 1.0

    xyrad = math.sqrt(1.0 - r2 * r2)
    base = np.float32(1.0 - r3 * r3)
    rot = np.float64(mos * (base ** _ONE_THIRD_F))

    v1 = xyrad * math.sin(math.pi * r1)
    v2 = xyrad * math.cos(math.pi * r1)
    v3 = r2

    t1 = math.cos(rot)
    t2 = 1.0 - t1
    t3 = v1 * v1
    t6 = t2 * v1
    t7 = t6 * v2
    t8 = math.sin(rot)
    t9 = t8 * v3
    t11 = t6 * v3
    t12 = t8 * v2
    t15 = v2 * v2
    t19 = t2 * v2 * v3
    t20 = t8 * v1
    t24 = v3 * v3

    umat[0] = t1 + t2 * t3
    umat[1] = t7 - t9
    umat[2] = t11 + t12
    umat[3] = t7 + t9
    umat[4] = t1 + t2 * t15
    umat[5] = t19 - t20
    umat[6] = t11 - t12
    umat[7] = t19 + t20
    umat[8] = t1 + t2 * t24


@njit(cache=True)
def _unit_cross(ax, ay, az, bx, by, bz):
    """``a x b`` divided by its length when that is positive (C's steps in umat2misset)."""
    x = ay * bz - az * by
    y = az * bx - ax * bz
    z = ax * by - ay * bx
    m = math.sqrt(x * x + y * y + z * z)
    if m > 0:
        x /= m
        y /= m
        z /= m
    return x, y, z


@njit(cache=True)
def umat2misset(umat, missets):
    """Convert a rotation matrix to missetting angles (C ``umat2misset``).

    Parameters
    ----------
    umat : numpy.ndarray
        float64 ``(9,)`` row-major rotation matrix (not modified).
    missets : numpy.ndarray
        float64 ``(3,)`` output: ``rotx, roty, rotz`` in radians (C writes
        them to ``missets[1..3]``).
    """
    uxx = umat[0]
    uxy = umat[1]
    uxz = umat[2]
    uyx = umat[3]
    uyy = umat[4]
    uyz = umat[5]
    uzx = umat[6]
    uzy = umat[7]
    uzz = umat[8]

    # make sure it is unitary
    mx = math.sqrt(uxx * uxx + uxy * uxy + uxz * uxz)
    my = math.sqrt(uyx * uyx + uyy * uyy + uyz * uyz)
    mz = math.sqrt(uzx * uzx + uzy * uzy + uzz * uzz)
    if mx > 0:
        uxx /= mx
        uxy /= mx
        uxz /= mx
    if my > 0:
        uyx /= my
        uyy /= my
        uyz /= my
    if mz > 0:
        uzx /= mz
        uzy /= mz
        uzz /= mz

    if mx >= 0 and my <= 0 and mz <= 0:
        uyx = 0.0
        uyy = 1.0
        uyz = 0.0
        uzx = 0.0
        uzy = 0.0
        uzz = 1.0
    if mx <= 0 and my >= 0 and mz <= 0:
        uxx = 1.0
        uxy = 0.0
        uxz = 0.0
        uzx = 0.0
        uzy = 0.0
        uzz = 1.0
    if mx <= 0 and my <= 0 and mz >= 0:
        uxx = 1.0
        uxy = 0.0
        uxz = 0.0
        uyx = 0.0
        uyy = 1.0
        uyz = 0.0

    # two rounds of: cross products, substitute empty rows
    for _round in range(2):
        xcy_x, xcy_y, xcy_z = _unit_cross(uxx, uxy, uxz, uyx, uyy, uyz)
        ycz_x, ycz_y, ycz_z = _unit_cross(uyx, uyy, uyz, uzx, uzy, uzz)
        zcx_x, zcx_y, zcx_z = _unit_cross(uzx, uzy, uzz, uxx, uxy, uxz)

        if mx <= 0:
            uxx = ycz_x
            uxy = ycz_y
            uxz = ycz_z
        if my <= 0:
            uyx = zcx_x
            uyy = zcx_y
            uyz = zcx_z
        if mz <= 0:
            uzx = xcy_x
            uzy = xcy_y
            uzz = xcy_z

    # make sure it is unitary
    mx = math.sqrt(uxx * uxx + uxy * uxy + uxz * uxz)
    my = math.sqrt(uyx * uyx + uyy * uyy + uyz * uyz)
    mz = math.sqrt(uzx * uzx + uzy * uzy + uzz * uzz)
    if mx > 0:
        uxx /= mx
        uxy /= mx
        uxz /= mx
    if my > 0:
        uyx /= my
        uyy /= my
        uyz /= my
    if mz > 0:
        uzx /= mz
        uzy /= mz
        uzz /= mz

    if uzx * uzx < 1.0:
        rotx = math.atan2(uzy, uzz)
        roty = math.atan2(-uzx, math.sqrt(uzy * uzy + uzz * uzz))
        rotz = math.atan2(uyx, uxx)
    else:
        rotx = math.atan2(1.0, 1.0) * 4
        roty = math.atan2(1.0, 1.0) * 2
        rotz = math.atan2(uxy, -uyy)

    missets[0] = rotx
    missets[1] = roty
    missets[2] = rotz


@njit(cache=True)
def ran1_fill(idum, tab, out):
    """Fill ``out`` with successive ``ran1`` draws of one stream.

    Parameters
    ----------
    idum : numpy.ndarray
        int64 ``(1,)`` stream seed word.
    tab : numpy.ndarray
        int64 ``(TAB_SIZE,)`` shared ran1 table.
    out : numpy.ndarray
        float32 1-D output.
    """
    for i in range(out.shape[0]):
        out[i] = ran1(idum, tab)


@njit(cache=True)
def poidev_fill(xms, idum, tab, fst, out):
    """Draw ``poidev(xms[i])`` for each i in order into ``out``.

    Parameters
    ----------
    xms : numpy.ndarray
        float32 1-D means.
    idum, tab, fst : numpy.ndarray
        Generator state (see module docstring).
    out : numpy.ndarray
        float32 1-D output, same length as ``xms``.
    """
    for i in range(xms.shape[0]):
        out[i] = poidev(xms[i], idum, tab, fst)


@njit(cache=True)
def mosaic_umats_fill(mosaicity, idum, tab, umats):
    """Mosaic domain rotations exactly as C ``main`` builds them.

    Every domain calls :func:`mosaic_rotation_umat` (domain 0 consumes its
    three draws too) and domain 0 is then forced to the identity.

    Parameters
    ----------
    mosaicity : float
        Mosaic spread in radians (rounded to float32 by the callee).
    idum, tab : numpy.ndarray
        Stream seed word and shared ran1 table.
    umats : numpy.ndarray
        float64 ``(domains, 9)`` output.
    """
    for d in range(umats.shape[0]):
        mosaic_rotation_umat(mosaicity, umats[d], idum, tab)
        if d == 0:
            for i in range(9):
                umats[0, i] = 0.0
            umats[0, 0] = 1.0
            umats[0, 4] = 1.0
            umats[0, 8] = 1.0
