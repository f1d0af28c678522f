"""How far a frame of this rasteriser can get towards the bound (issue #9), from measured results; runs on the CPU.

Reads a table of bench_rasterizer.py (the bound, the frame, the evaluated pairs, the ceilings) and a per-kernel
profile of the same build (bench_rasterizer.py --profile --out). For every configuration in both it splits the
frame's kernel time into two floors and the measured rest:

    read   = N x 236 bytes (every input once) / copy ceiling               the projection's unavoidable part
    blend  = evaluated pairs x instructions per pair / (SMs x 128 x clock) this build's blend loop at peak issue:
                                                                           every lane busy, every pair rejected
                                                                           at its first test
    sort   = CUB's radix-sort kernels, as measured (0 on the binned path, which sorts inside its raster kernel)
    other  = every other microsecond of the profile: the projection beyond `read`, the raster kernel beyond
             `blend` (staging, list building, barriers, idle lanes, the binned path's tile sorts), the list
             writer, scans, pads and memsets

`slack` = 3 x bound - read - blend is the time 3x leaves for sort + other; `cut_needed` is the share of the measured
sort + other that would have to go for the frame to reach 3x with both floors met exactly.

    python benchmarks/bound_floor.py benchmarks/results/rasterizer_h200_run16.json \\
        benchmarks/results/rasterizer_h200_run16_profiles.json [--out floor.json]

Instructions per pair: the SASS of the blend loops (sm_90, nvcc 13.0), counted as in benchmarks/rasterizer_notes.md
run 16: 74 per four pairs in the sorted path's culled loop (k_raster), 35 per two in the binned path's (k_raster_binned).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_rasterizer import input_bytes, now_utc, write_json  # noqa: E402 - the bound's own byte count

INSTR_PER_PAIR = {"sorted": 74 / 4, "binned": 35 / 2}
LANES_PER_SM_CYCLE = 128  # four schedulers, one 32-lane warp instruction each a cycle (sm_80 - sm_90)


def kernel_parts(kernels: dict[str, float]) -> dict[str, float]:
    """Split a profile's kernels (us a frame) into raster, projection, sort and other time."""
    parts = {"raster": 0.0, "projection": 0.0, "sort": 0.0, "other": 0.0}
    for name, us in kernels.items():
        if "k_raster" in name:
            parts["raster"] += us
        elif "k_project" in name or "k_bin_count" in name:  # k_bin_count: the binned path's projection
            parts["projection"] += us
        elif "radix_sort" in name:
            parts["sort"] += us
        else:
            parts["other"] += us
    return parts


def floor_rows(table: dict, profiles: dict, sms: int, clock_ghz: float) -> list[dict]:
    ceil = table["ceilings"]
    issue = sms * LANES_PER_SM_CYCLE * clock_ghz * 1e9  # lane-instructions a second
    out = []
    for r in table["rows"]:
        key = f"{r['N']}/{r['res']}/{r['cams']}"
        if key not in profiles:
            continue
        kernels = profiles[key]["kernels_us"]
        parts = kernel_parts(kernels)
        path = "binned" if any("k_raster_binned" in k for k in kernels) else "sorted"
        bound = r["bound_ms"] * 1e3
        read = input_bytes(r["N"], (r["sh_degree"] + 1) ** 2) / ceil["copy_bytes_per_s"] * 1e6
        blend = r["graph_evaluations"] * INSTR_PER_PAIR[path] / issue * 1e6
        sort = parts["sort"]
        other = sum(parts.values()) - sort - min(read, parts["projection"]) - min(blend, parts["raster"])
        slack = 3 * bound - read - blend
        out.append({
            "config": key, "path": path, "bound_term": r["bound_term"],
            "bound_us": round(bound, 1), "three_x_us": round(3 * bound, 1), "frame_us": round(r["graph_ms"] * 1e3, 1),
            "frame_x": round(r["graph_ms"] * 1e3 / bound, 2),
            "read_us": round(read, 1), "blend_floor_us": round(blend, 1), "sort_us": round(sort, 1),
            "other_us": round(other, 1), "floor_x": round((read + blend) / bound, 2),
            "floor_with_sort_x": round((read + blend + sort) / bound, 2), "slack_us": round(slack, 1),
            "cut_needed": round(min(1.0, max(0.0, 1 - slack / (sort + other))) if sort + other > 0 else 0.0, 3),
        })
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("table", type=Path, help="bench_rasterizer.py results (rows, ceilings)")
    ap.add_argument("profiles", type=Path, help="bench_rasterizer.py --profile --out results of the same build")
    ap.add_argument("--sms", type=int, default=None, help="SM count (default: the profile's, else 132)")
    ap.add_argument("--clock-ghz", type=float, default=None,
                    help="SM clock (default: the profile's nvidia-smi maximum, else 1.98, the H100/H200 SXM boost)")
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    docs = []
    for path, want in ((args.table, "rows"), (args.profiles, "profiles")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            print(f"error: {path}: cannot read JSON ({e})", file=sys.stderr)
            return 2
        if not isinstance(doc, dict) or want not in doc:
            print(f"error: {path}: no '{want}' (is it the right file?)", file=sys.stderr)
            return 2
        docs.append(doc)
    table, prof = docs
    sms = args.sms or prof.get("sms") or 132
    clock = args.clock_ghz or (prof["max_sm_clock_mhz"] / 1e3 if prof.get("max_sm_clock_mhz") else 1.98)
    rows = floor_rows(table, prof["profiles"], sms, clock)
    if not rows:
        print(f"error: {args.profiles}: no configuration in common with {args.table}", file=sys.stderr)
        return 2
    print(f"{table.get('gpu')} / {prof.get('gpu')}: {sms} SMs at {clock:.2f} GHz; microseconds")
    cols = ["config", "path", "bound_term", "bound_us", "three_x_us", "frame_us", "frame_x", "read_us",
            "blend_floor_us", "sort_us", "other_us", "floor_x", "floor_with_sort_x", "slack_us", "cut_needed"]
    print(" ".join(f"{c:>17}" for c in cols))
    for r in rows:
        print(" ".join(f"{r[c]:>17}" for c in cols))
    if args.out:
        doc = {"benchmark": "bound_floor.py", "date": now_utc(), "table": args.table.name,
               "table_date": table.get("date"),
               "profiles": args.profiles.name, "profiles_date": prof.get("date"), "gpu": table.get("gpu"),
               "torch": table.get("torch"), "cuda": table.get("cuda"), "library_version": table.get("library_version"),
               "sms": sms, "clock_ghz": clock, "instr_per_pair": INSTR_PER_PAIR, "rows": rows}
        write_json(args.out, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
