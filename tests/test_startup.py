"""Start-up of a small render (issue 12): what a warm run loads and what it skips.

No timing is asserted here; ``bench/startup.py`` measures it.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child(code, env_extra=None, timeout=300):
    env = dict(os.environ)
    env.update(env_extra or {})
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


# ---------------------------------------------------------------- one mosaic domain without a kernel

@pytest.mark.parametrize("seed", [1, 0, -5, 12345678, 2 ** 31 - 1])
@pytest.mark.parametrize("warm_table", [False, True])
def test_ran1_step_moves_the_shared_table_exactly_as_the_kernel(seed, warm_table):
    from nanobrag_numba import crand
    from nanobrag_numba.kernels import crand as kc
    ours, ref = crand.CRandom(), crand.CRandom()
    if warm_table:                        # a table already used by another stream (no re-initialisation)
        ours.ran1(7, 5)
        ref.ran1(7, 5)
    idum = -seed
    for _ in range(3):
        idum = crand.ran1_step(idum, ours.tab)
    umats = np.zeros((1, 9))
    kidum = kc.new_idum(seed)
    kc.mosaic_umats_fill(0.3, kidum, ref.tab, umats)
    assert np.array_equal(ours.tab, ref.tab) and idum == kidum[0]
    assert np.array_equal(umats[0], np.eye(3).ravel())
    # and the next draws of any stream are the same
    assert np.array_equal(ours.ran1(-3, 10), ref.ran1(-3, 10))


def test_one_domain_mosaic_calls_no_kernel(monkeypatch):
    from nanobrag_numba import crand

    def boom(*args):
        raise AssertionError("kernel called")
    ref = crand.CRandom()
    many = ref.mosaic_umats(0.01, 3, 99)                 # more than one domain: the kernel
    monkeypatch.setattr(crand._kc, "mosaic_umats_fill", boom)
    r = crand.CRandom()
    one = r.mosaic_umats(0.01, 1, 99)
    assert np.array_equal(one, np.eye(3).reshape(1, 9))
    assert np.array_equal(one[0], many[0])
    assert crand.CRandom().mosaic_umats(0.01, 0, 99).shape == (0, 9)
    with pytest.raises(AssertionError, match="kernel called"):
        r.mosaic_umats(0.01, 2, 99)


def test_the_compile_note_checks_only_the_kernels_the_run_calls(monkeypatch):
    from nanobrag_numba.api import config_from_flags
    from nanobrag_numba.kernels import _cache
    from nanobrag_numba.simulator import prepare
    seen = []
    said = []
    monkeypatch.setattr(_cache, "announce_compile",
                        lambda out=None, entry_points=None, seconds=None: (seen.append(entry_points),
                                                                           said.append(seconds)))
    base = "-default_F 1 -cell 40 40 40 90 90 90 -detpixels 8 -noprogress"
    # the render kernel is the compile-time variant of the run (kernels/cpu.py): the common case here, and a
    # run this small renders on one thread (the block function as a kernel of its own)
    prepare(config_from_flags(base), lambda s: None, write_dump=False)
    assert seen[-1] == [("cpu", "render_serial_cpu__common_mask_any"), ("noise", "noise_image")]
    assert said[-1] == _cache.COMPILE_SECONDS_SMALL        # the note says what a small run's compile takes
    prepare(config_from_flags(base + " -mosaic 0.1 -mosaic_domains 2 -nonoise"), lambda s: None, write_dump=False)
    assert seen[-1] == [("cpu", "render_serial_cpu__common_mask_any"), ("crand", "mosaic_umats_fill")]
    assert [d.py_func.__name__ for d in _cache._kernel_dispatchers(seen[-1])] == ["render_block", "mosaic_umats_fill"]
    assert _cache._kernel_dispatchers(seen[-1])[0].py_func.__qualname__ == "render_serial_cpu__common_mask_any"
    prepare(config_from_flags(base + " -c_quirks"), lambda s: None, write_dump=False)
    assert seen[-1][0] == ("cpu", "render_serial_cpu")   # every other run: the generic kernel
    # 256x256 = 65536 evaluations: the parallel kernels
    big = base.replace("-detpixels 8", "-detpixels 256")
    prepare(config_from_flags(big + " -nonoise"), lambda s: None, write_dump=False)
    assert seen[-1] == [("cpu", "render_cpu__common_mask_any")]
    assert said[-1] is None                                 # COMPILE_SECONDS
    assert _cache._kernel_dispatchers(seen[-1])[0].py_func.__name__ == "render_cpu"
    prepare(config_from_flags(big + " -c_quirks -nonoise"), lambda s: None, write_dump=False)
    assert seen[-1] == [("cpu", "render_cpu")]


# ---------------------------------------------------------------- loading cached kernels

_COUNT_REFRESH = """
import sys
from numba.core import base
calls = []
orig = base.BaseContext.refresh
def refresh(self):
    calls.append(1)
    return orig(self)
