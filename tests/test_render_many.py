"""Simulator.render_many: K images in one launch equal K single renders.

No golden data: a small P1 HKL file is written into a temporary folder.
CPU: bit-identical float images (and the same omega sums).  CUDA simulator
(numba's pure-Python CUDA, in a subprocess): the kernel's rows equal the
CPU's many-images rows to tests/test_cuda.py's tolerance.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import nanobrag_numba as nb
from nanobrag_numba import simulator as S
from nanobrag_numba import tolerances as T
from nanobrag_numba.errors import NanoBraggError

HERE = os.path.dirname(os.path.abspath(__file__))
CELL = "-cell 40 42 45 90 90 90"
COMMON = CELL + " -N 5 -detpixels 12 -pixel 2.0 -distance 60 -lambda 1.0 -device cpu -seed 1"
MOSAIC_QUIRKS = CELL + (" -N 2 -detpixels 10 -pixel 2.4 -distance 60 -lambda 1.0 -mosaic 0.5 -mosaic_domains 3"
                        " -phi 0 -osc 1 -phisteps 3 -c_quirks -device cpu -seed 1")
ORIENTATIONS = [{"misset": (0.1, 0.2, 0.3)}, {"misset": (0.4, -0.2, 1.1), "phi0": 0.02},
                {"misset": (1.0, 0.5, -0.7), "fluence": 3e23}, {}]


@pytest.fixture(scope="module")
def hkl(tmp_path_factory):
    from nanobrag_numba.example import write_p1_hkl
    path = tmp_path_factory.mktemp("hkl") / "P1.hkl"
    write_p1_hkl(str(path), cell=(40, 42, 45, 90, 90, 90), dmin=3.0)
    return str(path)


def _flags(hkl, base):
    return ["-hkl", hkl] + base.split()


def _calls(monkeypatch):
    """Count the launches of the CPU kernels (single and many)."""
    from nanobrag_numba.kernels import cpu
    calls = {"single": 0, "many": []}
    one, many = cpu.render, cpu.render_many

    def count_one(*a, **k):
        calls["single"] += 1
        return one(*a, **k)

    def count_many(*a, **k):
        calls["many"].append(a[-1])
        return many(*a, **k)
    monkeypatch.setattr(cpu, "render", count_one)
    monkeypatch.setattr(cpu, "render_many", count_many)
    return calls


def _same(a, b):
    assert a.floatimage.dtype == b.floatimage.dtype == np.float32
    assert a.floatimage.shape == b.floatimage.shape
    assert a.floatimage.tobytes() == b.floatimage.tobytes()
    assert a.image.omega_sum == b.image.omega_sum
    assert a.image.first_oob == b.image.first_oob


def test_common_case_one_launch_bit_identical(hkl, monkeypatch):
    sim = nb.Simulator(_flags(hkl, COMMON))
    singles = [sim.render(**o) for o in ORIENTATIONS]
    calls = _calls(monkeypatch)
    many = sim.render_many(ORIENTATIONS)
    assert calls == {"single": 0, "many": [4]}          # orientation, phi0 and fluence: ONE launch
    assert len(many) == 4 and singles[0].floatimage.max() > 0
    # the launch used the compile-time CPU variant of the run (fast sincg, SIMD lattice factors), as render does
    from nanobrag_numba.kernels import cpu
    variant = cpu.cpu_variant(many[0].prep.params)
    assert variant != cpu.GENERIC and (variant, True, False) in cpu._KERNELS      # (variant, many, serial)
    for a, b in zip(singles, many):
        _same(a, b)
    assert many[2].prep.fluence == 3e23 and many[2].floatimage.max() != singles[0].floatimage.max()
    assert [r.int_image().tobytes() for r in many] == [r.int_image().tobytes() for r in singles]


def test_mosaic_quirks_phi_carry_over_bit_identical(hkl, monkeypatch):
    # -c_quirks with a phi = 0 step: C's carry-over lives in each image's phi maps; phi0 moves it
    sim = nb.Simulator(_flags(hkl, MOSAIC_QUIRKS))
    overrides = [{"misset": (0.1, 0.2, 0.3), "mosaic_seed": 5}, {"phi0": -0.01745329}, {"mosaic_seed": 9},
                 {"misset": (0.3, 0.0, 0.2), "phi0": 0.01}]
    singles = [sim.render(**o) for o in overrides]
    maps = {tuple(r.prep.phi_map) + tuple(r.prep.phi_map_first) for r in singles}
    assert len(maps) > 1                                  # the images do have different carry-overs
    calls = _calls(monkeypatch)
    many = sim.render_many(overrides)
    assert calls == {"single": 0, "many": [4]}
    for a, b in zip(singles, many):
        _same(a, b)


def test_quirks_interpolation_switch_off_gets_its_second_pass(hkl, monkeypatch):
    # N=1 interpolates; with a small HKL table some pixels leave it: C switches interpolation off there
    from nanobrag_numba.example import write_p1_hkl
    small = os.path.join(os.path.dirname(hkl), "small.hkl")
    write_p1_hkl(small, cell=(40, 42, 45, 90, 90, 90), dmin=12.0)
    flags = ["-hkl", small] + (CELL + " -N 1 -detpixels 10 -pixel 4 -distance 40 -lambda 1.0 -c_quirks "
                               "-device cpu -seed 1").split()
    sim = nb.Simulator(flags)
    overrides = [{"misset": (0.1, 0.2, 0.3)}, {"misset": (0.5, 0.1, 0.2)}]
    singles = [sim.render(**o) for o in overrides]
    assert all(r.image.first_oob is not None for r in singles)
    calls = _calls(monkeypatch)
    many = sim.render_many(overrides)
    assert calls["many"] == [2] and calls["single"] == 2    # one joint first pass, one second pass each
    for a, b in zip(singles, many):
        _same(a, b)


def test_incompatible_overrides_are_grouped_in_input_order(hkl, monkeypatch):
    sim = nb.Simulator(_flags(hkl, COMMON))
    overrides = [{"misset": (0.1, 0.2, 0.3)}, {"distance": 0.07}, {"misset": (0.2, 0.2, 0.3)},
                 {"distance": 0.07, "misset": (0.5, 0.0, 0.0)}, {"Na": 3}, {}]
    singles = [sim.render(**o) for o in overrides]
    calls = _calls(monkeypatch)
    many = sim.render_many(overrides)
    assert calls["single"] == 0 and sorted(calls["many"]) == [1, 2, 3]   # base x3, distance x2, Na x1
    for a, b in zip(singles, many):
        _same(a, b)
    preps = [r.prep for r in many]
    assert S.launch_groups(preps, "cpu") == [[0, 2, 5], [1, 3], [4]]


def test_gauss_shape_orientations_do_not_share_a_launch(hkl, monkeypatch):
    # the GAUSS/TOPHAT lattice factor reads the reciprocal cell, which turns with the crystal
    sim = nb.Simulator(_flags(hkl, COMMON + " -gauss_xtal"))
    overrides = [{"misset": (0.1, 0.2, 0.3)}, {"misset": (0.2, 0.2, 0.3)}, {"fluence": 2e23}]
    singles = [sim.render(**o) for o in overrides]
    calls = _calls(monkeypatch)
    many = sim.render_many(overrides)
    assert sorted(calls["many"]) == [1, 1, 1]
    for a, b in zip(singles, many):
        _same(a, b)


def test_water_with_per_image_fluence(hkl):
    sim = nb.Simulator(_flags(hkl, COMMON + " -water 50"))
    overrides = [{"fluence": 1e23}, {"fluence": 5e23, "misset": (0.3, 0.1, 0.0)}]
    assert S.launch_groups([sim.prepare(**o) for o in overrides], "cpu") == [[0, 1]]
    for a, b in zip([sim.render(**o) for o in overrides], sim.render_many(overrides)):
        _same(a, b)


def test_amorphous_background_is_added_as_render_adds_it(hkl, tmp_path):
    stol = tmp_path / "water.stol"
    stol.write_text("0 2.57\n0.2 1.9\n0.4 1.2\n0.8 0.6\n")
    sim = nb.Simulator(_flags(hkl, COMMON + " -background %s -background_thick 0.2" % stol))
    overrides = [{"fluence": 1e23}, {"fluence": 5e23, "misset": (0.3, 0.1, 0.0)}]
    plain = nb.Simulator(_flags(hkl, COMMON)).render(fluence=1e23)
    singles, many = [sim.render(**o) for o in overrides], sim.render_many(overrides)
    assert (singles[0].floatimage > plain.floatimage).all()      # the layer adds photons everywhere
    for a, b in zip(singles, many):
        _same(a, b)


@pytest.mark.parametrize("arg, text", [
    ([], "render_many needs at least one image: the list of settings is empty"),
    ({"misset": (0, 0, 0)}, "render_many takes a list of dicts of settings (one per image), got dict"),
    ("misset", "render_many takes a list of dicts of settings (one per image), got str"),
    (None, "render_many takes a list of dicts of settings (one per image), got NoneType"),
    ([{}, 3], "render_many: item 1 must be a dict of settings, got int"),
    ([{}, {"mistet": (0, 0, 0)}], "render_many: item 1: unknown setting 'mistet' (did you mean 'misset'?)"),
    ([{"distance": "far"}], "render_many: item 0: distance must be a number, got 'far'"),
    ([{"misset": (1, 2)}], "render_many: item 0: misset must be a list of 3 numbers, got 2"),
    ([{1: 2}], "render_many: item 0: settings are named by strings, got 1"),
])
def test_bad_input_is_one_line(hkl, arg, text):
    sim = nb.Simulator(_flags(hkl, COMMON))
    with pytest.raises(NanoBraggError) as exc:
        sim.render_many(arg)
    msg = str(exc.value)
    assert msg.startswith(text) and "\n" not in msg


def test_bad_device_and_bad_prepared(hkl):
    sim = nb.Simulator(_flags(hkl, COMMON))
    with pytest.raises(NanoBraggError, match="unknown device 'gpu'"):
        sim.render_many([{}], device="gpu")
    with pytest.raises(NanoBraggError, match="render_prepared: item 0 is not a prepared image"):
        sim.render_prepared([{}])


SIM_CASES = {
    # the common case (G1's straight-line variant): orientation, phi and fluence differ
    "common": (CELL + " -N 3 -detpixels 8 -pixel 3.0 -distance 60 -lambda 1.0 -mosaic 0.5 -mosaic_domains 2 -seed 1",
               [{"misset": (0.1, 0.2, 0.3)}, {"misset": (0.7, -0.2, 0.4), "phi0": 0.01, "fluence": 4e24}]),
    # -c_quirks phi carry-over: the stacked phi maps differ (the second image has no phi = 0 step)
    "quirks_phi": (CELL + " -N 3 -detpixels 4 -pixel 4.0 -distance 60 -lambda 1.0 -phi 0 -osc 2 -phisteps 2 "
                          "-c_quirks -seed 1",
                   [{"misset": (0.1, 0.2, 0.3)}, {"misset": (0.1, 0.2, 0.3), "phi0": 0.01}]),
}


@pytest.mark.parametrize("case", ["common", pytest.param("quirks_phi", marks=pytest.mark.slow)])   # ~10 s more
def test_cuda_simulator_matches_cpu_rows(hkl, tmp_path, case):
    """render_many on the CUDA kernel (numba's simulator), K=2: the CPU's rows, noise identical."""
    base, overrides = SIM_CASES[case]
    flags = _flags(hkl, base)
    out = tmp_path / "sim.npz"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", NUMBA_DISABLE_JIT="1")
    import json
    p = subprocess.run([sys.executable, os.path.join(HERE, "cuda_sim_worker.py"), "--many", str(out), str(tmp_path),
                        json.dumps(overrides)] + flags, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    sim_out = np.load(out)
    sim = nb.Simulator(flags, device="cpu")
    preps = [sim.prepare(**o) for o in overrides]
    if case == "quirks_phi":
        assert preps[0].phi_map_first.tolist() != preps[1].phi_map_first.tolist()
    from nanobrag_numba.backends import run_kernel_many
    rows, oob, _ = run_kernel_many("cpu", preps, preps[0].params)
    assert rows[0].max() > 0 and list(sim_out["launches"]) == [2, 2]     # one launch of both images, twice
    np.testing.assert_allclose(sim_out["rows"], rows, rtol=T.CUDA_SIM_RTOL, atol=0)
    np.testing.assert_array_equal(sim_out["oob"], oob)
    images = np.stack([r.floatimage for r in sim.render_many(overrides)])
    np.testing.assert_allclose(sim_out["images"], images, rtol=1e-6, atol=0)
    # the counter-based noise of those images: the CPU kernel's integers
    from nanobrag_numba.noise import counter_noise_images
    noise = counter_noise_images(sim_out["images"], [11, 12], preps[0].det.roi, 40.0, backend="cpu")
    assert noise.max() > 40
    np.testing.assert_array_equal(sim_out["noise"], noise)


@pytest.mark.slow                       # about a minute of NVVM
def test_many_and_noise_kernels_compile_to_ptx():
    from test_cuda import toolkit_skip_reason
    reason = toolkit_skip_reason()
    if reason:
        pytest.skip(reason)
    from numba import cuda, typeof, types
    from nanobrag_numba.kernels import cuda as kcuda
    from nanobrag_numba.kernels.physics import KPARAMS_FIELDS, make_kparams
    from nanobrag_numba.kernels.variants import COMMON
    ft = types.float64
    p = make_kparams(np.float64, **{k: 0 for k in KPARAMS_FIELDS})
    sig = (typeof(p), ft[:, ::1], ft[:, :, :, ::1], types.int32[:, ::1], types.int32[:, ::1], ft[:, :, ::1],
           types.uint16[::1], types.float64[:, ::1], types.int64[::1], ft[:, ::1], types.int64)
    ptx, _ = cuda.compile_ptx(kcuda.many_kernel("double", COMMON).py_func, sig, cc=(9, 0))
    assert ".visible .entry" in ptx
    i64 = types.int64
    sig = (types.float32[:, ::1], types.uint64[:, ::1], types.uint16[:, ::1], i64, i64, i64, i64, i64, i64,
           types.float64)
    ptx, _ = cuda.compile_ptx(kcuda._noise_kernel().py_func, sig, cc=(9, 0))
    assert ".visible .entry" in ptx
