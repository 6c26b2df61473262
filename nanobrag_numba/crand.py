"""Python-facing access to nanoBragg's random numbers (bit-exact with the C program).

nanoBragg draws random numbers from three streams -- the noise image
(``-seed N``), the mosaic domains (``-mosaic_seed N``, default 12345678) and
the random missetting orientation (``-misset_seed N``, default: the ``-seed``
value) -- all driven by Numerical Recipes ``ran1``, whose 32-entry shuffle
table is a C ``static`` shared by every stream of the process.

:class:`CRandom` owns that shared state (one instance per simulated image,
like one run of the C program).  Every method takes the *user-facing* seed
exactly as written on the C command line; C stores it as ``idum = -N``.  A
positive ``N`` therefore re-initialises the shared table on the first draw of
the stream, so the results do not depend on what was drawn before; a zero or
negative ``N`` does not (``N = 0`` behaves like ``N = 1``; a negative ``N``
continues from the shared table left by the previous stream, or behaves like
``N = 1`` on a fresh instance) -- the same as C.  To reproduce a full C run,
call the methods on one instance in C's order: :meth:`CRandom.random_misset`,
then :meth:`CRandom.mosaic_umats`, then :meth:`CRandom.noise`.

The generators themselves live in :mod:`nanobrag_numba.kernels.crand` and the
noise loop in :mod:`nanobrag_numba.kernels.noise`.
"""

from __future__ import annotations

import numpy as np

from nanobrag_numba.kernels import crand as _kc
from nanobrag_numba.kernels import noise as _kn

__all__ = ["CRandom", "ran1_sequence", "DEFAULT_MOSAIC_SEED", "DEFAULT_ADC"]

#: C default ``mosaic_seed = -12345678``, i.e. user-facing seed 12345678
DEFAULT_MOSAIC_SEED = 12345678
#: C default ``adc_offset``
DEFAULT_ADC = 40.0


