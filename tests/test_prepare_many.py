"""Simulator.prepare_many: the shared set-up gives the tables of Simulator.prepare, bit for bit.

Images that differ only in orientation, phi0, seeds or fluence share one full
set-up (nanobrag_numba/prepare_many.py); every field of each Prepared
(rotation table, phi maps, KParams, crystal, Config, notes, generator state)
must be what ``prepare(**overrides)`` gives, and anything outside that fast
path must take the full ``prepare``.  No golden data: a small P1 HKL file.
"""
import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import nanobrag_numba as nb
from nanobrag_numba import prepare_many as PM
from nanobrag_numba.api import config_from_flags
from nanobrag_numba.errors import NanoBraggError

TRICLINIC = "-cell 40 42 45 80 95 105"
BASE = " -N 3 -detpixels 8 -pixel 3.0 -distance 60 -lambda 1.0 -device cpu -seed 1"
MOSAIC = " -mosaic 0.5 -mosaic_domains 3"
PHI = " -phi 0 -osc 2 -phisteps 3"


@pytest.fixture(scope="module")
def hkl(tmp_path_factory):
    from nanobrag_numba.example import write_p1_hkl
    path = tmp_path_factory.mktemp("hkl") / "P1.hkl"
    write_p1_hkl(str(path), cell=(40, 42, 45, 90, 90, 90), dmin=4.0)
    return str(path)


def _sim(hkl, flags, **changes):
    changes.setdefault("misset_seed", 5)      # not the clock: prepare and prepare_many agree on it
    return nb.Simulator(config_from_flags(["-hkl", hkl] + flags.split(), **changes))


