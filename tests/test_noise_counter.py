"""The counter-based noise generator (batch --noise-generator counter, kernels/noise_counter.py).

Philox4x32-10 against the Random123 known-answer vectors; the same seed
gives the same noise image whatever the images launched with it; the
deviates of flat images have the Poisson mean, variance and distribution
(seeded, so the bounds cannot flake); ROI, ADC offset and clipping as C's
noise loop.  The CUDA simulator's integers are compared with these in
test_render_many.py::test_cuda_simulator_matches_cpu_rows.
"""
import math

import numpy as np
import pytest

from nanobrag_numba.kernels import noise_counter as NC
from nanobrag_numba.noise import counter_noise_images

FULL = (0, 10 ** 6, 0, 10 ** 6)

# Random123 (DEShawResearch) kat_vectors, "philox4x32 10" lines: counter, key, result
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr, key, expected", KAT)
def test_philox_known_answers(ctr, key, expected):
    got = NC.philox4x32_10(*(np.uint64(c) for c in ctr), *(np.uint64(k) for k in key))
    assert tuple(int(w) for w in got) == expected
    assert _philox_reference(ctr, key) == expected


def _philox_reference(ctr, key):
    """Philox4x32-10 in plain Python integers (Salmon et al. 2011), independent of the kernel's uint64 code."""
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for r in range(10):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & 0xFFFFFFFF, (k1 + 0xBB67AE85) & 0xFFFFFFFF
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & 0xFFFFFFFF, (p0 >> 32) ^ c3 ^ k1, p0 & 0xFFFFFFFF
    return c0, c1, c2, c3


def test_philox_matches_the_reference_on_random_counters():
    rng = np.random.default_rng(7)
    for ctr_key in rng.integers(0, 2 ** 32, size=(50, 6), dtype=np.uint64):
        ctr, key = tuple(int(x) for x in ctr_key[:4]), tuple(int(x) for x in ctr_key[4:])
        got = NC.philox4x32_10(*(np.uint64(c) for c in ctr), *(np.uint64(k) for k in key))
        assert tuple(int(w) for w in got) == _philox_reference(ctr, key)


def test_uniforms_are_inside_the_open_interval():
    top, bottom = np.uint64(0xFFFFFFFF), np.uint64(0)
    assert NC.uniform52(bottom, bottom) == 0.5 * 2.0 ** -52
    assert NC.uniform52(top, top) == 1.0 - 0.5 * 2.0 ** -52
    assert NC.philox_keys([5, -1, 2 ** 40 + 3]).tolist() == [[5, 0], [0xFFFFFFFF, 0xFFFFFFFF], [3, 256]]


def test_log_factorial():
    for k in range(0, 200):
        assert abs(NC.log_factorial(float(k)) - math.lgamma(k + 1.0)) <= 1e-13 * max(1.0, math.lgamma(k + 1.0))


def _images(k=3, shape=(9, 11)):
    rng = np.random.default_rng(3)
    return (rng.random((k,) + shape) * np.array([0.5, 20.0, 3000.0])[:k, None, None]).astype(np.float32)


def test_same_seed_same_image_whatever_the_launch():
    imgs = _images()
    together = counter_noise_images(imgs, [5, 6, 7], FULL, 0.0)
    alone = [counter_noise_images(imgs[i:i + 1], [s], FULL, 0.0)[0] for i, s in enumerate([5, 6, 7])]
    reordered = counter_noise_images(imgs[[2, 0]], [7, 5], FULL, 0.0)
    for i in range(3):
        assert together[i].tobytes() == alone[i].tobytes()
    assert reordered[0].tobytes() == together[2].tobytes() and reordered[1].tobytes() == together[0].tobytes()
    other_seed = counter_noise_images(imgs[:1], [8], FULL, 0.0)[0]
    assert (other_seed != together[0]).any()
    assert together[2].max() > 1000           # the PTRS branch ran


def test_frozen_deviates():
    # the generator is part of a batch's reproducibility: these numbers must never change
    means = np.array([[0.0, 0.3, 2.0, 9.99], [10.0, 55.5, 1234.5, 40000.0]], dtype=np.float32)
    got = counter_noise_images(means[None], [1], FULL, 0.0)[0]
    assert got.tolist() == [[0, 0, 1, 12], [7, 47, 1229, 39989]]


@pytest.mark.parametrize("lam", [0.05, 0.7, 3.0, 9.5, 10.0, 37.0, 1000.0, 30000.0])
def test_flat_image_mean_and_variance(lam):
    n = 200 * 200
    img = np.full((1, 200, 200), lam, dtype=np.float32)
    x = counter_noise_images(img, [12345], FULL, 0.0)[0].astype(np.float64).ravel()
    lam = float(np.float32(lam))
    mean, var = x.mean(), x.var(ddof=1)
    assert abs(mean - lam) <= 5 * math.sqrt(lam / n)
    assert abs(var - lam) <= 5 * math.sqrt((lam + 2 * lam * lam) / n)


@pytest.mark.parametrize("lam", [3.0, 25.0])
def test_flat_image_distribution(lam):
    # chi-square of the counts against the Poisson probabilities (bins with >= 20 expected counts)
    n = 200 * 200
    x = counter_noise_images(np.full((1, 200, 200), lam, dtype=np.float32), [99], FULL, 0.0)[0].ravel()
    counts = np.bincount(x.astype(np.int64))
    ks = np.arange(counts.size + 50)
    pmf = np.exp(-lam + ks * math.log(lam) - np.array([math.lgamma(k + 1.0) for k in ks]))
    keep = pmf * n >= 20
    obs = np.concatenate([counts, np.zeros(50, dtype=np.int64)])[keep]
    exp = pmf[keep] * n
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    dof = int(keep.sum()) - 1
    assert chi2 < dof + 5 * math.sqrt(2 * dof)


def test_roi_adc_clip_and_bad_means():
    img = np.array([[[5.0, 1e6, np.nan, -3.0], [np.inf, 0.0, 7.0, 7.0]]], dtype=np.float32)
    out = counter_noise_images(img, [4], (1, 2, 0, 0), 40.0)[0]     # ROI: fast 1..2, slow 0 only
    assert out[1].tolist() == [0, 0, 0, 0] and out[0, 0] == 0 and out[0, 3] == 0
    assert out[0, 1] == 65535 and out[0, 2] == 40                     # clipped; NaN mean: no photons
    full = counter_noise_images(img, [4], FULL, 40.0)[0]
    assert full[0, 3] == 40 and full[1, 0] == 65535 and full[1, 1] == 40
