"""Per-image latency of PEPD for each backend / precision this machine has (pytest-benchmark).

    OMP_NUM_THREADS=2 python -m pytest benchmarks/bench_generator.py -q -p no:cacheprovider      # CPU machine
    python -m pytest benchmarks/bench_generator.py -q                                            # GPU host

Cases (batch 1, random weights: latency does not depend on the weights):
- CPU machine: onnxruntime CPU fp32 and fp16 (`small`), torch CPU fp32 (`small`). Issue #5 target:
  onnxruntime CPU <= 250 ms an image on the 2-core machine.
- CUDA machine: torch fp32 eager, torch fp16 (autocast) eager, torch fp16 + CUDA graph replay, for `small`
  and `base`. Targets on an H100: small <= 3 ms, base <= 15 ms (the paper reports 60 ms) for fp16 + graphs.
  A CUDA case times `copy the inputs into the graph's static inputs (device to device); replay; synchronise`
  (inputs already on the device, as in a serving loop), or `model(x, z); synchronise` for eager runs.
DD3G_BENCH_CONFIGS=small,base overrides the configs; DD3G_BENCH_CPU=1 also runs the CPU cases on a GPU host.

Results: benchmarks/results/generator_<device>.json (device slug: "cpu-<n>cores" or the GPU's name), with
per case the median / mean / min / stddev in ms per image, rounds, and the machine: device, CPU count, torch /
onnxruntime / CUDA versions, date. DD3G_RESULTS_DIR changes the folder.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

RESULTS = Path(os.environ.get("DD3G_RESULTS_DIR", Path(__file__).resolve().parent / "results"))
HAS_CUDA = torch.cuda.is_available()
RUN_CPU = not HAS_CUDA or os.environ.get("DD3G_BENCH_CPU") == "1"
_CONFIGS = os.environ.get("DD3G_BENCH_CONFIGS")
CPU_CONFIGS = _CONFIGS.split(",") if _CONFIGS else ["small"]
GPU_CONFIGS = _CONFIGS.split(",") if _CONFIGS else ["small", "base"]
TARGET_MS = {("onnxruntime", "fp32", "small", "cpu"): 250.0, ("torch-cudagraph", "fp16", "small", "cuda"): 3.0,
             ("torch-cudagraph", "fp16", "base", "cuda"): 15.0}

_records: list[dict] = []


def device_slug() -> str:
    if HAS_CUDA:
        name = torch.cuda.get_device_name(0).lower().replace("nvidia", "")
        return re.sub(r"[^a-z0-9]+", "-", name).strip("-")
    return f"cpu-{os.cpu_count()}cores"


def machine() -> dict:
    import onnxruntime

    cpu = f"CPU ({platform.processor() or platform.machine()})"
    info = {"device": torch.cuda.get_device_name(0) if HAS_CUDA else cpu, "cpu_count": os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "cuda": torch.version.cuda if HAS_CUDA else None,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            # CPU timings on a shared machine are only as good as its load: recorded with them
            "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}
    if HAS_CUDA:
        info["compute_capability"] = "%d.%d" % torch.cuda.get_device_capability(0)
    return info


@pytest.fixture(scope="module", autouse=True)
def write_results():
    yield
    if not _records:
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "PEPD per-image latency (batch 1)", "machine": machine(), "results": _records,
           "note": "random weights; times in ms per image; see benchmarks/bench_generator.py for what is timed"}
    from dd3g_sdk._fileio import atomic_write_text

    atomic_write_text(RESULTS / f"generator_{device_slug()}.json", json.dumps(doc, indent=2) + "\n")


def record(benchmark, backend: str, precision: str, config: str, device: str, **extra) -> None:
    s = benchmark.stats.stats
    target = TARGET_MS.get((backend, precision, config, device))
    median_ms = s.median * 1e3
    _records.append({"backend": backend, "precision": precision, "config": config, "device": device,
                     "median_ms": round(median_ms, 4), "mean_ms": round(s.mean * 1e3, 4),
                     "min_ms": round(s.min * 1e3, 4), "stddev_ms": round(s.stddev * 1e3, 4), "rounds": s.rounds,
                     "target_ms": target, "meets_target": None if target is None else bool(median_ms <= target),
                     **extra})


def make_model(config: str):
    from dd3g_sdk.model.pepd import PEPD, PEPDConfig

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return PEPD(PEPDConfig.preset(config)).eval()


def make_inputs(model, batch: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    s = model.config.image_size
    return (rng.random((batch, 3, s, s), dtype=np.float32),
            rng.standard_normal((batch, *model.noise_shape), dtype=np.float32))


# ---- CPU -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    """{config: {"fp32": path, "fp16": path}} exported once for the module."""
    from dd3g_export.fp16 import convert_file
    from dd3g_export.onnx import to_onnx

    out = {}
    d = tmp_path_factory.mktemp("bench-onnx")
    for c in CPU_CONFIGS:
        p32 = to_onnx(make_model(c), d / f"{c}.onnx")
        out[c] = {"fp32": p32, "fp16": convert_file(p32, d / f"{c}_fp16.onnx")}
    return out


@pytest.mark.skipif(not RUN_CPU, reason="CPU cases run on CPU machines (DD3G_BENCH_CPU=1 forces them)")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("config", CPU_CONFIGS)
def test_onnxruntime_cpu(benchmark, onnx_files, config, precision):
    from dd3g_sdk.backends.onnxruntime_backend import OnnxRuntimeBackend

    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count())
    b = OnnxRuntimeBackend(onnx_files[config][precision], device="cpu", threads=threads)
    s = b.info.image_size
    rng = np.random.default_rng(0)
    image = rng.random((1, 3, s, s), dtype=np.float32)
    noise = rng.standard_normal((1, *b.info.noise_shape), dtype=np.float32)
    benchmark.pedantic(b.run, args=(image, noise), rounds=5, iterations=1, warmup_rounds=1)
    record(benchmark, "onnxruntime", precision, config, "cpu", threads=threads)


@pytest.mark.skipif(not RUN_CPU, reason="CPU cases run on CPU machines (DD3G_BENCH_CPU=1 forces them)")
@pytest.mark.parametrize("config", CPU_CONFIGS)
def test_torch_cpu(benchmark, config):
    model = make_model(config)
    x, z = (torch.from_numpy(a) for a in make_inputs(model))

    def run():
        with torch.inference_mode():
            return model(x, z)

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    record(benchmark, "torch", "fp32", config, "cpu", threads=torch.get_num_threads())


# ---- CUDA ----------------------------------------------------------------------------------------------------
def cuda_graph_runner(model, x, z, fp16: bool):
    """Capture model(x, z) (autocast fp16 if asked) into a CUDA graph. Returns (static_in, static_out, graph)."""
    sx, sz = x.clone(), z.clone()
    ctx = lambda: torch.autocast("cuda", dtype=torch.float16, enabled=fp16, cache_enabled=False)  # noqa: E731
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), torch.inference_mode():
        for _ in range(3):  # warm up on a side stream (cuBLAS/cuDNN handles, autotuning) before capture
            with ctx():
                model(sx, sz)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.inference_mode():
        with torch.cuda.graph(g), ctx():
            out = model(sx, sz)
    return (sx, sz), out, g


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", ["fp32-eager", "fp16-eager", "fp16-cudagraph"])
@pytest.mark.parametrize("config", GPU_CONFIGS)
def test_torch_cuda(benchmark, config, mode):
    model = make_model(config).cuda()
    x, z = (torch.from_numpy(a).cuda() for a in make_inputs(model))
    fp16 = mode.startswith("fp16")
    if mode.endswith("cudagraph"):
        (sx, sz), _, g = cuda_graph_runner(model, x, z, fp16)

        def run():
            sx.copy_(x)
            sz.copy_(z)
            g.replay()
            torch.cuda.synchronize()
    else:
        def run():
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=fp16):
                model(x, z)
            torch.cuda.synchronize()

    for _ in range(3):
        run()
    benchmark.pedantic(run, rounds=50, iterations=1, warmup_rounds=5)
    backend = "torch-cudagraph" if mode.endswith("cudagraph") else "torch"
    record(benchmark, backend, "fp16" if fp16 else "fp32", config, "cuda",
           parameters=model.num_parameters(), gaussians=model.num_gaussians)
