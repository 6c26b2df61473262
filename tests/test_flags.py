"""The flag table (flags.py): C's substring matching, notes, -strict, -h, docs/flags.md, outside command lines."""
import dataclasses
import os
import shlex

import numpy as np
import pytest
try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:          # the fuzz test skips; every other test runs
    st = None

from nanobrag_numba import flags
from nanobrag_numba.cli import main, parse_args
from nanobrag_numba.config import RTD, Config
from nanobrag_numba.errors import NanoBraggError

HERE = os.path.dirname(__file__)
BASE = ["-default_F", "1", "-cell", "40", "40", "40", "90", "90", "90"]


def settings_of(cfg):
    d = dataclasses.asdict(cfg)
    d.pop("parse_notes")
    d.pop("command_line")      # a record of the words, not a setting
    return d


# ---------------------------------------------------------------- drop-in spellings

DROP_IN = [
    # (spelling C accepts, canonical form, text in the note)
    (["-matrix", "A.mat"], ["-mat", "A.mat"], "-matrix read as -mat"),
    (["-pix0_vector_mm", "100", "-200", "300"], ["-pix0_vector", "0.1", "-0.2", "0.3"], "in mm"),
    (["-adcoffset", "10"], ["-adc", "10"], "-adcoffset read as -adc"),
    (["-mosaici", "0.5"], ["-mosaic", "0.5"], "-mosaici read as -mosaic"),
    (["-oversample_thick", "0"], ["-oversample_thick"], "'0' after -oversample_thick"),
    (["-hdiv", "0.28"], [], "unknown flag -hdiv 0.28 has no effect"),
    (["-vdiv", "0.28"], [], "unknown flag -vdiv 0.28 has no effect"),
    (["-dispstep", "3"], [], "did you mean -dispsteps?"),
]


@pytest.mark.parametrize("spelt, canonical, note", DROP_IN, ids=[d[0][0] for d in DROP_IN])
def test_drop_in_spelling_gives_the_canonical_config_and_a_note(spelt, canonical, note):
    got = parse_args(BASE + spelt)
    want = parse_args(BASE + canonical)
    assert settings_of(got) == settings_of(want)
    assert want.parse_notes == ()
    assert len(got.parse_notes) == 1 and note in got.parse_notes[0]
    assert "\n" not in got.parse_notes[0]


@pytest.mark.parametrize("spelt, canonical, note", DROP_IN, ids=[d[0][0] for d in DROP_IN])
def test_drop_in_spelling_is_an_error_under_strict(spelt, canonical, note):
    with pytest.raises(NanoBraggError) as e:
        parse_args(BASE + spelt + ["-strict"])
    assert note in str(e.value) and "-strict" in str(e.value) and "\n" not in str(e.value)
    parse_args(BASE + canonical + ["-strict"])     # the canonical spelling passes


def test_pix0_vector_mm_is_metres_under_c_quirks():
    q = parse_args(BASE + ["-pix0_vector_mm", "0.1", "-0.2", "0.3", "-c_quirks"])
    assert q.pix0_vector == (0.1, -0.2, 0.3) and q.convention == "CUSTOM"
    assert "metres" in q.parse_notes[0]
    d = parse_args(BASE + ["-pix0_vector_mm", "0.1", "-0.2", "0.3"])
    assert d.pix0_vector == pytest.approx((1e-4, -2e-4, 3e-4), rel=1e-15)


def test_notes_are_printed_by_the_command_line(tmp_path, monkeypatch, capsys):
    # the run fails later (no such matrix file): the note is printed first, on stdout, as "note: ..."
    monkeypatch.chdir(tmp_path)
    assert main(BASE[:2] + ["-matrix", "nothere.mat", "-detpixels", "8", "-device", "cpu"]) == 2
    out, err = capsys.readouterr()
    assert "note: -matrix read as -mat (C matches flag names by substring)\n" in out
    assert "nothere.mat" in err and os.listdir(tmp_path) == []


# ---------------------------------------------------------------- C's match rules, by hand from nanoBragg.c

