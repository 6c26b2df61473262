"""noisify's noise models with the counter-based generator (issue 13: the GPU versions of the noise models).

``nb.noisify(..., generator="counter", device="cpu"|"cuda")``: every random
number of a pixel from Philox keyed by (seed, pixel, stream), one stream per
model (kernels/noisify_counter.py).  The CUDA simulator gives the CPU's
integers for every model; the models have their expected statistics on flat
images (seeded: the bounds cannot flake); the per-output-pixel PSF is the
scatter loop's sums bit for bit (with and without C's edge wrap) and keeps
the total away from the edges; batch --noise-generator counter --noise-model
does not depend on the grouping.  Tiny images, no golden data.
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import nanobrag_numba as nb
from nanobrag_numba.errors import NanoBraggError
from nanobrag_numba.kernels import noisify as kn
from nanobrag_numba.kernels import noisify_counter as K
from nanobrag_numba.noise_models import CpuOps, apply_psf, counter_pipeline, psf_fwhm_pixels

HERE = os.path.dirname(os.path.abspath(__file__))


def _image(shape=(7, 9), seed=1):
    rng = np.random.default_rng(seed)
    img = (rng.random(shape) * 60).astype(np.float32)
    img[2, shape[1] - 1] = 4000.0           # a bright pixel at the right edge (PSF edge light)
    img[0, 0] = 0.0
    return img


#: one keyword set per model (and the combinations a GPU user runs), for the CPU / CUDA simulator comparison
CASES = [
    {"calibration": 0.0},                                             # Poisson only
    {"calibration": 0.0, "readout": 3.0},                             # read-out noise
    {"calibration": 0.0, "flicker": 0.2},                             # flicker
    {"calibration": 0.1, "calib_seed": 77},                           # calibration error
    {"calibration": 0.0, "gain": 2.5, "adc": 10.0, "bits": 32},       # gain and ADC offset, 32-bit image
    {"calibration": 0.0, "adc": 0.0, "readout": 4.0},                 # negative ADU -> 0
    {"calibration": 0.0, "adc": 0.0, "readout": 4.0, "c_quirks": True},   # gcc's wrap of a negative ADU
    {"readout": 3.0, "psf": "gauss", "psf_fwhm_um": 150.0},           # PSF, automatic radius (+ edge note)
    {"psf": "fiber", "psf_radius": 3, "flicker": 0.05, "c_quirks": True},  # PSF with C's edge wrap
]


@pytest.fixture(scope="module")
def cuda_sim_results(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cudasim") / "sim.npz")
    np.savez(out + ".in.npz", image=_image(), cases=np.array(json.dumps([dict(c, seed=5) for c in CASES])))
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", NUMBA_DISABLE_JIT="1")
    p = subprocess.run([sys.executable, os.path.join(HERE, "cuda_noisify_worker.py"), out], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = np.load(out)
    # every kernel of kernels/cuda_noisify.py ran
    assert res["launched"].tolist() == ["adu", "counts", "edge_wrap", "psf", "psf_setup", "row_stats"]
    return res


@pytest.mark.parametrize("n", range(len(CASES)))
def test_cuda_simulator_equals_cpu(cuda_sim_results, n):
    """Each model on the CUDA simulator: the CPU's integers, counts, totals, notes and log."""
    cpu = nb.noisify(_image(), generator="counter", device="cpu", seed=5, **CASES[n])
    sim = cuda_sim_results
    assert sim["noise%d" % n].dtype == cpu.noise_image.dtype
    assert np.array_equal(sim["noise%d" % n], cpu.noise_image)
    assert np.array_equal(sim["counts%d" % n].view(np.uint32), cpu.counts.view(np.uint32))
    before, total, over, notes, log = json.loads(str(sim["meta%d" % n]))
    assert (before, total, over, notes, log) == (cpu.photons_before_psf, cpu.photons_total, cpu.overloads,
                                                 cpu.notes, cpu.log)


