"""The register report of the CUDA kernels (bench/ptx.py, issue 10): parser, occupancy, versions; no GPU."""
import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)

from bench import cases, ptx  # noqa: E402

KERNEL = ("_ZN14nanobrag_numba7kernels4cuda12_make_kernel12_3clocals_3e13render_kernelB2v1B104cw51cXTLSUwv1sDUaKthq"
          "E951KParams_28int64_2c_20float64_29ArrayIdLi2E1C7mutable7alignedExx")

# ptxas 13.5 -v -arch=sm_90 on the float64 PTX of the generic kernel (name shortened)
SAMPLE_DOUBLE = """\
ptxas info    : 280 bytes gmem
ptxas info    : Compiling entry function '%s' for 'sm_90'
ptxas info    : Function properties for %s
    48 bytes stack frame, 16 bytes spill stores, 8 bytes spill loads
ptxas info    : Used 255 registers, used 0 barriers, 48 bytes cumulative stack size
ptxas info    : Compile time = 1103.080 ms
ptxas info    : Function properties for __internal_trig_reduction_slowpathd
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
""" % (KERNEL, KERNEL)

# two kernels and a device function in one output (nvcc --ptxas-options=-v on a .cu file)
SAMPLE_TWO = """\
ptxas info    : 0 bytes gmem
ptxas info    : Function properties for _Z6helperPf
    24 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Compiling entry function '_Z11smallKernelPf' for 'sm_90'
ptxas info    : Function properties for _Z11smallKernelPf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 12 registers, used 0 barriers, 360 bytes cmem[0]
ptxas info    : Compile time = 3.1 ms
ptxas info    : Compiling entry function '_Z24nanoBraggSpotsCUDAKernelPK14detectorParamsPfi' for 'sm_90'
ptxas info    : Function properties for _Z24nanoBraggSpotsCUDAKernelPK14detectorParamsPfi
    32 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 64 registers, used 1 barriers, 32 bytes cumulative stack size, 12 bytes smem
ptxas info    : Compile time = 512.449 ms
"""


def test_parser_reads_the_kernel_entry_of_a_ptxas_report():
    funcs = ptx.parse_ptxas(SAMPLE_DOUBLE)
    assert set(funcs) == {KERNEL, "__internal_trig_reduction_slowpathd"}
    assert funcs["__internal_trig_reduction_slowpathd"]["entry"] is False
    rec = ptx.kernel_entry(funcs)
    assert rec["name"] == KERNEL
    assert (rec["registers"], rec["spill_store_bytes"], rec["spill_load_bytes"], rec["stack_bytes"]) == (255, 16, 8, 48)
    assert rec["barriers"] == 0 and rec["cumulative_stack_bytes"] == 48
    assert ptx._short(rec["name"]) == "render_kernel"


def test_parser_picks_one_kernel_among_several():
    funcs = ptx.parse_ptxas(SAMPLE_TWO)
    assert funcs["_Z6helperPf"]["entry"] is False and funcs["_Z6helperPf"]["spill_store_bytes"] == 4
    with pytest.raises(ptx.ReportError, match="expected one entry function, found 2"):
        ptx.kernel_entry(funcs)
    big = ptx.kernel_entry(funcs, "nanoBraggSpotsCUDAKernel")
    assert (big["registers"], big["spill_store_bytes"], big["stack_bytes"], big["smem_bytes"]) == (64, 0, 32, 12)
    small = ptx.kernel_entry(funcs, "smallKernel")
    assert (small["registers"], small["stack_bytes"], small["spill_load_bytes"]) == (12, 0, 0)
    with pytest.raises(ptx.ReportError, match="found 0"):
        ptx.kernel_entry(funcs, "noSuchKernel")


@pytest.mark.parametrize("regs, tpb, blocks, warps, limit", [
    (255, 128, 2, 8, "registers"),    # 255 x 32 -> 8192 registers a warp: 2 warps in each 16384-register quarter
    (180, 128, 2, 8, "registers"),    # 5888 a warp: still 2 a quarter (11 a whole SM, but never more than 8 here)
    (168, 128, 3, 12, "registers"),   # 5376 a warp: 3 a quarter
    (96, 128, 5, 20, "registers"),
    (96, 32, 20, 20, "registers"),    # 3072 a warp: 5 a quarter = 20, not 65536 // 3072 = 21
    (64, 128, 8, 32, "registers"),    # 50 %
    (32, 128, 16, 64, "warps"),       # 100 %
    (16, 32, 32, 32, "blocks"),       # 32 blocks an SM at most
    (0, 128, 16, 64, "warps"),
    (256, 128, 0, 0, "registers"),    # over 255 registers a thread: no launch
    (255, 1024, 0, 0, "registers"),   # 32 warps x 8192 > 65536 registers a block: no launch
])
def test_occupancy_follows_cuda_occupancy_h(regs, tpb, blocks, warps, limit):
    occ = ptx.occupancy(regs, tpb)
    assert (occ["blocks_per_sm"], occ["warps_per_sm"], occ["limited_by"]) == (blocks, warps, limit)
    assert occ["occupancy"] == warps / 64 and occ["max_warps_per_sm"] == 64