C_RULES = {
    "-detector_thicksteps": ["-detector_thicksteps"],     # strlen != 15: not -detector_thick
    "-detector_thick": ["-detector_thick"],
    "-thicksteps": ["-detector_thicksteps"],
    "-detector_absorb": ["-detector_abs"],
    "-mosaic_seed": ["-mosaic_seed"],                     # not -mosaic (strlen != 7), not -seed
    "-mosaic": ["-mosaic"],
    "-mosaicity": ["-mosaic"],                            # strstr "-mosaici"
    "-mosaic_spread": ["-mosaic"],                        # strstr "-mosaic_spr"
    "-mosaic_domains": ["-mosaic_domains"],
    "-printout_pixel": ["-printout", "-printout_pixel"],   # also -printout
    "-hdivsteps": ["-hdivsteps"],                         # not -hdivstep (strlen != 9)
    "-hdivstep": ["-hdivstep"],
    "-hdiv": [],
    "-divsteps": ["-divsteps"],
    "-dispstep": [],
    "-dispsteps": ["-dispsteps"],
    "-twotheta_axis": ["-twotheta_axis", "-twotheta"],
    "-misset_seed": ["-misset", "-misset_seed"],
    "-matrix": ["-mat"],
    "-Nabc": ["-Na"],                                     # strstr, then continue
    "-N": ["-N"],
    "-Nx": [],                                            # -N is strcmp
    "-oversample_thick": ["-oversample_thick"],           # continue: not -oversample
    "-oversample": ["-oversample"],
    "-polar": ["-polar"],
    "-polar_vector": ["-polar_vector"],                   # strlen != 6
    "-nopolar": ["-nopolar"],
    "-oversample_polar": ["-oversample_polar"],
    "-pixel": ["-pixel"],
    "-point_pixel": ["-point_pixel"],
    "-detpixels": ["-detpixels"],
    "-detpixels_x": ["-detpixels_f"],
    "-detsize": ["-detsize"],
    "-detsize_f": ["-detsize_f"],
    "-width": ["-sample_width", "-xtal_width"],
    "-height": ["-sample_height", "-xtal_height"],
    "-stol": ["-stol"],
    "-stolout": ["-stolout"],
    "-4stol": ["-4stol"],
    "-Q": ["-Q"],
    "-Qx": [],
    "-MW": ["-MW"],
    "-MWx": [],
    "-molecular_weight": ["-MW"],
    "-sample_density": ["-density"],
    "-phi": ["-phi"],
    "-phix": [],
    "-phistep": ["-phistep"],
    "-phisteps": ["-phisteps"],
    "-wavelength": ["-lambda"],
    "-adcoffset": ["-adc"],
    "-pix0_vector_mm": ["-pix0_vector"],
    "-close_distance": ["-close_distance"],
    "-noprogress": ["-noprogress"],
    "-nointerpolate": ["-nointerpolate"],
    "-floatimage": ["-floatfile"],
    "-binary_spots": ["-tophat_spots"],
    "-img": ["-img"],
    "-mask": ["-mask"],
    "-xds": ["-xds"],
    "-hklfile": ["-hkl"],
    "-c_quirks": ["-c_quirks"],
    "-c_quirksX": [],                                     # this port's flags match exactly
    "-device": ["-device"],
}


@pytest.mark.parametrize("word", sorted(C_RULES))
def test_table_agrees_with_c_match_rules(word):
    assert flags.c_matches(word) == C_RULES[word]


def test_every_documented_spelling_is_one_c_matches():
    for word, canon in flags.ALIASES.items():
        assert canon in flags.c_matches(word), word


# ---------------------------------------------------------------- the parser's rules


def test_values_must_be_numbers_where_c_reads_numbers():
    with pytest.raises(NanoBraggError, match=r"-distance expects a number, got 'abc'"):
        parse_args(BASE + ["-distance", "abc"])
    with pytest.raises(NanoBraggError, match="whole number"):
        parse_args(BASE + ["-N", "2.5"])


def test_negative_numbers_are_values():
    cfg = parse_args(BASE + ["-phi", "-5", "-dmin", "-1e-5", "-spindle_axis", "-1", "0", "0"])
    assert cfg.phi0 == -5 / RTD and cfg.dmin == -1e-5 * 1e-10 and cfg.spindle_vector == (-1.0, 0.0, 0.0)
    assert cfg.parse_notes == ()


def test_cell_reads_up_to_the_next_dash_word_and_keeps_earlier_values():
    cfg = parse_args(["-default_F", "1", "-cell", "40", "42", "45", "90", "90", "90", "-cell", "50", "-N", "2"])
    assert cfg.cell[:3] == (50.0, 42.0, 45.0)
    seven = parse_args(BASE + ["7"])
    assert seven.cell == parse_args(BASE).cell and "'7'" in seven.parse_notes[0]