base.BaseContext.refresh = refresh
from nanobrag_numba.kernels import _cache, crand
v = crand.gammln(5.0)
from numba.core.runtime import rtsys
print(len(calls), repr(float(v)), rtsys._init, _cache._ufunc_loops_memoized)
print(_cache._nrt_cache_file(crand.gammln._cache._cache_path,
                             crand.gammln.targetctx.codegen()))
"""


def test_a_cached_kernel_loads_without_the_registry_refresh_and_with_the_nrt_object(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    first = _child(_COUNT_REFRESH, env).split("\n")         # compiles gammln: Numba refreshes to compile
    assert int(first[0].split()[0]) >= 1 and first[0].split()[3] == "True"     # compiling: loops memoized
    nrt_file = first[1]
    assert os.path.dirname(nrt_file).startswith(str(tmp_path)) and os.path.exists(nrt_file)
    second = _child(_COUNT_REFRESH, env).split("\n")         # cache hit: no refresh at all
    assert second[0].split() == ["0", first[0].split()[1], "True", "False"]
    with open(nrt_file, "wb") as fh:                          # a damaged runtime object: Numba's own path
        fh.write(b"not a pickle")
    third = _child(_COUNT_REFRESH, env).split("\n")
    assert third[0].split() == ["0", first[0].split()[1], "True", "False"]


def test_ufunc_loop_choice_is_memoized_for_numpy_ufuncs_only():
    code = """
import numpy as np
from numba import types, vectorize
from numba.np import numpy_support as ns
from numba.core.typing import npydecl
from nanobrag_numba.kernels import _cache
calls = []
original = ns.ufunc_find_matching_loop
def counting(ufunc, arg_types):
    calls.append(getattr(ufunc, "__name__", "?"))
    return original(ufunc, arg_types)
ns.ufunc_find_matching_loop = npydecl.ufunc_find_matching_loop = counting
_cache._memoize_ufunc_loops()
f = ns.ufunc_find_matching_loop
assert f is npydecl.ufunc_find_matching_loop and f is not counting
a = [f(np.multiply, (types.float32, types.float64)) for _ in range(3)]
assert a[0] == a[1] == a[2] == original(np.multiply, (types.float32, types.float64))
assert f(np.sqrt, (types.float32,)) == original(np.sqrt, (types.float32,))
print(calls.count("multiply"), calls.count("sqrt"))
@vectorize
def twice(x):
    return 2 * x
twice(1.0)
calls.clear()
for _ in range(2):
    f(twice, (types.float64,))
