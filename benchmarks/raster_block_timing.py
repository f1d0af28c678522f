"""Where the raster kernel's time goes, block by block (a diagnostic for issue #9, not a benchmark of record).

Needs a build with -DDD3G_RASTER_DIAG=3 (correct images; every raster block records its start and end on the GPU's
global timer, its cycles, SM, list length, rounds or batches, and its pixels' largest evaluation count). For each
configuration it renders the bench scene of bench_rasterizer.py, reads the records of one frame and prints:

- span: first block start to last block end (the raster kernel alone, from inside it);
- the longest block and when it started: a kernel whose span is close to its longest block's end is bound by that
  block's serial path (a critical tile), not by the machine's throughput;
- how many blocks were running over time (busy fraction of the span with fewer blocks than SMs: the tail);
- how block time follows list length and the largest per-pixel evaluation count (Pearson r);
- the eight longest blocks with their tiles (tile_y counts rows over all cameras: row + tiles_y * camera).

    bash cuda/tests/build_emit_variants.sh  # or any build with -DDD3G_RASTER_DIAG=3, e.g. build/diag3/
    DD3G_RASTER_LIB=build/diag3/libdd3g_raster.so python benchmarks/raster_block_timing.py \\
        --configs 16384x512x1,65536x512x1 --out block_timing.json
"""
from __future__ import annotations

import argparse
import ctypes
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_rasterizer import make_cameras, make_scene  # noqa: E402 - it puts sdk/ on the path too

# DiagRecord of cuda/src/dd3g_raster.cu: t0, t1, cycles (u64), smid, n, rounds, max_eval (u32)
RECORD = np.dtype([("t0", "<u8"), ("t1", "<u8"), ("cycles", "<u8"), ("smid", "<u4"), ("n", "<u4"),
                   ("rounds", "<u4"), ("max_eval", "<u4")])
MAX_RECORDS = 1 << 16


def read_records(lib, blocks: int) -> np.ndarray:
    fn = lib._lib.dd3g_raster_diag_read
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    buf = np.zeros(min(blocks, MAX_RECORDS), dtype=RECORD)
    size = fn(buf.ctypes.data, buf.nbytes, 0)
    if size != RECORD.itemsize:
        raise SystemExit(f"{lib.path}: dd3g_raster_diag_read returned {size} (record size {RECORD.itemsize} expected)")
    return buf


def clear_records(lib) -> None:
    if lib._lib.dd3g_raster_diag_read(None, 0, 1) < 0:
        raise SystemExit(f"{lib.path}: dd3g_raster_diag_read(clear) failed")


