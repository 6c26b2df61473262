"""The C defects we correct (docs/differences.md), established by physics.

No golden data: each test shows the corrected behaviour directly, and that
``-c_quirks`` still gives C's behaviour.
"""
import math

import numpy as np
import pytest

import nanobrag_numba as nb
from nanobrag_numba.backends import run_kernel
from nanobrag_numba.trace import trace_pixel

BASE = ("-hkl {hkl} -cell 40 42 45 90 90 90 -misset 10 20 30 -N 5 -lambda 1.0 -distance 60 "
        "-detpixels 48 -pixel 0.5 -noprogress -nonoise -nopgm -seed 1")


@pytest.fixture
def hkl(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    rows = ["%d %d %d %.3f\n" % (h, k, l, rng.uniform(20, 200))
            for h in range(-12, 13) for k in range(-12, 13) for l in range(-12, 13)]
    (tmp_path / "t.hkl").write_text("".join(rows))
    monkeypatch.chdir(tmp_path)
    return "t.hkl"


def render(flags, **changes):
    return nb.Simulator(flags, device="cpu").render(**changes)


def test_water_background_is_linear_in_fluence_and_independent_of_sampling(hkl):
    base = BASE.format(hkl=hkl) + " -oversample 1"
    dry = render(base).floatimage.astype(np.float64)
    wet = render(base + " -water 100").floatimage.astype(np.float64)
    bg = wet - dry
    assert bg.min() > 0
    # linear in fluence: doubling the fluence doubles the whole image, background included
    wet2 = render(base + " -water 100 -fluence %r" % (2 * 125932015286227086360700780544.0)).floatimage
    np.testing.assert_allclose(wet2, 2 * wet, rtol=1e-6)
    # the background photons per pixel do not depend on the number of sampling steps
    bg_os = (render(BASE.format(hkl=hkl) + " -oversample 2 -water 100").floatimage.astype(np.float64)
             - render(BASE.format(hkl=hkl) + " -oversample 2").floatimage)
    bg_phi = (render(base + " -water 100 -phi 1 -osc 0.3 -phisteps 3").floatimage.astype(np.float64)
              - render(base + " -phi 1 -osc 0.3 -phisteps 3").floatimage)
    np.testing.assert_allclose(bg_phi, bg, rtol=1e-5)
    # with -oversample 2 only omega and polar change, taken at the first sub-pixel as C does
    np.testing.assert_allclose(bg_os, bg, rtol=1e-2)
    # C instead divides the background by the steps and scales it by the fluence again
    q = " -c_quirks"
    bg_c = render(base + " -water 100" + q).floatimage.astype(np.float64) - render(base + q).floatimage
    bg_c_phi = (render(base + " -water 100 -phi 1 -osc 0.3 -phisteps 3" + q).floatimage.astype(np.float64)
                - render(base + " -phi 1 -osc 0.3 -phisteps 3" + q).floatimage)
    np.testing.assert_allclose(bg_c_phi, bg_c / 3, rtol=1e-4)
    assert np.abs(bg_c_phi - bg_phi).max() > 0.5 * bg_phi.max()


def test_detector_layer_capture_fractions_sum_to_absorption(hkl):
    thick, att, layers = 300e-6, 120e-6, 5
    # beam on the centre of pixel (24, 24): there the diffracted ray is the detector normal
    flags = BASE.format(hkl=hkl) + (" -oversample 1 -Xbeam 12.0 -Ybeam 12.0 -detector_thick %g "
                                    "-detector_abs %g -detector_thicksteps %d" % (thick * 1e6, att * 1e6, layers))
    sim = nb.Simulator(flags, device="cpu")
    prep = sim.prepare()
    assert prep.sampling.thickstep == pytest.approx(thick / layers)
    rows, _ = trace_pixel(prep, 24, 24)
    first = rows[(rows[:, 1] == 0) & (rows[:, 2] == 0) & (rows[:, 3] == 0) & (rows[:, 4] == 0)]
    caps = {int(r[0]): r[43] for r in first}
    assert sorted(caps) == list(range(layers))
    assert float(np.dot(rows[0, 11:14], prep.det.odet)) == pytest.approx(1.0, abs=1e-12)
    assert sum(caps.values()) == pytest.approx(1 - math.exp(-thick / att), rel=1e-12)
    # the whole image: thin-detector photons times the absorbed fraction (obliquity changes it by < 2 %)
    thin = render(BASE.format(hkl=hkl) + " -oversample 1 -Xbeam 12.0 -Ybeam 12.0").floatimage.astype(np.float64)
    thick_img = sim.render().floatimage.astype(np.float64)
    assert thick_img.sum() / thin.sum() == pytest.approx(1 - math.exp(-thick / att), rel=0.02)
    # C weights every layer with the last layer's fraction and spaces the layers thick/(n-1)
    c_img = render(flags + " -c_quirks").floatimage.astype(np.float64)
    assert c_img.sum() / thin.sum() < 0.5


def test_phi_scan_from_zero_is_the_mean_of_its_steps(hkl):
    base = BASE.format(hkl=hkl) + " -oversample 1"
    scan = render(base + " -phi 0 -osc 0.6 -phisteps 3").floatimage.astype(np.float64)
    singles = [render(base + " -phi %g -osc 0.2 -phisteps 1" % phi).floatimage.astype(np.float64)
               for phi in (0.0, 0.2, 0.4)]
    np.testing.assert_allclose(scan, np.mean(singles, axis=0), rtol=2e-6, atol=1e-6 * scan.max())
    # C skips the rotation at phi = 0 and reuses the previous one there
    c_scan = render(base + " -phi 0 -osc 0.6 -phisteps 3 -c_quirks").floatimage.astype(np.float64)
    assert np.abs(c_scan - scan).max() > 1e-3 * scan.max()


def test_interpolation_falls_back_per_evaluation_only(hkl):
    # N = 2 switches interpolation on; the beam off the corner puts some pixels' 4x4x4 blocks outside the table
    flags = ("-hkl %s -cell 40 42 45 90 90 90 -misset 10 20 30 -N 2 -lambda 1.0 -distance 60 -detpixels 48 "
             "-pixel 0.5 -Xbeam 1.5 -Ybeam 12.8 -oversample 1 -noprogress -nonoise -nopgm" % hkl)
    sim = nb.Simulator(flags, device="cpu")
    prep = sim.prepare()
    assert prep.interpolate
    _, oob, _xp = run_kernel("cpu", prep, prep.params)
    oob = oob.reshape(prep.det.shape)
    assert 0 < (oob >= 0).sum() < oob.size
    first = np.flatnonzero(oob.ravel() >= 0)[0]
    ours = sim.render().floatimage.ravel()
    nearest = render(flags + " -nointerpolate").floatimage.ravel()
    quirk = render(flags + " -c_quirks").floatimage.ravel()
    later_in_range = np.flatnonzero((oob.ravel() < 0) & (np.arange(oob.size) > first))
    assert later_in_range.size > 0
    # after the first miss, pixels whose blocks are inside the table are still interpolated ...
    assert np.mean(ours[later_in_range] != nearest[later_in_range]) > 0.9
    # ... while C falls back to nearest-hkl F for the rest of the image
    np.testing.assert_array_equal(quirk[first + 1:], nearest[first + 1:])
    # before the first miss both agree
    np.testing.assert_array_equal(ours[:first], quirk[:first])


def test_oversample_factors_multiply_each_contribution_once(hkl):
    base = BASE.format(hkl=hkl) + " -oversample 2"
    plain = render(base).floatimage.astype(np.float64)
    per_sub = render(base + " -oversample_omega -oversample_polar").floatimage.astype(np.float64)
    # per-sub-pixel factors change the image by the small variation of omega/polar across a pixel
    np.testing.assert_allclose(per_sub, plain, rtol=2e-2, atol=1e-6 * plain.max())
    # C multiplies the running sum after every contribution: all but the last sub-pixel's
    # contribution are multiplied again by omega (~1e-5) and vanish, about 1/4 of the image is left
    c_img = render(base + " -oversample_omega -oversample_polar -c_quirks").floatimage.astype(np.float64)
    assert np.all(c_img <= per_sub * (1 + 1e-6) + 1e-12)
    assert 0.1 < c_img.sum() / per_sub.sum() < 0.45