@pytest.mark.slow
def test_cuda_kernels_compile_for_a_gpu():
    """NVVM compiles every kernel of kernels/cuda_noisify.py for sm_90 (typing the simulator does not check).

    About 25 s of NVVM: marked slow (``--runslow``), as the other PTX compiles.
    """
    try:
        from numba.cuda.cudadrv import nvvm
        ok = nvvm.is_available()
    except Exception:       # noqa: BLE001 - no CUDA toolkit wheels
        ok = False
    if not ok:
        pytest.skip("NVVM (numba-cuda[cu13]) is not installed")
    from numba import cuda, types as T
    from nanobrag_numba.kernels import cuda_noisify as C
    C.CudaOps()
    f32, f64, i64, u64, flag = T.float32[::1], T.float64[::1], T.int64, T.uint64, T.boolean
    table = T.float64[:, ::1]
    sigs = {"counts": (f32, f32, i64, i64, i64, i64, T.float64, T.float64, u64, u64, u64, u64),
            "psf_setup": (f32, T.int32[::1], f64, i64, T.float64, i64, i64),
            "edge_wrap": (f32, T.int32[::1], table, i64, i64, T.uint8[::1]),
            "row_stats": (T.uint8[::1], i64, f64, f64),
            "psf": (f32, f32, i64, i64, table, T.int32[::1], i64, flag, T.float64),
            "adu": (f32, i64, i64, i64, i64, T.float64, T.float64, T.float64, u64, u64, flag, T.uint16[::1],
                    T.uint32[::1], T.uint8[::1])}
    assert set(sigs) == set(C._KERNELS)
    for name, sig in sigs.items():
        ptx, _ = cuda.compile_ptx(C._KERNELS[name].py_func, sig, cc=(9, 0))
        assert ".entry" in ptx, name


def test_the_cases_exercise_what_they_name():
    """The comparison above is not vacuous: each model changes the image, the notes appear where expected."""
    img = _image()
    runs = [nb.noisify(img, generator="counter", seed=5, **c) for c in CASES]
    images = [r.noise_image.astype(np.int64) for r in runs]
    for n in range(1, len(CASES)):
        assert not np.array_equal(images[n], images[0]), CASES[n]
    assert any("negative ADU" in t for t in runs[5].notes) and not runs[6].notes
    assert (images[6] > 60000).any() and not (images[5] > 60000).any()
    assert any("psf_edge_wrap" in t for t in runs[7].notes)
    assert runs[4].noise_image.dtype == np.uint32 and runs[4].overloads == 0


def test_frozen_deviates():
    # a batch's reproducibility: these numbers of the counter streams must never change
    img = np.array([[0.5, 20.0, 300.0, 5000.0]], dtype=np.float32)
    got = nb.noisify(img, generator="counter", seed=1, calib_seed=2, readout=3.0, flicker=0.1, calibration=0.05)
    assert got.noise_image.tolist() == [[37, 67, 348, 4336]]
    z = [K.gauss_deviate(np.uint64(1), np.uint64(0), np.uint64(i), np.uint64(3)) for i in range(3)]
    assert [round(v, 12) for v in z] == [-1.026685980948, 1.679830252822, 1.406729324086]


def test_poisson_stream_is_the_batch_generators():
    """Poisson only, gain 1: the same integers as batch --noise-generator counter (stream 0, same key)."""
    from nanobrag_numba.noise import counter_noise_images
    img = _image((20, 30))
    r = nb.noisify(img, generator="counter", seed=12, calibration=0.0)
    want = counter_noise_images(r.photons[None], [12], (0, 10 ** 6, 0, 10 ** 6), 40.0)[0]
    assert np.array_equal(r.noise_image, want)


def test_gaussian_deviates():
    """Box-Muller: mean 0, variance 1, normal quantiles; the streams are uncorrelated."""
    n = 40000
    idx = np.arange(n, dtype=np.uint64)
    z = {s: np.array([K.gauss_deviate(np.uint64(9), np.uint64(0), i, np.uint64(s)) for i in idx[:n]])
         for s in (1, 3)}
    for v in z.values():
        assert abs(v.mean()) < 5 / math.sqrt(n)
        assert abs(v.var() - 1) < 5 * math.sqrt(2 / n)
        assert abs(np.mean(v < 1.0) - 0.8413447) < 5 * math.sqrt(0.84 * 0.16 / n)
        assert abs(np.mean(v < -2.0) - 0.0227501) < 5 * math.sqrt(0.0228 * 0.9772 / n)
    assert abs(np.corrcoef(z[1], z[3])[0, 1]) < 5 / math.sqrt(n)


