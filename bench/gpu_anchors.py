"""Same-card anchors of the GPU check (issue 10, deliverable 4).

Two other programs render the G1 case (``bench/cases.py``) on the GPU our
kernels run on, so that our samples/s have a reference measured on the same
card, in the same session:

* **nanoBraggCUDA**, the CUDA build of the C program (``cuda/src`` of
  bl831/nanoBragg), compiled on the GPU machine with its nvcc.  Its source is
  never committed here: ``prepare`` copies it into the git-ignored carry
  folder (``gpu_carry/nanoBragg-cuda/``), which travels to the GPU machine.
  Kernel time is the ``KERNEL_MS`` line it prints on stderr (CUDA events
  around its one launch); the wall time minus a ``-roi 0 0 0 0`` run is
  reported next to it (bench/README, "How kernel time is measured").
  Its ``-precision double`` is float-float pairs (df64) on the
  single-precision units, not float64.
* **nanobrag_torch** (hoidn/nanoBragg, the PyTorch port), copied the same way
  into ``gpu_carry/nanobrag_torch/``.  Its own CLI parses the G1 words (with
  ``-device cuda -dtype float64|float32``) in a child process; the render is
  timed chunk by chunk (its ``-pixel_batch_size`` rows per chunk, each chunk
  one eager, fully vectorised evaluation; the whole image at once would need
  terabytes), with a time budget: where the budget ends before the last row,
  the rate is that of the rows done.

Commands (from the checkout root)::

    python bench/gpu_anchors.py prepare [--carry gpu_carry] [--c-from DIR] [--torch-from DIR]
    python bench/gpu_anchors.py build [--arch sm_90]        (only the nanoBraggCUDA build; no GPU needed)
    python bench/gpu_anchors.py run OUTDIR [--dry-run] [--budget-s 240] [--only c,torch]

``run`` writes OUTDIR/gpu_anchors.json and OUTDIR/gpu_anchors.md; every step
has its own timeout, and a failed anchor is reported, never fatal (exit 0).
``--dry-run`` prints the plan (commands, words, timeouts) and checks the G1
flags against the carried sources, without nvcc, a GPU or torch.
"""
from __future__ import annotations

import argparse
import glob
import io
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import cases as bc  # noqa: E402  (no numba, no numpy: safe everywhere)

CARRY = os.path.join(ROOT, "gpu_carry")
C_SUB = "nanoBragg-cuda"          # gpu_carry/nanoBragg-cuda/src/*.c,*.cu,*.h + SOURCE.txt
TORCH_SUB = "nanobrag_torch"      # gpu_carry/nanobrag_torch/src/nanobrag_torch/ + SOURCE.txt
C_REQUIRED = ("nanoBragg.c", "nanoBraggCPU.c", "nanoBraggCPU.h", "nanoBraggCUDA.cu", "nanoBraggCUDA.h",
              "nanotypes.h")
C_UNITS = ("nanoBragg.c", "nanoBraggCPU.c")        # host C, compiled by nvcc's host compiler
C_PRECISIONS = (("double", 2), ("single", 1))      # its -precision word and NB_PRECISION (2 = df64)
DEFAULT_ARCH = "sm_90"

# where `prepare` looks when no --c-from / --torch-from is given: an environment variable, a checkout
# next to ours (../shared), then the git mirrors of this workplace
C_FROM = ("$NANOBRAGG_CUDA_SRC", "../shared/nanoBragg", "../shared/bl831-nanoBragg",
          "/work/.mirror/bl831+nanoBragg/repo")
TORCH_FROM = ("$NANOBRAG_TORCH_SRC", "../shared/nanobrag_torch", "../shared/hoidn-nanoBragg",
              "/work/.mirror/hoidn+nanoBragg/repo")

# per-step timeouts (seconds); the whole `run` also has --budget-s
T_BUILD = 240
T_C_RUN = 120
T_TORCH_OVERHEAD = 150     # timeout allowance for torch import, CUDA context, HKL, set-up, past the chunks
TORCH_SETUP_EST = 40       # what that usually takes: reserved per remaining dtype when the budget is short
TORCH_BUDGET = 30          # seconds of chunks per dtype
C_SHARE = 0.5              # nanoBraggCUDA (build and runs) gets at most this share of --budget-s
TORCH_ROWS = 4             # -pixel_batch_size: 4 x 2048 pixels x 4 x 27 x 100 ~ 88 M samples per chunk


def log(msg: str) -> None:
    print("[gpu_anchors] " + msg, flush=True)


# --------------------------------------------------------------------------- prepare
def _expand(cand: str) -> Optional[str]:
    if cand.startswith("$"):
        cand = os.environ.get(cand[1:], "")
        if not cand:
            return None
    return cand if os.path.isabs(cand) else os.path.normpath(os.path.join(ROOT, cand))


def _is_git(path: str) -> bool:
    return subprocess.run(["git", "-C", path, "rev-parse", "--git-dir"], capture_output=True).returncode == 0


def _git(path: str, *args: str, text: bool = True):
    proc = subprocess.run(["git", "-C", path] + list(args), capture_output=True, text=text)
    if proc.returncode != 0:
        raise RuntimeError("git -C %s %s: %s" % (path, " ".join(args), (proc.stderr or b"")[-300:]))
    return proc.stdout


