"""Forward-time benchmark: the dd3g CUDA rasteriser (cuda/) vs gsplat 1.5.3 `rasterization` (classic, RGB+ED).

Object-like scenes: N Gaussians uniform in the unit ball (radius 1), scales ~ the mean spacing, SH degree 3,
seen from orbit cameras at radius 2 with a 60 degree field of view (the ball fills the frame). Every time is the
median over `--iters` warm runs, measured with CUDA events, same GPU, same process.

Variants of ours: `direct` (one C call per frame from Python, capacity mode, no sync), `graph` (that call
captured into a CUDA graph and replayed: what an app rendering every frame gets), `graph_rect` (graph, tight tile
binning off: the effect of that change), `exact` (EXACT_COUNT: one host sync per frame, exact sort size).

Also measured once: the device-to-device copy bandwidth and the fp32 (tf32 off) matmul rate, which give the lower
bound max(bytes / BW, 15 flop * evaluations / FLOPS) per configuration (see benchmarks/rasterizer_notes.md), and
the replay time of a graph of empty kernels (the launch floor of a multi-kernel pipeline).

Run on a GPU host (needs build/libdd3g_raster.so or DD3G_RASTER_LIB, torch, gsplat):
    python benchmarks/bench_rasterizer.py --out benchmarks/results/rasterizer_h100.json
    python benchmarks/bench_rasterizer.py --quick        # 2 configurations, a few seconds
    python benchmarks/bench_rasterizer.py --profile --no-gsplat --out profiles.json   # per-kernel times only
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "sdk"))

from dd3g_sdk._fileio import atomic_write_text  # noqa: E402
from dd3g_sdk.bench import median_cuda_ms  # noqa: E402 - after the path line, for runs without an install

FLOP_PER_EVAL = 15  # per (pixel, Gaussian) evaluation: offset 2, quadratic form 9, exp + scale + clamp 3, test 1


def input_bytes(n: int, K: int) -> int:
    """The bound's bytes read: every fp32 input once (means 3, quats 4, scales 3, opacity 1, K SH coefficients x 3)."""
    return n * (3 + 4 + 3 + 1 + 3 * K) * 4


def ceilings(torch) -> dict:
    n = 1 << 28  # 1 GiB of float32
    src = torch.randn(n, device="cuda")
    dst = torch.empty_like(src)
    ms = median_cuda_ms(lambda: dst.copy_(src), 20, 3)
    bw = 2 * src.numel() * 4 / (ms * 1e-3)
    del src, dst
    torch.backends.cuda.matmul.allow_tf32 = False
    a = torch.randn(8192, 8192, device="cuda")
    b = torch.randn(8192, 8192, device="cuda")
    ms_mm = median_cuda_ms(lambda: a @ b, 10, 2)
    flops = 2 * 8192**3 / (ms_mm * 1e-3)
    # launch floor: a CUDA graph of 12 dependent tiny kernels
    x = torch.zeros(1, device="cuda")
    s = torch.cuda.Stream()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.stream(s):
        for _ in range(3):
            x.add_(1)
        with torch.cuda.graph(g, stream=s):
            for _ in range(12):
                x.add_(1)
    ms_g = median_cuda_ms(g.replay, 50, 5)
    return {"copy_bytes_per_s": bw, "fp32_flops": flops, "graph12_empty_ms": ms_g}


def make_scene(torch, n: int, seed: int, sh_coeffs: int = 16) -> dict:
    gen = torch.Generator(device="cuda").manual_seed(seed)
    d = torch.randn(n, 3, device="cuda", generator=gen)
    d = d / d.norm(dim=1, keepdim=True)
    r = torch.rand(n, 1, device="cuda", generator=gen) ** (1 / 3)
    means = d * r
    q = torch.randn(n, 4, device="cuda", generator=gen)
    q = q / q.norm(dim=1, keepdim=True)
    spacing = (4.19 / max(n, 1)) ** (1 / 3)
    scales = spacing * 0.6 * torch.exp(0.3 * torch.randn(n, 3, device="cuda", generator=gen))
    opac = 0.3 + 0.7 * torch.rand(n, device="cuda", generator=gen)
    sh = 0.2 * torch.randn(n, sh_coeffs, 3, device="cuda", generator=gen)
    sh[:, 0] = torch.rand(n, 3, device="cuda", generator=gen) * 3 - 1.5
    return {"means": means, "quats": q, "scales": scales, "opacities": opac, "sh": sh}


