"""Small runs render on the calling thread, and the first compile skips the inliner's copies (issue 12).

* ``kernels/cpu.py``: a run of at most ``SERIAL_EVALUATIONS`` inner
  evaluations calls the block function itself as its kernel (no parallel
  loop to compile, no thread pool to start); every pixel is the same code, so
  the image is bit-identical to the parallel kernel's.
* ``kernels/_inline.py``: Numba's ``inline_function`` without the two deep
  copies of the callee IR it has just built.
"""
import copy
import os
import subprocess
import sys

import numpy as np
import pytest

from nanobrag_numba.api import config_from_flags
from nanobrag_numba.kernels import _inline
from nanobrag_numba.kernels import cpu as kcpu
from nanobrag_numba.simulator import prepare, render

BASE = "-default_F 100 -cell 40 42 45 90 90 90 -misset 10 20 30 -distance 50 -noprogress -nonoise"


def _image(flags):
    return render(prepare(config_from_flags(flags), lambda s: None, write_dump=False), "cpu").floatimage


@pytest.mark.parametrize("extra", [
    "-N 5 -detpixels 24",                                                  # the common variant
    "-N 2 -detpixels 20 -oversample 2 -mosaic 0.5 -mosaic_domains 3 -phi 0 -osc 1 -phisteps 2",  # interpolation
    "-N 3 -detpixels 16 -c_quirks -mosaic 0.5 -mosaic_domains 2 -roi 2 12 3 9",     # generic kernel, ROI
])
def test_a_small_run_on_one_thread_is_the_parallel_image(extra, monkeypatch):
    flags = BASE + " " + extra
    p = prepare(config_from_flags(flags), lambda s: None, write_dump=False).params
    assert kcpu.serial_run(p)
    calls = []                      # the parallel path sets Numba's chunk size (and starts the thread pool)
    original = kcpu.numba.set_parallel_chunksize
    monkeypatch.setattr(kcpu.numba, "set_parallel_chunksize", lambda n: (calls.append(n), original(n))[1])
    serial = _image(flags)
    assert calls == []
    monkeypatch.setattr(kcpu, "SERIAL_EVALUATIONS", 0)
    parallel = _image(flags)
    assert calls[0] == 1
    assert serial.dtype == parallel.dtype and np.array_equal(serial, parallel)
    assert np.count_nonzero(serial) > 0


def _params(extra):
    return prepare(config_from_flags(BASE + " -N 5 " + extra), lambda s: None, write_dump=False).params


def test_the_threshold_counts_every_loop():
    for extra, n in (("-detpixels 16 -oversample 1", 256), ("-detpixels 181 -oversample 1", 181 * 181),
                     ("-detpixels 16 -oversample 3", 256 * 9),
                     ("-detpixels 16 -oversample 1 -mosaic 1 -mosaic_domains 200", 256 * 200),
                     ("-detpixels 16 -oversample 1 -phi 0 -osc 1 -phisteps 127", 256 * 127)):
        p = _params(extra)
        assert kcpu.evaluations(p) == n
        assert kcpu.serial_run(p) == (n <= kcpu.SERIAL_EVALUATIONS)
    assert kcpu.serial_run(_params("-detpixels 181 -oversample 1"))          # 32761 evaluations
    assert not kcpu.serial_run(_params("-detpixels 182 -oversample 1"))      # 33124


_THREADS = """
import numba.np.ufunc.parallel as par
from nanobrag_numba.api import config_from_flags
from nanobrag_numba.simulator import prepare, render
img = render(prepare(config_from_flags(%r), lambda s: None, write_dump=False), "cpu")
print(par._is_initialized, float(img.floatimage.sum()) > 0)
"""


@pytest.mark.parametrize("pixels, started", [(16, "False"), (200, "True")])
def test_a_small_run_starts_no_thread_pool(pixels, started):
    flags = BASE + " -N 5 -detpixels %d" % pixels
    out = subprocess.run([sys.executable, "-c", _THREADS % flags], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, NUMBA_NUM_THREADS="2"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [started, "True"]


# ---------------------------------------------------------------- the inliner without copies

def test_the_inliner_of_this_numba_is_the_one_the_replacement_was_written_for():
    from numba.core import inline_closurecall
    assert _inline.applicable(inline_closurecall)         # numba is pinned (setup.cfg): a new one must be checked
    assert _inline.apply_cpu()
    assert inline_closurecall.InlineWorker.inline_function is _inline._inline_function
    assert _inline.apply_cpu()                             # idempotent


def test_numba_cuda_has_its_own_copy_of_the_same_inliner():
    inline_closurecall = pytest.importorskip("numba.cuda.core.inline_closurecall")
    assert _inline.applicable(inline_closurecall)
    assert _inline.apply_cuda()
    assert inline_closurecall.InlineWorker.inline_function is _inline._inline_function


def test_a_module_of_another_shape_is_left_alone():
    import types
    odd = types.ModuleType("odd")
    assert not _inline.applicable(odd) and not _inline.apply(odd)

    class InlineWorker:
        def inline_function(self, caller_ir, block, i, function, arg_typs=None):
            return self.something_else(function)

        def inline_ir(self):
            pass

        def run_untyped_passes(self, func):
            pass

    odd.InlineWorker, odd.copy = InlineWorker, copy
    assert not _inline.applicable(odd) and not _inline.apply(odd)
    assert odd.copy is copy and odd.InlineWorker.inline_function is not _inline._inline_function


_INLINE = """
import copy, sys
import numpy as np
from numba import njit
from nanobrag_numba.kernels import _inline
if sys.argv[1] == "apply":
    _inline.apply_cpu()
from numba.core import inline_closurecall

@njit(inline="always")
def leaf(x, y):
    s = 0.0
    for i in range(3):
        s += x * i - y
    return s, x - y

@njit(inline="always")
def middle(a, x):
    t, u = leaf(x, 2.0)
    if t > 0:
        a[0] += t
    else:
        a[1] += u
    return leaf(t, u)[0]

@njit
def top(a, n):
    total = 0.0
    for k in range(n):
        total += middle(a, k * 0.5) + middle(a, -k * 0.25)
    return total

counted = []
real = copy.deepcopy
def counting(x, memo=None, _nil=[]):
    counted.append(type(x).__name__)
    return real(x, memo)
copy.deepcopy = counting            # every deep copy in the process (also the replacement's own fallback)
a = np.zeros(2)
print(repr(top(a, 7)) + "|" + repr(a.tolist()) + "|" + str(counted.count("Block")))
"""


def test_inlining_without_the_copies_compiles_the_same_function():
    runs = {}
    for mode in ("numba", "apply"):
        out = subprocess.run([sys.executable, "-c", _INLINE, mode], capture_output=True, text=True, timeout=600,
                             env=dict(os.environ, NUMBA_CACHE_DIR="/nonexistent-no-cache"))
        assert out.returncode == 0, out.stderr
        runs[mode] = out.stdout.strip().split("|")
    assert runs["apply"][:2] == runs["numba"][:2]           # the same results
    assert int(runs["numba"][2]) > 0                         # Numba's own inliner copies the callee's blocks...
    assert runs["apply"][2] == "0"                           # ...the replacement does not