FLAT = np.full((150, 150), 1000.0, dtype=np.float32)
NPIX = FLAT.size


def _moments(**kw):
    r = nb.noisify(FLAT, generator="counter", seed=kw.pop("seed", 3), **kw)
    return r


def _close(value, expected, sigma):
    assert abs(value - expected) < 5 * sigma, (value, expected, sigma)


def test_readout_noise_statistics():
    """Read-out noise alone (no photons): ADU = trunc(adc + readout z), variance readout^2 + 1/12."""
    r = nb.noisify(np.zeros((150, 150), np.float32), generator="counter", seed=4, calibration=0.0, readout=3.0,
                   adc=1000.0)
    adu = r.noise_image.astype(np.float64)
    _close(adu.mean(), 999.5, 3.0 / math.sqrt(NPIX))
    _close(adu.var(), 9.0 + 1 / 12, 9.0 * math.sqrt(2.0 / NPIX))


def test_poisson_plus_readout_statistics():
    r = _moments(calibration=0.0, readout=5.0, adc=40.0, gain=2.0)
    adu = r.noise_image.astype(np.float64)
    var = 4 * 1000.0 + 25.0 + 1 / 12
    _close(adu.mean(), 2000.0 + 40.0 - 0.5, math.sqrt(var / NPIX))
    _close(adu.var(), var, var * math.sqrt(2.0 / NPIX))


@pytest.mark.parametrize("model", ["flicker", "calibration"])
def test_flicker_and_calibration_statistics(model):
    """A fractional error c on I photons: counts of mean I and variance I + (c I)^2."""
    r = _moments(**{"calibration": 0.0, model: 0.1})
    counts = r.counts.astype(np.float64)
    var = 1000.0 + 100.0 ** 2
    _close(counts.mean(), 1000.0, math.sqrt(var / NPIX))
    _close(counts.var(), var, var * math.sqrt(2.0 / NPIX) * 1.2)


def test_calibration_is_a_property_of_the_detector():
    """The calibration stream has its own key: the same pattern for every seed, another for another calib_seed."""
    img = np.full((60, 60), 1e6, dtype=np.float32)
    a = nb.noisify(img, generator="counter", seed=1, calib_seed=8, calibration=0.05, bits=32).counts.ravel()
    b = nb.noisify(img, generator="counter", seed=2, calib_seed=8, calibration=0.05, bits=32).counts.ravel()
    c = nb.noisify(img, generator="counter", seed=1, calib_seed=9, calibration=0.05, bits=32).counts.ravel()
    assert not np.array_equal(a, b)
    assert np.corrcoef(a, b)[0, 1] > 0.99
    assert abs(np.corrcoef(a, c)[0, 1]) < 5 / 60.0
    f1 = nb.noisify(img, generator="counter", seed=1, calibration=0.0, flicker=0.05, bits=32).counts.ravel()
    f2 = nb.noisify(img, generator="counter", seed=2, calibration=0.0, flicker=0.05, bits=32).counts.ravel()
    assert abs(np.corrcoef(f1, f2)[0, 1]) < 5 / 60.0          # flicker follows the image's seed


@pytest.mark.parametrize("psf,fwhm_um,radius,tol", [("gauss", 200, 0, 1e-3), ("gauss", 300, 6, 5e-3),
                                                    ("fiber", 150, 0, 2e-2)])
