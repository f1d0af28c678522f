"""CPU checks of the CUDA rasteriser's build, C ABI and ctypes binding (no GPU needed).

- the CUDA sources compile and link with this machine's nvcc for one architecture (env DD3G_CI_CUDA_ARCH,
  default 90), into a shared library that exports exactly the C API;
- the ctypes structs of dd3g_sdk.render.cuda match the C header's layout (sizes and every field offset,
  read from a C program compiled against cuda/include/dd3g_raster.h);
- the binding loads the library without torch and maps argument errors to status codes before any CUDA call.
Skipped where nvcc (or a C compiler) is missing.

Run: OMP_NUM_THREADS=1 python -m pytest tests/cuda/test_build_and_binding.py -q
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARCH = os.environ.get("DD3G_CI_CUDA_ARCH", "90")
EXPORTS = {"dd3g_raster_version", "dd3g_raster_status_string", "dd3g_raster_last_error",
           "dd3g_raster_workspace_size", "dd3g_raster_forward", "dd3g_raster_read_stats"}


@pytest.fixture(scope="module")
def built_lib(tmp_path_factory) -> Path:
    nvcc = shutil.which("nvcc") or (shutil.which("nvcc", path="/usr/local/cuda/bin"))
    if nvcc is None:
        pytest.skip("nvcc not found")
    out = tmp_path_factory.mktemp("lib") / "libdd3g_raster.so"
    cmd = [nvcc, "-std=c++17", "-O2", f"-arch=sm_{ARCH}", "--expt-relaxed-constexpr", "-Xcompiler",
           "-fPIC,-fvisibility=hidden", "-shared", "-cudart=static", f"-I{ROOT / 'cuda/include'}",
           f"-I{ROOT / 'cuda/src'}", str(ROOT / "cuda/src/dd3g_raster.cu"), "-o", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "warning" not in r.stderr.lower(), r.stderr[-4000:]
    return out


def test_library_exports_exactly_the_c_api(built_lib):
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm not found")
    out = subprocess.run([nm, "-D", "--defined-only", str(built_lib)], capture_output=True, text=True, check=True)
    syms = {line.split()[-1] for line in out.stdout.splitlines() if " T " in line}
    assert syms == EXPORTS


ABI_PROGRAM = r"""
#include <stddef.h>
#include <stdio.h>
#include "dd3g_raster.h"
#define F(S, f) printf("\"%s.%s\": [%zu, %zu],", #S, #f, offsetof(S, f), sizeof(((S*)0)->f));
int main(void) {
  printf("{");
  F(dd3g_raster_config, struct_size) F(dd3g_raster_config, dtype) F(dd3g_raster_config, num_gaussians)
  F(dd3g_raster_config, num_cameras) F(dd3g_raster_config, width) F(dd3g_raster_config, height)
  F(dd3g_raster_config, sh_coeffs) F(dd3g_raster_config, max_intersections) F(dd3g_raster_config, near_plane)
  F(dd3g_raster_config, far_plane) F(dd3g_raster_config, eps2d) F(dd3g_raster_config, flags)
  F(dd3g_raster_buffers, struct_size) F(dd3g_raster_buffers, reserved) F(dd3g_raster_buffers, means)
  F(dd3g_raster_buffers, quats) F(dd3g_raster_buffers, scales) F(dd3g_raster_buffers, opacities)
  F(dd3g_raster_buffers, sh) F(dd3g_raster_buffers, viewmats) F(dd3g_raster_buffers, Ks)
  F(dd3g_raster_buffers, background) F(dd3g_raster_buffers, rgb) F(dd3g_raster_buffers, alpha)
  F(dd3g_raster_buffers, depth)
  F(dd3g_raster_stats, struct_size) F(dd3g_raster_stats, reserved) F(dd3g_raster_stats, intersections)
  F(dd3g_raster_stats, capacity) F(dd3g_raster_stats, evaluations)
  printf("\"sizeof\": [%zu, %zu, %zu], \"flags\": [%u, %u, %u], \"version\": %d}\n", sizeof(dd3g_raster_config),
         sizeof(dd3g_raster_buffers), sizeof(dd3g_raster_stats), DD3G_RASTER_TIGHT_TILES, DD3G_RASTER_EXACT_COUNT,
         DD3G_RASTER_COUNT_EVALS, DD3G_RASTER_VERSION);
  return 0;
}
"""


def test_ctypes_structs_match_the_c_header(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    from dd3g_sdk.render import cuda as rc

    src = tmp_path / "abi.c"
    src.write_text(ABI_PROGRAM)
    exe = tmp_path / "abi"
    subprocess.run([cc, "-std=c99", "-Wall", "-Werror", f"-I{ROOT / 'cuda/include'}", str(src), "-o", str(exe)],
                   check=True)
    layout = json.loads(subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout)
    structs = {"dd3g_raster_config": rc._Config, "dd3g_raster_buffers": rc._Buffers, "dd3g_raster_stats": rc._Stats}
    for key, value in layout.items():
        if "." not in key:
            continue
        off, size = value
        sname, field = key.split(".")
        f = getattr(structs[sname], field)
        assert (f.offset, f.size) == (off, size), key
    assert [ctypes.sizeof(s) for s in structs.values()] == layout["sizeof"]
    assert layout["flags"] == [rc.FLAG_TIGHT_TILES, rc.FLAG_EXACT_COUNT, rc.FLAG_COUNT_EVALS]
    assert layout["version"] // 10000 == rc.API_VERSION_MAJOR


def test_binding_loads_without_torch_and_checks_arguments(built_lib, tmp_path):
    # a fresh interpreter where importing torch fails: the binding must not need it
    script = tmp_path / "probe.py"
    script.write_text(f"""
