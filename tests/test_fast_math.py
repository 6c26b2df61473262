"""The fast arithmetic of the default mode (issue 12) against C's exact forms.

Without ``-c_quirks`` the kernels compute the lattice transform with
``sincg_fast`` (two short polynomials instead of two libm sines) and the
tricubic interpolation with ``polin3_fast`` (weights formed once); with
``-c_quirks`` (or ``KParams.c_math = 1``) they keep C's arithmetic bit for bit.

- sincg_fast against a direct evaluation (mpmath, or 80-bit long doubles)
  over N = 1..200 and h near integers: 1e-12 relative where |sincg| > 1e-6 N;
- polin3_fast against polin3;
- every golden case without -c_quirks: the float image of the fast path
  within 1e-9 (max rel diff) of the bit-exact path (``c_math = 1``), which
  itself gives C's float image bit for bit on the cases without a corrected
  C behaviour.
"""
import math

import numpy as np
import pytest
from numba import njit

import golden
from nanobrag_numba.kernels import physics as P

#: the fast path's bar against the bit-exact path on every golden case (issue 12)
FAST_MAXREL = 1e-9


@njit(cache=False)
def _sincg_fast_many(h, N):
    out = np.empty(h.size)
    for i in range(h.size):
        out[i] = P.sincg_fast(h[i], N[i])
    return out


def _direct(h, N):
    """sin(pi N h) / sin(pi h) in extended precision (mpmath, else long double), its limit at integers."""
    try:
        import mpmath
    except ImportError:                       # pragma: no cover - mpmath comes with the test tools
        mpmath = None
    if mpmath is not None:
        with mpmath.workdps(40):
            H = mpmath.mpf(float(h))
            den = mpmath.sinpi(H)
            if den == 0:
                return float(N) * (-1.0) ** (((N - 1) * int(H)) % 2)
            return float(mpmath.sinpi(N * H) / den)
    if np.finfo(np.longdouble).nmant < 60:    # pragma: no cover
        pytest.skip("neither mpmath nor an extended long double for the reference")
    H = np.longdouble(h)
    n = np.rint(H)
    f = H - n
    sign = -1.0 if ((N - 1) * int(n)) % 2 else 1.0
    if f == 0:
        return sign * N
    pi = np.longdouble("3.14159265358979323846264338327950288")
    return float(sign * np.sin(pi * ((N * f) % 2)) / np.sin(pi * f))


def test_sincg_fast_matches_a_direct_evaluation_near_integers():
    rng = np.random.default_rng(12)
    hs, Ns = [], []
    for N in range(1, 201):
        n = rng.choice([0, 1, -1, 2, -3, 7, 50, -123, 1000, 12345], 40)
        d = rng.choice([-1.0, 1.0], 40) * 10.0 ** rng.uniform(-15, math.log10(0.5), 40)
        hs.extend(n + d)
        Ns.extend([N] * 40)
        hs.extend([0.0, 1.0, -3.0, 0.5, -0.5, 2.5])       # exact integers and half-integers
        Ns.extend([N] * 6)
    hs = np.array(hs)
    Ns = np.array(Ns, dtype=np.float64)
    fast = _sincg_fast_many(hs, Ns)
    checked = 0
    for h, N, v in zip(hs, Ns, fast):
        ref = _direct(h, int(N))
        if abs(ref) > 1e-6 * N:
            checked += 1
            assert abs(v - ref) <= 1e-12 * abs(ref), (h, N, v, ref)
    assert checked > 7000


def test_sincg_fast_agrees_with_c_form_away_from_integers_and_keeps_the_limits():
    h = np.linspace(-20.3, 20.7, 4001)
    for N in (2, 5, 10, 37):
        fast = _sincg_fast_many(h, np.full(h.size, float(N)))
        c = np.array([P.sincg.py_func(math.pi * x, float(N)) for x in h])
        # where C's form is accurate: not near an integer h (it loses ~|h/(h - n)| ulp there), not near a zero
        big = (np.abs(c) > 1e-3 * N) & (np.abs(h - np.rint(h)) > 0.05)
        assert big.sum() > 3000
        assert np.all(np.abs(fast - c)[big] <= FAST_MAXREL * np.abs(c)[big])
    assert _sincg_fast_many(np.array([0.0]), np.array([7.0]))[0] == 7.0
    # the sign at an integer: (-1)^((N-1) n)
    assert _sincg_fast_many(np.array([3.0]), np.array([4.0]))[0] == -4.0
    assert _sincg_fast_many(np.array([3.0]), np.array([5.0]))[0] == 5.0


