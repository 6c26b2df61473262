"""bench/noise_gpu.py (issue 13's GPU bench case: 2048x2048 background + noise) runs in the CUDA simulator.

``--sim``: a 16x16 version in numba's CUDA simulator; the GPU, CPU and C-generator rows come out and the
GPU's noise image equals the CPU's for the same photons.  Speed is never asserted.
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_noise_gpu_bench_in_the_cuda_simulator(tmp_path):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", NUMBA_DISABLE_JIT="1")
    p = subprocess.run([sys.executable, "-m", "bench.noise_gpu", "--sim", "--out", str(tmp_path)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    rec = json.loads((tmp_path / "noise_gpu.json").read_text())
    assert "error" not in rec and rec["size"] == 16
    assert [r["device"] for r in rec["rows"]] == ["cuda", "cpu", "cpu, C's generator"]
    assert rec["noise_equal_to_cpu"] is True and rec["background_max_rel_diff_to_cpu"] <= 1e-6
    assert rec["rows"][0]["photons_mean"] > 0 and rec["rows"][0]["images_per_second"] > 0
    md = (tmp_path / "noise_gpu.md").read_text()
    assert "| cuda |" in md and "| cpu |" in md and "equal to the CPU's (same photons): True" in md


def test_gpu_check_calls_the_noise_bench():
    src = open(os.path.join(ROOT, "bench", "gpu_check.py")).read()
    assert "noise_gpu.bench(args.sim, out=args.out)" in src