def _pick(explicit: Optional[str], candidates: Sequence[str], probe) -> str:
    tried = []
    for cand in ([explicit] if explicit else list(candidates)):
        path = _expand(cand) if not explicit else os.path.abspath(cand)
        if path and os.path.isdir(path) and probe(path):
            return path
        tried.append(path or cand)
    raise RuntimeError("no source found (tried %s)" % ", ".join(str(t) for t in tried))


def _c_probe(path: str) -> bool:
    if _is_git(path):
        return subprocess.run(["git", "-C", path, "cat-file", "-e", "HEAD:cuda/src/nanoBraggCUDA.cu"],
                              capture_output=True).returncode == 0
    return any(os.path.isfile(os.path.join(path, d, "nanoBraggCUDA.cu")) for d in ("cuda/src", "src", "."))


def _torch_probe(path: str) -> bool:
    if _is_git(path):
        return subprocess.run(["git", "-C", path, "cat-file", "-e", "HEAD:src/nanobrag_torch/__main__.py"],
                              capture_output=True).returncode == 0
    return any(os.path.isfile(os.path.join(path, d, "nanobrag_torch", "__main__.py")) for d in ("src", "."))


def prepare_c(dest: str, origin: str) -> Dict[str, object]:
    """Copy cuda/src of a bl831/nanoBragg checkout (git repository, bare or not, or plain folder)."""
    src_dir = os.path.join(dest, "src")
    if os.path.isdir(dest):
        shutil.rmtree(dest)
    os.makedirs(src_dir)
    if _is_git(origin):
        commit = _git(origin, "rev-parse", "HEAD").strip()
        names = [n for n in _git(origin, "ls-tree", "--name-only", "HEAD", "cuda/src/").split()]
        for name in names:
            data = _git(origin, "show", "HEAD:" + name, text=False)
            with open(os.path.join(src_dir, os.path.basename(name)), "wb") as fh:
                fh.write(data)
    else:
        commit = "unknown (plain folder)"
        base = next(os.path.join(origin, d) for d in ("cuda/src", "src", ".")
                    if os.path.isfile(os.path.join(origin, d, "nanoBraggCUDA.cu")))
        for name in sorted(os.listdir(base)):
            if name.endswith((".c", ".h", ".cu")):
                shutil.copy2(os.path.join(base, name), os.path.join(src_dir, name))
    missing = [f for f in C_REQUIRED if not os.path.isfile(os.path.join(src_dir, f))]
    if missing:
        raise RuntimeError("%s: cuda/src lacks %s" % (origin, ", ".join(missing)))
    with open(os.path.join(dest, "SOURCE.txt"), "w") as fh:
        fh.write("bl831/nanoBragg cuda/src\norigin: %s\ncommit: %s\nfiles: %s\n"
                 % (origin, commit, " ".join(sorted(os.listdir(src_dir)))))
    return {"origin": origin, "commit": commit, "files": sorted(os.listdir(src_dir))}


