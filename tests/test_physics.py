"""Physics checks that need no golden data: limits, geometry, symmetry."""
import math

import numpy as np
import pytest

import nanobrag_numba as nb
from nanobrag_numba.kernels import physics as P


def write_hkl(path, rows):
    path.write_text("".join("%d %d %d %g\n" % r for r in rows))
    return str(path)


def sim(flags, tmp_path, monkeypatch, **changes):
    monkeypatch.chdir(tmp_path)
    return nb.Simulator(flags, device="cpu").render(**changes)


def test_sincg_limits():
    assert P.sincg(0.0, 7.0) == 7.0                              # N at the Bragg position
    assert P.sincg(1e-9, 7.0) == pytest.approx(7.0, rel=1e-12)  # continuous there
    assert P.sincg(math.pi / 7.0, 7.0) == pytest.approx(0.0, abs=1e-12)  # first zero at h = 1/N
    x = 0.3
    assert P.sincg(x, 1.0) == pytest.approx(1.0, rel=1e-15)     # one cell: no modulation
    assert P.sincg(math.pi + 1e-7, 5.0) == pytest.approx(5.0, rel=1e-6)  # periodic in h (odd N)


def test_sinc3_limits():
    assert P.sinc3(0.0) == 1.0
    x = 1e-2  # small-x series 1 - x^2/10 + x^4/280
    assert P.sinc3(x) == pytest.approx(1 - x * x / 10 + x ** 4 / 280, abs=1e-10)
    assert P.sinc3(4.493409457909064) == pytest.approx(0.0, abs=1e-12)  # first zero: tan x = x
    assert abs(P.sinc3(100.0)) < 1e-3


def test_polarization_limits():
    inc = (1.0, 0.0, 0.0)
    axis = (0.0, 0.0, 1.0)           # E-vector along z
    # forward scattering: no polarization loss whatever the Kahn factor
    for kahn in (0.0, 0.5, 1.0):
        f, *_ = P.polarization_factor(kahn, *inc, 1.0, 0.0, 0.0, *axis)
        assert f == pytest.approx(1.0, abs=1e-15)
    # unpolarized beam at 2theta = 90 deg: (1 + cos^2)/2 = 1/2
    f, *_ = P.polarization_factor(0.0, *inc, 0.0, 1.0, 0.0, *axis)
    assert f == pytest.approx(0.5, abs=1e-15)
    # fully polarized along z: scattering along z is forbidden, along y is allowed
    f_par, *_ = P.polarization_factor(1.0, *inc, 0.0, 0.0, 1.0, *axis)
    f_perp, *_ = P.polarization_factor(1.0, *inc, 0.0, 1.0, 0.0, *axis)
    assert f_par == pytest.approx(0.0, abs=1e-15)
    assert f_perp == pytest.approx(1.0, abs=1e-15)


def test_polint_reproduces_cubic():
    xs = (-1.0, 0.0, 1.0, 2.0)
    f = lambda x: 2 * x ** 3 - x + 0.5  # noqa: E731
    assert P.polint(*xs, *(f(x) for x in xs), 0.37) == pytest.approx(f(0.37), rel=1e-14)


def test_polint_unit_gives_cs_bits():
    # the kernels' short form must equal C's general polint exactly at integer abscissae
    rng = np.random.default_rng(3)
    for _ in range(2000):
        x0 = float(rng.integers(-40, 40))
        ys = rng.normal(0, 300, 4)
        x = x0 + 1 + rng.random()
        assert P.polint_unit(x0, *ys, x) == P.polint(x0, x0 + 1, x0 + 2, x0 + 3, *ys, x)


