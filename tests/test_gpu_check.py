"""bench/gpu_check.py (the one script run on a GPU machine) imports here and its render_many part runs.

Without a GPU the render_many benchmark runs in numba's CUDA simulator on
4x4 images (``MANY_PLANS_SIM``), with a small HKL file, in a subprocess;
the report's table and the GPU-vs-CPU checks must come out.
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)

DRIVER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import bench.make_hkl as mh
from nanobrag_numba.example import write_p1_hkl
def small(path=None):
    write_p1_hkl(sys.argv[2] + "/small.hkl", cell=(79.1, 79.1, 38.4, 90, 90, 90), dmin=8.0, seed=1, F000=0.0)
    return sys.argv[2] + "/small.hkl"
mh.ensure_hkl = small
from bench import gpu_check
many = gpu_check.bench_many(True)
gpu_check.write_report(sys.argv[2], {"commit": "x", "date": "d", "device": gpu_check.device_info(), "many": many})
print(json.dumps(many))
"""


def test_gpu_check_imports_and_plans():
    from bench import cases, gpu_check
    assert [p[0] for p in gpu_check.MANY_PLANS] == ["B5", "B1"]
    for name, per_launch, total in gpu_check.MANY_PLANS:
        assert name in cases.CASES and total % per_launch == 0
    p = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_check.py"), "--help"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "render_many" in p.stdout


def test_render_many_benchmark_in_the_cuda_simulator(tmp_path):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", NUMBA_DISABLE_JIT="1")
    p = subprocess.run([sys.executable, "-c", DRIVER, ROOT, str(tmp_path)], env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    many = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(many) == {"B5", "B1"}
    b5 = many["B5"]
    assert b5["images"] == 2 and b5["max_I_first"] > 0 and b5["images_per_second"] > 0
    assert b5["max_rel_diff_to_cpu"] <= 1e-6 and b5["noise_equal_to_cpu"] is True
    report = (tmp_path / "gpu_report.md").read_text()
    assert "## Many images per launch" in report and "| B5 | 2 | 2 |" in report