import sys, ctypes
sys.modules['torch'] = None  # any 'import torch' now raises ImportError
sys.path.insert(0, {str(ROOT / 'sdk')!r})
from dd3g_sdk.render import cuda as rc
lib = rc.RasterLibrary({str(built_lib)!r})
assert lib.version == "1.0.0", lib.version
assert lib.status_string(0) == "DD3G_SUCCESS" and lib.status_string(99) == "DD3G_ERROR_UNKNOWN"
def status(**kw):
    cfg = lib.make_config(**{{**dict(num_gaussians=10, num_cameras=1, width=64, height=64, sh_coeffs=1), **kw}})
    try:
        lib.workspace_size(cfg)
    except rc.RasterError as e:
        return e.status
    return 0
assert status(sh_coeffs=3) == 1
assert status(num_cameras=0) == 1
assert status(width=0) == 1
assert status(num_gaussians=-1) == 1
assert status(max_intersections=2**31) == 1
cfg = lib.make_config(10, 1, 64, 64, 1)
cfg.struct_size = 12
try:
    lib.workspace_size(cfg); raise SystemExit("struct_size not checked")
except rc.RasterError as e:
    assert e.status == 5, e.status
cfg = lib.make_config(10, 1, 64, 64, 1)
for kw in (dict(), dict(workspace=0)):
    args = dict(means=8, quats=8, scales=8, opacities=8, sh=8, viewmats=8, Ks=8, rgb=8, workspace=256,
                workspace_bytes=1 << 20)
    args.update(kw)
    args['means'] = 0  # a null input pointer
    try:
        lib.forward(cfg, **args); raise SystemExit("null pointer accepted")
    except rc.RasterError as e:
        assert e.status == 1, e.status
args = dict(means=8, quats=8, scales=8, opacities=8, sh=8, viewmats=8, Ks=8, rgb=8, workspace=100,
            workspace_bytes=1 << 20)
try:
    lib.forward(cfg, **args); raise SystemExit("misaligned workspace accepted")
except rc.RasterError as e:
    assert e.status == 3, e.status
