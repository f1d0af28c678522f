"""Generate the result tables and the rasteriser plot of benchmarks/README.md from benchmarks/results/*.json.

    python benchmarks/make_tables.py            # rewrite the README between its markers, and the plot PNG
    python benchmarks/make_tables.py --check    # exit 1 (and show a diff) if the README is stale

Nothing in the generated part is typed by hand. Every JSON file under results/ is read, in name order:
- `dd3g bench` documents ("schema": "dd3g-bench/1"): machines, generator, rasteriser, end-to-end,
  preprocessing and file-writing tables;
- rasteriser benchmarks (benchmarks/bench_rasterizer.py: "benchmark": "bench_rasterizer.py", "rows");
- the cost model (benchmarks/cost_model.py, "kind": "cost_model") and measured ceilings ("copy_bytes_per_s");
- pytest-benchmark's own JSON (`--benchmark-json`), with the CUDA-event numbers of benchmarks/conftest.py;
- any other document with a list of flat records ("results" or "rows") becomes a generic table;
- anything else (or a file that is not valid JSON) is listed by name with its top-level keys, never a crash.
The plot (latency vs Gaussian count at 512x512, one camera: this project's rasteriser vs gsplat) is written
with matplotlib. `--check` compares the README text only; the README carries a hash of the plotted numbers,
so a stale plot shows up as a stale README.
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Iterable

HERE = Path(__file__).resolve().parent
BEGIN = "<!-- BEGIN GENERATED (benchmarks/make_tables.py: do not edit by hand) -->"
END = "<!-- END GENERATED -->"
PLOT_NAME = "rasterizer_latency.png"
PLOT_RES = 512


# ------------------------------------------------------------------------------------------------------------
# loading and classifying
# ------------------------------------------------------------------------------------------------------------
def load_results(folder: Path) -> list[tuple[str, Any]]:
    """[(file name, parsed JSON or an Exception)] for every *.json under `folder`, sorted by name."""
    out = []
    for p in sorted(folder.glob("*.json")):
        try:
            out.append((p.name, json.loads(p.read_text(encoding="utf-8"))))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            out.append((p.name, e))
    return out


def _flat_records(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(r, dict) for r in v) and all(
        not isinstance(x, (dict, list)) for r in v for x in r.values())


def classify(doc: Any) -> str:
    if not isinstance(doc, dict):
        return "unknown"
    if doc.get("schema") == "dd3g-bench/1" and isinstance(doc.get("cases"), list):
        return "bench"
    if doc.get("kind") == "cost_model" and isinstance(doc.get("pepd"), list):
        return "cost_model"
    if doc.get("benchmark") == "bench_rasterizer.py" and isinstance(doc.get("rows"), list):
        return "rasterizer"
    if "copy_bytes_per_s" in doc and "fp32_flops" in doc and "device" in doc:
        return "ceilings"
    if isinstance(doc.get("benchmarks"), list) and isinstance(doc.get("machine_info"), dict):
        return "pytest_benchmark"
    if _flat_records(doc.get("results")) or _flat_records(doc.get("rows")):
        return "records"
    return "unknown"


# ------------------------------------------------------------------------------------------------------------
# formatting
# ------------------------------------------------------------------------------------------------------------
def fmt(x: Any, unit: str = "") -> str:
    """Numbers with 3-4 significant digits (deterministic); None and missing as '-'."""
    if x is None or (isinstance(x, float) and x != x):
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}{unit}"
    if isinstance(x, float):
        a = abs(x)
        s = (f"{x:.0f}" if a >= 100 else f"{x:.1f}" if a >= 10 else f"{x:.2f}" if a >= 1 else f"{x:.3f}"
             if a >= 0.01 else f"{x:.2e}" if a else "0")
        return s + unit
    return str(x).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    rows = [[fmt(c) for c in r] for r in rows]
    if not rows:
        return "_(no rows)_\n"
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _device(doc: dict) -> str:
    d = doc.get("device", {})
    return f"{d.get('name', '?')} ({d.get('kind', '?')})"


def _providers(doc: dict) -> str:
    return ", ".join(p.replace("ExecutionProvider", "") for p in doc["detected"].get("onnxruntime_providers", []))


def _ok(doc: dict, section: str) -> list[dict]:
    return [c for c in doc["cases"] if c.get("section") == section and c.get("status") == "ok"]


# ------------------------------------------------------------------------------------------------------------
# sections
# ------------------------------------------------------------------------------------------------------------
def bench_sections(benches: list[tuple[str, dict]]) -> list[str]:
    if not benches:
        return ["_No `dd3g bench` documents yet: run `dd3g bench --json benchmarks/results/bench_<device>.json`._\n"]
    out = ["### Machines (`dd3g bench`)\n", table(
        ["file", "device", "GPU driver / CUDA", "torch", "onnxruntime (providers)", "TensorRT", "date", "quick"],
        [[f"`{n}`", _device(d),
          f"{d['gpu'].get('driver') or '?'} / {d['gpu'].get('cuda_runtime') or '?'}" if d.get("gpu") else "-",
          d["versions"].get("torch"),
          f"{d['versions'].get('onnxruntime') or '-'} ({_providers(d)})",
          d["versions"].get("tensorrt") or d["versions"].get("tensorrt_rtx"),
          d.get("created", "")[:10], d.get("options", {}).get("quick")] for n, d in benches])]

    rows = []
    for n, d in benches:
        for c in _ok(d, "generator"):
            p = c["params"]
            b = p.get("batch", 1)
            rows.append([_device(d), p.get("config"), p.get("backend"), f"{p.get('device')}", p.get("precision"), b,
                         c["median_ms"], c["p90_ms"], c["median_ms"] / b, c["repeats"]])
    out += ["### Generator latency (`dd3g bench`, random weights)\n",
            "Median and p90 of one forward pass in ms; ms/object = median / batch. CUDA cases: CUDA events, "
            "device tensors in and out; onnxruntime and TensorRT: numpy in and out.\n\n",
            table(["device", "config", "backend", "on", "precision", "batch", "median ms", "p90 ms", "ms/object",
                   "runs"], rows)]

    rows = []
    for n, d in benches:
        for c in _ok(d, "e2e"):
            p, e = c["params"], c.get("extra", {})
            st = e.get("stages_median_ms", {})
            rows.append([_device(d), p.get("config"), f"{p.get('resolution')}x{p.get('resolution')}", e.get("renderer"),
                         c["median_ms"], c["p90_ms"], st.get("generate"), st.get("render")])
    out += ["### End to end: image file -> Gaussians -> one rendered view\n",
            "Host clock around `Generator(...)(png)` (decode, preprocess, noise, model, copy back) plus one render "
            "of the result (upload, rasterise, image back on the host).\n\n",
            table(["device", "config", "view", "renderer", "median ms", "p90 ms", "generate ms", "render ms"], rows)]

    rows = []
    for n, d in benches:
        for c in _ok(d, "render"):
            p = c["params"]
            rows.append([_device(d), p.get("renderer"), p.get("num_gaussians"), f"{p.get('resolution')}",
                         c["median_ms"], c["p90_ms"], c["timer"]])
    out += ["### Rasteriser (`dd3g bench`, synthetic ball scene, SH degree 3, one camera)\n",
            table(["device", "renderer", "Gaussians", "resolution", "median ms", "p90 ms", "timer"], rows)]

    rows = []
    for n, d in benches:
        for sec in ("preprocess", "io"):
            for c in _ok(d, sec):
                size = c.get("extra", {}).get("file_bytes")
                rows.append([_device(d), c["name"], c["median_ms"], c["p90_ms"],
                             None if size is None else size / 1e6])
    out += ["### Preprocessing and file writing (CPU)\n",
            "`preprocess/pngS/s`: an SxS RGBA PNG decoded, cropped and resized to s x s. `io/write_F/N/shD`: N "
            "Gaussians of SH degree D written atomically (temporary file, fsync, rename).\n\n",
            table(["device", "case", "median ms", "p90 ms", "file MB"], rows)]

    skipped = sorted({(c["name"], c.get("reason", "")) for _, d in benches for c in d["cases"]
                      if c.get("status") != "ok"})
    if skipped:
        out += ["<details><summary>Cases skipped or failed</summary>\n\n",
                table(["case", "why"], [[f"`{a}`", b] for a, b in skipped]), "</details>\n"]
    return out


def rasterizer_sections(rasts: list[tuple[str, dict]]) -> list[str]:
    out = []
    for n, d in rasts:
        ceil = d.get("ceilings", {})
        out.append(f"### Rasteriser vs gsplat: `{n}` ({d.get('gpu')}, gsplat {d.get('gsplat')}, "
                   f"torch {d.get('torch')}, {str(d.get('date', ''))[:10]})\n")
        out.append(f"Forward only, median of {d.get('iters')} CUDA-event timings. Ceilings measured in the same run: "
                   f"copy {fmt((ceil.get('copy_bytes_per_s') or 0) / 1e12)} TB/s, fp32 "
                   f"{fmt((ceil.get('fp32_flops') or 0) / 1e12)} TFLOP/s. `graph`: one C call captured in a CUDA "
                   "graph; `direct`: called from Python; floor: max(bytes / BW, 15 FLOP x evaluations / FLOPS).\n\n")
        rows = []
        for r in d["rows"]:
            gs, g = r.get("gsplat_ms"), r.get("graph_ms")
            px = r.get("cams", 1) * r.get("res", 0) ** 2
            rows.append([r.get("N"), r.get("res"), r.get("cams"), gs, g, r.get("direct_ms"), r.get("exact_ms"),
                         gs / g if gs and g else None, r.get("bound_ms"),
                         g / r["bound_ms"] if g and r.get("bound_ms") else None,
                         r.get("graph_intersections"),
                         r["graph_evaluations"] / px if r.get("graph_evaluations") is not None and px else None])
        out.append(table(["Gaussians", "res", "cams", "gsplat ms", "ours graph ms", "ours direct ms", "ours exact ms",
                          "x faster", "floor ms", "x floor", "intersections", "evals/px"], rows))
    return out


def cost_sections(costs: list[tuple[str, dict]], benches: list[tuple[str, dict]]) -> list[str]:
    out = []
    for n, d in costs:
        c = d["ceilings"]
        out.append(f"### Cost model (`{n}`, {d.get('date')})\n")
        out.append(f"FLOPs measured with torch's FLOP counter (batch 1); bytes: weights + inputs + outputs once "
                   f"(`min`), or every eager op's inputs and outputs (`unfused`). Ceilings of {c.get('device')} "
                   f"({c.get('source', 'measured')}): copy {fmt(c['copy_bytes_per_s'] / 1e12)} TB/s, fp32 "
                   f"{fmt(c['fp32_flops'] / 1e12)} TFLOP/s (TF32 off)"
                   + (f", bf16 {fmt(c['bf16_flops'] / 1e12)} TFLOP/s" if c.get("bf16_flops") else "")
                   + (f", fp16 {fmt(c['fp16_flops'] / 1e12)} TFLOP/s" if c.get("fp16_flops") else "")
                   + (f", tf32 {fmt(c['tf32_flops'] / 1e12)} TFLOP/s" if c.get("tf32_flops") else "") + ".\n\n")
        measured = _measured_on(benches, c.get("device", ""))
        gpu = _short_gpu(c.get("device", "GPU"))
        rows = []
        for p in d["pepd"]:
            h = p["floor"]
            m32, m16 = measured.get((p["preset"], "fp32")), measured.get((p["preset"], "bf16"))
            rows.append([p["preset"], p["parameters"] / 1e6, p["num_gaussians"], p["flops"] / 1e9,
                         p["min_bytes_fp32"] / 1e6, p["min_bytes_half"] / 1e6, p["unfused_bytes"] / 1e9,
                         p["flops"] / p["min_bytes_fp32"],
                         f"{fmt(h['fp32']['floor_ms'])} ({h['fp32']['bound']})",
                         f"{fmt(h['bf16']['floor_ms'])} ({h['bf16']['bound']})" if h["bf16"]["floor_ms"] else "-",
                         m32, m32 / h["fp32"]["floor_ms"] if m32 else None,
                         m16, m16 / h["bf16"]["floor_ms"] if m16 and h["bf16"]["floor_ms"] else None])
        out.append(table(["config", "params M", "Gaussians", "GFLOP", "min MB fp32", "min MB half", "unfused GB",
                          "FLOP/byte", f"{gpu} floor fp32 ms", f"{gpu} floor bf16 ms", f"{gpu} measured fp32 ms",
                          "x floor", f"{gpu} measured bf16 ms", "x floor"], rows))
        out.append("**Projections** (not measurements): the same floor from published peak rates "
                   "(fp32 CUDA cores; half = fp16/bf16 tensor cores, dense). Real kernels reach a fraction of "
                   "peak.\n\n")
        devs = list(d["devices"])
        rows = [[p["preset"]] + [f"{fmt(p['projections'][v]['fp32']['floor_ms'])} / "
                                 f"{fmt(p['projections'][v]['half']['floor_ms'])}" for v in devs] for p in d["pepd"]]
        out.append(table(["config (fp32 / half ms)"] + devs, rows))
        out.append("Peak rates used: " + "; ".join(f"{v}: {d['devices'][v]['source']}" for v in devs) + ".\n\n")
        rows = [[r["num_gaussians"], r["resolution"], r["min_bytes"] / 1e6, r["intersections"],
                 r["evaluations_upper"] / r["resolution"] ** 2, r["floor"]["bytes_floor_ms"],
                 r["floor"]["flops_upper_ms"],
                 *(r["projections"][v]["bytes_floor_ms"] for v in devs)] for r in d["rasterizer"]]
        out.append("Rasteriser, one camera (synthetic ball scene): bytes floor = Gaussians read + image written "
                   "once; FLOPs upper = 15 x 256 x intersections (no early termination).\n\n")
        out.append(table(["Gaussians", "res", "min MB", "intersections", "evals/px upper", f"{gpu} bytes floor ms",
                          f"{gpu} FLOPs upper ms"] + [f"{v} bytes floor ms (proj.)" for v in devs], rows))
    return out


def _short_gpu(name: str) -> str:
    """"NVIDIA H100 80GB HBM3" -> "H100": table headers stay short."""
    words = [w for w in str(name).split() if w.upper() not in ("NVIDIA", "GEFORCE")]
    return words[0] if words else str(name)


def _measured_on(benches: list[tuple[str, dict]], device: str) -> dict:
    """{(config, precision): best batch-1 torch median} from dd3g bench documents of the ceilings' GPU."""
    best: dict = {}
    for _, d in benches:
        if not device or d.get("device", {}).get("name") != device:
            continue
        for c in _ok(d, "generator"):
            p = c["params"]
            if p.get("backend") == "torch" and p.get("batch") == 1 and p.get("device") == "cuda":
                k = (p.get("config"), p.get("precision"))
                best[k] = min(best.get(k, float("inf")), c["median_ms"])
    return best


