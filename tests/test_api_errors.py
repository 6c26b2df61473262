"""Bad calls of the Python API raise NanoBraggError with a one-line message (issue 9).

No golden data: a tiny P1 HKL file and an 8x8 detector.  The hypothesis
test checks the validation of ``render`` overrides only (the set-up is
replaced by a stub that validates the Config and stops), so it renders
nothing.
"""
import os

import numpy as np
import pytest

import nanobrag_numba as nb
from nanobrag_numba import api
from nanobrag_numba.errors import NanoBraggError

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install -e '.[test]')")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

TINY = "-cell 40 42 45 90 90 90 -N 2 -detpixels 8 -oversample 1 -device cpu -noprogress"


@pytest.fixture(scope="module")
def hkl(tmp_path_factory):
    from nanobrag_numba.example import write_p1_hkl
    path = tmp_path_factory.mktemp("hkl") / "P1.hkl"
    write_p1_hkl(str(path), cell=(40, 42, 45, 90, 90, 90), dmin=4.0)
    return str(path)


@pytest.fixture(scope="module")
def sim(hkl):
    return nb.Simulator("-hkl %s %s" % (hkl, TINY))


@pytest.fixture(scope="module")
def res(sim):
    return sim.render()


def _one_line(exc):
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


# (id, call(sim, res, tmp), text the message must contain)
BAD_CALLS = [
    ("render-positional", lambda s, r, t: s.render(1), "settings are given by name"),
    ("prepare-positional", lambda s, r, t: s.prepare(0.1, 0.2), "got 2 positional argument(s)"),
    ("from-args-int", lambda s, r, t: nb.Config.from_args(5), "one string or a list of strings, got int"),
    ("from-args-mixed-list", lambda s, r, t: nb.Config.from_args(["-N", 5]), "got list"),
    # render overrides: names and types
    ("unknown-field", lambda s, r, t: s.render(distnace=0.1), "unknown setting 'distnace' (did you mean 'distance'?)"),
    ("two-unknown", lambda s, r, t: s.render(foo=1, bar=2), "unknown settings"),
    ("distance-str", lambda s, r, t: s.render(distance="abc"), "distance must be a number, got 'abc'"),
    ("distance-None", lambda s, r, t: s.render(distance=None), "distance must be a number, got None"),
    ("distance-bool", lambda s, r, t: s.render(distance=True), "distance must be a number"),
    ("distance-inf", lambda s, r, t: s.render(distance=float("inf")), "distance must be a finite number"),
    ("distance-nan", lambda s, r, t: s.render(distance=float("nan")), "distance must be a finite number"),
    ("distance-list", lambda s, r, t: s.render(distance=[0.1]), "distance must be a number"),
    ("lambda-None", lambda s, r, t: s.render(lambda0=None), "lambda0 must be a number"),
    ("Na-str", lambda s, r, t: s.render(Na="5"), "Na must be a number, got '5'"),
    ("fpixels-float", lambda s, r, t: s.render(fpixels=8.5), "fpixels must be a whole number, got 8.5"),
    ("fpixels-str", lambda s, r, t: s.render(fpixels="8"), "fpixels must be a whole number"),
    ("mosaic-domains-float", lambda s, r, t: s.render(mosaic_domains=2.5), "mosaic_domains must be a whole number"),
    ("seed-huge", lambda s, r, t: s.render(seed=10 ** 30), "seed must be a whole number between"),
    ("seed-str", lambda s, r, t: s.render(seed="x"), "seed must be a whole number"),
    ("roi-2", lambda s, r, t: s.render(roi=(1, 2)), "roi must be a list of 4 whole numbers, got 2"),
    ("roi-str", lambda s, r, t: s.render(roi="1 2 3 4"), "roi must be a list of 4 whole numbers"),
    ("roi-floats", lambda s, r, t: s.render(roi=(0, 1.5, 0, 3)), "roi must be a whole number, got 1.5"),
    ("misset-2", lambda s, r, t: s.render(misset=(0.1, 0.2)), "misset must be a list of 3 numbers, got 2"),
    ("misset-str-item", lambda s, r, t: s.render(misset=(0.1, "a", 0.3)), "misset must be a number, got 'a'"),
    ("cell-3", lambda s, r, t: s.render(cell=(40, 42, 45)), "cell must be a list of 6 numbers, got 3"),
    ("beam-vector-str", lambda s, r, t: s.render(beam_vector="1 0 0"), "beam_vector must be a list of 3 numbers"),
    ("beam-vector-2d", lambda s, r, t: s.render(beam_vector=np.zeros((3, 1))), "beam_vector must be a list"),
    ("matrix-str-items", lambda s, r, t: s.render(matrix=("a",) * 9), "matrix must be a number"),
    ("switch-str", lambda s, r, t: s.render(nopolar="yes"), "nopolar must be true or false, got 'yes'"),
    ("switch-int", lambda s, r, t: s.render(curved_detector=1), "curved_detector must be true or false"),
    ("convention-int", lambda s, r, t: s.render(convention=3), "convention must be a string, got 3"),
    ("hklfile-int", lambda s, r, t: s.render(hklfile=5), "hklfile must be a string, got 5"),
    # render overrides: values the set-up refuses
    ("distance-0", lambda s, r, t: s.render(distance=0.0), ""),
    ("convention-unknown", lambda s, r, t: s.render(convention="FOO"), "unknown detector convention 'FOO'"),
    ("shape-lowercase", lambda s, r, t: s.render(xtal_shape="round"), "unknown crystal shape 'round'"),
    ("N-negative", lambda s, r, t: s.render(Na=-1), "negative crystal size"),
    ("pixel-0", lambda s, r, t: s.render(pixel_size=0.0), "-pixel must be a positive number"),
    ("hkl-missing", lambda s, r, t: s.render(hklfile=str(t / "none.hkl")), "none.hkl"),
    ("device-bad", lambda s, r, t: s.render(device="gpu0"), "unknown device 'gpu0'"),
    ("prepare-bad", lambda s, r, t: s.prepare(distance="x"), "distance must be a number"),
    # Simulator, simulate, config_from_flags
    ("simulator-int", lambda s, r, t: nb.Simulator(42), "expected a Config or nanoBragg flags"),
    ("simulator-None", lambda s, r, t: nb.Simulator(None), "expected a Config or nanoBragg flags"),
    ("simulator-list-int", lambda s, r, t: nb.Simulator(["-N", 5]), "flags must be strings, got 5"),
    ("simulator-device", lambda s, r, t: nb.Simulator(TINY, device="gpu"), "unknown device 'gpu'"),
    ("simulator-log", lambda s, r, t: nb.Simulator(s.base, log="stdout"), "log must be a function"),
    ("simulator-config-types", lambda s, r, t: nb.Simulator(nb.Config(distance="far")), "distance must be a number"),
    ("simulator-unknown-flag-strict", lambda s, r, t: nb.Simulator("-foo 1 -strict"), "unknown flag -foo"),
    ("simulator-quote", lambda s, r, t: nb.Simulator('-hkl "P1.hkl'), "cannot split the flags"),
    ("simulate-int", lambda s, r, t: nb.simulate(5), "expected a Config or nanoBragg flags"),
    ("config-from-flags-unknown", lambda s, r, t: nb.config_from_flags(TINY, foo=1), "unknown setting 'foo'"),
    ("config-from-flags-type", lambda s, r, t: nb.config_from_flags(TINY, distance="x"), "distance must be"),
    # writers
    ("write-float-no-dir", lambda s, r, t: nb.write_float(str(t / "no" / "x.bin"), r), "cannot write"),
    ("write-float-path-None", lambda s, r, t: nb.write_float(None, r), "path must be a non-empty string"),
    ("write-float-path-float", lambda s, r, t: nb.write_float(3.5, r), "path must be a non-empty string"),
    ("write-float-path-empty", lambda s, r, t: nb.write_float("", r), "path must be a non-empty string"),
    ("write-float-str", lambda s, r, t: nb.write_float(str(t / "x.bin"), "abc"), "image must be a Result"),
    ("write-float-None", lambda s, r, t: nb.write_float(str(t / "x.bin"), None), "image must be a Result"),
    ("write-float-1d", lambda s, r, t: nb.write_float(str(t / "x.bin"), np.zeros(4)), "2-D array"),
    ("write-tiff-object", lambda s, r, t: nb.write_tiff(str(t / "x.tif"), object()), "image must be a Result"),
    ("write-tiff-dir", lambda s, r, t: nb.write_tiff(str(t), r), "cannot write"),
    ("write-smv-array", lambda s, r, t: nb.write_smv(str(t / "x.img"), np.zeros((8, 8))), "needs a Result"),
    ("write-smv-data-shape", lambda s, r, t: nb.write_smv(str(t / "x.img"), r, data=np.zeros(3, np.uint16)),
     "SMV data must be whole numbers 0..65535 of shape (8, 8)"),
    ("write-smv-data-float", lambda s, r, t: nb.write_smv(str(t / "x.img"), r, data=np.zeros((8, 8))),
     "SMV data must be whole numbers"),
    ("write-smv-data-negative", lambda s, r, t: nb.write_smv(str(t / "x.img"), r, data=-np.ones((8, 8), int)),
     "SMV data must be whole numbers 0..65535"),
    ("write-pgm-array", lambda s, r, t: nb.write_pgm(str(t / "x.pgm"), np.zeros((8, 8))), "needs a Result"),
    ("write-pgm-scale", lambda s, r, t: nb.write_pgm(str(t / "x.pgm"), r, scale="a"), "scale must be a finite"),
    ("result-write-no-dir", lambda s, r, t: r.write(str(t / "nowhere")), "no such directory"),
    ("int-image-scale", lambda s, r, t: r.int_image(scale="a"), "scale must be a finite number"),
    # noise
    ("noise-seed-str", lambda s, r, t: nb.noise_image(r, seed="a"), "seed must be a whole number"),
    ("noise-seed-huge", lambda s, r, t: nb.noise_image(r, seed=10 ** 30), "seed must be a whole number between"),
    ("noise-seed-float", lambda s, r, t: nb.noise_image(r, seed=1.5), "seed must be a whole number, got 1.5"),
    ("noise-seed-bool", lambda s, r, t: r.noise_image(seed=True), "seed must be a whole number"),
    ("noise-array", lambda s, r, t: nb.noise_image(np.zeros((8, 8))), "noise_image needs a Result"),
]


