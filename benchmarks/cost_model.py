"""The cost model beside the measured numbers: FLOPs and bytes of each PEPD preset and of the rasteriser, the
floor they give on the project's GPU host from its measured ceilings, and projections for H100 SXM, Jetson Orin
(AGX, Nano) and RTX 4090 from published peak rates.

    python benchmarks/cost_model.py                 # CPU, ~1 min: writes benchmarks/results/cost_model.json
    python benchmarks/cost_model.py --ceilings-only --out ceilings.json      # on a GPU: measure the ceilings
    python benchmarks/cost_model.py --ceilings benchmarks/results/ceilings_<gpu>.json
                                    (default: the first results/ceilings_*.json by name, if any)

PEPD (batch 1): FLOPs are measured, not guessed: torch.utils.flop_counter.FlopCounterMode over one forward pass
of the preset, run on fake tensors (shapes only, no arithmetic), with attention forced to torch's math kernel
so that its two matrix products are counted (the fused CPU kernel is not in the counter's table). Bytes:
- min_bytes: the fewest bytes one forward can move through device memory: every weight read once, the inputs
  (image, noise) read once, the outputs (means, scales, quats, opacities, sh) written once. fp32 and half
  precision (fp16/bf16 weights; inputs and outputs stay fp32, as in the exports).
- unfused_bytes: every non-view aten op reads its tensor inputs and writes its outputs once: what an eager,
  op-by-op runtime moves (an estimate, not a floor: caches help it, and fusion removes most of it).
Floor on a device = max(FLOPs / matmul rate, min_bytes / copy bandwidth); the larger term says which resource
bounds it. fp32 uses the fp32 rate with TF32 off; half precision uses the bf16 tensor-core rate.

Rasteriser (one camera, the synthetic scene of benchmarks/bench_rasterizer.py and `dd3g bench`): bytes = the
Gaussians read once (3+4+3+1+3K floats) + the image written once (RGB, alpha, depth: 5 floats a pixel).
Intersections (tile, Gaussian) pairs are counted with the reference rasteriser's projection and its box rule;
evaluations_upper = intersections x 256 (every pixel of a touched tile evaluates every Gaussian in the tile's
list: no early termination), FLOPs_upper = 15 per evaluation (see bench_rasterizer.py). The sort of the
intersections is not in these numbers.

Ceilings: measured on the project's GPU host (a 1 GiB device-to-device copy counting read + write bytes; 8192^3
matrix products with torch), named in the output with the GPU they come from. Without a measured file the
numbers the rasteriser work measured on the H100 are used (2.97 TB/s, 51 TFLOP/s fp32) and labelled so.
Projections use published peak rates and are labelled projections: at peak a device is never faster than
this, and real kernels reach a fraction of peak (the measured H200 ceilings are ~88 % of its copy peak).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import platform
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "sdk") not in sys.path:
    sys.path.insert(0, str(ROOT / "sdk"))

from dd3g_sdk.bench import median_cuda_ms  # noqa: E402 - after the path line, for runs without an install
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "cost_model.json"
RESULTS = ROOT / "benchmarks" / "results"

PRESETS = ("tiny", "small", "base")
RASTER_SIZES = (16_384, 65_536, 200_000, 1_000_000)
RASTER_RESOLUTIONS = (512, 1024)
FLOP_PER_EVAL = 15  # as benchmarks/bench_rasterizer.py: offset 2, quadratic form 9, exp + scale + clamp 3, test 1
TILE = 16

# Measured on the project's H100 host by the rasteriser work (benchmarks/bench_rasterizer.py), used when no
# ceilings file is given.
FALLBACK_CEILINGS = {"device": "NVIDIA H100 80GB HBM3", "copy_bytes_per_s": 2.97e12, "fp32_flops": 51e12,
                     "bf16_flops": None, "source": "bench_rasterizer.py ceilings (H100, tf32 off), quoted"}

# Published peak rates (dense; no sparsity). Half = fp16/bf16 on tensor cores with fp32 accumulation.
DEVICES = {
    "H100 SXM 80GB": {
        "copy_bytes_per_s": 3.35e12, "fp32_flops": 66.9e12, "half_flops": 989e12,
        "source": "H100 SXM datasheet: 67 FP32 TFLOPS, 989 dense FP16/BF16 tensor TFLOPS, 3.35 TB/s HBM3"},
    "Jetson AGX Orin 64GB": {
        "copy_bytes_per_s": 204.8e9, "fp32_flops": 5.32e12, "half_flops": 42.5e12,
        "source": "Jetson AGX Orin technical brief: 2048 CUDA cores at 1.3 GHz (5.3 FP32 TFLOPS), 170 sparse INT8 "
                  "TOPS on the GPU (dense fp16 = 170 / 4), LPDDR5 204.8 GB/s"},
    "Jetson Orin Nano 8GB": {
        "copy_bytes_per_s": 68e9, "fp32_flops": 1.28e12, "half_flops": 10e12,
        "source": "Orin Nano 8GB datasheet (15 W): 1024 CUDA cores at 625 MHz, 40 sparse INT8 TOPS "
                  "(dense fp16 = 40 / 4), 68 GB/s"},
    "Jetson Orin Nano 8GB Super": {
        "copy_bytes_per_s": 102e9, "fp32_flops": 2.09e12, "half_flops": 16.75e12,
        "source": "Orin Nano Super (JetPack 6.1+, 25 W): 1020 MHz GPU, 67 sparse INT8 TOPS (dense fp16 = 67 / 4), "
                  "102 GB/s"},
    "GeForce RTX 4090": {
        "copy_bytes_per_s": 1008e9, "fp32_flops": 82.6e12, "half_flops": 165.2e12,
        "source": "Ada whitepaper: 82.6 FP32 TFLOPS (boost), 165.2 dense FP16/BF16 tensor TFLOPS with FP32 "
                  "accumulate, 1008 GB/s GDDR6X"},
}


# ------------------------------------------------------------------------------------------------------------
# counting
# ------------------------------------------------------------------------------------------------------------
def _nbytes(x) -> int:
    import torch

    return x.numel() * x.element_size() if isinstance(x, torch.Tensor) else 0


def _byte_counter():
    """A dispatch mode that adds up the bytes of every non-view aten op's tensor inputs and outputs."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    free = ("empty", "detach", "alias", "lift_fresh", "_local_scalar_dense", "sym_", "_to_copy_meta")

    class ByteCounter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.total = 0
            self.by_op: Counter = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            if not func.is_view and not name.startswith(free):
                b = sum(_nbytes(t) for t in tree_flatten((args, kwargs or {}))[0])
                b += sum(_nbytes(t) for t in tree_flatten(out)[0])
                self.total += b
                self.by_op[name] += b
            return out

    return ByteCounter()


