"""Bit-exactness tests of the ported C random generators and noise loop.

Every expected number below comes from the C reference functions: ``ran1``,
``gaussdev``, ``poidev``, ``gammln``, ``uniform3Ddev``,
``mosaic_rotation_umat`` and ``umat2misset`` copied verbatim out of
nanoBragg.c, plus the noise loop and mosaic-domain loop copied from its
``main()``, compiled with gcc 12 (-O2, x86-64, no FMA) in a small harness and
printed with %.9g (float) / %.17g (double).  The golden tests at the end
compare against noise images written by the real C program.
"""

import gzip
import math

import numpy as np
import pytest

import golden

from nanobrag_numba.crand import CRandom, DEFAULT_MOSAIC_SEED, ran1_sequence
from nanobrag_numba.kernels import crand as kc

RTD = 180.0 / math.pi


def f32(values):
    return np.array(values, dtype=np.float32)


# ---------------------------------------------------------------- ran1

# C: long s=-N; ran1(&s) x10, printed with %.9g
RAN1_SEED_1 = f32([0.415999353, 0.091964893, 0.75641048, 0.52970022, 0.930436492,
                   0.383502066, 0.653918982, 0.0668422356, 0.722660422, 0.671149373])
RAN1_SEED_12345678 = f32([0.765989304, 0.023453664, 0.589726627, 0.535101593, 0.982231438,
                          0.693016112, 0.328146875, 0.29564169, 0.849917889, 0.592261791])


def test_ran1_seed_1():
    np.testing.assert_array_equal(ran1_sequence(1, 10), RAN1_SEED_1)


def test_ran1_default_mosaic_seed():
    assert DEFAULT_MOSAIC_SEED == 12345678
    np.testing.assert_array_equal(ran1_sequence(12345678, 10), RAN1_SEED_12345678)


def test_ran1_seed_0_behaves_like_seed_1():
    # C: idum = 0 -> "don't want idum=0" -> idum = 1
    np.testing.assert_array_equal(ran1_sequence(0, 10), RAN1_SEED_1)


def test_ran1_negative_seed_on_fresh_state_behaves_like_seed_1():
    # C: idum = +5 with iy == 0 re-initialises with idum = 1 (-(idum) < 1)
    np.testing.assert_array_equal(ran1_sequence(-5, 10), RAN1_SEED_1)


def test_ran1_shared_table_between_streams():
    # C, one process: ran1(&a) x3 with a=-12345678, then ran1(&b) x5 with b=+5:
    # b does not re-initialise and continues the shared shuffle table.
    rng = CRandom()
    np.testing.assert_array_equal(rng.ran1(12345678, 3), RAN1_SEED_12345678[:3])
    np.testing.assert_array_equal(
        rng.ran1(-5, 5), f32([0.535101593, 0.982231438, 0.693016112, 0.328146875, 0.29564169]))


def test_ran1_values_are_float32_in_open_interval():
    v = ran1_sequence(77, 5000)
    assert v.dtype == np.float32
    assert v.min() > 0.0 and v.max() < 1.0


# ---------------------------------------------------------------- gammln

@pytest.mark.parametrize("x, expected", [
    (0.5, 0.572364926), (1.0, 0.0), (3.7, 1.42807233), (12.5, 18.7343483),
    (101.0, 363.73938), (20001.0, 178075.625)])
def test_gammln(x, expected):
    assert kc.gammln(np.float32(x)) == np.float32(expected)


# ---------------------------------------------------------------- gaussdev / uniform3Ddev

def test_gaussdev_sequence():
    idum, tab, fst = kc.new_idum(3), kc.new_table(), kc.new_fstate()
    got = f32([kc.gaussdev(idum, tab, fst) for _ in range(6)])
    np.testing.assert_array_equal(
        got, f32([0.135182321, 0.923467577, 0.480101764, 1.43830156, -0.453017205, 0.405614704]))