def test_bragg_spot_lands_where_braggs_law_puts_it(tmp_path, monkeypatch):
    # cubic cell a = 50 A, reflection (0 1 0) only, rotated about z into its Bragg angle
    d, lam, dist, pix = 50.0, 1.0, 100.0, 0.1
    theta = math.asin(lam / (2 * d))
    hkl = write_hkl(tmp_path / "one.hkl", [(0, 1, 0, 100.0)])
    res = sim("-hkl %s -cell 50 50 50 90 90 90 -misset 0 0 %.12f -N 10 -lambda %g -distance %g "
              "-pixel %g -detpixels 128 -oversample 1 -nonoise -nopgm" % (hkl, math.degrees(theta), lam, dist, pix),
              tmp_path, monkeypatch)
    img = res.floatimage
    s, f = np.unravel_index(np.argmax(img), img.shape)
    det = res.prep.det
    # MOSFLM: beam along +x, slow axis along -y; the (0 1 0) spot is at +y, 2 theta off the beam
    radius = dist * 1e-3 * math.tan(2 * theta)
    s_pred = (det.Sbeam - radius) / det.pixel_size - 0.5
    f_pred = det.Fbeam / det.pixel_size - 0.5
    assert abs(s - s_pred) <= 1.0 and abs(f - f_pred) <= 1.0
    assert img[s, f] > 100 * np.median(img)


def test_solid_angle_of_centred_detector(tmp_path, monkeypatch):
    # 51.2 mm square at 100 mm: analytic solid angle of a centred rectangle
    hkl = write_hkl(tmp_path / "f.hkl", [(0, 0, 0, 1.0)])
    res = sim("-hkl %s -cell 50 50 50 90 90 90 -N 1 -distance 100 -pixel 0.2 -detpixels 256 -oversample 1 "
              "-nonoise -nopgm" % hkl, tmp_path, monkeypatch)
    a = b = 25.6
    D = 100.0
    analytic = 4 * math.asin(a * b / math.sqrt((a * a + D * D) * (b * b + D * D)))
    ours = res.image.omega_sum / res.prep.steps
    assert ours == pytest.approx(analytic, rel=2e-5)


def test_friedel_mates_give_mirror_spots(tmp_path, monkeypatch):
    # F(0 1 0) = F(0 -1 0): with b* perpendicular to the beam the two spots mirror each other
    hkl = write_hkl(tmp_path / "fr.hkl", [(0, 1, 0, 80.0), (0, -1, 0, 80.0), (0, 0, 0, 0.0)])
    res = sim("-hkl %s -cell 30 30 30 90 90 90 -N 3 -lambda 1 -distance 50 -pixel 0.1 -detpixels 64 "
              "-Xbeam 3.2 -Ybeam 3.2 -oversample 1 -nopolar -nonoise -nopgm" % hkl, tmp_path, monkeypatch)
    img = res.floatimage.astype(np.float64)
    # beam centre on pixel 32 (MOSFLM adds half a pixel): slow index s mirrors to 64 - s
    assert res.prep.det.Sbeam == pytest.approx(32.5 * 0.1e-3)
    top = img[1:32, :]
    bottom = img[63:32:-1, :]
    assert img.max() > 0
    np.testing.assert_allclose(top, bottom, rtol=1e-9, atol=1e-12 * img.max())
    # and with only one of the pair the image is no longer symmetric
    hkl1 = write_hkl(tmp_path / "one.hkl", [(0, 1, 0, 80.0), (0, -1, 0, 0.0)])
    res1 = nb.Simulator(res.prep.cfg.replace(hklfile=hkl1), device="cpu").render()
    one = res1.floatimage.astype(np.float64)
    assert np.abs(one[1:32] - one[63:32:-1]).max() > 0.5 * one.max()


def test_tricubic_interpolation_between_hkl(tmp_path, monkeypatch):
    # F linear in h along the table: the interpolated F at fractional h is that line
    rows = [(h, k, l, 10.0 + 2.0 * h) for h in range(-6, 7) for k in range(-6, 7) for l in range(-6, 7)]
    hkl = write_hkl(tmp_path / "lin.hkl", rows)
    from nanobrag_numba.io.hkl import read_hkl
    t = read_hkl(hkl)
    F = np.ascontiguousarray(t.F)
    for h in (-1.3, 0.25, 2.5):
        got = P.polin3(F, t.h_min, t.k_min, t.l_min, h, 0.4, -0.7)
        assert got == pytest.approx(10.0 + 2.0 * h, rel=1e-12)