def count_forward(fn, *inputs) -> dict:
    """FLOPs (torch's counter, attention through the math kernel) and unfused bytes of `fn(*inputs)`."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    fc = FlopCounterMode(display=False)
    bc = _byte_counter()
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), fc, bc:
        fn(*inputs)
    by_op = {str(k).removeprefix("aten."): int(v) for k, v in fc.get_flop_counts().get("Global", {}).items()}
    return {"flops": int(fc.get_total_flops()), "flops_by_op": dict(sorted(by_op.items())),
            "unfused_bytes": int(bc.total)}


def count_pepd(preset: str, batch: int = 1) -> dict:
    """Parameters, FLOPs and bytes of one PEPD forward pass (preset, random weights: counts do not depend on
    the values). Runs on fake tensors: seconds even for "base"."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from dd3g_sdk.model.pepd import PEPD, PEPDConfig

    cfg = PEPDConfig.preset(preset)
    with torch.device("meta"):
        model = PEPD(cfg).eval()
    model = model.to_empty(device="cpu")  # uninitialised storage: only shapes matter below
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    with FakeTensorMode(allow_non_fake_inputs=True):
        img = torch.empty(batch, 3, cfg.image_size, cfg.image_size)
        noise = torch.empty(batch, *model.noise_shape)
        counted = count_forward(model, img, noise)
    n, k = model.num_gaussians, cfg.sh_coeffs
    in_bytes = 4 * batch * (3 * cfg.image_size**2 + math.prod(model.noise_shape))
    out_bytes = 4 * batch * n * (3 + 3 + 4 + 1 + 3 * k)
    return {
        "preset": preset, "batch": batch, "parameters": params, "num_gaussians": n,
        "image_size": cfg.image_size, "noise_shape": list(model.noise_shape), **counted,
        "min_bytes_fp32": 4 * params + buffers + in_bytes + out_bytes,
        "min_bytes_half": 2 * params + buffers + in_bytes + out_bytes,
        "io_bytes": in_bytes + out_bytes,
    }


