#!/usr/bin/env bash
# One call on a CUDA host (see cuda/README.md): load or build libdd3g_raster, run the GPU tests, the benchmark
# and the TensorRT-RTX engine build check, leaving logs and the results JSON in $OUT (or ./gpu-out).
#   . .gpu/install.sh && bash cuda/tests/gpu_host_run.sh
#   STEPS="profile trt" TRT_MODES="network identity-network" bash cuda/tests/gpu_host_run.sh   # a subset
#   STEPS="trtcpp" bash cuda/tests/gpu_host_run.sh     # C++ plugin: carried build/libdd3g_trt_plugin.so (not built here)
#   BENCH_CONFIGS="16384x512x1,65536x512x1" VARIANTS="build/libdd3g_raster.so build/binned_off/libdd3g_raster.so" ...
# Each step has its own time limit, so that one hang does not cost the others.
set -u
STEPS=${STEPS:-tests bench trt}
TRT_MODES=${TRT_MODES:-fp32 fp16 torch network}
TRTCPP_MODES=${TRTCPP_MODES:-load create onnx onnx16}
has() { [[ " $STEPS " == *" $1 "* ]]; }
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/sdk:$PWD/export:$PWD/distill${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
summary() { echo "== $*" | tee -a "$OUT/summary.txt"; }

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/summary.txt"

# 1. the library: the one carried in build/ (compiled elsewhere for sm_90), else build it here
export DD3G_RASTER_LIB=$PWD/build/libdd3g_raster.so
if ! python3 -c "from dd3g_sdk.render import cuda as rc; rc.load_library()" 2>/dev/null; then
  summary "carried library missing or not loadable: building"
  cmake -S . -B build -G Ninja -DCMAKE_CUDA_ARCHITECTURES=90 -DDD3G_BUILD_TRT_PLUGIN=OFF >"$OUT/build.log" 2>&1 &&
    cmake --build build -j16 >>"$OUT/build.log" 2>&1 || summary "BUILD FAILED"
fi
python3 -c "from dd3g_sdk.render import cuda as rc; l=rc.load_library(); print('library', l.path, l.version)" \
  2>&1 | tee -a "$OUT/summary.txt"

# 2. GPU correctness tests
has tests && timeout 240 python3 -m pytest tests/cuda/test_raster_gpu.py -q -rA -p no:cacheprovider >"$OUT/gpu_tests.log" 2>&1
has tests && summary "gpu tests rc=$? : $(tail -1 "$OUT/gpu_tests.log")"

# 3. benchmark (and/or the per-kernel profile)
if has bench; then
  timeout 200 python3 benchmarks/bench_rasterizer.py --out "$OUT/rasterizer_gpu.json" ${BENCH_CONFIGS:+--configs "$BENCH_CONFIGS"} \
    >"$OUT/bench.log" 2>&1
  summary "bench rc=$?"
fi
if has profile; then
  timeout 120 python3 benchmarks/bench_rasterizer.py --profile >"$OUT/profile.log" 2>&1
  summary "profile rc=$?"
fi

# 3b. library variants (build/*/libdd3g_raster.so, cuda/tests/build_emit_variants.sh; VARIANTS="a.so b.so" picks)
# on a few configs
if has variants; then
  for lib in ${VARIANTS:-build/libdd3g_raster.so build/*/libdd3g_raster.so}; do
    [[ -f "$lib" ]] || continue
    echo "== variant $lib" >>"$OUT/variants.log"
    DD3G_RASTER_LIB=$PWD/$lib timeout 90 python3 benchmarks/bench_rasterizer.py --no-gsplat --iters 30 \
      --configs "${VARIANT_CONFIGS:-16384x512x1,65536x512x1,1000000x512x1,200000x1024x8,1000000x1024x8}" \
      >>"$OUT/variants.log" 2>&1
    summary "variant $lib rc=$?"
  done
fi

# 4. TensorRT-RTX: an engine containing dd3g::GaussianRasterize builds (ahead of time for sm_89 / sm_120)
has trt && for mode in $TRT_MODES; do
  DD3G_PLUGIN_TRACE=1 timeout 45 python3 -X faulthandler cuda/tests/trt_build_check.py $mode >>"$OUT/trt_check.log" 2>&1
  summary "trt check $mode rc=$? : $(grep -o '"built": [a-z]*' "$OUT/trt_check.log" | tail -1)"
done

# 4b. TensorRT-RTX with the C++ plugin: build/libdd3g_trt_plugin.so, compiled elsewhere by
# cuda/plugin/build_plugin.sh and carried in build/ beside libdd3g_raster.so (never rebuilt here: this host has no
# TensorRT headers), registered with load_library; the engine is built ahead of time for sm_89, never run.
if has trtcpp; then
  plugin=$PWD/build/libdd3g_trt_plugin.so
  if [[ ! -f "$plugin" ]]; then
    summary "trtcpp: $plugin missing (cuda/plugin/build_plugin.sh, then carry build/)"
  else
    if [[ -x build/dd3g_trt_plugin_smoke ]]; then  # the plugin driven without TensorRT (workspace query on this GPU)
      timeout 60 build/dd3g_trt_plugin_smoke "$plugin" >>"$OUT/trt_check.log" 2>&1
      summary "trtcpp smoke rc=$? : $(grep -E '^(SMOKE|FAIL|skip)' "$OUT/trt_check.log" | tail -3 | tr '\n' ' ')"
    fi
    for mode in $TRTCPP_MODES; do
      limit=45
      [[ $mode == onnx* ]] && limit=150
      echo "== trtcpp $mode" >>"$OUT/trt_check.log"
      DD3G_PLUGIN_TRACE=1 DD3G_TRT_PLUGIN_LIB=$plugin timeout $limit python3 -X faulthandler \
        cuda/tests/trt_cpp_plugin_check.py "$mode" >>"$OUT/trt_check.log" 2>&1
      summary "trtcpp $mode rc=$? : $(grep -o "REPORT {\"$mode\".*" "$OUT/trt_check.log" | tail -1 |
        grep -oE '"(dlopen|loaded|creator_found|plugin_created|parsed|built|engine_bytes)": [a-z0-9]*' | tr '\n' ' ')"
    done
  fi
fi
[[ -f "$OUT/bench.log" ]] && tail -25 "$OUT/bench.log"
[[ -f "$OUT/profile.log" ]] && cat "$OUT/profile.log"
[[ -f "$OUT/variants.log" ]] && grep -E "^== variant|^ +[0-9]+ +[0-9]+ +[0-9]+ \|" "$OUT/variants.log"
[[ -f "$OUT/trt_check.log" ]] && grep -E "REPORT|ERROR|Error|\[dd3g plugin\]|terminate|Aborted|^== trtcpp|^SMOKE|^FAIL" \
  "$OUT/trt_check.log" | grep -v supportsFormatCombination | tail -40
cat "$OUT/summary.txt"
