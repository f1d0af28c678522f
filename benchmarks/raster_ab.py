"""A/B timing of rasteriser builds in one process: the graph-replayed frame of each build, builds alternated.

Each configuration's scene (bench_rasterizer.make_scene: N Gaussians in the unit ball, SH degree 3, orbit cameras
at radius 2) is made once; then, `--reps` times, every build renders it from a CUDA graph (tight binning,
capacity 1.25 x its intersections) and the median of `--iters` replays is recorded. Alternating the builds inside
one process keeps clocks, memory placement and the scene the same for all of them, so differences of a few percent
are readable (benchmarks/rasterizer_notes.md, runs 10-12). Also recorded per build: intersections and evaluated
(pixel, Gaussian) pairs of one frame.

Run on a GPU host (builds from cuda/tests/build_emit_variants.sh):
    python benchmarks/raster_ab.py --out ab.json --configs 16384x512x1,1000000x512x1 \
        new=build/libdd3g_raster.so old=build/cull_off/libdd3g_raster.so
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "sdk"))

from bench_rasterizer import capture_graph, make_cameras, make_scene  # noqa: E402
from dd3g_sdk.bench import median_cuda_ms  # noqa: E402


def frame(torch, lib, rc, g, vm, Ks, W, C):
    """A graph that renders one frame with `lib`, and that frame's stats (intersections, evaluations)."""
    n, K = g["means"].shape[0], g["sh"].shape[1]
    out = [torch.empty(shape, device="cuda") for shape in ((C, W, W, 3), (C, W, W), (C, W, W))]
    bg = torch.ones(C, 3, device="cuda")

    def call(cfg, ws, stream):
        lib.forward(cfg, means=g["means"], quats=g["quats"], scales=g["scales"], opacities=g["opacities"],
                    sh=g["sh"], viewmats=vm, Ks=Ks, background=bg, rgb=out[0], alpha=out[1], depth=out[2],
                    workspace=ws, workspace_bytes=ws.numel(), stream=stream)

    stream = torch.cuda.current_stream()
    cfg = lib.make_config(n, C, W, W, K, "float32", 64 * n * C + 65536, rc.RasterOptions(count_evaluations=True))
    ws = torch.empty(lib.workspace_size(cfg), dtype=torch.uint8, device="cuda")
    call(cfg, ws, stream)
    st = lib.read_stats(ws, stream)
    cfg = lib.make_config(n, C, W, W, K, "float32", int(st.intersections * 1.25) + 4096, rc.RasterOptions())
    ws = torch.empty(lib.workspace_size(cfg), dtype=torch.uint8, device="cuda")
    graph = capture_graph(torch, lambda s: call(cfg, ws, s))
    graph.keep = (ws, out, bg)  # the graph's buffers live as long as it does
    return graph, {"intersections": st.intersections, "evaluations": st.evaluations}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("builds", nargs="+", help="NAME=path/to/libdd3g_raster.so, two or more")
    ap.add_argument("--configs", required=True, help="comma-separated NxRESxCAMS, e.g. 16384x512x1,1000000x1024x8")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from dd3g_sdk.render import cuda as rc

    libs = {}
    for spec in args.builds:
        name, sep, path = spec.partition("=")
        if not sep or not Path(path).is_file():
            sys.exit(f"{spec}: expected NAME=path to an existing libdd3g_raster.so")
        libs[name] = rc.RasterLibrary(Path(path))
    result = {"benchmark": "raster_ab.py (graph ms, builds alternated in one process)",
              "gpu": torch.cuda.get_device_name(), "date": datetime.date.today().isoformat(),
              "torch": torch.__version__, "cuda": torch.version.cuda, "iters": args.iters,
              "builds": {k: str(v.path) for k, v in libs.items()}, "graph_ms": {k: {} for k in libs},
              "stats": {k: {} for k in libs}}
    for spec in args.configs.split(","):
        n, W, C = (int(v) for v in spec.split("x"))
        key = f"{n}/{W}/{C}"
        g = make_scene(torch, n, seed=n + W + C)
        vm, Ks = make_cameras(torch, C, W, W)
        graphs = {}
        for name, lib in libs.items():
            graphs[name], result["stats"][name][key] = frame(torch, lib, rc, g, vm, Ks, W, C)
        for _ in range(args.reps):
            for name, graph in graphs.items():
                ms = median_cuda_ms(graph.replay, args.iters, 5)
                result["graph_ms"][name].setdefault(key, []).append(round(ms, 4))
        print(key, "  ".join(f"{name} {result['graph_ms'][name][key]} ms {result['stats'][name][key]['evaluations']:,} evals"
                             for name in libs), flush=True)
        del graphs
        torch.cuda.empty_cache()
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