def tile_ranges(mean2d: np.ndarray, cov2d: np.ndarray, opacities: np.ndarray, depth: np.ndarray, width: int,
                height: int, near: float = 0.01, tile: int = TILE) -> np.ndarray:
    """[N, 4] (tx0, tx1, ty0, ty1) tile ranges (end exclusive) of each Gaussian's box; empty for culled ones.

    mean2d [N, 2] px, cov2d [N, 2, 2] px^2 (with the low-pass), opacities [N], depth [N] camera z. The rules of
    dd3g_sdk.render.reference (gsplat 1.5.3): box half-size ceil(extend * sigma), extend =
    min(sqrt(2 ln(opacity * 255)), 3.33); culled behind `near`, with det <= 0, opacity < 1/255, off screen."""
    a, b, c = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]
    det = a * c - b * b
    op = np.maximum(opacities, 1 / 255)
    extend = np.minimum(np.sqrt(2 * np.log(op * 255)), 3.33)
    rx = np.ceil(extend * np.sqrt(np.maximum(a, 0)))
    ry = np.ceil(extend * np.sqrt(np.maximum(c, 0)))
    x, y = mean2d[:, 0], mean2d[:, 1]
    vis = (depth >= near) & (det > 0) & (opacities >= 1 / 255) & ((rx > 0) | (ry > 0))
    vis &= (x + rx > 0) & (x - rx < width) & (y + ry > 0) & (y - ry < height) & np.isfinite(mean2d).all(1)
    tw, th = math.ceil(width / tile), math.ceil(height / tile)
    r = np.stack([np.clip(np.floor((x - rx) / tile), 0, tw), np.clip(np.ceil((x + rx) / tile), 0, tw),
                  np.clip(np.floor((y - ry) / tile), 0, th), np.clip(np.ceil((y + ry) / tile), 0, th)], 1)
    r[~vis] = 0
    return r.astype(np.int64)


def count_intersections(ranges: np.ndarray) -> int:
    """Number of (tile, Gaussian) pairs of [N, 4] tile ranges."""
    return int(((ranges[:, 1] - ranges[:, 0]) * (ranges[:, 3] - ranges[:, 2])).sum())