class CRandom:
    """Shared random-generator state of one nanoBragg run.

    Holds the ``ran1`` shuffle table (shared by all streams) and the
    ``poidev``/``gaussdev`` statics.  Each method starts its stream from the
    user-facing seed (``idum = -seed``) but keeps using this instance's
    shared state, just as the C statics persist for the whole process.
    """

    def __init__(self) -> None:
        self.tab = _kc.new_table()
        self.fstate = _kc.new_fstate()

    def copy(self) -> "CRandom":
        """An independent generator in this one's state (the same draws follow)."""
        new = CRandom.__new__(CRandom)
        new.tab = self.tab.copy()
        new.fstate = self.fstate.copy()
        return new

    def reset(self) -> None:
        """Forget all state, as for a fresh C process."""
        self.tab[:] = 0
        self.fstate[:] = _kc.new_fstate()

    def ran1(self, seed: int, n: int) -> np.ndarray:
        """Draw ``n`` values of one ``ran1`` stream using the shared table.

        Parameters
        ----------
        seed : int
            User-facing seed (stream starts at ``idum = -seed``).
        n : int
            Number of draws.

        Returns
        -------
        numpy.ndarray
            float32 ``(n,)``.
        """
        out = np.empty(int(n), dtype=np.float32)
        _kc.ran1_fill(_kc.new_idum(seed), self.tab, out)
        return out

    def poidev(self, means, seed: int) -> np.ndarray:
        """Poisson deviates for ``means`` in order, from one stream.

        Parameters
        ----------
        means : array_like
            Means, converted to float32 (the C argument type).
        seed : int
            User-facing seed (stream starts at ``idum = -seed``).

        Returns
        -------
        numpy.ndarray
            float32 deviates, same length as ``means``.
        """
        xms = np.ascontiguousarray(np.asarray(means, dtype=np.float32).ravel())
        out = np.empty_like(xms)
        _kc.poidev_fill(xms, _kc.new_idum(seed), self.tab, self.fstate, out)
        return out

    def mosaic_umats(self, mosaic_spread_rad: float, domains: int, seed: int) -> np.ndarray:
        """Mosaic domain rotation matrices, as C builds them in ``main()``.

        ``mosaic_rotation_umat`` is called for every domain (domain 0 consumes
        its three draws too) and domain 0 is then forced to the identity.

        Parameters
        ----------
        mosaic_spread_rad : float
            Mosaic spread in radians (C: ``-mosaic`` degrees / RTD); it is
            rounded to float32 as C's ``float mosaicity`` parameter does.
        domains : int
            Number of mosaic domains.
        seed : int
            User-facing ``-mosaic_seed`` (default :data:`DEFAULT_MOSAIC_SEED`).

        Returns
        -------
        numpy.ndarray
            float64 ``(domains, 9)``, row-major 3x3 matrices.
        """
        umats = np.zeros((int(domains), 9), dtype=np.float64)
        if int(domains) > 1:
            _kc.mosaic_umats_fill(float(mosaic_spread_rad), _kc.new_idum(seed), self.tab, umats)
            return umats
        # one domain (the default): its rotation is the identity whatever the draws are, but the
        # three ran1 draws still move the shared table, so they are made here in Python; the kernel
        # (1.3 s of compilation on a first run, and its load on every run) is not needed
        if int(domains) == 1:
            idum = -int(seed)
            for _ in range(3):
                idum = ran1_step(idum, self.tab)
            umats[0, 0] = umats[0, 4] = umats[0, 8] = 1.0
        return umats

    def random_misset(self, seed: int) -> tuple[np.ndarray, tuple[float, float, float]]:
        """Random crystal orientation for ``-misset random``.

        C: ``mosaic_rotation_umat(90.0, umat, &misset_seed)`` (90 is used as a
        value in radians: a full sphere) followed by ``umat2misset``.

        Parameters
        ----------
        seed : int
            User-facing ``-misset_seed`` (C default: the ``-seed`` value).

        Returns
        -------
        umat : numpy.ndarray
            float64 ``(9,)`` row-major rotation matrix.
        angles : tuple of float
            ``(rotx, roty, rotz)`` missetting angles in radians.
        """
        umat = np.zeros(9, dtype=np.float64)
        miss = np.zeros(3, dtype=np.float64)
        _kc.mosaic_rotation_umat(90.0, umat, _kc.new_idum(seed), self.tab)
        _kc.umat2misset(umat, miss)
        return umat, (float(miss[0]), float(miss[1]), float(miss[2]))

    def noise(self, floatimage: np.ndarray, roi: tuple[int, int, int, int],
              adc: float, seed: int) -> tuple[np.ndarray, float, int]:
        """Poisson noise image, bit-exact with the C noise loop.

        Parameters
        ----------
        floatimage : numpy.ndarray
            ``(slow, fast)`` expected photons, converted to float32.
        roi : tuple of int
            ``(xmin, xmax, ymin, ymax)`` region of interest, bounds INCLUSIVE;
            x is the fast index, y the slow one.  C's default without
            ``-roi`` is ``(0, fast, 0, slow)``.
        adc : float
            ADC offset (C default 40).
        seed : int
            User-facing ``-seed`` of the noise stream.

        Returns
        -------
        image : numpy.ndarray
            uint16 ``(slow, fast)`` noise image (0 outside the ROI).
        photons : float
            Sum of the Poisson deviates (printed by C as "N photons on noise image").
        overloads : int
            Number of pixels clipped at 65535.
        """
        img = np.ascontiguousarray(floatimage, dtype=np.float32)
        if img.ndim != 2:
            raise ValueError("floatimage must be 2-D (slow, fast), got shape %r" % (img.shape,))
        xmin, xmax, ymin, ymax = (int(v) for v in roi)
        out, photons, overloads = _kn.noise_image(
            img, xmin, xmax, ymin, ymax, float(adc),
            _kc.new_idum(seed), self.tab, self.fstate)
        return out, float(photons), int(overloads)


def _cdiv(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def ran1_step(idum: int, tab: np.ndarray) -> int:
    """One ``ran1`` draw's effect on the state, in plain Python; returns the new ``idum``.

    The same integer arithmetic as :func:`nanobrag_numba.kernels.crand.ran1`
    (re-initialisation of the shared table included), without the float
    deviate: for draws whose values are not used (the single mosaic domain).
    """
    if idum <= 0 or tab[_kc.TAB_IY] == 0:
        idum = 1 if -idum < 1 else -idum
        for j in range(_kc.NTAB + 7, -1, -1):
            k = _cdiv(idum, _kc.IQ)
            idum = _kc.IA * (idum - k * _kc.IQ) - _kc.IR * k
            if idum < 0:
                idum += _kc.IM
            if j < _kc.NTAB:
                tab[j] = idum
        tab[_kc.TAB_IY] = tab[0]
    k = _cdiv(idum, _kc.IQ)
    idum = _kc.IA * (idum - k * _kc.IQ) - _kc.IR * k
    if idum < 0:
        idum += _kc.IM
    j = _cdiv(int(tab[_kc.TAB_IY]), _kc.NDIV)
    tab[_kc.TAB_IY] = tab[j]
    tab[j] = idum
    return idum


def ran1_sequence(seed: int, n: int) -> np.ndarray:
    """``n`` successive ``ran1`` values from a fresh state.

    Parameters
    ----------
    seed : int
        User-facing seed (``idum = -seed``).
    n : int
        Number of values.

    Returns
    -------
    numpy.ndarray
        float32 ``(n,)``.
    """
    return CRandom().ran1(seed, n)