def ceilings_sections(ceils: list[tuple[str, dict]]) -> list[str]:
    if not ceils:
        return []
    rows = [[f"`{n}`", d.get("device"), d["copy_bytes_per_s"] / 1e12, d["fp32_flops"] / 1e12,
             (d.get("tf32_flops") or 0) / 1e12 or None, (d.get("fp16_flops") or 0) / 1e12 or None,
             (d.get("bf16_flops") or 0) / 1e12 or None, d.get("torch"), str(d.get("date", ""))[:10]] for n, d in ceils]
    return ["### Measured ceilings\n",
            table(["file", "device", "copy TB/s", "fp32 TFLOP/s (TF32 off)", "tf32", "fp16", "bf16", "torch",
                   "date"], rows)]


def pytest_benchmark_sections(docs: list[tuple[str, dict]]) -> list[str]:
    """pytest-benchmark's own JSON (--benchmark-json): host-clock stats, plus CUDA-event stats where the suite
    stored them in extra_info (benchmarks/conftest.py `cuda_bench`)."""
    out = []
    for n, d in docs:
        rows = []
        for b in d["benchmarks"]:
            e, st = b.get("extra_info", {}), b["stats"]
            rows.append([b["name"], ", ".join(f"{k}={v}" for k, v in (b.get("params") or {}).items()),
                         st["median"] * 1e3, st["rounds"], e.get("cuda_median_ms"), e.get("cuda_p90_ms"),
                         e.get("cuda_runs"), e.get("renderer")])
        dev = next((b["extra_info"]["device"] for b in d["benchmarks"] if b.get("extra_info", {}).get("device")),
                   d["machine_info"].get("cpu", {}).get("brand_raw"))
        out.append(f"### pytest-benchmark: `{n}` ({fmt(dev)}, {str(d.get('datetime', ''))[:10]})\n")
        out.append(table(["case", "params", "host median ms (synchronised)", "rounds", "CUDA-event median ms",
                          "CUDA-event p90 ms", "CUDA runs", "renderer"], rows))
    return out