def _same(a, b, path="prep"):
    """Equal values of equal types; floats and arrays bit for bit."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, path
        assert a.tobytes() == b.tobytes(), path
    elif dataclasses.is_dataclass(a):
        assert type(a) is type(b), path
        for f in dataclasses.fields(a):
            if f.name in ("hkl_device", "device_tables"):
                continue
            _same(getattr(a, f.name), getattr(b, f.name), path + "." + f.name)
    elif hasattr(a, "tab") and hasattr(a, "fstate"):          # CRandom: the generator's state
        _same(a.tab, b.tab, path + ".tab")
        _same(a.fstate, b.fstate, path + ".fstate")
    elif isinstance(a, tuple) and hasattr(a, "_fields"):      # KParams
        assert a._fields == b._fields, path
        for f, x, y in zip(a._fields, a, b):
            _same(x, y, path + "." + f)
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, "%s[%d]" % (path, i))
    elif isinstance(a, float):
        assert type(b) is float and np.float64(a).tobytes() == np.float64(b).tobytes(), (path, a, b)
    else:
        assert type(a) is type(b) and a == b, (path, a, b)


def _full_calls(sim, monkeypatch):
    """Count the full set-ups (the template's and every fallback's)."""
    calls = []
    full = sim._prepare_checked

    def counted(changes):
        calls.append(dict(changes))
        return full(changes)
    monkeypatch.setattr(sim, "_prepare_checked", counted)
    return calls


MATRIX = (0.0123, -0.004, 0.001, 0.002, 0.0221, -0.003, 0.0005, 0.002, 0.0198)

CASES = {
    "misset": (TRICLINIC + BASE, [{"misset": (0.1, 0.2, 0.3)}, {"misset": (0.0, -0.7, 0.0)},
                                  {"misset": (1, 0, 2)}, {"misset": None}, {}]),
    "matrix": (TRICLINIC + BASE, [{"matrix": MATRIX}, {"matrix": MATRIX, "misset": (0.2, 0.1, -0.3)},
                                  {"matrix": tuple(x * 1.1 for x in MATRIX)}, {"misset": (0.3, 0.0, 0.1)}]),
    "matrix_without_cell": ("-mat {mat}" + BASE, [{"matrix": MATRIX}, {"misset": (0.2, 0.1, -0.3)}, {}]),
    "phi0": (TRICLINIC + BASE + PHI, [{"phi0": 0.01}, {"phi0": -0.02, "misset": (0.1, 0.2, 0.3)}, {"phi0": 0.5}]),
    # the phi0 carry-over note appears (phi = 0 among the steps) where prepare puts it: before -water's note
    "phi0_note": (TRICLINIC + BASE + " -phi 1 -osc 2 -phisteps 3 -water 5 -oversample_omega",
                  [{"phi0": 0.0}, {"phi0": -0.0174532925}, {"phi0": 0.3}]),
    "mosaic_seed": (TRICLINIC + BASE + MOSAIC, [{"mosaic_seed": 7}, {"mosaic_seed": 8, "misset": (0.1, 0.2, 0.3)},
                                                {"misset": (0.4, 0.2, 0.3)}, {"mosaic_seed": 7, "phi0": 0.3}]),
    "c_quirks": (TRICLINIC + BASE + MOSAIC + PHI + " -c_quirks",
                 [{"phi0": -0.01745329, "mosaic_seed": 3}, {"misset": (0.1, 0.2, 0.3)}, {"phi0": 0.01}]),
    "misset_random": (TRICLINIC + BASE + MOSAIC, [{"misset_random": True, "misset_seed": 11},
                                                  {"misset_random": True, "misset_seed": 12, "mosaic_seed": 4},
                                                  {"misset": (0.1, 0.2, 0.3)}]),
    "fluence": (TRICLINIC + BASE + " -water 20",
                [{"fluence": 3e23}, {"flux": 1e12, "exposure": 2.0, "misset": (0.1, 0, 0)}, {"seed": 99}]),
    "flux_beamsize": (TRICLINIC + BASE + " -flux 1e12 -exposure 1 -beamsize 0.0001",
                      [{"flux": 2e12}, {"exposure": 3.0, "misset": (0.2, 0.1, 0.0)}]),
    "auto_oversample": ("-cell 40 42 45 90 90 90 -N 30 -detpixels 8 -pixel 0.1 -distance 60 -lambda 1.0 "
                        "-device cpu -seed 1 -samplesize 0.0005",
                        [{"misset": (0.1, 0.2, 0.3)}, {"misset": (0.7, -0.2, 1.1)}]),
    "gauss": (TRICLINIC + BASE + " -gauss_xtal", [{"misset": (0.1, 0.2, 0.3)}, {"misset": (0.2, 0.2, 0.3)}]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_shared_set_up_equals_prepare(hkl, tmp_path, monkeypatch, case):
    flags, overrides = CASES[case]
    if "{mat}" in flags:
        mat = tmp_path / "a.mat"
        mat.write_text(" ".join("%g" % x for x in MATRIX[:3]) + "\n" + " ".join("%g" % x for x in MATRIX[3:6])
                       + "\n" + " ".join("%g" % x for x in MATRIX[6:]) + "\n")
        flags = flags.format(mat=mat)
    sim = _sim(hkl, flags)
    singles = [sim.prepare(**o) for o in overrides]
    calls = _full_calls(sim, monkeypatch)
    many = sim.prepare_many(overrides)
    assert len(calls) == 1 and calls[0] == {"device": "cpu"}      # one template, every image on the fast path
    for i, (a, b) in enumerate(zip(many, singles)):
        _same(a, b, "%s[%d]" % (case, i))
    if case == "phi0_note":
        assert [len(p.notes) for p in many] == [3, 2, 2] and many[0].notes[0][0] == "phi0_carryover"
    if case != "fluence":
        assert len({a.rot.tobytes() for a in many}) > 1     # the orientations do differ


def test_random_missets_per_image_keep_the_draw_cache_bounded(hkl, monkeypatch):
    monkeypatch.setattr(PM, "DRAWS_MAX", 3)
    sim = _sim(hkl, TRICLINIC + BASE + MOSAIC)
    overrides = [{"misset_random": True, "misset_seed": s} for s in range(1, 9)] + [{"mosaic_seed": 3}]
    many = sim.prepare_many(overrides)
    (_T, draws), = sim._templates.values()
    assert 1 <= len(draws) <= 3
    for o, prep in zip(overrides, many):
        _same(prep, sim.prepare(**o))


def test_fast_fields_are_the_ones_the_kernel_reads_per_image():
    from nanobrag_numba.api import FIELDS
    assert PM.FAST_FIELDS <= set(FIELDS)
    assert {"misset", "matrix", "phi0", "mosaic_seed", "fluence"} <= PM.FAST_FIELDS
    assert not {"distance", "Na", "cell", "matfile", "beamsize", "device", "precision"} & PM.FAST_FIELDS


def test_other_settings_get_their_own_template_and_single_images_the_full_set_up(hkl, monkeypatch):
    sim = _sim(hkl, TRICLINIC + BASE)
    overrides = [{"misset": (0.1, 0.2, 0.3)}, {"distance": 0.07}, {"misset": (0.2, 0.2, 0.3)},
                 {"distance": 0.07, "misset": (0.5, 0.0, 0.0)}, {"Na": 4}]
    singles = [sim.prepare(**o) for o in overrides]
    calls = _full_calls(sim, monkeypatch)
    many = sim.prepare_many(overrides)
    assert sorted(map(sorted, (c.items() for c in calls))) == sorted(map(sorted, (c.items() for c in [
        {"device": "cpu"}, {"device": "cpu", "distance": 0.07}, {"device": "cpu", "Na": 4}])))
    for a, b in zip(many, singles):
        _same(a, b)


def test_a_logging_simulator_prints_every_image_set_up(hkl):
    lines = []
    sim = nb.Simulator(config_from_flags(["-hkl", hkl] + (TRICLINIC + BASE).split(), misset_seed=5),
                       log=lines.append)
    sim.prepare_many([{"misset": (0.1, 0.2, 0.3)}, {"misset": (0.2, 0.2, 0.3)}])
    assert sum(line.startswith("Unit Cell:") for line in lines) == 2     # C's lines of both images


@pytest.mark.parametrize("bad, text", [
    ({"fluence": -1.0}, "fluence must be a finite positive number, got -1"),
    ({"mosaic_seed": 2 ** 40}, "-mosaic_seed 1099511627776 is outside the range of C's int seeds"),
    ({"matrix": (1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 1.0)}, None),     # degenerate: whatever prepare says
    ({"matrix": (1.0, 2.0)}, "matrix must be 9 finite numbers"),
    ({"flux": 1e12, "exposure": 1.0, "beamsize": 0.0}, "-beamsize 0 with -flux gives an infinite fluence"),
])
def test_bad_fast_settings_raise_prepares_error(hkl, bad, text):
    sim = _sim(hkl, TRICLINIC + BASE)
    with pytest.raises(NanoBraggError) as single:
        sim.prepare(**bad)
    assert text is None or text in str(single.value)
    for method in ("prepare_many", "render_many"):
        with pytest.raises(NanoBraggError) as exc:
            getattr(sim, method)([{"misset": (0.1, 0.2, 0.3)}, dict(bad, misset=(0.2, 0.1, 0.0)), {}])
        msg = str(exc.value)
        assert msg == "%s: item 1: %s" % (method, single.value) and "\n" not in msg
    # the batch's per-job set-up: the bad job gets prepare's error, the others their images
    out = sim._prepare_each([{"misset": (0.1, 0.2, 0.3)}, bad, {"misset": (0.3, 0.2, 0.1)}])
    assert isinstance(out[1], NanoBraggError) and str(out[1]) == str(single.value)
    _same(out[2], sim.prepare(misset=(0.3, 0.2, 0.1)))


def test_first_bad_item_in_order_wins(hkl):
    sim = _sim(hkl, TRICLINIC + BASE)
    with pytest.raises(NanoBraggError, match=r"^render_many: item 1: fluence must be"):
        sim.render_many([{}, {"fluence": -1.0}, 3])
    with pytest.raises(NanoBraggError, match=r"^render_many: item 1 must be a dict"):
        sim.render_many([{}, 3, {"fluence": -1.0}])


@settings(max_examples=25, deadline=None)
@given(cell=st.tuples(st.floats(30, 60), st.floats(30, 60), st.floats(30, 60),
                      st.floats(70, 110), st.floats(70, 110), st.floats(70, 110)),
       missets=st.lists(st.tuples(*[st.one_of(st.just(0.0), st.just(-0.0), st.floats(-3.2, 3.2))] * 3),
                        min_size=2, max_size=4),
       phi0=st.one_of(st.just(0.0), st.floats(-1, 1)))
def test_random_cells_and_orientations_bit_identical(hkl, cell, missets, phi0):
    a, b, c, al, be, ga = cell
    try:
        # -oversample: an automatic one may differ between orientations (a crystal size at an integer
        # number of reciprocal pixels): that image then takes the full set-up (test_auto_oversample_edge)
        cfg = config_from_flags(["-hkl", hkl] + (BASE + MOSAIC + PHI + " -oversample 2").split(),
                                cell=(a, b, c, al / 57.29577951308232, be / 57.29577951308232,
                                      ga / 57.29577951308232), misset_seed=5)
        sim = nb.Simulator(cfg)
        sim.prepare()
    except NanoBraggError:
        return                                   # an impossible cell: nothing to compare
    overrides = [{"misset": m, "phi0": phi0 * i} for i, m in enumerate(missets)]
    full, calls = sim._prepare_checked, []
    sim._prepare_checked = lambda changes: calls.append(changes) or full(changes)
    many = sim.prepare_many(overrides)
    assert len(calls) == 1                       # the template only
    del sim._prepare_checked
    for o, prep in zip(overrides, many):
        _same(prep, sim.prepare(**o))
    assert math.isfinite(prep.params.astar_x)


def test_templates_are_kept_while_the_files_are_unchanged(hkl, tmp_path, monkeypatch):
    import shutil
    from nanobrag_numba.example import write_p1_hkl
    path = str(tmp_path / "own.hkl")
    shutil.copy(hkl, path)
    sim = _sim(path, TRICLINIC + BASE)
    overrides = [{"misset": (0.1, 0.2, 0.3)}, {"misset": (0.3, 0.2, 0.1)}]
    calls = _full_calls(sim, monkeypatch)
    first = sim.prepare_many(overrides)
    again = sim.prepare_many(overrides + [{"fluence": 2e24}])
    assert len(calls) == 1                          # the second call reuses the template
    for a, b in zip(first, again):
        _same(a, b)
    write_p1_hkl(path, cell=(40, 42, 45, 90, 90, 90), dmin=4.0, seed=2)     # other amplitudes: a new table
    changed = sim.prepare_many(overrides)
    assert len(calls) == 2 and changed[0].Fhkl.tobytes() != first[0].Fhkl.tobytes()
    sim.base.distance = 0.07                        # a base changed in place: not the kept template
    moved = sim.prepare_many(overrides)
    assert len(calls) == 3 and moved[0].det.distance == 0.07
    monkeypatch.undo()
    _same(changed[1], nb.Simulator(config_from_flags(["-hkl", path] + (TRICLINIC + BASE).split(),
                                                     misset_seed=5)).prepare(**overrides[1]))
    _same(moved[1], sim.prepare(**overrides[1]))


def test_plain_values_skip_the_annotation_walk_with_coerce_fields_result():
    from nanobrag_numba import api

    @settings(max_examples=100, deadline=None)
    @given(name=st.sampled_from(sorted(api.FIELDS)),
           value=st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(),
                           st.tuples(st.floats(), st.floats(), st.floats()), st.text(max_size=3),
                           st.lists(st.floats(-1, 1), max_size=4)))
    def check(name, value):
        plain = api._coerce_plain(name, value)
        try:
            full = api.coerce_field(name, value)
        except NanoBraggError:
            assert plain is api._NOT_PLAIN
            return
        except (OverflowError, ValueError, TypeError):
            assert plain is api._NOT_PLAIN
            return
        if plain is not api._NOT_PLAIN:
            assert type(plain) is type(full) and plain == full
    check()
    assert api._coerce_plain("misset", (0.1, 0.2, 0.3)) == (0.1, 0.2, 0.3)
    assert api._coerce_plain("misset", [0.1, 0.2, 0.3]) is api._NOT_PLAIN     # a list: coerce_field converts


def test_auto_oversample_edge_takes_the_full_set_up(hkl, monkeypatch):
    # 3 x 60 A at 2e-9 m per reciprocal pixel: wanted = 27 up to the last bits of each orientation's |b|
    sim = nb.Simulator(config_from_flags(["-hkl", hkl] + (BASE + MOSAIC + PHI).split(), misset_seed=5,
                                         cell=(30.0, 60.0, 30.0, 70.0 / 57.29577951308232,
                                               88.0 / 57.29577951308232, 73.0 / 57.29577951308232)))
    overrides = [{"misset": (0.0, 0.0, 0.0)}, {"misset": (0.0, 0.0, 1.0)}]
    singles = [sim.prepare(**o) for o in overrides]
    assert singles[0].oversample != singles[1].oversample      # C's own choice differs with the orientation
    calls = _full_calls(sim, monkeypatch)
    many = sim.prepare_many(overrides)
    assert len(calls) == 2                                      # the template and one image's full set-up
    for a, b in zip(many, singles):
        _same(a, b)