def test_uniform3Ddev_sequence():
    idum, tab = kc.new_idum(11), kc.new_table()
    vec = np.zeros(3, np.float32)
    got = []
    for _ in range(3):
        dr = kc.uniform3Ddev(idum, tab, vec)
        got.append([vec[0], vec[1], vec[2], dr])
    expected = f32([[0.833009303, 0.515439868, -0.201040253, 0.222042799],
                    [-0.594673634, 0.717264295, -0.363173693, 0.678598821],
                    [-0.755511105, 0.0544299036, -0.652870834, 0.853027761]])
    np.testing.assert_array_equal(f32(got), expected)


# ---------------------------------------------------------------- poidev

POIDEV_MEANS = [0, 0.5, 0.5, 3.7, 12.5, 12.5, 100, 3.7, 11.9, 2e4, 2e6, 2e6, 2e6,
                0, 100, 100, 0.5, 2e4, 12.5, 2e6, 11.9]
# C: long s=-1234; poidev((float)xm, &s) for the means above in this order
POIDEV_EXPECTED = [0, 0, 0, 4, 18, 17, 93, 4, 14, 19911, 2000065.88, 2000745.38,
                   2001231.38, 0, 94, 96, 0, 19738, 15, 1997469, 15]


def test_poidev_mixed_sequence():
    # exercises the direct, rejection and Gaussian branches, the oldm cache
    # and the gaussdev spare value carried across calls
    got = CRandom().poidev(POIDEV_MEANS, 1234)
    np.testing.assert_array_equal(got, f32(POIDEV_EXPECTED))


def test_poidev_batch_checksum():
    # C: xm_k = (float)((k*7919)%4001)*0.03125f, or 1.5e4f+k when k%97==0;
    # v_k = poidev(xm_k, &s) with s=-5, k < 200000;
    # printed sum(v) and sum(v*(k%13+1)) in double
    k = np.arange(200000)
    xm = ((k * 7919) % 4001).astype(np.float32) * np.float32(0.03125)
    xm = np.where(k % 97 == 0, np.float32(1.5e4) + k.astype(np.float32), xm).astype(np.float32)
    v = CRandom().poidev(xm, 5).astype(np.float64)
    assert v.sum() == 249403648.0
    assert (v * (k % 13 + 1)).sum() == 1746171905.0


# ---------------------------------------------------------------- rotations

MOSAIC_42 = np.array([
    [1, 0, 0, 0, 1, 0, 0, 0, 1],
    [0.99996285683998731, -0.0086022540061112679, -0.00053494525462793538, 0.0086029399825234658, 0.99996215738566974, 0.0012935301520815995, 0.00052379773596821758, -0.0012980842082036751, 0.99999902030618015],
    [0.99997367438509321, -0.0042502390071845978, -0.0058809867503264463, 0.0042687417131099248, 0.9999859677383679, 0.0031372233817058342, 0.0058675702775905537, -0.0031622452058265383, 0.99997778566540962],
    [0.99996419504654765, 0.002666201944649239, -0.0080311887102932494, -0.0026568009392643329, 0.99999577331069567, 0.0011810036040437555, 0.0080343035590595725, -0.0011596240485557377, 0.99996705207641057],
    [0.99997140088529957, 0.0056413205037027037, 0.0050371534090344425, -0.0056470523787300478, 0.99998342309904731, 0.0011244227602298089, -0.0050307266794691937, -0.0011528356718747839, 0.99998668129080104],
    [0.99999556248742527, 0.0029706096966906413, -0.0002246853087611568, -0.002968674560577859, 0.99996220532307467, 0.0081715908345009591, 0.00024895142382283243, -0.0081708875554036223, 0.99996658675165018],
    [0.99998630627270868, 0.0016166314838059195, 0.0049773255579637042, -0.0016092465406130397, 0.99999759903303942, -0.001487364692371885, -0.0049797181281590816, 0.0014793345808697298, 0.99998650689724899],
    [0.99998428372338788, -0.0052603634024409474, -0.0019392996408739054, 0.0052660586693366283, 0.99998180219915389, 0.002943449782719502, 0.0019237807343713293, -0.0029536159883347818, 0.99999378759084279],
    [0.99998266269875102, -0.0042658413762847102, 0.0040591747028340822, 0.0042736828422409593, 0.99998901479208935, -0.0019250792478398325, -0.0040509180292479406, 0.0019423934974421918, 0.99998990853439185],
    [0.9999954198719786, 0.00069916483105087824, -0.0029447247077037091, -0.00071900402535097466, 0.99997701709322429, -0.0067415368091428797, 0.0029399435839260919, 0.0067436232009596185, 0.99997293977279555],
])