def records_sections(recs: list[tuple[str, dict]]) -> list[str]:
    out = []
    for n, d in recs:
        items = d["results"] if _flat_records(d.get("results")) else d["rows"]
        cols: list[str] = []
        for r in items:
            cols += [k for k in r if k not in cols]
        machine = d.get("machine") if isinstance(d.get("machine"), dict) else {}
        where = machine.get("device") or d.get("gpu") or d.get("device")
        title = d.get("benchmark") or d.get("title") or n
        out.append(f"### {fmt(title)} (`{n}`{', ' + fmt(where) if where else ''})\n")
        out.append(table(cols, [[r.get(k) for k in cols] for r in items]))
    return out


def unknown_sections(unknown: list[tuple[str, Any]]) -> list[str]:
    if not unknown:
        return []
    rows = []
    for n, d in unknown:
        if isinstance(d, ValueError) and str(d).startswith("could not render"):
            rows.append([f"`{n}`", str(d)[:200]])
        elif isinstance(d, Exception):
            rows.append([f"`{n}`", f"not readable JSON: {type(d).__name__}"])
        elif isinstance(d, dict):
            rows.append([f"`{n}`", "keys: " + ", ".join(map(str, list(d)[:12]))])
        else:
            rows.append([f"`{n}`", f"a JSON {type(d).__name__}"])
    return ["### Other result files (no table generator for their format yet)\n", table(["file", "content"], rows)]