def prepare_torch(dest: str, origin: str) -> Dict[str, object]:
    """Copy src/nanobrag_torch (and LICENSE) of a hoidn/nanoBragg checkout."""
    if os.path.isdir(dest):
        shutil.rmtree(dest)
    os.makedirs(os.path.join(dest, "src"))
    if _is_git(origin):
        commit = _git(origin, "rev-parse", "HEAD").strip()
        paths = ["src/nanobrag_torch"]
        if subprocess.run(["git", "-C", origin, "cat-file", "-e", "HEAD:LICENSE"],
                          capture_output=True).returncode == 0:
            paths.append("LICENSE")
        data = _git(origin, "archive", "--format=tar", "HEAD", *paths, text=False)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = [m for m in tar.getmembers() if not m.name.endswith(".backup") and "__pycache__" not in m.name]
            kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(dest, members=members, **kw)
    else:
        commit = "unknown (plain folder)"
        pkg = next(os.path.join(origin, d, "nanobrag_torch") for d in ("src", ".")
                   if os.path.isfile(os.path.join(origin, d, "nanobrag_torch", "__main__.py")))
        shutil.copytree(pkg, os.path.join(dest, "src", "nanobrag_torch"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.backup"))
    with open(os.path.join(dest, "SOURCE.txt"), "w") as fh:
        fh.write("hoidn/nanoBragg src/nanobrag_torch (PyTorch port)\norigin: %s\ncommit: %s\n" % (origin, commit))
    return {"origin": origin, "commit": commit}


def cmd_prepare(args) -> int:
    os.makedirs(args.carry, exist_ok=True)
    status = 0
    for label, explicit, cands, probe, fn, sub in (
            ("nanoBraggCUDA", args.c_from, C_FROM, _c_probe, prepare_c, C_SUB),
            ("nanobrag_torch", args.torch_from, TORCH_FROM, _torch_probe, prepare_torch, TORCH_SUB)):
        try:
            origin = _pick(explicit, cands, probe)
            info = fn(os.path.join(args.carry, sub), origin)
            log("%s: %s (commit %s) -> %s" % (label, origin, info["commit"], os.path.join(args.carry, sub)))
        except Exception as e:  # one source missing must not stop the other
            log("%s: NOT prepared: %s" % (label, e))
            status = 1
    return status


# --------------------------------------------------------------------------- words
def g1_words(hkl: str) -> List[str]:
    return bc.CASES["G1"].words(hkl)


def torch_words(words: Sequence[str], dtype: str, rows: int) -> List[str]:
    """The G1 words for nanobrag_torch's CLI: its parser has no -mosaic_domains (only -mosaic_dom, and
    abbreviations are off), everything else is the same words."""
    out = ["-mosaic_dom" if w == "-mosaic_domains" else w for w in words]
    return out + ["-device", "cuda", "-dtype", dtype, "-pixel_batch_size", str(rows)]


def c_words(words: Sequence[str], precision: str, roi0: bool = False) -> List[str]:
    return list(words) + ["-precision", precision] + (["-roi", "0", "0", "0", "0"] if roi0 else [])


def _flags(words: Sequence[str]) -> List[str]:
    return [w for w in words if re.match(r"^-[A-Za-z]", w)]


def check_c_flags(words: Sequence[str], source: str) -> List[str]:
    """Flags of `words` that no strstr(argv[i], "...") test of the C parser matches (it matches substrings)."""
    keys = set(re.findall(r'strstr\(argv\[i\],\s*"(-[^"]+)"\)', source))
    exact = set(re.findall(r'strcmp\(argv\[i\],\s*"(-[^"]+)"\)', source))
    return [f for f in _flags(words) if f not in exact and not any(k in f for k in keys)]


def check_torch_flags(words: Sequence[str], source: str) -> List[str]:
    """Flags of `words` that are not an option string of the torch CLI's argparse parser (exact names)."""
    names = set()
    for call in re.findall(r"add_argument\(([^)]*)", source):
        names.update(re.findall(r"""['"](-[A-Za-z][\w-]*)['"]""", call))
    return [f for f in _flags(words) if f not in names]


# what the torch worker wraps: Simulator methods and the parameters it reads
TORCH_HOOKS = {"_compute_chunk_intensity": ("pixel_coords_meters", "rot_a", "n_sources", "oversample"),
               "run": ("pixel_batch_size",)}


def check_torch_hooks(source: str) -> List[str]:
    """What the worker needs and simulator.py lacks: class Simulator, its methods, their parameters."""
    import ast
    cls = next((n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == "Simulator"),
               None)
    if cls is None:
        return ["class Simulator"]
    methods = {f.name: f for f in cls.body if isinstance(f, ast.FunctionDef)}
    missing = []
    for name, params in TORCH_HOOKS.items():
        if name not in methods:
            missing.append("Simulator.%s" % name)
            continue
        have = {a.arg for a in methods[name].args.args + methods[name].args.kwonlyargs}
        missing += ["Simulator.%s(%s)" % (name, p) for p in params if p not in have]
    return missing


# --------------------------------------------------------------------------- nanoBraggCUDA
def find_nvcc() -> Dict[str, object]:
    """The nvcc to build with: $NVCC, $CUDA_HOME/$CUDA_PATH, PATH, /usr/local/cuda*, then a pip wheel."""
    cands = [os.environ.get("NVCC")]
    cands += [os.path.join(os.environ[v], "bin", "nvcc") for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    cands += [shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"]
    cands += sorted(glob.glob("/usr/local/cuda-*/bin/nvcc"), key=_version_key, reverse=True)
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return {"nvcc": c, "how": "toolkit", "wheel": False}
    try:
        from bench.ptx import find_tool
        path, how = find_tool("nvcc")
        if path:
            return {"nvcc": path, "how": how, "wheel": True}
    except Exception:
        pass
    return {"nvcc": None, "how": "not found", "wheel": False}


def _version_key(path: str):
    m = re.search(r"cuda-(\d+)\.(\d+)", path)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def gpu_arch() -> str:
    """sm_XY of GPU 0 (nvidia-smi compute_cap); sm_90 where it cannot be asked."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.split()
        if out and re.match(r"^\d+\.\d+$", out[0]):
            return "sm_" + out[0].replace(".", "")
    except Exception:
        pass
    return DEFAULT_ARCH


def gpu_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
        return out[0].strip() if out else "unknown"
    except Exception:
        return "unknown (no nvidia-smi)"


def build_commands(nvcc: str, src: str, build: str, arch: str) -> Dict[str, object]:
    """Compile commands (independent: run in parallel) and the link command of nanoBraggCUDA.

    Everything goes through nvcc: the two C files with its host compiler (as C), the kernel once per
    precision (NB_PRECISION 2 = df64, 1 = single; both objects link into one binary, where the
    C program's -precision chooses), linked with the static CUDA runtime (nvcc's default)."""
    compile_cmds, objs = [], []
    for unit in C_UNITS:
        obj = os.path.join(build, unit[:-2] + ".o")
        compile_cmds.append([nvcc, "-O3", "-I", src, "-c", os.path.join(src, unit), "-o", obj])
        objs.append(obj)
    for precision, flag in C_PRECISIONS:
        obj = os.path.join(build, "nanoBraggCUDA_%s.o" % precision)
        compile_cmds.append([nvcc, "-O3", "-std=c++17", "-arch=" + arch, "-DNB_PRECISION=%d" % flag,
                             "-I", src, "-c", os.path.join(src, "nanoBraggCUDA.cu"), "-o", obj])
        objs.append(obj)
    exe = os.path.join(build, "nanoBraggCUDA")
    link = [nvcc, "-arch=" + arch] + objs + ["-o", exe, "-lm"]
    return {"compile": compile_cmds, "link": link, "exe": exe}


def _wheel_link_fallback(link: List[str]) -> List[str]:
    """The link line for a pip-wheel nvcc: no libcudart_static.a there, so the shared runtime of the
    nvidia-cuda-runtime wheel, found at run time through an rpath."""
    from bench.ptx import _site_dirs
    libs = []
    for d in dict.fromkeys(_site_dirs()):
        libs += glob.glob(os.path.join(d, "nvidia", "*", "lib", "libcudart.so*"))
        libs += glob.glob(os.path.join(d, "nvidia", "cu*", "lib*", "libcudart.so*"))
    extra = ["--cudart", "shared"]
    for d in dict.fromkeys(os.path.dirname(p) for p in libs):
        extra += ["-L", d, "-Xlinker", "-rpath," + d]
    return link + extra


def build_c(carry: str, arch: str, deadline: float) -> Dict[str, object]:
    src = os.path.join(carry, C_SUB, "src")
    missing = [f for f in C_REQUIRED if not os.path.isfile(os.path.join(src, f))]
    if missing:
        raise RuntimeError("%s lacks %s: run `python bench/gpu_anchors.py prepare` before the device run"
                           % (src, ", ".join(missing)))
    tool = find_nvcc()
    if not tool["nvcc"]:
        raise RuntimeError("nvcc not found ($NVCC, $CUDA_HOME, PATH, /usr/local/cuda*, pip wheels)")
    nvcc = tool["nvcc"]
    tmp = None
    if tool["wheel"]:
        from bench.ptx import _toolkit_tree
        tmp = tempfile.mkdtemp(prefix="nb-anchor-nvcc-")
        nvcc = os.path.join(_toolkit_tree(nvcc, tmp), "bin", "nvcc")
    version = [ln for ln in subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.splitlines()
               if "release" in ln]
    build = os.path.join(carry, C_SUB, "build-" + arch)
    if os.path.isdir(build):
        shutil.rmtree(build)
    os.makedirs(build)
    plan = build_commands(nvcc, src, build, arch)
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in plan["compile"]]
    failed = []
    for cmd, p in zip(plan["compile"], procs):
        try:
            out, _ = p.communicate(timeout=max(1.0, min(T_BUILD, deadline - time.time())))
        except subprocess.TimeoutExpired:
            for q in procs:
                if q.poll() is None:
                    q.kill()
            raise RuntimeError("build timed out (%s)" % os.path.basename(cmd[-3]))
        if p.returncode != 0:
            failed.append("%s: %s" % (" ".join(cmd[-4:]), out.strip()[-600:]))
    if failed:
        raise RuntimeError("nvcc failed: " + " | ".join(failed))
    link = plan["link"]
    proc = subprocess.run(link, capture_output=True, text=True, timeout=max(1.0, deadline - time.time()))
    if proc.returncode != 0 and tool["wheel"]:
        link = _wheel_link_fallback(link)
        proc = subprocess.run(link, capture_output=True, text=True, timeout=max(1.0, deadline - time.time()))
    if proc.returncode != 0:
        raise RuntimeError("link failed: " + (proc.stderr or proc.stdout).strip()[-600:])
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"exe": plan["exe"], "nvcc": tool["nvcc"], "nvcc_found_by": tool["how"],
            "nvcc_version": version[-1] if version else "?", "arch": arch,
            "build_seconds": round(time.perf_counter() - t0, 1),
            "commands": [" ".join(c) for c in plan["compile"]] + [" ".join(link)]}


_KERNEL_MS = re.compile(r"^KERNEL_MS\s+([0-9.eE+-]+)\s*$", re.M)


def parse_kernel_ms(text: str) -> Optional[float]:
    """The last ``KERNEL_MS <ms>`` line nanoBraggCUDA prints on stderr (cudaEvent time of its launch)."""
    hits = _KERNEL_MS.findall(text)
    return float(hits[-1]) if hits else None


def c_counts(text: str) -> Dict[str, int]:
    """bench.cases.parse_c_counts, and the sensor layers from the "thickN = ... um" lines this C program
    prints (it has no "sensor is ... thick in N layers" line)."""
    counts = bc.parse_c_counts(text)
    if "thicksteps" not in counts:
        layers = len(re.findall(r"^thick\d+ = ", text, re.M))
        if layers:
            counts["thicksteps"] = layers
    return counts


def run_c_once(exe: str, words: Sequence[str], timeout: float) -> Dict[str, object]:
    work = tempfile.mkdtemp(prefix="nb-anchor-c-")
    try:
        t0 = time.perf_counter()
        proc = subprocess.run([exe] + list(words), cwd=work, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t0
        rec = {"wall_s": wall, "exit_code": proc.returncode, "kernel_ms": parse_kernel_ms(proc.stderr),
               "counts": c_counts(proc.stdout)}
        if proc.returncode != 0:
            rec["error"] = (proc.stderr.strip() or proc.stdout.strip())[-600:]
        img = os.path.join(work, "floatimage.bin")
        if proc.returncode == 0 and os.path.isfile(img):
            import numpy as np
            a = np.fromfile(img, dtype="<f4")
            rec["image"] = {"max": float(a.max()), "mean": float(a.mean()), "finite": bool(np.isfinite(a).all())}
        return rec
    finally:
        shutil.rmtree(work, ignore_errors=True)


def anchor_c(carry: str, words: Sequence[str], ours: Optional[Dict[str, int]], repeat: int,
             deadline: float) -> Dict[str, object]:
    result: Dict[str, object] = {"name": "nanoBraggCUDA"}
    try:
        result["build"] = build_c(carry, gpu_arch(), deadline)
    except Exception as e:
        result["error"] = "build: %s" % e
        return result
    exe = result["build"]["exe"]
    with open(os.path.join(carry, C_SUB, "SOURCE.txt")) as fh:
        result["source"] = fh.read().strip()
    for precision, _ in C_PRECISIONS:
        rec: Dict[str, object] = {"runs": []}
        result[precision] = rec
        try:
            for i in range(repeat + 1):       # `repeat` full runs, then the one-pixel run
                left = deadline - time.time()
                if left < 20:
                    rec.setdefault("note", "stopped early: anchor budget")
                    break
                roi0 = i == repeat
                r = run_c_once(exe, c_words(words, precision, roi0), min(T_C_RUN, left))
                r["roi0"] = roi0
                rec["runs"].append(r)
                if r["exit_code"] != 0:
                    raise RuntimeError("exit %d: %s" % (r["exit_code"], r.get("error", "")))
            full = [r for r in rec["runs"] if not r["roi0"]]
            if not full:
                raise RuntimeError("no full run inside the budget")
            counts = full[0]["counts"]
            evals = bc.evaluations(counts) if all(k in counts for k in bc.COUNT_KEYS) else None
            rec["counts"] = counts
            rec["evaluations"] = evals
            if ours:
                diff = {k: (counts.get(k), ours[k]) for k in bc.COUNT_KEYS if counts.get(k) != ours[k]}
                rec["counts_as_ours"] = not diff
                if diff:
                    rec["counts_differ"] = diff
            kms = [r["kernel_ms"] for r in full if r["kernel_ms"] is not None]
            if kms and evals:
                rec["kernel_s"] = min(kms) / 1000.0
                rec["samples_per_s"] = evals / rec["kernel_s"]
            rec["wall_s"] = min(r["wall_s"] for r in full)
            one = [r for r in rec["runs"] if r["roi0"]]
            if one and evals:
                rec["wall_roi0_s"] = one[0]["wall_s"]
                est = rec["wall_s"] - one[0]["wall_s"]
                rec["wall_minus_roi0_s"] = est
                if est > 0:
                    rec["samples_per_s_wall_estimate"] = evals / est
            rec["image"] = full[0].get("image")
            log("nanoBraggCUDA %s: kernel %s s, %s samples/s" % (
                precision, _fmt(rec.get("kernel_s"), "%.3f"), _fmt(rec.get("samples_per_s"), "%.3g")))
        except Exception as e:
            rec["error"] = str(e)[-800:]
            log("nanoBraggCUDA %s: FAILED: %s" % (precision, rec["error"]))
    return result


# --------------------------------------------------------------------------- nanobrag_torch
class _Stop(BaseException):
    """Ends the torch CLI's render from inside (BaseException: its main() catches Exception)."""


def torch_worker(args) -> int:
    """Child process: run nanobrag_torch's CLI on `words`, timing each row chunk of the render."""
    import inspect
    rec: Dict[str, object] = {"chunks": [], "stopped": None, "complete": False}

    def dump():
        with open(args.json, "w") as fh:
            json.dump(rec, fh, indent=1)

    sys.path.insert(0, args.src)
    os.environ.setdefault("NANOBRAGG_DISABLE_COMPILE", "1")   # the chunked path runs eager anyway
    try:
        import nanobrag_torch.__main__ as cli
        import nanobrag_torch.simulator as sm
    except BaseException as e:  # ImportError (no torch), anything its import does
        rec["error"] = "import: %s: %s" % (type(e).__name__, e)
        dump()
        return 3
    torch = sys.modules.get("torch")

    def sync():
        if torch is not None and torch.cuda.is_available():
            torch.cuda.synchronize()

    if torch is not None:
        rec["torch_version"] = getattr(torch, "__version__", "?")
        if torch.cuda.is_available():
            rec["device_name"] = torch.cuda.get_device_name(0)
    oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", MemoryError) if torch else MemoryError
    chunk_fn = sm.Simulator._compute_chunk_intensity
    run_fn = sm.Simulator.run
    sig = inspect.signature(chunk_fn)
    t_first: List[float] = []

    def timed_chunk(self, *a, **k):
        b = sig.bind(self, *a, **k).arguments
        coords, rot_a = b["pixel_coords_meters"], b["rot_a"]
        sync()
        t0 = time.perf_counter()
        if not t_first:
            t_first.append(t0)
        try:
            out = chunk_fn(self, *a, **k)
            sync()
        except oom as e:
            rec["stopped"] = "out of memory: %s" % str(e).splitlines()[0][:200]
            raise _Stop()
        dt = time.perf_counter() - t0
        s_rows, f = int(coords.shape[0]), int(coords.shape[1])
        n_phi, n_mos = int(rot_a.shape[0]), int(rot_a.shape[1])
        ov = int(b["oversample"])
        n_src = int(b["n_sources"])
        rec["chunks"].append({"rows": s_rows, "seconds": dt,
                              "evaluations": s_rows * f * ov * ov * n_src * n_phi * n_mos})
        rec["counts"] = {"fpixels": f, "oversample": ov, "subpixels": ov * ov, "sources": n_src,
                         "phisteps": n_phi, "mosaic_domains": n_mos, "thicksteps": 1}
        if time.perf_counter() - t_first[0] > args.budget_s:
            rec["stopped"] = "chunk budget of %g s" % args.budget_s
            raise _Stop()
        return out

    def timed_run(self, *a, **k):
        rec["spixels"] = int(self.detector.config.spixels)
        t0 = time.perf_counter()
        out = run_fn(self, *a, **k)
        sync()
        rec["run_seconds"] = time.perf_counter() - t0
        rec["complete"] = True
        try:
            import numpy as np
            img = out.detach().float().cpu().numpy()
            rec["image"] = {"max": float(img.max()), "mean": float(img.mean()),
                            "finite": bool(np.isfinite(img).all())}
        except Exception as e:
            rec["image_error"] = str(e)[:200]
        raise _Stop()       # skip its statistics/outputs: the render is what is timed

    sm.Simulator._compute_chunk_intensity = timed_chunk
    sm.Simulator.run = timed_run
    cli.Simulator.run = timed_run   # same class object; kept explicit in case it is re-exported
    sys.argv = ["nanoBragg"] + list(args.words)
    t0 = time.perf_counter()
    try:
        cli.main()
        rec["error"] = "its main() returned without rendering"
    except _Stop:
        pass
    except SystemExit as e:
        rec["error"] = "its CLI exited with status %s" % e.code
    except BaseException as e:
        rec["error"] = "%s: %s" % (type(e).__name__, str(e)[:400])
    rec["main_seconds"] = time.perf_counter() - t0
    dump()
    return 0 if "error" not in rec else 4


def summarise_torch(rec: Dict[str, object]) -> Dict[str, object]:
    """Rates from a worker record: all chunks, and the steady state without the first (warm-up) chunk."""
    chunks = rec.get("chunks") or []
    out: Dict[str, object] = {}
    if not chunks:
        return out
    rows = sum(c["rows"] for c in chunks)
    ev = sum(c["evaluations"] for c in chunks)
    sec = sum(c["seconds"] for c in chunks)
    out.update(rows_done=rows, evaluations_done=ev, chunk_seconds=sec, samples_per_s_all_chunks=ev / sec)
    steady = chunks[1:] or chunks
    out["samples_per_s"] = sum(c["evaluations"] for c in steady) / sum(c["seconds"] for c in steady)
    out["first_chunk_s"] = chunks[0]["seconds"]
    return out


def worker_command(carry: str, words: Sequence[str], budget_s: float, json_path: str) -> List[str]:
    return [sys.executable, os.path.abspath(__file__), "torch-worker", "--src", os.path.join(carry, TORCH_SUB, "src"),
            "--budget-s", "%g" % budget_s, "--json", json_path, "--"] + list(words)


def anchor_torch(carry: str, words: Sequence[str], ours: Optional[Dict[str, int]], rows: int,
                 budget_s: float, deadline: float) -> Dict[str, object]:
    result: Dict[str, object] = {"name": "nanobrag_torch"}
    src = os.path.join(carry, TORCH_SUB, "src", "nanobrag_torch", "__main__.py")
    if not os.path.isfile(src):
        result["error"] = "%s missing: run `python bench/gpu_anchors.py prepare` before the device run" % src
        return result
    with open(os.path.join(carry, TORCH_SUB, "SOURCE.txt")) as fh:
        result["source"] = fh.read().strip()
    dtypes = ("float64", "float32")
    for i, dtype in enumerate(dtypes):
        rec: Dict[str, object] = {}
        result[dtype] = rec
        r = rows
        while True:
            left = deadline - time.time()
            if left < 30:
                rec["error"] = "skipped: anchor budget"
                break
            n = len(dtypes) - i
            bud = min(budget_s, max(5.0, (left - n * TORCH_SETUP_EST) / n))
            work = tempfile.mkdtemp(prefix="nb-anchor-torch-")
            jpath = os.path.join(work, "rec.json")
            tw = torch_words(words, dtype, r)
            cmd = worker_command(carry, tw, bud, jpath)
            rec["command"] = "nanoBragg " + " ".join(tw)
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True,
                                      timeout=min(bud + T_TORCH_OVERHEAD, max(5.0, left)))
                w = {}
                if os.path.isfile(jpath):
                    with open(jpath) as fh:
                        w = json.load(fh)
                else:
                    w["error"] = "worker exit %d: %s" % (proc.returncode, (proc.stderr or proc.stdout)[-600:])
                if w.get("error") and proc.stderr:
                    w["stderr_tail"] = proc.stderr.strip()[-600:]
            except subprocess.TimeoutExpired:
                w = {"error": "timed out"}
            finally:
                shutil.rmtree(work, ignore_errors=True)
            w["wall_s"] = time.perf_counter() - t0
            w["rows_per_chunk"] = r
            rec.update(w)
            if str(w.get("stopped", "")).startswith("out of memory") and not w.get("chunks") and r > 1:
                r //= 2
                log("nanobrag_torch %s: out of memory, again with %d rows per chunk" % (dtype, r))
                continue
            break
        rec.update(summarise_torch(rec))
        c = rec.get("counts")
        if c and ours:
            diff = {k: (c.get(k), ours[k]) for k in ("fpixels", "oversample", "sources", "phisteps",
                                                      "mosaic_domains") if c.get(k) != ours[k]}
            rec["counts_as_ours"] = not diff
            if diff:
                rec["counts_differ"] = diff
        log("nanobrag_torch %s: %s samples/s over %s rows%s" % (
            dtype, _fmt(rec.get("samples_per_s"), "%.3g"), rec.get("rows_done", 0),
            "" if not rec.get("error") else " (error: %s)" % str(rec["error"])[:200]))
    return result


# --------------------------------------------------------------------------- report
def _fmt(v, f: str) -> str:
    return "-" if v is None else f % v


def our_counts(words: Sequence[str]) -> Optional[Dict[str, int]]:
    try:
        import nanobrag_numba as nb
        prep = nb.Simulator(list(words) + ["-roi", "0", "0", "0", "0"], device="cpu").prepare()
        return bc.counts_from_prep(prep)
    except Exception as e:
        log("our G1 counts not available: %s" % e)
        return None


def markdown(rep: Dict[str, object]) -> str:
    lines = ["## Same-card anchors (G1)", "",
             "- GPU: %s; %s" % (rep.get("gpu"), rep.get("date")),
             "- G1: `%s`" % " ".join(rep.get("words", [])),
             "- G1 samples (evaluations) per image, ours: %s" % _fmt(rep.get("evaluations"), "%.4g"), "",
             "| program | precision | samples/s | kernel or render s | note |", "| --- | --- | --- | --- | --- |"]
    c = rep.get("nanoBraggCUDA") or {}
    for precision, label in (("double", "df64 (its -precision double)"), ("single", "single")):
        r = c.get(precision) or {}
        note = r.get("error") or c.get("error") or (
            ("KERNEL_MS" if r.get("kernel_s") else "no KERNEL_MS line") + "; wall - roi0 estimate %s samples/s"
            % _fmt(r.get("samples_per_s_wall_estimate"), "%.3g"))
        if r.get("counts_as_ours") is False:
            note += "; counts differ from ours: %s" % r.get("counts_differ")
        lines.append("| nanoBraggCUDA | %s | %s | %s | %s |" % (label, _fmt(r.get("samples_per_s"), "%.3g"),
                                                              _fmt(r.get("kernel_s"), "%.3f"), note))
    t = rep.get("nanobrag_torch") or {}
    for dtype in ("float64", "float32"):
        r = t.get(dtype) or {}
        if r.get("error") or t.get("error"):
            note = str(r.get("error") or t.get("error"))[:300]
        else:
            note = "%s/%s rows, %s rows/chunk%s" % (r.get("rows_done"), r.get("spixels", "?"),
                                                   r.get("rows_per_chunk"),
                                                   "" if r.get("complete") else " (%s)" % r.get("stopped"))
            if r.get("counts_as_ours") is False:
                note += "; counts differ from ours: %s" % r.get("counts_differ")
        lines.append("| nanobrag_torch | %s | %s | %s | %s |" % (dtype, _fmt(r.get("samples_per_s"), "%.3g"),
                                                               _fmt(r.get("chunk_seconds"), "%.3f"), note))
    lines += ["", "nanoBraggCUDA: built here with `%s` (%s), kernel time from its `KERNEL_MS` (CUDA events "
              "around its launch), minimum of %s runs. nanobrag_torch: its CLI, eager chunks of "
              "`-pixel_batch_size` rows, samples/s of the chunks after the first (warm-up)."
              % ((c.get("build") or {}).get("nvcc_version", "nvcc"), (c.get("build") or {}).get("arch", "?"),
                 rep.get("repeat")), ""]
    for key in ("nanoBraggCUDA", "nanobrag_torch"):
        src = (rep.get(key) or {}).get("source")
        if src:
            lines.append("- %s source: %s" % (key, src.replace("\n", "; ")))
    return "\n".join(lines) + "\n"


def plan(args, words: Sequence[str]) -> Dict[str, object]:
    """What `run` would do, and the flag check against the carried sources (no GPU, nvcc or torch)."""
    carry = args.carry
    p: Dict[str, object] = {"carry": carry, "budget_s": args.budget_s, "only": args.only, "g1_words": list(words)}
    csrc = os.path.join(carry, C_SUB, "src")
    tool = find_nvcc()
    nvcc = tool["nvcc"] or "nvcc"
    b = build_commands(nvcc, csrc, os.path.join(carry, C_SUB, "build-" + DEFAULT_ARCH), DEFAULT_ARCH)
    runs = [[b["exe"]] + c_words(words, prec, roi0) for prec, _ in C_PRECISIONS
            for roi0 in [False] * args.repeat + [True]]
    c_plan = {"present": all(os.path.isfile(os.path.join(csrc, f)) for f in C_REQUIRED),
              "nvcc_here": tool["nvcc"], "compile": [shlex.join(c) for c in b["compile"]],
              "link": shlex.join(b["link"]), "runs": [shlex.join(r) for r in runs],
              "timeouts_s": {"build": T_BUILD, "each_run": T_C_RUN}}
    if os.path.isfile(os.path.join(csrc, "nanoBragg.c")):
        with open(os.path.join(csrc, "nanoBragg.c"), errors="replace") as fh:
            c_plan["unknown_flags"] = sorted(set(check_c_flags(runs[-1][1:], fh.read())))
    tmain = os.path.join(carry, TORCH_SUB, "src", "nanobrag_torch", "__main__.py")
    t_plan: Dict[str, object] = {"present": os.path.isfile(tmain), "runs": []}
    for dtype in ("float64", "float32"):
        tw = torch_words(words, dtype, args.torch_rows)
        t_plan["runs"].append(shlex.join(worker_command(carry, tw, args.torch_budget_s, "REC.json")))
    t_plan["timeouts_s"] = {"chunks": args.torch_budget_s, "each_run": args.torch_budget_s + T_TORCH_OVERHEAD}
    if t_plan["present"]:
        with open(tmain, errors="replace") as fh:
            t_plan["unknown_flags"] = sorted(set(check_torch_flags(torch_words(words, "float64", 1), fh.read())))
        tsim = os.path.join(os.path.dirname(tmain), "simulator.py")
        if os.path.isfile(tsim):
            with open(tsim, errors="replace") as fh:
                t_plan["hooks_missing"] = check_torch_hooks(fh.read())
        else:
            t_plan["hooks_missing"] = ["simulator.py"]
    p["nanoBraggCUDA"], p["nanobrag_torch"] = c_plan, t_plan
    return p


def cmd_run(args) -> int:
    from bench.make_hkl import ensure_hkl
    hkl = ensure_hkl() if not args.dry_run else os.path.join(HERE, "out", bc.HKL_NAME)
    words = g1_words(hkl)
    if args.dry_run:
        p = plan(args, words)
        print(json.dumps(p, indent=1))
        return 0
    os.makedirs(args.out, exist_ok=True)
    deadline = time.time() + args.budget_s
    rep: Dict[str, object] = {"gpu": gpu_name(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "host": platform.node(), "words": words, "repeat": args.repeat,
                              "budget_s": args.budget_s}
    ours = our_counts(words)
    if ours:
        rep["counts"] = ours
        rep["evaluations"] = bc.evaluations(ours)

    def write():
        with open(os.path.join(args.out, "gpu_anchors.json"), "w") as fh:
            json.dump(rep, fh, indent=1, default=str)
        with open(os.path.join(args.out, "gpu_anchors.md"), "w") as fh:
            fh.write(markdown(rep))

    only = set(args.only.split(","))
    if "c" in only:
        log("nanoBraggCUDA: build and G1 ...")
        try:
            c_deadline = min(deadline, time.time() + C_SHARE * args.budget_s) if "torch" in only else deadline
            rep["nanoBraggCUDA"] = anchor_c(args.carry, words, ours, args.repeat, c_deadline)
        except Exception as e:
            rep["nanoBraggCUDA"] = {"error": "%s: %s" % (type(e).__name__, e)}
        write()
    if "torch" in only:
        log("nanobrag_torch: G1 ...")
        try:
            rep["nanobrag_torch"] = anchor_torch(args.carry, words, ours, args.torch_rows, args.torch_budget_s,
                                                 deadline)
        except Exception as e:
            rep["nanobrag_torch"] = {"error": "%s: %s" % (type(e).__name__, e)}
        write()
    write()
    log("report: %s" % os.path.join(args.out, "gpu_anchors.md"))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare", help="copy the two programs' sources into the carry folder")
    pp.add_argument("--carry", default=CARRY)
    pp.add_argument("--c-from", help="bl831/nanoBragg checkout or git repository (or its cuda/src)")
    pp.add_argument("--torch-from", help="hoidn/nanoBragg checkout or git repository")
    bp = sub.add_parser("build", help="only build nanoBraggCUDA from the carry folder (no GPU needed)")
    bp.add_argument("--carry", default=CARRY)
    bp.add_argument("--arch", help="sm_XY (default: the GPU's, else %s)" % DEFAULT_ARCH)
    rp = sub.add_parser("run", help="build and run the anchors on G1, write OUT/gpu_anchors.{json,md}")
    rp.add_argument("out")
    rp.add_argument("--carry", default=CARRY)
    rp.add_argument("--dry-run", action="store_true", help="print the plan and check the flags, run nothing")
    rp.add_argument("--budget-s", type=float, default=float(os.environ.get("NB_ANCHORS_BUDGET_S", 240)),
                    help="the whole run (default 240, or $NB_ANCHORS_BUDGET_S)")
    rp.add_argument("--only", default="c,torch", help="c, torch or c,torch")
    rp.add_argument("--repeat", type=int, default=2, help="full nanoBraggCUDA runs per precision (minimum kept)")
    rp.add_argument("--torch-rows", type=int, default=TORCH_ROWS, help="nanobrag_torch -pixel_batch_size")
    rp.add_argument("--torch-budget-s", type=float, default=TORCH_BUDGET, help="seconds of chunks per dtype")
    wp = sub.add_parser("torch-worker", help=argparse.SUPPRESS)
    wp.add_argument("--src", required=True)
    wp.add_argument("--budget-s", type=float, required=True)
    wp.add_argument("--json", required=True)
    wp.add_argument("words", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    if args.cmd == "prepare":
        args.carry = os.path.abspath(args.carry)
        return cmd_prepare(args)
    if args.cmd == "build":
        try:
            info = build_c(os.path.abspath(args.carry), args.arch or gpu_arch(), time.time() + T_BUILD)
        except Exception as e:
            log("build FAILED: %s" % e)
            return 1
        log("built %s in %.1f s (%s, %s)" % (info["exe"], info["build_seconds"], info["nvcc_version"], info["arch"]))
        return 0
    if args.cmd == "torch-worker":
        if args.words and args.words[0] == "--":
            args.words = args.words[1:]
        return torch_worker(args)
    args.carry = os.path.abspath(args.carry)
    return cmd_run(args)


if __name__ == "__main__":
    sys.exit(main())