MISSET_7_UMAT = np.array([0.93181405391011618, -0.0068332366798606325, 0.3628717070978007,
                          0.13435907568788955, 0.93528199645000187, -0.32740682017452644,
                          -0.3371501263767982, 0.35383738354359301, 0.87242701602548578])
MISSET_7_ANGLES = (0.38530590600203213, 0.34388814224230696, 0.14320385885128259)


def test_mosaic_umats_spread_half_degree_seed_42():
    # C main(): mosaic_spread = 0.5/RTD; 10 domains; -mosaic_seed 42; domain 0 forced to identity
    umats = CRandom().mosaic_umats(0.5 / RTD, 10, 42)
    assert umats.shape == (10, 9) and umats.dtype == np.float64
    np.testing.assert_allclose(umats, MOSAIC_42, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(umats, MOSAIC_42)  # in fact bit-identical


def test_mosaic_domain0_consumes_draws():
    # domain 1 must be the SECOND rotation of the stream
    idum, tab = kc.new_idum(42), kc.new_table()
    umat = np.zeros(9)
    kc.mosaic_rotation_umat(0.5 / RTD, umat, idum, tab)
    kc.mosaic_rotation_umat(0.5 / RTD, umat, idum, tab)
    np.testing.assert_array_equal(umat, MOSAIC_42[1])


def test_random_misset_seed_7():
    umat, angles = CRandom().random_misset(7)
    np.testing.assert_allclose(umat, MISSET_7_UMAT, rtol=0, atol=1e-15)
    assert angles == pytest.approx(MISSET_7_ANGLES, rel=0, abs=1e-15)
    assert angles == MISSET_7_ANGLES  # bit-identical


def test_umat2misset_identity():
    miss = np.zeros(3)
    kc.umat2misset(np.eye(3).ravel(), miss)
    np.testing.assert_array_equal(miss, [0.0, 0.0, 0.0])


# ---------------------------------------------------------------- noise loop

NOISE_IMG = f32([
    [0.0, 0.3, 5.5, 11.99, 12.0, 47.25, 1000.0],
    [2.5e6, 70000.0, 0.0, 3.7, 100.0, 0.5, 12.5],
    [11.9, 2.0e4, 1.0e6, 1.5e6, 0.0, 8.0, 65500.0],
    [7.5, 7.5, 7.5, 250.0, 250.0, 0.01, 33.3],
    [5.0e-3, 14.0, 1.2e6, 2.0e6, 64000.0, 1.0, 0.0],
    [99.9, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]])


def test_noise_roi_subset():
    # C noise loop, roi xmin=1 xmax=5 ymin=1 ymax=4 (inclusive), adc 40, -seed 1234
    img, photons, overloads = CRandom().noise(NOISE_IMG, (1, 5, 1, 4), 40.0, 1234)
    expected = np.array([
        [0, 0, 0, 0, 0, 0, 0],
        [0, 65535, 40, 44, 155, 42, 0],
        [0, 19811, 65535, 65535, 40, 43, 0],
        [0, 50, 50, 292, 257, 40, 0],
        [0, 56, 65535, 65535, 64226, 40, 0],
        [0, 0, 0, 0, 0, 0, 0]], dtype=np.uint16)
    assert img.dtype == np.uint16 and img.shape == (6, 7)
    np.testing.assert_array_equal(img, expected)
    assert photons == 5857438.875
    assert overloads == 5


def test_noise_full_image():
    # C noise loop, default roi (0, fpixels, 0, spixels), adc 40, -seed 3
    img, photons, overloads = CRandom().noise(NOISE_IMG, (0, 7, 0, 6), 40.0, 3)
    expected = np.array([
        [40, 40, 44, 51, 53, 87, 1051],
        [65535, 65535, 40, 46, 137, 41, 49],
        [56, 20235, 65535, 65535, 40, 45, 65494],
        [49, 49, 45, 290, 268, 40, 69],
        [40, 53, 65535, 65535, 63986, 40, 40],
        [137, 44, 44, 46, 43, 46, 51]], dtype=np.uint16)
    np.testing.assert_array_equal(img, expected)
    assert photons == 8423001.625
    assert overloads == 6


def test_noise_negative_adc_nan_and_negative_mean():
    # C: (unsigned short)(negative double) keeps the low 16 bits of the
    # 32-bit truncation (gcc cvttsd2si); NaN -> 0; the photon sum becomes NaN.
    src = f32([[0.0, 1.0, 3.0, np.nan, -2.0, 20.0, 5.0],
               [0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4]])
    img, photons, overloads = CRandom().noise(src, (0, 7, 0, 2), -30.0, 9)
    expected = np.array([[65506, 65507, 65508, 0, 65506, 65525, 65514],
                         [65506, 65507, 65507, 65506, 65508, 65509, 65508]], dtype=np.uint16)
    np.testing.assert_array_equal(img, expected)
    assert math.isnan(photons)
    assert overloads == 0


def test_shared_state_misset_mosaic_then_negative_noise_seed():
    # One C process: -misset random with -misset_seed 7, 10 mosaic domains of
    # 0.5 deg with -mosaic_seed 42, then the noise loop with -seed -3 (idum=+3:
    # no re-initialisation, the noise stream continues the shared table).
    rng = CRandom()
    _, angles = rng.random_misset(7)
    assert angles == MISSET_7_ANGLES
    np.testing.assert_array_equal(rng.mosaic_umats(0.5 / RTD, 10, 42), MOSAIC_42)
    img, photons, overloads = rng.noise(NOISE_IMG, (0, 7, 0, 6), 40.0, -3)
    expected = np.array([
        [40, 40, 43, 54, 53, 88, 1048],
        [65535, 65535, 40, 47, 150, 40, 52],
        [54, 20168, 65535, 65535, 40, 46, 65490],
        [47, 46, 48, 311, 311, 40, 79],
        [40, 52, 65535, 65535, 63891, 43, 40],
        [137, 43, 42, 44, 51, 50, 52]], dtype=np.uint16)
    np.testing.assert_array_equal(img, expected)
    assert photons == 8421698.875
    assert overloads == 6


# ---------------------------------------------------------------- golden data

def _golden_noise_cases():
    return [c for c in golden.cases() if "noise" in c.get("outputs", {})]


def _arg_after(args, flag, count=1, default=None):
    if flag not in args:
        return default
    i = args.index(flag)
    vals = args[i + 1:i + 1 + count]
    return vals[0] if count == 1 else vals


_GOLDEN_CASES = _golden_noise_cases()


@pytest.mark.golden
@pytest.mark.parametrize("case", _GOLDEN_CASES or [None],
                         ids=[c["id"] for c in _GOLDEN_CASES] or ["no-golden-data"])
def test_golden_noise_image(case):
    if case is None:
        pytest.skip("golden reference data not found (set NANOBRAGG_GOLDEN or provide "
                    "../shared/golden relative to the checkout)")
    root = golden.golden_dir()
    slow, fast = case["shape"]
    args = case["args"]
    seed = int(_arg_after(args, "-seed"))
    adc = float(_arg_after(args, "-adc", default=40.0))
    roi = _arg_after(args, "-roi", 4)
    roi = tuple(int(v) for v in roi) if roi else (0, fast, 0, slow)
    with gzip.open(root / case["outputs"]["float"]) as fh:
        floatimage = np.frombuffer(fh.read(), dtype="<f4").reshape(slow, fast)
    with gzip.open(root / case["outputs"]["noise"]) as fh:
        raw = fh.read()
    header_bytes = 512
    ref = np.frombuffer(raw[header_bytes:], dtype="<u2").reshape(slow, fast)
    img, photons, overloads = CRandom().noise(floatimage, roi, adc, seed)
    mismatches = int(np.count_nonzero(img != ref))
    assert mismatches == 0, f"{mismatches} pixels differ from the C noise image"
    stdout = root / case["outputs"].get("stdout", "")
    if stdout.is_file():
        for line in stdout.read_text(errors="replace").splitlines():
            if "photons on noise image" in line:
                assert line.split()[0] == "%.0f" % photons
                assert int(line.split("(")[1].split()[0]) == overloads