# ------------------------------------------------------------------------------------------------------------
# plot
# ------------------------------------------------------------------------------------------------------------
def plot_series(results: list[tuple[str, Any]]) -> list[dict]:
    """[{label, points: [[N, ms], ...]}] at 512x512, one camera, sorted: what the plot shows."""
    series = []
    for n, d in results:
        kind = classify(d)
        if kind == "rasterizer":
            rows = [r for r in d["rows"] if r.get("res") == PLOT_RES and r.get("cams") == 1]
            for key, name in (("graph_ms", "dd3g CUDA (graph)"), ("gsplat_ms", "gsplat 1.5.3")):
                pts = sorted([r["N"], r[key]] for r in rows if r.get(key) is not None)
                if pts:
                    series.append({"label": f"{name}, {d.get('gpu')} [{n}]", "points": pts})
        elif kind == "bench":
            by: dict[str, list] = {}
            for c in _ok(d, "render"):
                p = c["params"]
                # The plot compares the fast rasterisers; the torch reference is in the tables only.
                if p.get("resolution") == PLOT_RES and p.get("cameras", 1) == 1 and p.get("renderer") != "reference":
                    by.setdefault(p["renderer"], []).append([p["num_gaussians"], c["median_ms"]])
            for r, pts in sorted(by.items()):
                series.append({"label": f"{r} (dd3g bench), {d['device']['name']} [{n}]", "points": sorted(pts)})
    return series