def make_cameras(torch, C: int, W: int, H: int):
    from dd3g_sdk.cameras import orbit_camera

    cams = [orbit_camera(360.0 * k / C + 10.0, 20.0, 2.0, 60.0, W, H) for k in range(C)]
    vm = torch.from_numpy(np.stack([c.world_to_cam for c in cams]).astype(np.float32)).cuda()
    Ks = torch.from_numpy(np.stack([c.K for c in cams]).astype(np.float32)).cuda()
    return vm, Ks


def capture_graph(torch, call):
    """A CUDA graph of call(stream): one warm-up run on a side stream, then the capture (what an app replays)."""
    side = torch.cuda.Stream()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(side):
        call(side)
        side.synchronize()
        with torch.cuda.graph(graph, stream=side):
            call(side)
    return graph


def bench_config(torch, lib, rc, gsplat, n, W, C, iters, warmup) -> dict:
    H = W
    g = make_scene(torch, n, seed=n + W + C)
    vm, Ks = make_cameras(torch, C, W, H)
    bg = torch.ones(C, 3, device="cuda")
    K = g["sh"].shape[1]
    row = {"N": n, "res": W, "cams": C, "sh_degree": int(math.isqrt(K)) - 1}

    # gsplat
    if gsplat is not None:
        def run_gsplat():
            # gsplat 1.5.3 asserts on `backgrounds` with RGB+ED, so the white background is composited here
            # (one extra elementwise op, counted in its time)
            out, a, _ = gsplat.rasterization(g["means"], g["quats"], g["scales"], g["opacities"], g["sh"], vm, Ks, W,
                                             H, sh_degree=row["sh_degree"], render_mode="RGB+ED")
            return out[..., :3] + (1.0 - a) * bg[:, None, None, :], a
        with torch.no_grad():
            row["gsplat_ms"] = median_cuda_ms(run_gsplat, iters, warmup)
            ref_rgb, ref_alpha = run_gsplat()

    rgb = torch.empty(C, H, W, 3, device="cuda")
    alpha = torch.empty(C, H, W, device="cuda")
    depth = torch.empty(C, H, W, device="cuda")
    stream = torch.cuda.current_stream()

    def setup(opts, capacity):
        cfg = lib.make_config(n, C, W, H, K, "float32", capacity, opts)
        ws = torch.empty(lib.workspace_size(cfg), dtype=torch.uint8, device="cuda")
        return cfg, ws

    def call(cfg, ws, s):
        return lib.forward(cfg, means=g["means"], quats=g["quats"], scales=g["scales"], opacities=g["opacities"],
                           sh=g["sh"], viewmats=vm, Ks=Ks, background=bg, rgb=rgb, alpha=alpha, depth=depth,
                           workspace=ws, workspace_bytes=ws.numel(), stream=s)

    def sized(opts):
        """Workspace with capacity = 1.25 x the frame's intersections (what CudaRasterizer would settle on)."""
        cfg, ws = setup(rc.RasterOptions(tight_tiles=opts.tight_tiles, count_evaluations=True), 64 * n * C + 65536)
        call(cfg, ws, stream)
        st = lib.read_stats(ws, stream)
        del ws
        cap = int(st.intersections * 1.25) + 4096
        return setup(opts, cap), st

    for name, opts in (("graph", rc.RasterOptions()), ("graph_rect", rc.RasterOptions(tight_tiles=False))):
        (cfg, ws), st = sized(opts)
        row[f"{name}_intersections"] = st.intersections
        row[f"{name}_evaluations"] = st.evaluations
        if name == "graph":
            row["direct_ms"] = median_cuda_ms(lambda: call(cfg, ws, stream), iters, warmup)
            if gsplat is not None:
                row["mean_abs_rgb_vs_gsplat"] = float((rgb - ref_rgb).abs().mean())
                row["mean_abs_alpha_vs_gsplat"] = float((alpha[..., None] - ref_alpha).abs().mean())
        graph = capture_graph(torch, lambda s: call(cfg, ws, s))
        row[f"{name}_ms"] = median_cuda_ms(graph.replay, iters, warmup)
        del graph, ws
    cfg, ws = setup(rc.RasterOptions(exact_count=True), int(row["graph_intersections"] * 1.25) + 4096)
    row["exact_ms"] = median_cuda_ms(lambda: call(cfg, ws, stream), iters, warmup)
    del ws

    in_bytes = input_bytes(n, K)
    out_bytes = C * H * W * 5 * 4
    row["bound_bytes"] = in_bytes + out_bytes
    row["bound_flops"] = FLOP_PER_EVAL * row["graph_evaluations"]
    return row