@pytest.mark.parametrize("call, text", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_call_raises_one_line_nanobragg_error(call, text, sim, res, tmp_path):
    with pytest.raises(NanoBraggError) as info:
        call(sim, res, tmp_path)
    msg = _one_line(info.value)
    assert text in msg
    assert not [e for e in os.listdir(tmp_path) if not e.startswith("pytest")], "a bad call left a file"


def test_good_calls_with_the_same_entry_points(sim, res, tmp_path):
    """The checks refuse only what is wrong: numpy numbers, arrays, paths and per-call devices pass."""
    a = sim.render(device="cpu", distance=np.float64(0.1), misset=np.array([0.1, 0.2, 0.3]), roi=[0, 7, 0, 7],
                   mosaic_domains=np.int64(1), nopolar=np.bool_(False))
    b = nb.Simulator(sim.base).render(misset=(0.1, 0.2, 0.3))
    assert np.array_equal(a.floatimage, b.floatimage)
    assert nb.Simulator(TINY + " -device cpu -default_F 1").device == "cpu"      # the base's -device is kept
    nb.write_float(tmp_path / "f.bin", res)                                       # os.PathLike
    nb.write_smv(str(tmp_path / "n.img"), res, data=res.noise_image(seed=np.int64(3)), noise=True)
    assert np.array_equal(nb.noise_image(res, seed=3.0), res.noise_image(3))
    assert sorted(os.listdir(tmp_path)) == ["f.bin", "n.img"]


def test_unexpected_failure_names_problem_and_place(sim, monkeypatch):
    from nanobrag_numba import simulator

    def broken(*a, **k):
        return 1.0 / 0.0

    monkeypatch.setattr(simulator, "prepare", broken)
    with pytest.raises(NanoBraggError) as info:
        sim.render()
    msg = _one_line(info.value)
    assert msg.startswith("these settings cannot make an image: float division by zero (ZeroDivisionError in "
                          "test_api_errors.py line ")
    assert isinstance(info.value.__cause__, ZeroDivisionError)      # the traceback stays reachable


# ---------------------------------------------------------------- property test of the overrides

class _Reached(Exception):
    def __init__(self, cfg):
        self.cfg = cfg


_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2 ** 70, max_value=2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
    st.lists(st.one_of(st.integers(-5, 5), st.floats(-1e3, 1e3), st.text(max_size=2)), max_size=10),
    st.tuples(st.floats(-1, 1), st.floats(-1, 1), st.floats(-1, 1)),
    st.builds(np.float64, st.floats(-1e3, 1e3)), st.builds(np.int64, st.integers(-1000, 1000)),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
_names = st.one_of(st.sampled_from(api.FIELDS), st.text(min_size=1, max_size=12))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(_names, _values, min_size=1, max_size=3))
def test_render_overrides_either_raise_our_error_or_reach_the_set_up_typed(changes, sim, monkeypatch):
    from nanobrag_numba import simulator

    def stub(cfg, *a, **k):
        cfg.validate()          # the value checks of the set-up, then stop before any table is built
        raise _Reached(cfg)

    monkeypatch.setattr(simulator, "prepare", stub)
    try:
        sim.render(**changes)
    except NanoBraggError as exc:
        _one_line(exc)
    except _Reached as reached:
        for name in changes:
            value = getattr(reached.cfg, name)
            assert api.coerce_field(name, value) == value         # what reaches the set-up is well typed
            assert not isinstance(value, (list, np.ndarray, np.generic))
