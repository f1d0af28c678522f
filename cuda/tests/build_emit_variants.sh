#!/usr/bin/env bash
# Builds the rasteriser libraries that the "variants" step of cuda/tests/gpu_host_run.sh times against each
# other (it runs build/libdd3g_raster.so, then every build/*/libdd3g_raster.so) and that
# tests/cuda/test_raster_gpu.py compares image for image:
#   build/libdd3g_raster.so              default: the writer chosen by size (DD3G_RASTER_EMIT=2)
#   build/emit_old/libdd3g_raster.so     -DDD3G_RASTER_EMIT=0: always the per-thread writer (these four: never binned)
#   build/emit_staged/libdd3g_raster.so  -DDD3G_RASTER_EMIT=1: always the staged, coalesced writer
#   build/emit_flat/libdd3g_raster.so    -DDD3G_RASTER_EMIT=3: always the flat writer (a thread per list position)
#   build/nofold/libdd3g_raster.so       -DDD3G_RASTER_FOLD_MEMSETS=0: the default writer choice, with the two
#                                        frame-start memsets instead of k_pad clearing ranges and counters
#   build/binned_off/libdd3g_raster.so   -DDD3G_RASTER_BINNED_MAX=0: never the binned small-scene path
#   build/binned_all/libdd3g_raster.so   -DDD3G_RASTER_BINNED_MAX=0xFFFFFFFFu: always the binned path
#   build/binned_s64/libdd3g_raster.so   always binned, -DDD3G_RASTER_TILE_SORT_MAX=64: tiles sorted in rounds
#   build/binned_s4096/libdd3g_raster.so always binned, with 4,096-key tile sorts (timing the shared-memory size)
#   build/bin_split1/libdd3g_raster.so   -DDD3G_RASTER_BIN_SPLIT=1: one thread per Gaussian in the binned count and
#                                        scatter kernels (the default gives 4 or 2 by size)
#   build/log2_off/libdd3g_raster.so     -DDD3G_RASTER_LOG2_BLEND=0: the blend loop as raster_math writes it (not
#                                        bit-identical to the default: test_log2_blend_matches_the_written_form)
#   build/cull_off/libdd3g_raster.so     -DDD3G_RASTER_WARP_CULL=0 -DDD3G_RASTER_WARP_W=16: no warp culling, warps
#                                        of 16 x 2 pixels (run 11's raster kernels; same images, more evaluations)
#   build/warp16/libdd3g_raster.so       -DDD3G_RASTER_WARP_W=16: warp culling (sorted path) with 16 x 2 pixel warps
#   build/key32/libdd3g_raster.so        -DDD3G_RASTER_KEY16=0: the intersection list's keys always 32-bit (the
#                                        default stores 16-bit keys where C * tiles < 65536; same list, same images)
#   build/exact_tight/libdd3g_raster.so  -DDD3G_RASTER_FAST_TIGHT=0: tight binning with the exact square root,
#                                        division and logarithm (the default uses the GPU's approximate ones)
#   build/groups_off/libdd3g_raster.so   -DDD3G_RASTER_TILE_GROUPS=0: the sorted path lists per tile (runs 1-13), not
#                                        per group of 2 x 2 tiles (same images, more list entries)
#   build/proj_scalar/libdd3g_raster.so  -DDD3G_RASTER_PROJ_VEC=0: k_project copies SH rows one float a load (runs
#                                        11-14; the same floats, the same images)
# for one architecture (ARCH, default 90), with the compile flags of the CMake Release build (build/build.ninja:
# -O3 -DNDEBUG, --expt-relaxed-constexpr -lineinfo, -fPIC, hidden visibility) and its static CUDA runtime.
# Touches nothing else in build/ (other targets may live there).
#   bash cuda/tests/build_emit_variants.sh            # then run the GPU host with carry [".gpu", "build"]
#   JOBS=16 bash cuda/tests/build_emit_variants.sh    # on the GPU host itself (nvcc from .gpu), 16 builds at once
set -euo pipefail
cd "$(dirname "$0")/../.."
ARCH=${ARCH:-90}
NVCC=${NVCC:-nvcc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

build() {  # build OUT [-D...]: the default build plus the given defines
  local out=$1
  shift
  local stem="$tmp/$(echo "$out" | tr / _)"
  "$NVCC" -forward-unknown-to-host-compiler -Ddd3g_raster_EXPORTS -Icuda/include -Icuda/src -O3 -DNDEBUG \
    "--generate-code=arch=compute_$ARCH,code=[compute_$ARCH,sm_$ARCH]" -Xcompiler=-fPIC -Xcompiler=-fvisibility=hidden \
    --expt-relaxed-constexpr -lineinfo -std=c++17 "$@" -x cu -c cuda/src/dd3g_raster.cu -o "$stem.o"
  "$NVCC" -shared -cudart=static "--generate-code=arch=compute_$ARCH,code=[compute_$ARCH,sm_$ARCH]" \
    -Xlinker -soname=libdd3g_raster.so "$stem.o" -o "$stem.so"
  mkdir -p "$(dirname "$out")"
  install -m 755 "$stem.so" "$out"  # replaced only once complete
  echo "built $out ($* sm_$ARCH): $(stat -c %s "$out") bytes"
}

# JOBS at a time (each nvcc is mostly single-threaded; default 2 for a two-core machine, JOBS=16 on the GPU host)
JOBS=${JOBS:-2}
pids=()
run() {
  build "$@" &
  pids+=($!)
  if ((${#pids[@]} == JOBS)); then
    for p in "${pids[@]}"; do wait "$p"; done
    pids=()
  fi
}
run build/libdd3g_raster.so
run build/emit_old/libdd3g_raster.so -DDD3G_RASTER_EMIT=0 -DDD3G_RASTER_BINNED_MAX=0
run build/emit_staged/libdd3g_raster.so -DDD3G_RASTER_EMIT=1 -DDD3G_RASTER_BINNED_MAX=0
run build/emit_flat/libdd3g_raster.so -DDD3G_RASTER_EMIT=3 -DDD3G_RASTER_BINNED_MAX=0
run build/nofold/libdd3g_raster.so -DDD3G_RASTER_FOLD_MEMSETS=0 -DDD3G_RASTER_BINNED_MAX=0
run build/binned_off/libdd3g_raster.so -DDD3G_RASTER_BINNED_MAX=0
run build/binned_all/libdd3g_raster.so -DDD3G_RASTER_BINNED_MAX=0xFFFFFFFFu
run build/binned_s64/libdd3g_raster.so -DDD3G_RASTER_BINNED_MAX=0xFFFFFFFFu -DDD3G_RASTER_TILE_SORT_MAX=64
run build/binned_s4096/libdd3g_raster.so -DDD3G_RASTER_BINNED_MAX=0xFFFFFFFFu -DDD3G_RASTER_TILE_SORT_MAX=4096
run build/log2_off/libdd3g_raster.so -DDD3G_RASTER_LOG2_BLEND=0
run build/bin_split1/libdd3g_raster.so -DDD3G_RASTER_BIN_SPLIT=1
run build/cull_off/libdd3g_raster.so -DDD3G_RASTER_WARP_CULL=0 -DDD3G_RASTER_WARP_W=16
run build/warp16/libdd3g_raster.so -DDD3G_RASTER_WARP_W=16
run build/key32/libdd3g_raster.so -DDD3G_RASTER_KEY16=0
run build/exact_tight/libdd3g_raster.so -DDD3G_RASTER_FAST_TIGHT=0
run build/groups_off/libdd3g_raster.so -DDD3G_RASTER_TILE_GROUPS=0
run build/proj_scalar/libdd3g_raster.so -DDD3G_RASTER_PROJ_VEC=0
for p in "${pids[@]}"; do wait "$p"; done