print(calls.count("twice"))
"""
    assert _child(code).split() == ["1", "1", "2"]


def test_exit_now_flushes_and_runs_atexit():
    code = ("import atexit, sys\n"
            "atexit.register(lambda: sys.stdout.write('bye'))\n"
            "from nanobrag_numba.cli import _exit_now\n"
            "sys.stdout.write('x')\n"
            "_exit_now(3)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 3 and p.stdout == "xbye"


def test_render_command_exit_status_and_files(tmp_path):
    out = tmp_path / "f.bin"
    p = subprocess.run([sys.executable, "-m", "nanobrag_numba", "-default_F", "1", "-cell", "40", "40", "40",
                        "90", "90", "90", "-detpixels", "8", "-noprogress", "-nonoise", "-floatfile", str(out)],
                       capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert p.returncode == 0, p.stderr
    assert out.stat().st_size == 8 * 8 * 4
    bad = subprocess.run([sys.executable, "-m", "nanobrag_numba", "-detpixels", "x"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("nanobrag-numba: error:")


# ---------------------------------------------------------------- bench/startup.py (no timing)

def _startup():
    if ROOT not in sys.path:
        sys.path.append(ROOT)
    from bench import startup
    return startup


def test_startup_bench_options():
    startup = _startup()
    args = startup.parse_args(["--repeat", "3", "--cold-repeat", "0", "--devices", "cpu,AUTO", "--threads", "2",
                               "--name", "mine-startup"])
    assert (args.repeat, args.cold_repeat, args.device_list, args.threads) == (3, 0, ["cpu", "auto"], 2)
    assert args.json.endswith(os.path.join("results", "mine-startup.json"))
    assert startup.parse_args([]).device_list == ["auto", "cpu"]
    for bad in (["--devices", "gpu"], ["--repeat", "0"], ["--cold-repeat", "-1"], ["--devices", ","]):
        with pytest.raises(SystemExit):
            startup.parse_args(bad)
    env = startup.child_env(2, "/x")
    assert env["NUMBA_CACHE_DIR"] == "/x" and env["NUMBA_NUM_THREADS"] == env["OMP_NUM_THREADS"] == "2"
    assert "PYTHONDONTWRITEBYTECODE" not in env


def test_startup_bench_default_name_is_new_and_committed_results_need_force(tmp_path, capsys):
    startup = _startup()
    args = startup.parse_args(["--threads", "2"])
    assert args.name.startswith("startup-2core-") and not os.path.exists(args.json)
    committed = os.path.join(startup._run.RESULTS_DIR, "startup-2core.json")
    if startup._run.is_committed(committed):
        with pytest.raises(SystemExit) as info:
            startup.parse_args(["--threads", "2", "--name", "startup-2core"])
        assert info.value.code == 2 and "is a committed result" in capsys.readouterr().err
        assert startup.parse_args(["--name", "startup-2core", "--force"]).json == committed
    # an earlier result of our own: an explicit --name may replace it, a default name never collides
    mine = tmp_path / "mine.json"
    mine.write_text("{}")
    assert startup.parse_args(["--name", "x", "--json", str(mine), "--markdown", str(tmp_path / "m.md")]).json \
        == str(mine)


def test_startup_bench_summary_and_table():
    startup = _startup()
    runs = [{"cpu_s": c, "wall_s": c / 2, "rss_bytes": m * 2 ** 20, "others_cpu_share": 0.5}
            for c, m in ((0.9, 110), (0.7, 118), (1.3, 112))]
    s = startup.summarize(runs)
    assert s["n"] == 3 and s["cpu_s"]["median"] == 0.9 and s["rss_mb"]["median"] == 112
    assert (s["cpu_s"]["min"], s["cpu_s"]["max"]) == (0.7, 1.3)
    meta = {"command": "nanobrag-numba ...", "commit": "abc", "program_files_modified": [], "cpu_model": "cpu",
            "threads": 2, "date": "d", "python": "3", "numba": "n", "numpy": "np", "program_source": "tree",
            "note": "shared machine", "rss_method": "GNU time", "targets": startup.TARGETS, "rerun": "python ..."}
    rows = [{"program": "ours", "device": "auto", "start": "warm", **s},
            {"program": "ours", "device": "auto", "start": "cold", **startup.summarize(
                [{"cpu_s": 25.0, "wall_s": 30.0, "rss_bytes": 2 ** 28, "others_cpu_share": None}])}]
    md = startup.markdown(meta, rows)
    assert "| ours | auto | warm | 3 | 0.90 (0.70–1.30) |" in md
    assert "Note: shared machine" in md
    assert "warm CPU 0.90 s met; warm RSS 112.0 MB met; cold CPU 25.0 s NOT met" in md


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_large_freed_blocks_go_back_to_the_system():
    code = """
import numpy as np
from nanobrag_numba.cli import _return_large_blocks_to_the_system
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
_return_large_blocks_to_the_system()
a = np.ones(2 ** 20)          # 8 MB, freed: glibc alone would now keep blocks up to 8 MB in its heap
del a
r0 = rss()
blocks = [np.ones(2 ** 19) for _ in range(6)]    # 6 x 4 MB, as the HKL reader's temporaries
keep = [bytearray(200) for _ in range(1000)]
del blocks
print(rss() - r0)
"""
    assert int(_child(code)) <= 2          # without the fixed threshold about 9 MB stay resident


_BLAS = """
import os, sys
if sys.argv[1] == "numpy-first":
    import numpy
from nanobrag_numba.cli import _one_blas_thread
_one_blas_thread()
import numpy
print(os.environ.get("OPENBLAS_NUM_THREADS", "unset"))
"""


@pytest.mark.parametrize("setting, mode, expected", [(None, "cli", "1"), ("3", "cli", "3"),
                                                    (None, "numpy-first", "unset")])
def test_the_command_line_starts_openblas_with_one_thread(setting, mode, expected):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if setting:
        env["OPENBLAS_NUM_THREADS"] = setting
    out = subprocess.run([sys.executable, "-c", _BLAS, mode], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


def test_every_command_asks_for_one_blas_thread(monkeypatch):
    from nanobrag_numba import cli, noisify_cli
    called = []
    monkeypatch.setattr(cli, "_one_blas_thread", lambda: called.append(1))
    for name in ("_skip_numba_blas_probe", "_return_large_blocks_to_the_system"):   # no effect on this process
        monkeypatch.setattr(cli, name, lambda: None)
    for module in (cli, noisify_cli):
        monkeypatch.setattr(module, "main", lambda *a, **k: 0)
    monkeypatch.setattr(cli, "_exit_now", lambda status: called.append(("exit", status)))
    monkeypatch.setattr(sys, "argv", ["nanobrag-numba"])
    cli.console_main()
    noisify_cli.console_main()
    assert called == [1, ("exit", 0), 1, ("exit", 0)]