print("ok")
""")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


def test_workspace_query_without_a_device_uses_the_bound(built_lib, tmp_path):
    """TensorRT builds engines ahead of time on hosts without a GPU, where CUB's temp-size query fails: the library
    then answers with its device-independent bound (cub_temp_bound: 8 bytes an item + 1 MiB beside the fixed
    buffers), the same answer that DD3G_RASTER_WORKSPACE_BOUND=1 forces; the GPU test test_workspace_bound_covers_cub
    checks the bound against CUB's real answer."""
    script = tmp_path / "probe.py"
    script.write_text(f"""
import os, sys
sys.path.insert(0, {str(ROOT / 'sdk')!r})
from dd3g_sdk.render import cuda as rc
lib = rc.RasterLibrary({str(built_lib)!r})
sizes = {{}}
for n, cap in ((1000, 1 << 16), (1000, 1 << 20), (100000, 1 << 20)):
    cfg = lib.make_config(n, 1, 64, 64, 1, "float32", cap)
    os.environ.pop("DD3G_RASTER_WORKSPACE_BOUND", None)
    free = lib.workspace_size(cfg)
    os.environ["DD3G_RASTER_WORKSPACE_BOUND"] = "1"
    forced = lib.workspace_size(cfg)
    assert free == forced, (n, cap, free, forced)
    sizes[(n, cap)] = free
# the bound grows by 8 bytes per intersection slot more than the buffers alone (what CUB would get)
grow = sizes[(1000, 1 << 20)] - sizes[(1000, 1 << 16)]
assert grow >= 8 * ((1 << 20) - (1 << 16)), grow
assert sizes[(100000, 1 << 20)] > sizes[(1000, 1 << 20)]
print("ok")
""")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the query asks CUB (test_workspace_bound_covers_cub)")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


def test_find_library_order(built_lib, monkeypatch, tmp_path):
    from dd3g_sdk.render import cuda as rc

    monkeypatch.setenv(rc.LIB_ENV, str(built_lib))
    assert rc.find_library() == built_lib
    monkeypatch.setenv(rc.LIB_ENV, str(tmp_path / "missing.so"))
    with pytest.raises(FileNotFoundError, match="DD3G_RASTER_LIB"):
        rc.find_library()
    monkeypatch.delenv(rc.LIB_ENV)
    cands = rc.library_candidates()
    assert cands[0].parent == Path(rc.__file__).resolve().parent  # next to the package first
    assert cands[-1].parent == ROOT / "build"


@pytest.mark.parametrize("defines", [("-DDD3G_RASTER_EMIT=3", "-DDD3G_RASTER_PROJ_VEC=0"),
                                     ("-DDD3G_RASTER_BINNED_MAX=0", "-DDD3G_RASTER_KEY16=0",
                                      "-DDD3G_RASTER_TILE_GROUPS=0"),
                                     ("-DDD3G_RASTER_BINNED_MAX=0xFFFFFFFFu", "-DDD3G_RASTER_TILE_SORT_MAX=64"),
                                     ("-DDD3G_RASTER_LOG2_BLEND=0", "-DDD3G_RASTER_WARP_CULL=0",
                                      "-DDD3G_RASTER_WARP_W=16", "-DDD3G_RASTER_FAST_TIGHT=0")],
                         ids=["flat_proj_scalar", "binned_off_key32_groups_off", "binned_s64", "log2_off_cull_off_exact_tight"])
def test_variant_builds_compile_cleanly(tmp_path, defines):
    """The variant builds that cuda/tests/build_emit_variants.sh makes for the GPU host (the flat writer always,
    here with the one-float SH copy of build/proj_scalar;
    the binned path never, here with 32-bit list keys (build/key32) and lists per tile (build/groups_off); the binned path always, with a 64-key tile
    sort; the blend loop in its written form, here also without warp culling and with 16 x 2 pixel warps, the
    build/cull_off kernels, and exact tight binning, build/exact_tight) compile without warnings (an unused kernel or variable would warn), so the device call
    is not spent on it. To PTX only: the front end, which gives
    those warnings, at less than half the time of a full compile (ptxas and the link run for the default build in
    test_library_exports_exactly_the_c_api)."""
    nvcc = shutil.which("nvcc") or (shutil.which("nvcc", path="/usr/local/cuda/bin"))
    if nvcc is None:
        pytest.skip("nvcc not found")
    cmd = [nvcc, "-std=c++17", "-O2", f"-arch=sm_{ARCH}", "--expt-relaxed-constexpr", "-Xcompiler", "-fPIC",
           *defines, f"-I{ROOT / 'cuda/include'}", f"-I{ROOT / 'cuda/src'}", "-ptx",
           str(ROOT / "cuda/src/dd3g_raster.cu"), "-o", str(tmp_path / "variant.ptx")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "warning" not in r.stderr.lower(), r.stderr[-4000:]
