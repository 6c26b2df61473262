"""Register report of the CUDA kernels, without a GPU (issue 10, deliverable 2).

``python -m bench.ptx [--json PATH] [--markdown PATH]`` compiles every
kernel variant of ``VARIANTS`` to PTX for sm_90 with Numba's NVVM, in float64
and float32, runs ``ptxas -v -arch=sm_90`` on each PTX and prints, per
variant and precision, the registers per thread, the spill store/load bytes,
the stack frame and the theoretical occupancy (resident warps per
multiprocessor, from the register count and the launch's block size).

Needs the ``bench`` extra (``pip install -e '.[bench]'``): NVVM from
``numba-cuda[cu13]`` and ``ptxas`` from the ``nvidia-cuda-nvcc`` wheel of the
same CUDA release.  The ptxas must match the NVVM that wrote the PTX: a
different CUDA major version is refused, a different minor version warned
about.  Both versions go into every record.

``--c-cuda DIR`` also compiles the C program's CUDA kernel
(``cuda/src/nanoBraggCUDA.cu`` of a bl831/nanoBragg checkout, fetched by the
user; nothing of it is kept) with the nvcc of the same wheel, as records
named ``C nanoBraggCUDA``, for comparison.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import platform
import re
import shutil
import site
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
ARCH = "sm_90"
CC = (9, 0)
EXTRA_HINT = "pip install -e '.[bench]' (the nvidia-cuda-nvcc wheel that ships ptxas)"


class ReportError(Exception):
    """A problem that stops the report (printed as one line, exit status 2)."""


# ----------------------------------------------------------------- occupancy
# sm_90 (H100/H200) limits, as in cuda_occupancy.h and the CUDA C Programming
# Guide's table of compute capabilities.
@dataclass(frozen=True)
class SMLimits:
    regs_per_sm: int = 65536
    regs_per_block: int = 65536
    max_regs_per_thread: int = 255
    reg_alloc_granularity: int = 256     # registers are allocated per warp, in units of 256
    sub_partitions: int = 4              # each holds a quarter of the register file
    max_warps_per_sm: int = 64
    max_blocks_per_sm: int = 32
    warp_size: int = 32


SM90 = SMLimits()


def _round_up(x: int, unit: int) -> int:
    return -(-x // unit) * unit


def occupancy(registers: int, threads_per_block: int, sm: SMLimits = SM90) -> Dict[str, object]:
    """Theoretical occupancy of a kernel on one multiprocessor (shared memory not limiting).

    Follows ``cudaOccMaxBlocksPerSMRegsLimit`` of cuda_occupancy.h: a warp
    gets ``registers x 32`` registers rounded up to the allocation
    granularity; warps are placed in the four sub-partitions, each with a
    quarter of the register file; whole blocks are resident.  Returns the
    resident blocks and warps per SM, the occupancy (warps / max warps) and
    the limit that decides (``registers``, ``warps`` or ``blocks``; on a tie
    the warp or block maximum).
    """
    if registers < 0 or threads_per_block < 1:
        raise ValueError("registers >= 0 and threads_per_block >= 1")
    warps_per_block = -(-threads_per_block // sm.warp_size)
    regs_per_warp = _round_up(registers * sm.warp_size, sm.reg_alloc_granularity)
    limits = {"warps": sm.max_warps_per_sm // warps_per_block, "blocks": sm.max_blocks_per_sm}
    if regs_per_warp == 0:
        limits["registers"] = sm.max_blocks_per_sm
    elif (registers > sm.max_regs_per_thread
          or regs_per_warp * _round_up(warps_per_block, sm.sub_partitions) > sm.regs_per_block):
        limits["registers"] = 0         # the launch fails
    else:
        warps_per_partition = (sm.regs_per_sm // sm.sub_partitions) // regs_per_warp
        limits["registers"] = warps_per_partition * sm.sub_partitions // warps_per_block
    blocks = min(limits.values())
    # on a tie the hardware's warp or block maximum is named: fewer registers would not add warps
    limited_by = min(("warps", "blocks", "registers"), key=lambda k: limits[k])
    warps = blocks * warps_per_block
    return {"threads_per_block": threads_per_block, "blocks_per_sm": blocks, "warps_per_sm": warps,
            "max_warps_per_sm": sm.max_warps_per_sm, "occupancy": warps / sm.max_warps_per_sm,
            "limited_by": limited_by}


# ------------------------------------------------------------ ptxas -v output
_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_PROPS = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:, used (\d+) barriers)?(?:, (\d+) bytes cumulative stack size)?"
                   r"(?:, (\d+) bytes smem)?")


def parse_ptxas(text: str) -> Dict[str, Dict[str, object]]:
    """The functions of a ``ptxas -v`` output, by name.

    Every function with a "Function properties" block gets its stack frame
    and spill bytes; entry functions (kernels) also get their register
    count, barriers, cumulative stack and static shared memory from the
    "Used N registers" line that follows their "Compiling entry function".
    """
    funcs: Dict[str, Dict[str, object]] = {}
    entry = props = None
    for line in text.splitlines():
        m = _ENTRY.search(line)
        if m:
            entry = m.group(1)
            funcs.setdefault(entry, {"name": entry})["entry"] = True
            continue
        m = _PROPS.search(line)
        if m:
            props = m.group(1)
            funcs.setdefault(props, {"name": props}).setdefault("entry", False)
            continue
        m = _FRAME.search(line)
        if m and props is not None:
            funcs[props].update(stack_bytes=int(m.group(1)), spill_store_bytes=int(m.group(2)),
                                spill_load_bytes=int(m.group(3)))
            props = None
            continue
        m = _USED.search(line)
        if m and entry is not None:
            rec = funcs[entry]
            rec["registers"] = int(m.group(1))
            for key, g in (("barriers", 2), ("cumulative_stack_bytes", 3), ("smem_bytes", 4)):
                if m.group(g) is not None:
                    rec[key] = int(m.group(g))
            entry = None
    return funcs


def kernel_entry(funcs: Dict[str, Dict[str, object]], contains: str = "") -> Dict[str, object]:
    """The one entry function (kernel) of a parsed output whose name contains ``contains``."""
    entries = [f for name, f in funcs.items() if f.get("entry") and contains in name]
    if len(entries) != 1:
        raise ReportError("ptxas -v output: expected one entry function%s, found %d (%s)"
                          % (" containing %r" % contains if contains else "", len(entries),
                             ", ".join(sorted(f["name"][:60] for f in entries)) or "none"))
    rec = dict(entries[0])
    if "registers" not in rec:
        raise ReportError("ptxas -v output: no register count for %s" % rec["name"][:60])
    rec.setdefault("stack_bytes", 0)
    rec.setdefault("spill_store_bytes", 0)
    rec.setdefault("spill_load_bytes", 0)
    return rec


# --------------------------------------------------------- tools and versions
_RELEASE = re.compile(r"release (\d+)\.(\d+), V([\d.]+)")


def tool_version(text: str) -> Optional[Tuple[int, int, str]]:
    """(major, minor, full) from a "Cuda compilation tools, release 13.5, V13.5.37" line."""
    m = _RELEASE.search(text)
    return (int(m.group(1)), int(m.group(2)), m.group(3)) if m else None


def _site_dirs() -> List[str]:
    dirs = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    user = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
    return dirs + ([user] if user else []) + [p for p in sys.path if p.endswith("-packages")]


def find_tool(name: str) -> Tuple[Optional[str], str]:
    """(path, how it was found) of a CUDA binary (ptxas, nvcc): the pip wheels first, then PATH."""
    try:
        from cuda.pathfinder import find_nvidia_binary_utility
        path = find_nvidia_binary_utility(name)
        if path:
            return path, "cuda.pathfinder"
    except Exception:
        pass
    for d in dict.fromkeys(_site_dirs()):
        hits = sorted(glob.glob(os.path.join(d, "nvidia", "**", "bin", name), recursive=True), reverse=True)
        hits = [h for h in hits if os.access(h, os.X_OK)]
        if hits:
            return hits[0], "site-packages"
    path = shutil.which(name)
    return (path, "PATH") if path else (None, "")


def find_ptxas(explicit: Optional[str] = None) -> Tuple[str, str]:
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise ReportError("--ptxas %s: not an executable file" % explicit)
        return explicit, "--ptxas"
    path, how = find_tool("ptxas")
    if not path:
        raise ReportError("ptxas not found (neither in a NVIDIA pip wheel nor on PATH): " + EXTRA_HINT)
    return path, how


def run_version(exe: str) -> Tuple[int, int, str]:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    v = tool_version(out)
    if v is None:
        raise ReportError("%s --version: no CUDA release in its output" % exe)
    return v


def check_versions(ptxas: Tuple[int, int, str], nvvm: Tuple[int, int, str]) -> Optional[str]:
    """None when ptxas and NVVM are of the same CUDA release; a warning for another minor release.

    A different major release is refused (ReportError): its register
    allocation is not the one the kernels get, or it cannot read the PTX.
    """
    if ptxas[0] != nvvm[0]:
        raise ReportError("ptxas is CUDA %s but the kernels are compiled by NVVM of CUDA %s: install the "
                          "nvidia-cuda-nvcc wheel of CUDA %d (pip install -e '.[bench]') or pass --ptxas"
                          % (ptxas[2], nvvm[2], nvvm[0]))
    if ptxas[:2] != nvvm[:2]:
        return ("warning: ptxas is CUDA %s, NVVM is CUDA %s (same major version, different minor): the "
                "register counts may differ from those of a matched toolkit" % (ptxas[2], nvvm[2]))
    return None


def ptx_header(ptx: str) -> Dict[str, object]:
    """The NVVM release that wrote a PTX ("// Cuda compilation tools, release ...") and its ISA version."""
    head = ptx[:2000]
    v = tool_version(head)
    m = re.search(r"^\.version (\d+\.\d+)", head, re.M)
    return {"nvvm": v, "ptx_isa": m.group(1) if m else None}


def run_ptxas(ptxas: str, ptx: str, arch: str = ARCH) -> str:
    """``ptxas -v -arch=ARCH`` on a PTX text; returns its report (stderr and stdout)."""
    with tempfile.TemporaryDirectory(prefix="nb-ptx-") as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        proc = subprocess.run([ptxas, "-v", "-arch=" + arch, src, "-o", os.path.join(tmp, "kernel.cubin")],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        raise ReportError("ptxas failed (status %d): %s" % (proc.returncode,
                                                             (proc.stderr or proc.stdout).strip()[-500:]))
    return proc.stderr + proc.stdout


# ------------------------------------------------------------------ variants
def g1_signature(precision: str):
    """The argument types of the CUDA kernel in a G1 launch (``render_cuda``'s call).

    KParams fields have fixed types (int64, and float64 or float32 by
    precision), so these are the types of every launch of that precision;
    tests/test_bench_ptx.py checks them against the tables of a prepared G1
    run.
    """
    import numpy as np
    from numba import typeof, types
    from nanobrag_numba.kernels.physics import KPARAMS_FIELDS, make_kparams
    dt = np.float32 if precision == "single" else np.float64
    ft = types.float32 if precision == "single" else types.float64
    p = make_kparams(dt, **{k: 0 for k in KPARAMS_FIELDS})
    # params, sources, rot, phi_map, phi_map_first, Fhkl, mask, panels, out, out_oob, trace, first, last
    return (typeof(p), ft[:, ::1], ft[:, :, ::1], types.int32[::1], types.int32[::1], ft[:, :, ::1],
            types.uint16[::1], ft[:, ::1], types.float64[:, ::1], types.int64[::1], ft[:, ::1], types.int64,
            types.int64)


def _variant_kernel(**fixed):
    """precision -> the CUDA kernel of the common-case variant with ``fixed`` options changed
    (``generic=True``: every option at run time, the kernel before variants)."""
    def build(precision: str):
        from nanobrag_numba.kernels import cuda as kcuda
        from nanobrag_numba.kernels import variants as V
        variant = V.GENERIC if fixed.get("generic") else V.COMMON._replace(**fixed)
        return kcuda.kernel(precision, variant)
    return build


def _threads_per_block() -> int:
    from nanobrag_numba.kernels import cuda as kcuda
    return kcuda.THREADS_PER_BLOCK


@dataclass(frozen=True)
class Variant:
    """One compile-time variant of the CUDA kernel.

    name : the report's name ("G1": the variant the G1 benchmark launches)
    kernel : precision -> the numba.cuda dispatcher of that variant
    signature : precision -> its argument types
    threads_per_block : () -> the block size it is launched with
    """

    name: str
    kernel: Callable[[str], object]
    signature: Callable[[str], tuple]
    threads_per_block: Callable[[], int] = _threads_per_block


#: compile-time variants (kernels/variants.py): "G1" is variants.COMMON, the one a G1 run selects;
#: "generic" decides every option at run time (the single kernel before variants)
VARIANTS: List[Variant] = [
    Variant("G1", _variant_kernel(), g1_signature),
    Variant("generic", _variant_kernel(generic=True), g1_signature),
    Variant("G1+interp", _variant_kernel(interpolate=1), g1_signature),
    Variant("G1+quirks", _variant_kernel(quirks=1), g1_signature),
    Variant("G1+panels", _variant_kernel(panels=1), g1_signature),   # a multi-panel detector (panel table)
]
PRECISIONS = ("double", "single")


def compile_variant(variant: Variant, precision: str) -> str:
    """The PTX of a variant for sm_90, with the dispatcher's own compile options."""
    from numba import cuda
    disp = variant.kernel(precision)
    opts = getattr(disp, "targetoptions", {})
    kw = {k: opts[k] for k in ("debug", "lineinfo", "fastmath", "opt", "forceinline", "launch_bounds")
          if k in opts}
    ptx, _ = cuda.compile_ptx(disp.py_func, variant.signature(precision), cc=CC, **kw)
    return ptx


def _short(name: str) -> str:
    """A readable kernel name: the function part of a mangled one."""
    m = re.search(r"(?:\d+)(render_kernel|nanoBragg\w*Kernel)", name)
    return m.group(1) if m else name[:60]


def measure_variant(variant: Variant, precision: str, ptxas: str, ptxas_version) -> Dict[str, object]:
    t0 = time.perf_counter()
    ptx = compile_variant(variant, precision)
    compile_s = time.perf_counter() - t0
    head = ptx_header(ptx)
    nvvm = head["nvvm"]
    if nvvm is None:
        raise ReportError("the PTX of %s (%s) names no CUDA release in its header" % (variant.name, precision))
    warning = check_versions(ptxas_version, nvvm)
    if warning:
        print(warning, file=sys.stderr)
    rec = kernel_entry(parse_ptxas(run_ptxas(ptxas, ptx)))
    out = {"name": variant.name, "precision": precision,
           "registers": rec["registers"], "spill_store_bytes": rec["spill_store_bytes"],
           "spill_load_bytes": rec["spill_load_bytes"], "stack_bytes": rec["stack_bytes"]}
    out.update(occupancy(rec["registers"], variant.threads_per_block()))
    out.update(kernel=_short(rec["name"]), arch=ARCH, ptxas_version=ptxas_version[2], nvvm_version=nvvm[2],
               ptx_isa=head["ptx_isa"], compile_s=round(compile_s, 1))
    for key in ("barriers", "cumulative_stack_bytes"):
        if key in rec:
            out[key] = rec[key]
    return out


# ----------------------------------------------------- the C program's kernel
C_PRECISIONS = (("df64", 2), ("single", 1))     # NB_PRECISION: 2 = float-float pairs (its "double"), 1 = float
C_THREADS_PER_BLOCK = 128                        # THREADS_PER_BLOCK_X x THREADS_PER_BLOCK_Y in nanoBraggCUDA.cu


def _toolkit_tree(nvcc: str, tmp: str) -> str:
    """A CUDA tree for nvcc made of links: the pip wheels put nvcc, NVVM (cicc) and the headers in
    separate packages, and maybe in separate site-packages; nvcc.profile expects ../nvvm and ../include."""
    home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    roots = [home] + [os.path.join(d, "nvidia", os.path.basename(home)) for d in dict.fromkeys(_site_dirs())]
    roots = [r for r in dict.fromkeys(roots) if os.path.isdir(r)]
    tree = os.path.join(tmp, "cuda")
    os.makedirs(os.path.join(tree, "include"))
    os.makedirs(os.path.join(tree, "bin"))      # a real folder: nvcc takes ../ of where it is called from
    for entry in glob.glob(os.path.join(home, "bin", "*")):
        os.symlink(entry, os.path.join(tree, "bin", os.path.basename(entry)))
    for r in roots:
        if os.path.isdir(os.path.join(r, "nvvm", "bin")) and not os.path.exists(os.path.join(tree, "nvvm")):
            os.symlink(os.path.join(r, "nvvm"), os.path.join(tree, "nvvm"))
        for entry in sorted(glob.glob(os.path.join(r, "include", "*"))):
            link = os.path.join(tree, "include", os.path.basename(entry))
            if not os.path.lexists(link):
                os.symlink(entry, link)
    return tree


def measure_c(src: str, ptxas_version) -> List[Dict[str, object]]:
    """ptxas -v figures of nanoBraggCUDA.cu (through nvcc -arch=sm_90 -O3), one record per precision."""
    cu = src if src.endswith(".cu") else os.path.join(src, "nanoBraggCUDA.cu")
    if not os.path.isfile(cu):
        raise ReportError("--c-cuda %s: no nanoBraggCUDA.cu there (give its cuda/src folder)" % src)
    nvcc, _ = find_tool("nvcc")
    if not nvcc:
        raise ReportError("nvcc not found for --c-cuda: " + EXTRA_HINT)
    nvcc_version = run_version(nvcc)
    with open(cu, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    records = []
    with tempfile.TemporaryDirectory(prefix="nb-ptx-c-") as tmp:
        tree = _toolkit_tree(nvcc, tmp)
        for precision, flag in C_PRECISIONS:
            cmd = [os.path.join(tree, "bin", "nvcc"), "-O3", "-std=c++17", "-arch=" + ARCH,
                   "-DNB_PRECISION=%d" % flag, "-I", os.path.dirname(cu), "--ptxas-options=-v",
                   "-c", cu, "-o", os.path.join(tmp, "k%d.o" % flag)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise ReportError("nvcc failed on %s (status %d): %s"
                                  % (cu, proc.returncode, proc.stderr.strip()[-500:]))
            rec = kernel_entry(parse_ptxas(proc.stderr + proc.stdout), "nanoBraggSpotsCUDAKernel")
            out = {"name": "C nanoBraggCUDA", "precision": precision, "registers": rec["registers"],
                   "spill_store_bytes": rec["spill_store_bytes"], "spill_load_bytes": rec["spill_load_bytes"],
                   "stack_bytes": rec["stack_bytes"]}
            out.update(occupancy(rec["registers"], C_THREADS_PER_BLOCK))
            out.update(kernel="nanoBraggSpotsCUDAKernel", arch=ARCH, ptxas_version=nvcc_version[2],
                       nvcc_flags="-O3 -std=c++17 -arch=%s -DNB_PRECISION=%d" % (ARCH, flag),
                       source_sha256=digest)
            for key in ("barriers", "cumulative_stack_bytes", "smem_bytes"):
                if key in rec:
                    out[key] = rec[key]
            records.append(out)
    return records


# -------------------------------------------------------------------- report
def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.+)", f.read())
            cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    return "%s, %s x %d, Python %s" % (platform.system(), cpu, os.cpu_count() or 1, platform.python_version())


def versions() -> Dict[str, str]:
    from importlib import metadata
    out = {}
    for dist in ("numba", "numba-cuda", "nvidia-nvvm", "nvidia-cuda-nvcc"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def markdown(records: Sequence[Dict[str, object]], meta: Dict[str, object]) -> str:
    lines = ["# Registers of the CUDA kernels on %s (ptxas -v)" % ARCH, "",
             "Made by `python -m bench.ptx` on %s (%s): no GPU is needed." % (meta["date"], meta["machine"]),
             "ptxas %s, NVVM %s; %s." % (meta["ptxas_version"], meta["nvvm_version"],
                                        ", ".join("%s %s" % kv for kv in meta["packages"].items())),
             "Occupancy: resident warps per SM of the register limit at the launch's block size "
             "(65536 registers, 64 warps, 256-register allocation per warp, 4 sub-partitions).",
             "Targets of issue 10 for G1: float64 <= 96 registers, float32 <= 64, no spill bytes.", "",
             "| kernel | precision | registers | spill stores (B) | spill loads (B) | stack frame (B) "
             "| threads/block | warps/SM | occupancy |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        lines.append("| %s | %s | %d | %d | %d | %d | %d | %d | %.1f%% |" % (
            r["name"], r["precision"], r["registers"], r["spill_store_bytes"], r["spill_load_bytes"],
            r["stack_bytes"], r["threads_per_block"], r["warps_per_sm"], 100.0 * r["occupancy"]))
    if any(r["name"] == "C nanoBraggCUDA" for r in records):
        lines += ["", "C nanoBraggCUDA: the C program's CUDA kernel (bl831/nanoBragg cuda/src/nanoBraggCUDA.cu, "
                  "sha256 %s...), compiled with the nvcc of the same wheel, `-O3 -std=c++17 -arch=%s`; its "
                  "`df64` is `NB_PRECISION=2`, float-float pairs on the single-precision units, not float64."
                  % (next(r["source_sha256"] for r in records if r["name"] == "C nanoBraggCUDA"), ARCH)]
    return "\n".join(lines) + "\n"


def run(args) -> List[Dict[str, object]]:
    names = args.variants.split(",") if args.variants else [v.name for v in VARIANTS]
    unknown = [n for n in names if n not in {v.name for v in VARIANTS}]
    if unknown:
        raise ReportError("unknown variant(s) %s (known: %s)" % (", ".join(unknown),
                                                                ", ".join(v.name for v in VARIANTS)))
    precisions = args.precisions.split(",") if args.precisions else list(PRECISIONS)
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise ReportError("unknown precision(s) %s (double, single)" % ", ".join(bad))
    ptxas, how = find_ptxas(args.ptxas)
    ptxas_version = run_version(ptxas)
    print("ptxas %s (%s: %s)" % (ptxas_version[2], how, ptxas), file=sys.stderr)
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib
        load_nvidia_dynamic_lib("nvvm")
    except Exception:
        raise ReportError("NVVM (libnvvm) not found, the kernels cannot be compiled: " + EXTRA_HINT) from None
    records = []
    for variant in (v for v in VARIANTS if v.name in names):
        for precision in precisions:
            print("compiling %s (%s) for %s ..." % (variant.name, precision, ARCH), file=sys.stderr, flush=True)
            records.append(measure_variant(variant, precision, ptxas, ptxas_version))
    if args.c_cuda:
        records += measure_c(args.c_cuda, ptxas_version)
    return records


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ptx", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the records as JSON here")
    ap.add_argument("--markdown", help="write a Markdown table here")
    ap.add_argument("--variants", help="comma-separated variant names (default: all: %s)"
                    % ",".join(v.name for v in VARIANTS))
    ap.add_argument("--precisions", help="double,single (default: both)")
    ap.add_argument("--ptxas", help="this ptxas instead of the one of the nvidia-cuda-nvcc wheel")
    ap.add_argument("--c-cuda", metavar="DIR", help="also compile nanoBraggCUDA.cu in DIR (cuda/src of a "
                    "bl831/nanoBragg checkout) with nvcc, as 'C nanoBraggCUDA'")
    args = ap.parse_args(argv)
    try:
        records = run(args)
    except ReportError as e:
        print("bench.ptx: error: %s" % e, file=sys.stderr)
        return 2
    ours = [r for r in records if "nvvm_version" in r]
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "packages": versions(),
            "ptxas_version": records[0]["ptxas_version"] if records else "?",
            "nvvm_version": ours[0]["nvvm_version"] if ours else "?"}
    text = markdown(records, meta)
    print(text, end="")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
            f.write("\n")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