def test_flag_without_its_value_at_the_end_is_ignored_with_a_note():
    cfg = parse_args(BASE + ["-distance"])
    assert cfg.distance == Config().distance
    assert "-distance needs 1 value" in cfg.parse_notes[0]
    with pytest.raises(NanoBraggError, match="-strict"):
        parse_args(BASE + ["-strict", "-distance"])
    with pytest.raises(NanoBraggError, match="past the end"):       # C crashes here
        parse_args(BASE + ["-detector_abs"])


def test_collisions_are_corrected_by_default_and_reproduced_under_c_quirks():
    words = BASE + ["-misset", "random", "-misset_seed", "7", "-N", "5"]
    plain = parse_args(words)
    assert plain.misset_random and plain.misset_seed == 7 and plain.quirk_hits == ("misset_seed_substring",)
    quirky = parse_args(words + ["-c_quirks"])
    assert quirky.misset == pytest.approx((7 / RTD, 0.0, 5 / RTD)) and not quirky.misset_random
    tt = parse_args(BASE + ["-twotheta_axis", "0", "0", "-1"])
    assert tt.detector_twotheta == 0.0 and tt.pivot == "BEAM" and tt.quirk_hits == ("twotheta_axis_substring",)
    ttq = parse_args(BASE + ["-twotheta_axis", "-1", "0", "0", "-c_quirks"])
    assert ttq.detector_twotheta == -1 / RTD and ttq.pivot == "SAMPLE"
    assert plain.parse_notes == () and tt.parse_notes == ()   # the quirk note is the simulator's


def test_misset_needs_three_angles_or_random():
    assert parse_args(BASE + ["-misset", "randomize"]).misset_random
    cfg = parse_args(BASE + ["-misset", "10", "20"])
    assert cfg.misset is None and len(cfg.parse_notes) == 1


def test_help_and_version_are_not_configs():
    for word in ("-h", "--help", "--version"):
        with pytest.raises(NanoBraggError, match="command-line flag"):
            Config.from_args(word)
    with pytest.raises(NanoBraggError):
        Config.from_args("-hkl 'unclosed")


def test_help_lists_every_flag_and_the_subcommands(capsys):
    assert main(["-h"]) == 0
    out = capsys.readouterr().out
    for f in flags.TABLE:
        assert "  %s " % f.name in out or out.count("\n  %s\n" % f.name), f.name
    for sub in ("example", "batch", "compare"):
        assert "\n  %s " % sub in out


def test_docs_flags_md_is_generated_from_the_table():
    with open(os.path.join(HERE, "..", "docs", "flags.md")) as fh:
        committed = fh.read()
    assert committed == flags.markdown(), "regenerate: python -m nanobrag_numba.flags --markdown > docs/flags.md"


# ---------------------------------------------------------------- fuzz

if st is not None:
    NAMES = sorted(flags.ALIASES)
    WORDS = st.one_of(
        st.sampled_from(NAMES),
        st.sampled_from(NAMES).map(lambda n: n + "x"),
        st.sampled_from(NAMES).map(lambda n: n[:-1]),
        st.sampled_from(NAMES).map(lambda n: "-" + n),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.integers(-10**6, 10**6).map(str),
        st.sampled_from(["random", "rand", "P1.hkl", "A.mat", "out.bin", "beam", "sample", "cpu", "inf", "-",
                         "--", "", " ", "1e400", "-1e-5", "nan", "0x10", "1_0", "-h x"]),
        st.text(max_size=8),
    )

    @settings(max_examples=200, deadline=None)
    @given(st.lists(WORDS, max_size=14))
    def test_fuzz_parser_returns_a_config_or_one_line_error(words):
        words = [w for w in words if w not in flags.HELP_WORDS]
        try:
            cfg = parse_args(words, open_files=False)
        except NanoBraggError as exc:
            msg = str(exc)
            assert msg and "\n" not in msg
        else:
            assert isinstance(cfg, Config)
            assert all("\n" not in n for n in cfg.parse_notes)
else:
    def test_fuzz_parser_returns_a_config_or_one_line_error():
        pytest.skip("hypothesis is not installed (pip install -e '.[test]')")


# ---------------------------------------------------------------- outside command lines