def test_psf_conserves_the_total_away_from_the_edges(psf, fwhm_um, radius, tol):
    """The tolerances of test_noisify.py's C-generator test (the fiber's tails reach past the image)."""
    img = np.zeros((48, 48), dtype=np.float32)
    img[20:26, 22:27] = 3000.0
    kw = dict(generator="counter", seed=6, calibration=0.0, bits=32)
    r = nb.noisify(img, psf=psf, psf_fwhm_um=fwhm_um, psf_radius=radius, **kw)
    assert r.photons_before_psf > 0
    assert abs(r.photons_total / r.photons_before_psf - 1) < tol
    assert abs(float(r.counts.astype(np.float64).sum()) / r.photons_before_psf - 1) < tol
    assert r.counts[0, 0] < r.counts[23, 24] / 100          # the light stays near the spot
    assert any("psf_edge_wrap" in t for t in r.notes) == (psf == "fiber")     # the fiber disc reaches the edge
    # the PSF of the Poisson counts is apply_psf's (up to the order of the lost photons' sum)
    counts = nb.noisify(img, **kw).counts
    assert counts.sum() == r.photons_before_psf
    want = apply_psf(counts, psf, psf_fwhm_pixels(fwhm_um, 0.1), radius)
    np.testing.assert_allclose(r.counts, want, rtol=1e-6, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(xp=st.integers(1, 9), yp=st.integers(1, 9), kind=st.sampled_from([kn.PSF_GAUSS, kn.PSF_FIBER]),
       fwhm=st.floats(0.3, 4.0), user=st.integers(0, 6), wrap=st.booleans(), seed=st.integers(0, 2 ** 16),
       add=st.sampled_from([0.0, 0.37]))
def test_psf_gather_is_the_scatter_loop_bit_for_bit(xp, yp, kind, fwhm, user, wrap, seed, add):
    """The per-output-pixel PSF (CPU prange and CUDA) equals C's per-source loop, with and without the edge wrap."""
    rng = np.random.default_rng(seed)
    img = (rng.random((yp, xp)) * rng.choice([1.0, 100.0, 1e5], (yp, xp))).astype(np.float32)
    img[rng.random((yp, xp)) < 0.3] = 0.0
    flat = img.ravel()
    maxwidth = max(xp, yp)
    radii, _lost = kn.psf_radii(flat, kind, fwhm, user, maxwidth)
    table = kn.psf_kernel_table(kind, fwhm, max(1, int(radii.max())))
    want, wrapped = kn.psf_scatter(flat, xp, yp, table, radii, wrap)
    kn.add_uniform(want, add)
    got = np.empty_like(flat)
    K.psf_cpu(flat, got, xp, yp, table, radii, int(radii.max()), wrap, add)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    # the per-source edge note agrees with the serial check of noise_models
    from nanobrag_numba.noise_models import _edge_wrap_touched
    touched = np.empty(flat.size, np.uint8)
    K.edge_wrap_cpu(flat, radii, table, xp, yp, touched)
    assert bool(touched.any()) == _edge_wrap_touched(img, radii.reshape(img.shape), table)


@pytest.mark.parametrize("c_quirks", [False, True])
def test_psf_few_huge_discs_take_the_source_loop_on_the_cpu_with_the_same_bits(monkeypatch, c_quirks):
    """Fiber PSF, automatic radius, one bright pixel: the CPU uses C's per-source loop; same image as the gather."""
    from nanobrag_numba import noise_models
    img = np.full((30, 34), 2.0, dtype=np.float32)
    img[12, 30] = 1e5
    kw = dict(generator="counter", seed=4, calibration=0.0, psf="fiber", psf_fwhm_um=80.0, c_quirks=c_quirks)
    chosen = []
    choose = noise_models._scatter_is_cheaper
    monkeypatch.setattr(noise_models, "_scatter_is_cheaper", lambda *a: chosen.append(choose(*a)) or chosen[-1])
    scatter = nb.noisify(img, **kw)
    assert chosen == [True]
    monkeypatch.setattr(noise_models, "_scatter_is_cheaper", lambda *a: False)
    gather = nb.noisify(img, **kw)
    assert np.array_equal(scatter.counts.view(np.uint32), gather.counts.view(np.uint32))
    assert np.array_equal(scatter.noise_image, gather.noise_image) and scatter.log == gather.log


def test_psf_with_c_quirks_moves_edge_light_to_the_next_row():
    img = np.zeros((16, 16), dtype=np.float32)
    img[5, 15] = 1e5
    d = nb.noisify(img, generator="counter", seed=2, calibration=0.0, psf="gauss", psf_fwhm_um=200, psf_radius=3)
    q = nb.noisify(img, generator="counter", seed=2, calibration=0.0, psf="gauss", psf_fwhm_um=200, psf_radius=3,
                   c_quirks=True)
    assert any("psf_edge_wrap" in t for t in d.notes) and not q.notes
    assert np.array_equal(d.counts[:, 1:], q.counts[:, 1:])
    assert (q.counts[4:9, 0] > d.counts[4:9, 0]).all()


def test_origin_and_stride_number_a_crop_as_the_detector():
    """counter_pipeline's origin/stride: a crop's noise is the full image's noise at those pixels."""
    img = _image((10, 12))
    flat = img.ravel()
    kw = dict(seed=3, flicker=0.1, calibration=0.05, readout=2.0)
    full = counter_pipeline(CpuOps(), flat, 12, 10, **kw)["n16"].reshape(10, 12)
    sub = np.ascontiguousarray(img[3:8, 4:11])
    crop = counter_pipeline(CpuOps(), sub.ravel(), 7, 5, origin=(4, 3), stride=12, **kw)["n16"].reshape(5, 7)
    assert np.array_equal(crop, full[3:8, 4:11])
    plain = counter_pipeline(CpuOps(), sub.ravel(), 7, 5, **kw)["n16"].reshape(5, 7)
    assert not np.array_equal(plain, crop)


def test_same_seed_same_image_and_c_generator_unchanged_by_default():
    img = _image()
    a = nb.noisify(img, generator="counter", seed=3, readout=2.0)
    assert np.array_equal(a.noise_image, nb.noisify(img, generator="counter", seed=3, readout=2.0).noise_image)
    assert not np.array_equal(a.noise_image, nb.noisify(img, generator="counter", seed=4, readout=2.0).noise_image)
    c = nb.noisify(img, seed=3, readout=2.0)
    assert np.array_equal(c.noise_image, nb.noisify(img, seed=3, readout=2.0, generator="c").noise_image)
    assert not np.array_equal(c.noise_image, a.noise_image)


@pytest.mark.parametrize("kw,msg", [({"generator": "philox"}, "unknown noise generator 'philox'"),
                                    ({"device": "gpu", "generator": "counter"}, "unknown device 'gpu'"),
                                    ({"device": "cuda"}, "device='cuda' needs generator='counter'")])
def test_api_rejects_bad_generator_or_device(kw, msg):
    with pytest.raises(NanoBraggError, match=msg):
        nb.noisify(_image(), seed=1, **kw)


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    from nanobrag_numba import backends
    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    with pytest.raises(NanoBraggError, match="no usable CUDA GPU"):
        nb.noisify(_image(), seed=1, generator="counter", device="cuda")


# ------------------------------------------------------------------ batch


BASE = ["-default_F", "100", "-cell", "40", "40", "40", "90", "90", "90", "-N", "3", "-detpixels", "16",
        "-pixel", "0.2", "-seed", "5", "-device", "cpu"]


def _noise_files(out):
    d = os.path.join(out, "noise")
    return {n: open(os.path.join(d, n), "rb").read() for n in sorted(os.listdir(d))}


def test_batch_counter_noise_model_independent_of_grouping(tmp_path, monkeypatch):
    """--noise-generator counter --noise-model: accepted, per image the API's counter model, whatever K."""
    from nanobrag_numba import batch
    from nanobrag_numba.io.smv import read_smv
    monkeypatch.chdir(tmp_path)
    model = "-readout_noise 3 -flicker 0.05 -calibration 0.02 -psf gauss -psf_fwhm 200"
    files = []
    for k in (1, 3):
        out = "k%d" % k
        assert batch.main(["--phi-series", "0", "1", "4", "--out", out, "--format", "float", "--quiet",
                           "--noise-generator", "counter", "--images-per-launch", str(k), "--noise-model", model,
                           "--"] + BASE) == 0
        files.append(_noise_files(out))
    assert files[0] == files[1] and len(files[0]) == 4
    for i in range(4):
        flt = np.fromfile("k3/img_%06d.bin" % i, dtype="<f4").reshape(16, 16)
        ref = nb.noisify(flt, readout=3, flicker=0.05, calibration=0.02, psf="gauss", psf_fwhm_um=200,
                         pixel_mm=0.2, seed=5 + i, generator="counter")
        got = read_smv(os.path.join("k3", "noise", "img_%06d.img" % i)).data.reshape(16, 16)
        assert np.array_equal(got, ref.noise_image)
    # C's generator gives other noise images for the same seeds
    assert batch.main(["--phi-series", "0", "1", "4", "--out", "c", "--format", "float", "--quiet",
                       "--noise-model", model, "--"] + BASE) == 0
    assert all(a != b for a, b in zip(_noise_files("c").values(), files[0].values()))
