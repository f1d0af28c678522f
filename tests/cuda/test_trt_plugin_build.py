"""CPU checks of the C++ TensorRT plugin (cuda/plugin/gaussian_rasterize_plugin.cpp) without any TensorRT library:

- it compiles against TensorRT's headers alone (-Wall -Wextra -Werror) and links with --no-undefined against a
  stub libdd3g_raster.so (made here from cuda/include/dd3g_raster.h), i.e. it needs no TensorRT symbol;
- it exports exactly getCreators, setLoggerFinder and dd3gRegisterTrtPlugin, and depends on no TensorRT or CUDA
  runtime library;
- cuda/tests/trt_plugin_smoke.cpp drives it the way TensorRT does (getCreators, the creator's fields as the ONNX
  parser fills them, capabilities, output types and shapes, formats, workspace, serialise / re-create, clone).

Needs TensorRT headers: $TENSORRT_ROOT/include, else /tmp/trt-oss/include (cuda/plugin/build_plugin.sh puts the
TensorRT OSS headers there); skipped without them, without g++ or without CUDA's cuda_runtime_api.h.
The engine build itself runs on the GPU host: cuda/tests/trt_cpp_plugin_check.py.

Run: OMP_NUM_THREADS=1 python -m pytest tests/cuda/test_trt_plugin_build.py -q
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPORTS = {"getCreators", "setLoggerFinder", "dd3gRegisterTrtPlugin"}

STUB = r"""
#include "dd3g_raster.h"
/* Stand-in for libdd3g_raster.so: the four functions the plugin calls, no CUDA. */
const char* dd3g_raster_status_string(int status) { return status == 0 ? "DD3G_SUCCESS" : "DD3G_ERROR_STUB"; }
const char* dd3g_raster_last_error(void) { return ""; }
int dd3g_raster_workspace_size(const dd3g_raster_config* c, size_t* bytes) {
    if (!c || !bytes || c->struct_size != sizeof(dd3g_raster_config)) return DD3G_ERROR_INVALID_VALUE;
    *bytes = 256 * (size_t)(16 + c->num_gaussians * c->num_cameras);
    return DD3G_SUCCESS;
}
int dd3g_raster_forward(const dd3g_raster_config* c, const dd3g_raster_buffers* b, void* w, size_t n, void* s) {
    (void)c; (void)b; (void)w; (void)n; (void)s;
    return DD3G_ERROR_INVALID_VALUE;
}
"""


def _trt_include() -> Path | None:
    for root in (os.environ.get("TENSORRT_ROOT"), "/tmp/trt-oss"):
        if root and (Path(root) / "include/NvInferRuntime.h").is_file():
            return Path(root) / "include"
    return None


def _cuda_include() -> Path | None:
    nvcc = shutil.which("nvcc")
    candidates = [os.environ.get("CUDA_HOME"), "/usr/local/cuda", *sorted(map(str, Path("/usr/local").glob("cuda-*")))]
    if nvcc:
        candidates.insert(0, str(Path(nvcc).resolve().parents[1]))
    for c in candidates:
        if c and (Path(c) / "include/cuda_runtime_api.h").is_file():
            return Path(c) / "include"
    return None


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> tuple[Path, list[str]]:
    cxx, cc = shutil.which("g++"), shutil.which("gcc") or shutil.which("cc")
    trt, cuda = _trt_include(), _cuda_include()
    if cxx is None or cc is None:
        pytest.skip("no C/C++ compiler")
    if trt is None:
        pytest.skip("no TensorRT headers (TENSORRT_ROOT, or run cuda/plugin/build_plugin.sh)")
    if cuda is None:
        pytest.skip("no cuda_runtime_api.h")
    d = tmp_path_factory.mktemp("trt_plugin")
    (d / "stub.c").write_text(STUB)
    subprocess.run([cc, "-std=c11", "-O1", "-Wall", "-Werror", "-fPIC", "-shared", f"-I{ROOT / 'cuda/include'}",
                    str(d / "stub.c"), "-o", str(d / "libdd3g_raster.so")], check=True)
    flags = ["-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", f"-isystem{trt}", f"-isystem{cuda}",
             f"-I{ROOT / 'cuda/include'}"]
    so = d / "libdd3g_trt_plugin.so"
    r = subprocess.run([cxx, *flags, "-fPIC", "-shared", "-fvisibility=hidden", "-fvisibility-inlines-hidden",
                        str(ROOT / "cuda/plugin/gaussian_rasterize_plugin.cpp"), f"-L{d}", "-ldd3g_raster",
                        "-Wl,--no-undefined", "-Wl,-rpath,$ORIGIN", "-o", str(so)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    return so, [cxx, *flags]


def test_plugin_exports_only_the_entry_points_and_needs_no_tensorrt(plugin):
    so, _ = plugin
    nm, readelf = shutil.which("nm"), shutil.which("readelf")
    if nm is None or readelf is None:
        pytest.skip("nm / readelf not found")
    out = subprocess.run([nm, "-D", "--defined-only", str(so)], capture_output=True, text=True, check=True).stdout
    assert {line.split()[-1] for line in out.splitlines() if " T " in line} == EXPORTS
    dyn = subprocess.run([readelf, "-d", str(so)], capture_output=True, text=True, check=True).stdout
    needed = [line.split("[")[-1].rstrip("]") for line in dyn.splitlines() if "(NEEDED)" in line]
    assert "libdd3g_raster.so" in needed
    assert not [n for n in needed if "nvinfer" in n or "tensorrt" in n or "cudart" in n], needed


def test_plugin_behaves_as_tensorrt_expects(plugin, tmp_path):
    so, compile_cmd = plugin
    exe = tmp_path / "trt_plugin_smoke"
    subprocess.run([*compile_cmd, str(ROOT / "cuda/tests/trt_plugin_smoke.cpp"), "-ldl", "-o", str(exe)], check=True)
    r = subprocess.run([str(exe), str(so)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "SMOKE OK" in r.stdout, r.stdout[-4000:] + r.stderr[-2000:]
    assert "skip" not in r.stdout  # the stub answers the workspace query
    assert "workspace (fp32 Gaussians): 2101248 bytes" in r.stdout  # 256 * (16 + 4096 * 2)