def outside_commands():
    out, source = [], None
    with open(os.path.join(HERE, "data", "outside_commands.txt")) as fh:
        for n, line in enumerate(fh, 1):
            if line.startswith("# source:"):
                source = line[len("# source:"):].strip()
            elif line.strip() and not line.startswith("#"):
                assert source, "line %d has no source" % n
                out.append(pytest.param(shlex.split(line), id="line%d" % n))
    return out


DROP_IN_WORDS = {"-matrix", "-hdiv", "-vdiv", "-dispstep", "-pix0_vector_mm"}


@pytest.mark.parametrize("words", outside_commands())
def test_outside_command_lines_parse(words):
    cfg = parse_args(words, open_files=False)
    spelt = DROP_IN_WORDS & set(words)
    if spelt:
        assert cfg.parse_notes and all(any(w in n for w in spelt) for n in cfg.parse_notes)
        with pytest.raises(NanoBraggError, match="-strict"):
            parse_args(words + ["-strict"], open_files=False)
    else:
        assert cfg.parse_notes == ()


def test_there_are_enough_outside_commands():
    assert 20 <= len(outside_commands()) <= 40


@pytest.mark.parametrize("line", [0, 4, 14])
def test_outside_command_lines_render(line, tmp_path, monkeypatch, capsys):
    words = outside_commands()[line].values[0]
    monkeypatch.chdir(tmp_path)
    hkl = "".join("%d %d %d %g\n" % (h, k, l, 10 + h + 2 * k + 3 * l)
                  for h in range(-3, 4) for k in range(-3, 4) for l in range(-3, 4))
    for name in ("P1.hkl", "scaled.hkl"):
        (tmp_path / name).write_text(hkl)
    (tmp_path / "A.mat").write_text("0.0220641 0 0\n0 0.0220641 0\n0 0 0.0375303\n")
    small = ["-detpixels", "16", "-N", "3", "-noprogress", "-seed", "1", "-device", "cpu", "-floatfile", "f.bin"]
    words = [w if w != "../test/P1.hkl" else "P1.hkl" for w in words]
    assert main(words + small) == 0
    out = capsys.readouterr().out
    assert "note: " in out
    img = np.fromfile(tmp_path / "f.bin", dtype=np.float32)
    assert img.size == 256 and np.isfinite(img).all()


def test_tiny_attenuation_depth_is_an_error_not_a_traceback():
    # found by the fuzz: 5e-324 microns underflows to 0 m and C divides by it
    with pytest.raises(NanoBraggError, match="too small"):
        parse_args(BASE + ["-detector_abs", "5e-324"])


def test_curved_det_needs_a_following_word_as_in_c():
    assert parse_args(BASE + ["-curved_det", "-nonoise"]).curved_detector
    last = parse_args(BASE + ["-curved_det"])
    assert not last.curved_detector and "a word (any, unused)" in last.parse_notes[0]


def test_note_names_the_word_given_for_a_cell_spelling():
    cfg = parse_args(["-default_F", "1", "-cellx", "40", "42", "45", "90", "90", "90"])
    assert cfg.cell[:3] == (40.0, 42.0, 45.0)
    assert cfg.parse_notes == ("-cellx read as -cell (C matches flag names by substring)",)


def test_cell_with_fewer_than_six_values_ends_the_checks_of_its_word():
    # C `continue`s out of -cell when the values run out: "-cell-mat" is then not also -mat
    short = parse_args(["-default_F", "1", "-cell-mat", "40", "-hkl", "x"])
    assert short.cell[0] == 40.0 and short.matfile is None
    full = parse_args(["-default_F", "1", "-cell-mat", "40", "40", "40", "90", "90", "90"])
    assert full.matfile == "40" and "-cell and -mat" in full.parse_notes[0]


def test_pivot_word_without_beam_or_sample_changes_nothing_as_in_c():
    # C: strstr(value, "sample") / strstr(value, "beam"), case-sensitive; any other word leaves the pivot
    base = "-default_F 1 -cell 40 40 40 90 90 90 -twotheta 10".split()
    cfg = parse_args(base + ["-pivot", "BEAM"])
    assert cfg.pivot == "SAMPLE"
    assert any("-pivot BEAM has no effect" in n for n in cfg.parse_notes)
    assert parse_args(base + ["-pivot", "beam"]).pivot == "BEAM"
    with pytest.raises(NanoBraggError, match="refused under -strict"):
        parse_args(base + ["-pivot", "BEAM", "-strict"])