def raster_cost(n: int, resolution: int, seed: int = 0) -> dict:
    """Bytes, intersections and an upper bound of evaluations/FLOPs of one frame of the synthetic scene."""
    import torch

    from dd3g_sdk.bench import scene_camera, synthetic_scene
    from dd3g_sdk.render.reference import project, quat_scale_to_covar

    g = synthetic_scene(n, seed)
    cam = scene_camera(resolution)
    t = g.to_torch()
    with torch.no_grad():
        mean2d, cov2d, depth = project(t["means"], quat_scale_to_covar(t["quats"], t["scales"]),
                                       torch.tensor(cam.world_to_cam[None], dtype=torch.float32),
                                       torch.tensor(cam.K[None], dtype=torch.float32), resolution, resolution)
    ranges = tile_ranges(mean2d[0].numpy(), cov2d[0].numpy(), g.opacities, depth[0].numpy(), resolution, resolution)
    isect = count_intersections(ranges)
    k = g.sh.shape[1]
    return {"num_gaussians": n, "resolution": resolution, "cameras": 1, "sh_degree": g.sh_degree,
            "min_bytes": n * (3 + 4 + 3 + 1 + 3 * k) * 4 + resolution**2 * 5 * 4,
            "intersections": isect, "evaluations_upper": isect * TILE * TILE,
            "flops_upper": FLOP_PER_EVAL * isect * TILE * TILE}


# ------------------------------------------------------------------------------------------------------------
# ceilings (GPU)
# ------------------------------------------------------------------------------------------------------------
def measure_ceilings() -> dict:
    """Device-to-device copy bandwidth (read + write bytes) and matmul rates, measured with CUDA events."""
    import torch

    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "method": "median of CUDA-event times; copy: 1 GiB float32 device-to-device, bytes = read + write; "
                     "matmul: 8192^3 random operands, 2 n^3 FLOPs"}
    n = 1 << 28
    src = torch.randn(n, device="cuda")
    dst = torch.empty_like(src)
    out["copy_bytes_per_s"] = 2 * n * 4 / (median_cuda_ms(lambda: dst.copy_(src), 30, 3) * 1e-3)
    del src, dst
    m = 8192
    prev = torch.backends.cuda.matmul.allow_tf32
    try:
        for name, dtype, tf32 in (("fp32_flops", torch.float32, False), ("tf32_flops", torch.float32, True),
                                  ("fp16_flops", torch.float16, False), ("bf16_flops", torch.bfloat16, False)):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            # Several operand pairs in rotation, so that no run reuses another's operands from the L2 cache.
            pairs = [(torch.randn(m, m, device="cuda", dtype=dtype), torch.randn(m, m, device="cuda", dtype=dtype))
                     for _ in range(3)]
            i = iter(range(1 << 30))
            ms = median_cuda_ms(lambda: torch.mm(*pairs[next(i) % 3]), 20, 3)
            out[name] = 2 * m**3 / (ms * 1e-3)
            del pairs
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    return out


# ------------------------------------------------------------------------------------------------------------
# the document
# ------------------------------------------------------------------------------------------------------------
def floor_ms(flops: float, nbytes: float, flop_rate: float | None, bw: float) -> dict:
    """max(flops / rate, bytes / bandwidth) in ms and which term bounds it."""
    t_bytes = nbytes / bw * 1e3
    t_flops = flops / flop_rate * 1e3 if flop_rate else None
    if t_flops is None:
        return {"floor_ms": None, "flops_ms": None, "bytes_ms": t_bytes, "bound": None}
    return {"floor_ms": max(t_flops, t_bytes), "flops_ms": t_flops, "bytes_ms": t_bytes,
            "bound": "flops" if t_flops >= t_bytes else "bytes"}


