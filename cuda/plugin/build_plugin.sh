#!/usr/bin/env bash
# Build build/libdd3g_trt_plugin.so (+ build/libdd3g_raster.so) on a machine without any TensorRT library:
# the plugin needs TensorRT's headers only (see CMakeLists.txt). Run from the repository root:
#   bash cuda/plugin/build_plugin.sh
# Environment:
#   TENSORRT_ROOT   a folder with include/NvInferRuntime.h (TensorRT, TensorRT-RTX, or TensorRT OSS headers);
#                   default /tmp/trt-oss, filled from a git copy of github.com/NVIDIA/TensorRT if it lacks them
#   TRT_OSS_GIT     that git directory (bare or not); default /work/.mirror/NVIDIA+TensorRT/repo
#   TRT_OSS_REF     the commit whose include/ is used; default 5302b288 = "10.16.1 update", the newest 10.x
#                   headers (the IPluginV3 interfaces the plugin implements read the same in 10.16.1 and 11.1;
#                   the headers stay outside the repository)
#   CUDA_ARCH       default 90 (H100/H200: the GPU host that runs cuda/tests/trt_cpp_plugin_check.py)
#   BUILD_DIR       default build
# The libraries land in $BUILD_DIR with dd3g_trt_plugin_smoke (cuda/tests/trt_plugin_smoke.cpp); the script then
# prints the plugin's exports and dependencies, runs the smoke test, and fails if the plugin lacks getCreators,
# refers to TensorRT, or fails the smoke test.
set -euo pipefail
TENSORRT_ROOT=${TENSORRT_ROOT:-/tmp/trt-oss}
TRT_OSS_GIT=${TRT_OSS_GIT:-/work/.mirror/NVIDIA+TensorRT/repo}
TRT_OSS_REF=${TRT_OSS_REF:-5302b288c5603895508711bdf2df11dc29c8ad92}
CUDA_ARCH=${CUDA_ARCH:-90}
BUILD_DIR=${BUILD_DIR:-build}

if [[ ! -f "$TENSORRT_ROOT/include/NvInferRuntime.h" ]]; then
  echo "== TensorRT headers: include/ of $TRT_OSS_REF from $TRT_OSS_GIT -> $TENSORRT_ROOT/include"
  git --git-dir="$TRT_OSS_GIT" rev-parse --verify -q "$TRT_OSS_REF^{commit}" >/dev/null ||
    { echo "no TensorRT headers: set TENSORRT_ROOT, or TRT_OSS_GIT/TRT_OSS_REF to a git copy of NVIDIA/TensorRT" >&2; exit 1; }
  mkdir -p "$TENSORRT_ROOT"
  git --git-dir="$TRT_OSS_GIT" archive "$TRT_OSS_REF" include | tar -x -C "$TENSORRT_ROOT"
fi
grep -hE "^#define (TRT|NV_TENSORRT)_(MAJOR|MINOR|PATCH)" "$TENSORRT_ROOT/include/NvInferVersion.h" 2>/dev/null | head -3 || true

# -DDD3G_BUILD_TRT_PLUGIN=ON persists in $BUILD_DIR/CMakeCache.txt; cuda/tests/gpu_host_run.sh turns it off
# again when it has to rebuild the rasteriser on a host without these headers.
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" \
  -DDD3G_BUILD_TRT_PLUGIN=ON -DTENSORRT_ROOT="$TENSORRT_ROOT"
cmake --build "$BUILD_DIR" -j "$(nproc)" --target dd3g_raster dd3g_trt_plugin dd3g_trt_plugin_smoke

so=$BUILD_DIR/libdd3g_trt_plugin.so
echo "== $so: $(stat -c %s "$so") bytes; $BUILD_DIR/libdd3g_raster.so: $(stat -c %s "$BUILD_DIR/libdd3g_raster.so") bytes"
echo "== exported functions"
nm -D --defined-only "$so" | grep -E " T " || true
echo "== dependencies (NEEDED, RUNPATH)"
readelf -d "$so" | grep -E "NEEDED|RUNPATH|RPATH"
nm -D --defined-only "$so" | grep -qE " T getCreators$" || { echo "FAIL: getCreators is not exported" >&2; exit 1; }
if readelf -d "$so" | grep -E "NEEDED" | grep -qiE "nvinfer|tensorrt"; then
  echo "FAIL: the plugin depends on a TensorRT library" >&2
  exit 1
fi
if nm -D --undefined-only "$so" | grep -qiE "getPluginRegistry|createInfer|nvinfer1"; then
  echo "FAIL: the plugin refers to a TensorRT symbol" >&2
  exit 1
fi
echo "== $BUILD_DIR/dd3g_trt_plugin_smoke $so"
"$BUILD_DIR/dd3g_trt_plugin_smoke" "$so" | grep -vE "^ok " || { echo "FAIL: smoke test" >&2; exit 1; }
echo "== ok"