def analyse(rec: np.ndarray, sms: int, tiles_x: int) -> dict:
    ids = np.nonzero(rec["t1"] > 0)[0]  # block b = tile x + tiles_x * (tile y + tiles_y * camera)
    rec = rec[ids]
    t0 = rec["t0"].astype(np.int64)
    t1 = rec["t1"].astype(np.int64)
    base = t0.min()
    start, end = (t0 - base) / 1e3, (t1 - base) / 1e3  # us
    dur = end - start
    span = float(end.max())
    i = int(np.argmax(dur))
    # blocks running at each of 200 instants of the span
    grid = np.linspace(0.0, span, 200, endpoint=False)
    running = ((start[None, :] <= grid[:, None]) & (end[None, :] > grid[:, None])).sum(axis=1)
    nonempty = rec["n"] > 0

    def corr(a, b):
        return float(np.corrcoef(a, b)[0, 1]) if len(a) > 2 and a.std() > 0 and b.std() > 0 else float("nan")

    top = np.argsort(-dur)[:8]
    return {
        "blocks": int(len(rec)), "nonempty_blocks": int(nonempty.sum()), "span_us": span,
        "block_us": {"mean": float(dur.mean()), "p50": float(np.median(dur)), "p90": float(np.percentile(dur, 90)),
                     "max": float(dur.max())},
        "sum_block_us_over_sms": float(dur.sum() / sms),
        "longest": {"us": float(dur[i]), "start_us": float(start[i]), "end_us": float(end[i]), "n": int(rec["n"][i]),
                    "rounds": int(rec["rounds"][i]), "max_eval": int(rec["max_eval"][i])},
        "last_start_us": float(start.max()),
        "max_running": int(running.max()),
        "tail_fraction_below_sms": float((running < sms).mean()),
        "corr_us_vs_n": corr(dur[nonempty], rec["n"][nonempty].astype(float)),
        "corr_us_vs_max_eval": corr(dur[nonempty], rec["max_eval"][nonempty].astype(float)),
        "us_per_max_eval": float(np.median(dur[nonempty] / np.maximum(rec["max_eval"][nonempty], 1))),
        "top": [{"us": float(dur[j]), "start_us": float(start[j]), "tile_x": int(ids[j] % tiles_x),
                 "tile_y": int(ids[j] // tiles_x), "n": int(rec["n"][j]),
                 "rounds": int(rec["rounds"][j]), "max_eval": int(rec["max_eval"][j])} for j in top],
        "running_over_time": [int(x) for x in running[::10]],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="16384x512x1,65536x512x1,1000000x512x1")
    ap.add_argument("--frames", type=int, default=5, help="frames recorded; the one with the median span is kept")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from dd3g_sdk.render import cuda as rc

    lib = rc.load_library()
    if not hasattr(lib._lib, "dd3g_raster_diag_read"):
        print(f"error: {lib.path} is not a DD3G_RASTER_DIAG=3 build (no dd3g_raster_diag_read)", file=sys.stderr)
        return 2
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    results = {"gpu": torch.cuda.get_device_name(0), "sms": sms, "library": str(lib.path), "configs": []}
    for c in args.configs.split(","):
        n, W, C = (int(v) for v in c.split("x"))
        g = make_scene(torch, n, seed=n + W + C)
        vm, Ks = make_cameras(torch, C, W, W)
        K = g["sh"].shape[1]
        rgb = torch.empty(C, W, W, 3, device="cuda")
        opts = rc.RasterOptions(count_evaluations=True)

        def frame(cfg, ws):
            lib.forward(cfg, means=g["means"], quats=g["quats"], scales=g["scales"], opacities=g["opacities"],
                        sh=g["sh"], viewmats=vm, Ks=Ks, rgb=rgb, workspace=ws, workspace_bytes=ws.numel(),
                        stream=torch.cuda.current_stream())

        cfg = lib.make_config(n, C, W, W, K, "float32", 64 * n * C + 65536, opts)
        ws = torch.empty(lib.workspace_size(cfg), dtype=torch.uint8, device="cuda")
        frame(cfg, ws)
        st = lib.read_stats(ws, torch.cuda.current_stream())
        cfg = lib.make_config(n, C, W, W, K, "float32", int(st.intersections * 1.25) + 4096, opts)
        ws = torch.empty(lib.workspace_size(cfg), dtype=torch.uint8, device="cuda")
        for _ in range(5):
            frame(cfg, ws)
        blocks = ((W + 15) // 16) ** 2 * C
        runs = []
        for _ in range(args.frames):
            torch.cuda.synchronize()
            clear_records(lib)
            frame(cfg, ws)
            torch.cuda.synchronize()
            runs.append(analyse(read_records(lib, blocks), sms, (W + 15) // 16))
        runs.sort(key=lambda r: r["span_us"])
        r = runs[len(runs) // 2]
        r.update({"N": n, "res": W, "cams": C, "intersections": int(st.intersections),
                  "evaluations": int(st.evaluations), "spans_us": [x["span_us"] for x in runs]})
        results["configs"].append(r)
        lg = r["longest"]
        print(f"{n}/{W}/{C}: raster span {r['span_us']:.1f} us over {r['blocks']} blocks "
              f"({r['nonempty_blocks']} non-empty, at most {r['max_running']} running); "
              f"block p50 {r['block_us']['p50']:.1f} p90 {r['block_us']['p90']:.1f} max {lg['us']:.1f} us "
              f"(n={lg['n']}, rounds={lg['rounds']}, max_eval={lg['max_eval']}, started at {lg['start_us']:.1f}, "
              f"ended at {lg['end_us']:.1f}); last start {r['last_start_us']:.1f}; "
              f"sum/SMs {r['sum_block_us_over_sms']:.1f} us; below {sms} running for "
              f"{100 * r['tail_fraction_below_sms']:.0f} % of the span; r(us, n) {r['corr_us_vs_n']:.2f}, "
              f"r(us, max_eval) {r['corr_us_vs_max_eval']:.2f}, {r['us_per_max_eval'] * 1e3:.1f} ns per max_eval")
        print("   running over time:", r["running_over_time"])
        del ws
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