def profile_config(torch, lib, rc, n, W, C, frames: int = 20) -> list[tuple[str, float]]:
    """Per-kernel GPU time (us per frame) of the direct path, from torch.profiler's CUDA activity trace."""
    from torch.profiler import ProfilerActivity, profile

    H = W
    g = make_scene(torch, n, seed=n + W + C)
    vm, Ks = make_cameras(torch, C, W, H)
    K = g["sh"].shape[1]
    rgb = torch.empty(C, H, W, 3, device="cuda")
    cfg = lib.make_config(n, C, W, H, K, "float32", 64 * n * C + 65536, rc.RasterOptions())
    ws = torch.empty(lib.workspace_size(cfg), dtype=torch.uint8, device="cuda")
    call = lambda: lib.forward(cfg, means=g["means"], quats=g["quats"], scales=g["scales"],  # noqa: E731
                               opacities=g["opacities"], sh=g["sh"], viewmats=vm, Ks=Ks, rgb=rgb, workspace=ws,
                               workspace_bytes=ws.numel(), stream=torch.cuda.current_stream())
    call()
    st = lib.read_stats(ws, torch.cuda.current_stream())
    cfg = lib.make_config(n, C, W, H, K, "float32", int(st.intersections * 1.25) + 4096, rc.RasterOptions())
    ws = torch.empty(lib.workspace_size(cfg), dtype=torch.uint8, device="cuda")
    for _ in range(3):
        call()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(frames):
            call()
        torch.cuda.synchronize()
    out = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if t > 0:
            out.append((e.key[:90], t / frames))
    return sorted(out, key=lambda x: -x[1])


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _max_sm_clock_mhz() -> int | None:
    """The GPU's maximum SM clock from nvidia-smi (torch does not report it), or None where that fails."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=clocks.max.sm", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return int(out.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def write_json(path: Path, doc: dict) -> None:
    """`doc` as indented JSON at `path` (its folder made if missing), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="two small configurations only")
    ap.add_argument("--no-gsplat", action="store_true")
    ap.add_argument("--profile", action="store_true", help="only print per-kernel times of a few configurations")
    ap.add_argument("--configs", default="", help="comma-separated NxRESxCAMS, e.g. 16384x512x1,1000000x1024x8")
    args = ap.parse_args()

    import torch

    from dd3g_sdk.render import cuda as rc

    lib = rc.load_library()
    gsplat = None
    if not args.no_gsplat:
        import gsplat  # noqa: F811

    if args.profile:
        pc = ([tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")] if args.configs else
              [(16_384, 512, 1), (1_000_000, 512, 1), (1_000_000, 1024, 8)])
        profiles = {}
        for n, W, C in pc:
            rows = profile_config(torch, lib, rc, n, W, C)
            total = sum(t for _, t in rows)
            print(f"\nprofile N={n} res={W} cams={C}: total {total:.1f} us/frame")
            for name, t in rows[:14]:
                print(f"  {t:9.1f} us  {name}")
            kernels: dict[str, float] = {}
            for name, t in rows:  # names are cut at 90 characters, so two CUB kernels can share one
                key, k = name, 2
                while key in kernels:
                    key, k = f"{name} ({k})", k + 1
                kernels[key] = round(t, 2)
            profiles[f"{n}/{W}/{C}"] = {"total_us": round(total, 2), "kernels_us": kernels}
            torch.cuda.empty_cache()
        if args.out:  # benchmarks/bound_floor.py reads this beside a table of the same build
            props = torch.cuda.get_device_properties(0)
            doc = {"benchmark": "bench_rasterizer.py --profile", "date": now_utc(), "gpu": torch.cuda.get_device_name(),
                   "sms": props.multi_processor_count, "max_sm_clock_mhz": _max_sm_clock_mhz(),
                   "torch": torch.__version__, "cuda": torch.version.cuda, "library": str(lib.path),
                   "library_version": lib.version, "profiles": profiles}
            write_json(args.out, doc)
        return 0
    ceil = ceilings(torch)
    sizes = [16_384, 65_536, 200_000, 1_000_000]
    configs = [(n, 512, 1) for n in sizes] + [(n, 1024, 1) for n in sizes] + \
              [(n, 512, 8) for n in sizes] + [(n, 1024, 8) for n in sizes]
    if args.quick:
        configs = [(16_384, 512, 1), (200_000, 1024, 8)]
    if args.configs:
        configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]
    rows = []
    for n, W, C in configs:
        row = bench_config(torch, lib, rc, gsplat, n, W, C, args.iters, args.warmup)
        t_bytes = row["bound_bytes"] / ceil["copy_bytes_per_s"] * 1e3
        t_flops = row["bound_flops"] / ceil["fp32_flops"] * 1e3
        row["bound_ms"] = max(t_bytes, t_flops)
        row["bound_term"] = "bytes" if t_bytes >= t_flops else "flops"
        rows.append(row)
        print(json.dumps(row), flush=True)
        torch.cuda.empty_cache()

    result = {
        "benchmark": "bench_rasterizer.py",
        "date": now_utc(),
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gsplat": getattr(gsplat, "__version__", None),
        "library": str(lib.path),
        "library_version": lib.version,
        "python": platform.python_version(),
        "iters": args.iters,
        "ceilings": ceil,
        "rows": rows,
    }
    if args.out:
        write_json(args.out, result)

    print(f"\n{result['gpu']}  copy {ceil['copy_bytes_per_s'] / 1e12:.2f} TB/s  fp32 {ceil['fp32_flops'] / 1e12:.1f} "
          f"TFLOP/s  12-node empty graph {ceil['graph12_empty_ms'] * 1e3:.1f} us")
    hdr = (f"{'N':>8} {'res':>5} {'C':>2} | {'gsplat':>7} {'direct':>7} {'graph':>7} {'rect':>7} {'exact':>7} | "
           f"{'x gs':>5} {'bound':>7} {'x bnd':>6} | {'isect':>9} {'evals/px':>8} {'dRGB':>8}")
    print(hdr + "\n" + "-" * len(hdr))
    for r in rows:
        gs = r.get("gsplat_ms", float("nan"))
        print(f"{r['N']:>8} {r['res']:>5} {r['cams']:>2} | {gs:7.3f} {r['direct_ms']:7.3f} {r['graph_ms']:7.3f} "
              f"{r['graph_rect_ms']:7.3f} {r['exact_ms']:7.3f} | {gs / r['graph_ms']:5.1f} {r['bound_ms']:7.4f} "
              f"{r['graph_ms'] / r['bound_ms']:6.1f} | {r['graph_intersections']:>9} "
              f"{r['graph_evaluations'] / (r['cams'] * r['res'] ** 2):8.1f} {r.get('mean_abs_rgb_vs_gsplat', float('nan')):8.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