def series_hash(series: list[dict]) -> str:
    return hashlib.sha256(json.dumps(series, sort_keys=True).encode()).hexdigest()[:16]


def write_plot(series: list[dict], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=110)
    for s in series:
        xs, ys = zip(*s["points"])
        style = "-o" if "gsplat" not in s["label"] else "--s"
        ax.plot(xs, ys, style, label=s["label"], markersize=4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))  # 0.2, 0.5, 1 rather than 2x10^-1
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("Gaussians")
    ax.set_ylabel("forward latency, ms (median)")
    ax.set_title(f"Rasteriser latency, {PLOT_RES}x{PLOT_RES}, one camera")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, metadata={"Software": None})  # no version string: regenerating the same data is stable
    plt.close(fig)
    tmp.replace(path)


# ------------------------------------------------------------------------------------------------------------
# the README
# ------------------------------------------------------------------------------------------------------------
def generate(results: list[tuple[str, Any]]) -> tuple[str, list[dict]]:
    """The markdown between the markers, and the plot series."""
    groups: dict[str, list] = {k: [] for k in ("bench", "rasterizer", "cost_model", "ceilings", "pytest_benchmark",
                                               "records", "unknown")}
    for n, d in results:
        groups[classify(d)].append((n, d))
    series = plot_series(results)
    parts = [f"_Generated from {len(results)} file(s) in `benchmarks/results/`._\n"]
    if series:
        parts.append(f"![Rasteriser latency vs Gaussian count]({PLOT_NAME})\n\n"
                     f"<!-- plot data {series_hash(series)} -->\n")
    else:
        parts.append("_No rasteriser results at 512x512 yet: no plot._\n")
    broken: list[tuple[str, Any]] = []

    def each(render, items, *extra):
        # One file at a time, so that a file of a known kind with an unexpected layout is listed, not fatal.
        good = []
        for item in items:
            try:
                render([item], *extra)
                good.append(item)
            except Exception as e:  # noqa: BLE001 - any malformed content
                broken.append((item[0], ValueError(f"could not render ({type(e).__name__}: {e})")))
        return render(good, *extra) if good or render is bench_sections else []

    parts += each(rasterizer_sections, groups["rasterizer"])
    parts += each(bench_sections, groups["bench"])
    parts += each(cost_sections, groups["cost_model"], groups["bench"])
    parts += each(ceilings_sections, groups["ceilings"])
    parts += each(pytest_benchmark_sections, groups["pytest_benchmark"])
    parts += each(records_sections, groups["records"])
    parts += unknown_sections(groups["unknown"] + broken)
    return "\n".join(p.rstrip("\n") + "\n" for p in parts), series


