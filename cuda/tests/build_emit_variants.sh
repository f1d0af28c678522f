#!/usr/bin/env bash
# Builds the rasteriser libraries that the "variants" step of cuda/tests/gpu_host_run.sh times against each
# other (it runs build/libdd3g_raster.so, then every build/*/libdd3g_raster.so) and that
# tests/cuda/test_raster_gpu.py compares image for image:
#   build/libdd3g_raster.so              default: the writer chosen by size (DD3G_RASTER_EMIT=2)
#   build/emit_old/libdd3g_raster.so     -DDD3G_RASTER_EMIT=0: always the per-thread writer
#   build/emit_staged/libdd3g_raster.so  -DDD3G_RASTER_EMIT=1: always the staged, coalesced writer
#   build/emit_flat/libdd3g_raster.so    -DDD3G_RASTER_EMIT=3: always the flat writer (a thread per list position)
#   build/nofold/libdd3g_raster.so       -DDD3G_RASTER_FOLD_MEMSETS=0: the default writer choice, with the two
#                                        frame-start memsets instead of k_pad clearing ranges and counters
# for one architecture (ARCH, default 90), with the compile flags of the CMake Release build (build/build.ninja:
# -O3 -DNDEBUG, --expt-relaxed-constexpr -lineinfo, -fPIC, hidden visibility) and its static CUDA runtime.
# Touches nothing else in build/ (other targets may live there).
#   bash cuda/tests/build_emit_variants.sh            # then run the GPU host with carry [".gpu", "build"]
set -euo pipefail
cd "$(dirname "$0")/../.."
ARCH=${ARCH:-90}
NVCC=${NVCC:-nvcc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

build() {  # build EMIT OUT [FOLD]
  local fold=${3:-1}
  local stem="$tmp/emit$1_$fold"
  "$NVCC" -forward-unknown-to-host-compiler -Ddd3g_raster_EXPORTS -Icuda/include -Icuda/src -O3 -DNDEBUG \
    "--generate-code=arch=compute_$ARCH,code=[compute_$ARCH,sm_$ARCH]" -Xcompiler=-fPIC -Xcompiler=-fvisibility=hidden \
    --expt-relaxed-constexpr -lineinfo -std=c++17 "-DDD3G_RASTER_EMIT=$1" "-DDD3G_RASTER_FOLD_MEMSETS=$fold" \
    -x cu -c cuda/src/dd3g_raster.cu -o "$stem.o"
  "$NVCC" -shared -cudart=static "--generate-code=arch=compute_$ARCH,code=[compute_$ARCH,sm_$ARCH]" \
    -Xlinker -soname=libdd3g_raster.so "$stem.o" -o "$stem.so"
  mkdir -p "$(dirname "$2")"
  install -m 755 "$stem.so" "$2"  # replaced only once complete
  echo "built $2 (DD3G_RASTER_EMIT=$1, DD3G_RASTER_FOLD_MEMSETS=$fold, sm_$ARCH): $(stat -c %s "$2") bytes"
}

build 2 build/libdd3g_raster.so &
p2=$!
build 0 build/emit_old/libdd3g_raster.so &
p0=$!
wait $p2
wait $p0
build 1 build/emit_staged/libdd3g_raster.so &
p1=$!
build 3 build/emit_flat/libdd3g_raster.so &
p3=$!
wait $p1
wait $p3
build 2 build/nofold/libdd3g_raster.so 0
