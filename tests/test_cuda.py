"""The CUDA back end: simulator runs, PTX compilation, single precision, real-GPU parity.

- Everywhere: the CUDA kernel runs in numba's CUDA simulator (pure Python)
  on tiny images and must match the compiled CPU kernel to 1e-12.
- Everywhere NVVM is installed (the ``gpu`` extra brings it, ~190 MB of
  CUDA wheels; skipped with that hint without them): the kernel compiles to
  PTX for sm_90 in double and single precision, which the simulator cannot
  check.
- Everywhere: the single-precision physics (compiled for the CPU) keeps the
  correlation with C above 0.9999 on every non-quirk golden case.
- With a GPU (marker ``gpu``): golden parity on the device.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from numba import njit

import golden
import nanobrag_numba as nb
from nanobrag_numba import tolerances as T
from nanobrag_numba.backends import cuda_available, run_kernel
from nanobrag_numba.simulator import normalise

HERE = os.path.dirname(os.path.abspath(__file__))

SIM_CASES = {
    "mosaic_dispersion_oversample": "-N 5 -detpixels 8 -pixel 3.0 -oversample 2 -mosaic 0.5 -mosaic_domains 2 "
                                    "-dispersion 2 -dispsteps 2",
    "phi_interpolate_roi": "-N 2 -detpixels 10 -pixel 2.4 -phi 1 -osc 1 -phisteps 2 -roi 1 8 2 9",
    "thick_polar_round": "-N 4 -detpixels 8 -pixel 3.0 -detector_thick 100 -detector_thicksteps 3 -polar 0.9 "
                         "-round_xtal -water 20",
    "xds_twotheta_quirks": "-N 3 -xds -detpixels 9 -pixel 3.0 -twotheta 10 -phi 0 -osc 1 -phisteps 2 "
                           "-oversample_omega -oversample 2 -c_quirks",
    "curved_dmin_tophat_thick": "-N 3 -detpixels 8 -pixel 3.0 -curved_det -dmin 8 -tophat_spots -fudge 2 "
                                "-oversample 2 -oversample_thick -oversample_polar -detector_thick 50 "
                                "-detector_thicksteps 2",
}

# the compile-time variant (kernels/variants.py) each case must launch: the first is the common case
# (G1's straight-line kernel), the others fix other options
SIM_VARIANTS = {
    "mosaic_dispersion_oversample": "common",
    "phi_interpolate_roi": "common+interpolate=on,mask=any",
    "thick_polar_round": "common+shape=round,sensor=on,water=on",
    "xds_twotheta_quirks": "common+quirks=on,oversample_omega=on",
    "curved_dmin_tophat_thick": "common+shape=tophat,sensor=on,oversample_thick=on,oversample_polar=on,"
                                "curved=on,dmin=on",
}


def small_case_flags(extra):
    return ("-hkl inputs/P1.hkl -cell 40 42 45 90 90 90 -misset 10 20 30 -lambda 1.0 -distance 60 "
            "-noprogress -seed 1 " + extra).split()


@pytest.mark.golden
@pytest.mark.parametrize("name", sorted(SIM_CASES))
def test_cuda_simulator_matches_cpu_kernel(name, tmp_path):
    root = golden.require()
    os.symlink(root / "inputs", tmp_path / "inputs")
    flags = small_case_flags(SIM_CASES[name])
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", NUMBA_DISABLE_JIT="1")
    out = tmp_path / "sim.npz"
    p = subprocess.run([sys.executable, os.path.join(HERE, "cuda_sim_worker.py"), str(out), str(tmp_path)] + flags,
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    sim = np.load(out)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        prep = nb.Simulator(flags, device="cpu").prepare()
        rows, oob, _ = run_kernel("cpu", prep, prep.params)
    finally:
        os.chdir(cwd)
    assert rows[0].max() > 0
    from nanobrag_numba.kernels import variants as V
    launched = V.Variant(*(int(x) for x in sim["variant"]))
    assert launched == V.variant_of(prep.params) and V.describe(launched) == SIM_VARIANTS[name]
    assert (launched == V.COMMON) == (name == "mosaic_dispersion_oversample")
    np.testing.assert_allclose(sim["rows"], rows, rtol=T.CUDA_SIM_RTOL, atol=0)
    np.testing.assert_array_equal(sim["oob"], oob)


GPU_EXTRA_REASON = ("the CUDA toolkit wheels (NVVM, NVRTC) are not installed: pip install -e '.[gpu]' "
                    "to compile the CUDA kernel")


def _nvvm_available():
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib
        load_nvidia_dynamic_lib("nvvm")
        load_nvidia_dynamic_lib("nvrtc")
        return True
    except Exception:
        return False


def toolkit_skip_reason():
    """Why the tests that compile CUDA code cannot run here (None: they can)."""
    return None if _nvvm_available() else GPU_EXTRA_REASON


def gpu_skip_reason():
    """Why the tests on a real GPU cannot run here (None: they can)."""
    if not cuda_available():
        return "no usable CUDA GPU on this machine"
    return toolkit_skip_reason()


def _cache_index(disp):
    return os.path.basename(disp._cache._cache_file._index_path)


def test_every_cuda_variant_has_its_own_on_disk_cache_entry():
    """Each (kind, precision, variant) kernel is cached on disk under its own name, the same in every process."""
    from nanobrag_numba.kernels import cuda as kcuda
    from nanobrag_numba.kernels import variants as V
    round_ = V.COMMON._replace(shape=1)
    kernels = [kcuda.kernel("double", V.COMMON), kcuda.kernel("single", V.COMMON), kcuda.kernel("double", round_),
               kcuda.kernel("double", V.GENERIC), kcuda.many_kernel("double", V.COMMON), kcuda._noise_kernel()]
    names = [_cache_index(k) for k in kernels]
    assert len(set(names)) == len(names)
    assert all(type(k._cache).__name__ == "CUDACache" for k in kernels)      # caching is on
    # no closure: the cache key is the bytecode, the name carries the variant and the sources' hash
    assert all(k.py_func.__closure__ is None for k in kernels)
    assert kcuda.kernel("double", V.COMMON) is kernels[0]
    code = ("import os; from nanobrag_numba.kernels import cuda as k, variants as V; "
            "print(os.path.basename(k.kernel('double', V.COMMON)._cache._cache_file._index_path))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert other.returncode == 0, other.stderr[-2000:]
    assert other.stdout.strip() == names[0]


def test_cuda_kernel_without_a_writable_cache_compiles_in_memory(monkeypatch):
    from numba import cuda
    from nanobrag_numba.kernels import cuda as kcuda
    real = cuda.jit

    def jit(*args, **kwargs):
        if kwargs.get("cache"):
            raise RuntimeError("cannot cache function 'x': no locator available for file 'y'")
        return real(*args, **kwargs)
    monkeypatch.setattr(cuda, "jit", jit)
    disp = kcuda._jit(kcuda._bind(kcuda._render_kernel, kcuda.variant_physics(kcuda.GENERIC), "t"))
    assert type(disp._cache).__name__ == "NullCache"


def test_missing_cuda_wheels_skip_with_the_gpu_extra(monkeypatch):
    import cuda.pathfinder

    def absent(name):
        raise RuntimeError("%s not found" % name)

    monkeypatch.setattr(cuda.pathfinder, "load_nvidia_dynamic_lib", absent)
    assert toolkit_skip_reason() == GPU_EXTRA_REASON and "'.[gpu]'" in GPU_EXTRA_REASON
    monkeypatch.setattr(sys.modules[__name__], "cuda_available", lambda: True)    # a GPU, but no wheels
    assert gpu_skip_reason() == GPU_EXTRA_REASON
    monkeypatch.setattr(sys.modules[__name__], "cuda_available", lambda: False)
    assert gpu_skip_reason() == "no usable CUDA GPU on this machine"


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["double", "single"])
def test_cuda_kernel_compiles_to_ptx(precision):
    reason = toolkit_skip_reason()
    if reason:
        pytest.skip(reason)
    from numba import cuda, typeof, types
    from nanobrag_numba.kernels import cuda as kcuda
    from nanobrag_numba.kernels.physics import KPARAMS_FIELDS, make_kparams
    dt = np.float32 if precision == "single" else np.float64
    ft = types.float32 if precision == "single" else types.float64
    p = make_kparams(dt, **{k: 0 for k in KPARAMS_FIELDS})
    sig = (typeof(p), ft[:, ::1], ft[:, :, ::1], types.int32[::1], types.int32[::1], ft[:, :, ::1],
           types.uint16[::1], types.float64[:, ::1], types.int64[::1], ft[:, ::1], types.int64, types.int64)
    kernel = kcuda.kernel(precision)
    ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
    assert ".visible .entry" in ptx
    body = ptx.split(".visible .entry", 1)[1]
    if precision == "single":
        # the loop is float32: sines are sinf (no f64 sine polynomial), few f64 instructions remain
        assert body.count(".f32") > 5 * body.count(".f64")
    else:
        assert body.count(".f64") > body.count(".f32")


# ------------------------------------------------------------ single precision
from nanobrag_numba.kernels import physics32 as P32  # noqa: E402

render_pixel32 = P32.render_pixel
is_rendered32 = P32.pixel_is_rendered
store32 = P32.store_result


@njit(cache=False)
def _render_single_on_cpu(p, sources, rot, phi_map, phi_map_first, Fhkl, mask, panels, out, oob):
    trace = np.zeros((1, 46), dtype=np.float32)
    for idx in range(p.fpixels * p.spixels):
        s = idx // p.fpixels
        f = idx - s * p.fpixels
        if is_rendered32(p, mask, s, f):
            store32(out, oob, idx, render_pixel32(p, s, f, sources, rot, phi_map, phi_map_first, Fhkl, trace,
                                                  panels, trace, trace[0]))


def render_single_on_cpu(prep):
    """The single-precision physics (compiled for the CPU) over the whole image."""
    from nanobrag_numba.kernels.physics import make_kparams
    p32 = make_kparams(np.float32, **prep.params._asdict())
    out = np.zeros((6, prep.det.fpixels * prep.det.spixels))
    oob = np.full(out.shape[1], -1, dtype=np.int64)
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    _render_single_on_cpu(p32, f32(prep.sources), f32(prep.rot), prep.phi_map, prep.phi_map_first,
                          f32(prep.Fhkl), prep.mask, f32(prep.panels), out, oob)
    return normalise(prep, out).reshape(prep.det.shape)


DEFAULT_CASES = [c for c in golden.cases() if c["c_quirk"] not in golden.CORRECTED]


@pytest.mark.slow                       # compiles the float32 physics for the CPU (not cached): about a minute
@pytest.mark.golden
@pytest.mark.parametrize("case", DEFAULT_CASES or [None], ids=[c["id"] for c in DEFAULT_CASES] or ["no-data"])
def test_single_precision_physics_keeps_correlation_with_c(case, tmp_path, monkeypatch):
    golden.require()
    golden.stage(case, tmp_path)
    monkeypatch.chdir(tmp_path)
    prep = nb.Simulator(list(case["args"]), device="cpu").prepare()
    img = render_single_on_cpu(prep).astype(np.float64)
    ref = golden.float_image(case).astype(np.float64)
    corr = np.corrcoef(ref.ravel(), img.ravel())[0, 1]
    assert corr >= T.SINGLE_CORR_MIN


# ------------------------------------------------------------ real GPU
_GPU_SKIP = gpu_skip_reason()
needs_gpu = pytest.mark.skipif(_GPU_SKIP is not None, reason=_GPU_SKIP or "")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.golden
@pytest.mark.parametrize("case", golden.cases() or [None], ids=[c["id"] for c in golden.cases()] or ["no-data"])
def test_gpu_matches_c_with_quirks(case, tmp_path, monkeypatch, capsys):
    from test_golden_parity import compare
    from nanobrag_numba.cli import main
    golden.require()
    golden.stage(case, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(golden.OUTPUT_FLAGS + list(case["args"]) + ["-c_quirks", "-device", "cuda"]) == 0
    compare(case, tmp_path)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.golden
@pytest.mark.parametrize("case", DEFAULT_CASES or [None], ids=[c["id"] for c in DEFAULT_CASES] or ["no-data"])
def test_gpu_matches_c_default(case, tmp_path, monkeypatch, capsys):
    from test_golden_parity import compare
    from nanobrag_numba.cli import main
    golden.require()
    golden.stage(case, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(golden.OUTPUT_FLAGS + list(case["args"]) + ["-device", "cuda"]) == 0
    compare(case, tmp_path)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.golden
@pytest.mark.parametrize("case", DEFAULT_CASES or [None], ids=[c["id"] for c in DEFAULT_CASES] or ["no-data"])
def test_gpu_single_precision_correlation(case, tmp_path, monkeypatch):
    golden.require()
    golden.stage(case, tmp_path)
    monkeypatch.chdir(tmp_path)
    res = nb.Simulator(list(case["args"]) + ["-precision", "single"], device="cuda").render()
    ref = golden.float_image(case).astype(np.float64)
    corr = np.corrcoef(ref.ravel(), res.floatimage.astype(np.float64).ravel())[0, 1]
    assert corr >= T.SINGLE_CORR_MIN