def splice(readme: str, generated: str, where: str = "README") -> str:
    if readme.count(BEGIN) != 1 or readme.count(END) != 1 or readme.index(BEGIN) > readme.index(END):
        raise SystemExit(f"make_tables: {where} must contain the markers\n{BEGIN}\n{END}\nonce each, in that order")
    head, rest = readme.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{generated}{END}{tail}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if the README differs from what would be generated")
    ap.add_argument("--results", type=Path, default=HERE / "results")
    ap.add_argument("--readme", type=Path, default=HERE / "README.md")
    ap.add_argument("--no-plot", action="store_true", help="do not (re)write the plot PNG")
    args = ap.parse_args(argv)

    results = load_results(args.results)
    generated, series = generate(results)
    current = args.readme.read_text(encoding="utf-8")
    new = splice(current, generated, str(args.readme))
    plot = args.readme.parent / PLOT_NAME
    if args.check:
        problems = []
        if new != current:
            diff = "".join(difflib.unified_diff(current.splitlines(True), new.splitlines(True), "README (committed)",
                                                "README (generated)", n=1))
            problems.append(f"{args.readme} is stale: run python benchmarks/make_tables.py\n{diff[:4000]}")
        if series and not plot.is_file():
            problems.append(f"{plot} is missing: run python benchmarks/make_tables.py")
        for p in problems:
            print(p, file=sys.stderr)
        if not problems:
            print(f"{args.readme}: up to date ({len(results)} result files)")
        return 1 if problems else 0
    if new != current:
        tmp = args.readme.with_name(f".{args.readme.name}.tmp")
        tmp.write_text(new, encoding="utf-8")
        tmp.replace(args.readme)
    if series and not args.no_plot:
        write_plot(series, plot)
    print(f"{args.readme}: {len(results)} result files, {len(series)} plotted series")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