def build(ceilings: dict, presets=PRESETS, raster_sizes=RASTER_SIZES, raster_res=RASTER_RESOLUTIONS) -> dict:
    import torch

    pepd = []
    for p in presets:
        c = count_pepd(p)
        bw = ceilings["copy_bytes_per_s"]
        c["floor"] = {"fp32": floor_ms(c["flops"], c["min_bytes_fp32"], ceilings["fp32_flops"], bw),
                     "bf16": floor_ms(c["flops"], c["min_bytes_half"], ceilings.get("bf16_flops"), bw),
                     "unfused_bytes_ms": c["unfused_bytes"] / bw * 1e3}
        c["projections"] = {
            d: {"fp32": floor_ms(c["flops"], c["min_bytes_fp32"], r["fp32_flops"], r["copy_bytes_per_s"]),
                "half": floor_ms(c["flops"], c["min_bytes_half"], r["half_flops"], r["copy_bytes_per_s"])}
            for d, r in DEVICES.items()}
        pepd.append(c)
        print(f"{p:>5}: {c['parameters'] / 1e6:8.2f} M params {c['flops'] / 1e9:9.2f} GFLOP  "
              f"min {c['min_bytes_fp32'] / 1e6:8.1f} MB  unfused {c['unfused_bytes'] / 1e9:7.2f} GB", flush=True)
    raster = []
    for res in raster_res:
        for n in raster_sizes:
            r = raster_cost(n, res)
            r["floor"] = {"bytes_floor_ms": r["min_bytes"] / ceilings["copy_bytes_per_s"] * 1e3,
                         "flops_upper_ms": r["flops_upper"] / ceilings["fp32_flops"] * 1e3}
            r["projections"] = {d: {"bytes_floor_ms": r["min_bytes"] / v["copy_bytes_per_s"] * 1e3,
                                    "flops_upper_ms": r["flops_upper"] / v["fp32_flops"] * 1e3}
                                for d, v in DEVICES.items()}
            raster.append(r)
            print(f"raster {n:>8} @ {res}: {r['intersections']:>9} intersections", flush=True)
    return {
        "benchmark": "cost_model.py",
        "kind": "cost_model",
        "date": datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "method": {
            "flops": "torch.utils.flop_counter.FlopCounterMode, one forward pass at batch 1, fake tensors, "
                     "SDPA through the math kernel",
            "min_bytes": "weights read once + inputs read once + outputs written once",
            "unfused_bytes": "sum over non-view aten ops of input + output tensor bytes (eager estimate)",
            "floor": "max(FLOPs / matmul rate, bytes / copy bandwidth)",
            "raster": "synthetic ball scene of bench_rasterizer.py; intersections from the reference projection "
                      "and box rule; evaluations_upper = intersections x 256; 15 FLOPs per evaluation",
            "projections": "published peak rates (dense), not measurements",
        },
        "ceilings": ceilings,
        "devices": DEVICES,
        "pepd": pepd,
        "rasterizer": raster,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--ceilings-only", action="store_true", help="measure the GPU ceilings and write only them")
    ap.add_argument("--ceilings", type=Path, default=None,
                    help="measured ceilings JSON (default: the first results/ceilings_*.json, if any)")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--raster-sizes", default=",".join(map(str, RASTER_SIZES)))
    ap.add_argument("--raster-resolutions", default=",".join(map(str, RASTER_RESOLUTIONS)))
    args = ap.parse_args(argv)

    if args.ceilings_only:
        ceil = measure_ceilings()
        text = json.dumps(ceil, indent=1) + "\n"
        if args.out:
            args.out.write_text(text)
        print(f"{ceil['device']}: copy {ceil['copy_bytes_per_s'] / 1e12:.2f} TB/s | fp32 (tf32 off) "
              f"{ceil['fp32_flops'] / 1e12:.1f} | tf32 {ceil['tf32_flops'] / 1e12:.1f} | fp16 "
              f"{ceil['fp16_flops'] / 1e12:.1f} | bf16 {ceil['bf16_flops'] / 1e12:.1f} TFLOP/s")
        return 0
    found = sorted(RESULTS.glob("ceilings_*.json"))
    path = args.ceilings or (found[0] if found else None)
    if path is not None:
        ceil = json.loads(Path(path).read_text())
        ceil["source"] = f"measured: {Path(path).name}"
    else:
        ceil = dict(FALLBACK_CEILINGS)
    doc = build(ceil, tuple(args.presets.split(",")), tuple(int(x) for x in args.raster_sizes.split(",")),
                tuple(int(x) for x in args.raster_resolutions.split(",")))
    out = args.out or DEFAULT_OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        raise SystemExit(main())