def test_version_check_refuses_another_major_release():
    v135 = ptx.tool_version("Cuda compilation tools, release 13.5, V13.5.37\nBuild cuda_13.5.r13.5")
    assert v135 == (13, 5, "13.5.37")
    assert ptx.check_versions(v135, (13, 5, "13.5.37")) is None
    assert "minor" in ptx.check_versions((13, 4, "13.4.92"), v135)
    with pytest.raises(ptx.ReportError, match="ptxas is CUDA 12.9.86 but .* NVVM of CUDA 13.5.37"):
        ptx.check_versions((12, 9, "12.9.86"), v135)
    head = ptx.ptx_header("//\n// Cuda compilation tools, release 13.5, V13.5.37\n//\n\n.version 9.5\n.target sm_90\n")
    assert head == {"nvvm": (13, 5, "13.5.37"), "ptx_isa": "9.5"}


def test_missing_ptxas_names_the_bench_extra(monkeypatch, capsys):
    monkeypatch.setattr(ptx, "find_tool", lambda name: (None, ""))
    with pytest.raises(ptx.ReportError, match=r"pip install -e '\.\[bench\]'"):
        ptx.find_ptxas()
    assert ptx.main(["--json", os.devnull]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench.ptx: error: ptxas not found") and "[bench]" in err[0]


def test_unknown_variant_is_refused(capsys):
    assert ptx.main(["--variants", "G1,nope"]) == 2
    assert "unknown variant(s) nope (known: G1, generic, " in capsys.readouterr().err


def test_g1_signature_is_the_type_of_a_prepared_g1_launch(tmp_path):
    """The report compiles the kernel for the argument types that a G1 launch passes (render_cuda)."""
    from numba import typeof
    from nanobrag_numba.api import config_from_flags
    from nanobrag_numba.example import write_p1_hkl
    from nanobrag_numba.kernels.cuda import TRACE_FIELDS
    from nanobrag_numba.kernels.physics import make_kparams
    from nanobrag_numba.simulator import prepare
    assert [v.name for v in ptx.VARIANTS][0] == "G1"
    hkl = str(tmp_path / "small.hkl")
    write_p1_hkl(hkl, cell=cases.CELL, dmin=10.0, seed=1, F000=0.0)
    cfg = config_from_flags(cases.CASES["G1"].words(hkl) + ["-device", "cpu", "-detpixels", "16"])
    prep = prepare(cfg, lambda s: None, write_dump=False)
    # a G1 run launches the common-case variant, the one the report calls "G1"
    from nanobrag_numba.kernels import variants as V
    assert V.variant_of(prep.params) == V.COMMON
    npix = 16 * 16
    for precision, dt in (("double", np.float64), ("single", np.float32)):
        params = prep.params if precision == "double" else make_kparams(np.float32, **prep.params._asdict())
        # as device_tables() and render_cuda() build them
        args = (params, np.ascontiguousarray(prep.sources, dtype=dt), np.ascontiguousarray(prep.rot, dtype=dt),
                np.ascontiguousarray(prep.phi_map), np.ascontiguousarray(prep.phi_map_first),
                np.ascontiguousarray(prep.Fhkl, dtype=dt), np.ascontiguousarray(prep.mask),
                np.ascontiguousarray(prep.panels, dtype=dt), np.empty((6, npix)), np.empty(npix, dtype=np.int64), np.empty((1, TRACE_FIELDS), dtype=dt),
                0, npix)
        assert tuple(typeof(a) for a in args) == ptx.g1_signature(precision)


def _bench_skip_reason():
    path, _ = ptx.find_tool("ptxas")
    if not path:
        return "ptxas not installed: pip install -e '.[bench]' (the bench extra: nvidia-cuda-nvcc)"
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib
        load_nvidia_dynamic_lib("nvvm")
    except Exception:
        return "NVVM not installed: pip install -e '.[bench]' (the bench extra: numba-cuda[cu13])"
    return None


@pytest.mark.slow
def test_register_report_of_every_variant(tmp_path):
    reason = _bench_skip_reason()
    if reason:
        pytest.skip(reason)
    out, md = tmp_path / "ptx.json", tmp_path / "ptx.md"
    assert ptx.main(["--json", str(out), "--markdown", str(md)]) == 0
    records = json.loads(out.read_text())
    assert [(r["name"], r["precision"]) for r in records] == [(v.name, p) for v in ptx.VARIANTS
                                                              for p in ("double", "single")]
    for r in records:
        for key in ("registers", "spill_store_bytes", "spill_load_bytes", "stack_bytes"):
            assert isinstance(r[key], int) and r[key] >= 0
        assert 0 < r["registers"] <= 255
        assert r["ptxas_version"].split(".")[0] == r["nvvm_version"].split(".")[0]
        assert r["warps_per_sm"] == ptx.occupancy(r["registers"], r["threads_per_block"])["warps_per_sm"]
    assert "| G1 | double |" in md.read_text()


def test_c_kernel_folder_without_the_source_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ptx, "run", lambda args: ptx.measure_c(args.c_cuda, None))
    assert ptx.main(["--c-cuda", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no nanoBraggCUDA.cu there" in err[0]


def test_g1_report_entry_is_the_common_variant_and_generic_is_the_old_kernel():
    from nanobrag_numba.kernels import cuda as kcuda
    from nanobrag_numba.kernels import physics, variants as V
    by_name = {v.name: v for v in ptx.VARIANTS}
    assert by_name["G1"].kernel("double") is kcuda.kernel("double", V.COMMON)
    assert by_name["generic"].kernel("double") is kcuda.kernel("double", V.GENERIC)
    # the generic build is physics.py itself (the CPU kernel's source), every option at run time
    assert V.physics(V.GENERIC) is physics
    assert all(getattr(physics, name) == physics.ANY for _, name in V.OPTION_GLOBALS)
    common = V.physics(V.COMMON)
    assert common.V_SHAPE == physics.SQUARE and common.V_QUIRKS == physics.OFF