@njit(cache=False)
def _polin3_both(F, h, k, l):
    a = np.empty(h.size)
    b = np.empty(h.size)
    for i in range(h.size):
        a[i] = P.polin3(F, 0, 0, 0, h[i], k[i], l[i])
        b[i] = P.polin3_fast(F, 0, 0, 0, h[i], k[i], l[i])
    return a, b


def test_polin3_fast_is_polin3_to_rounding():
    rng = np.random.default_rng(3)
    F = rng.uniform(1.0, 100.0, (9, 9, 9))
    h, k, l = (rng.uniform(1.0, 5.99, 500) for _ in range(3))
    exact, fast = _polin3_both(F, h, k, l)
    assert np.all(np.abs(fast - exact) <= 1e-13 * np.abs(exact))
    # at a grid point the interpolation is the table value
    exact, fast = _polin3_both(F, np.array([3.0]), np.array([4.0]), np.array([2.0]))
    assert fast[0] == pytest.approx(F[3, 4, 2], rel=1e-14)


@njit
def _polar_both(kahn, v):
    out = np.empty((v.shape[0], 2))
    for i in range(v.shape[0]):
        exact = P.polarization_factor(kahn, v[i, 0], v[i, 1], v[i, 2], v[i, 3], v[i, 4], v[i, 5],
                                      v[i, 6], v[i, 7], v[i, 8], True)
        fast = P.polarization_factor(kahn, v[i, 0], v[i, 1], v[i, 2], v[i, 3], v[i, 4], v[i, 5],
                                     v[i, 6], v[i, 7], v[i, 8], False)
        out[i, 0] = exact[0]
        out[i, 1] = fast[0]
        if exact[1:] != fast[1:]:           # the re-normalised diffracted vector is the same either way
            out[i, 1] = np.nan
    return out


@pytest.mark.parametrize("kahn", [1.0, 0.9, 0.5, -0.3])
def test_polarization_without_atan2_and_cos_is_c_to_rounding(kahn):
    rng = np.random.default_rng(5)
    v = rng.normal(size=(4000, 9))
    v[:10, 3:6] = v[:10, 0:3]                       # diffracted along the beam: e_out = b_out = 0
    v[10:20, 3:6] = v[10:20, 6:9]                   # diffracted along the polarization axis
    both = _polar_both(kahn, v)
    assert np.all(np.isfinite(both))
    # the factor is 0.5 (1 + cos^2 2theta - kahn cos 2psi sin^2 2theta), at most 1 + |kahn|
    assert np.all(np.abs(both[:, 1] - both[:, 0]) <= 4e-16 * (1.0 + abs(kahn)))
    assert np.array_equal(both[:10, 0], both[:10, 1])


def _float64_image(prep, raw):
    from nanobrag_numba.simulator import normalise
    return normalise(prep, raw, dtype=np.float64)


@pytest.mark.golden
@pytest.mark.parametrize("case", golden.cases() or [None], ids=[c["id"] for c in golden.cases()] or ["no-golden"])
def test_fast_path_within_1e_9_of_the_bit_exact_path(case, tmp_path, monkeypatch):
    golden.require()
    from nanobrag_numba.api import config_from_flags
    from nanobrag_numba.backends import run_kernel
    from nanobrag_numba.simulator import prepare
    golden.stage(case, tmp_path)
    monkeypatch.chdir(tmp_path)
    prep = prepare(config_from_flags(list(case["args"]) + ["-device", "cpu"]), lambda s: None, write_dump=False)
    fast, _, _ = run_kernel("cpu", prep, prep.params)
    exact, _, _ = run_kernel("cpu", prep, prep.params._replace(c_math=1))
    a = _float64_image(prep, fast)
    b = _float64_image(prep, exact)
    scale = np.abs(b).max()
    assert np.abs(a - b).max() <= FAST_MAXREL * scale
    if case["c_quirk"] not in golden.CORRECTED and not prep.interpolate:
        # the exact path is C's arithmetic: C's float image bit for bit (no interpolation switch-off here)
        ref = golden.float_image(case)
        assert np.array_equal(b.astype(np.float32).reshape(ref.shape), ref)
