"""`dd3g bench`, its JSON schema, the README table generator and the cost model's counting.

The `--quick` run is the CI smoke test of the whole benchmark path on CPU (issue #6: under a minute on 2
cores); it runs once per module in a subprocess, as a user would run it.
"""
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dd3g_sdk import bench
from dd3g_sdk.cli import main

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
jsonschema = pytest.importorskip("jsonschema")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_dd3g_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _validate(doc: dict) -> None:
    schema = json.loads((BENCH / "schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(doc)


def _run_cli(args: list[str], block_torch: bool = False, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    block = "sys.modules['torch'] = None; " if block_torch else ""  # makes every `import torch` fail
    code = f"import sys; {block}from dd3g_sdk.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


# ---- the quick run --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    r = _run_cli(["bench", "--quick", "--json", str(out), "--threads", "1"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(out.read_text()), r


def test_quick_writes_valid_json(quick):
    doc, r = quick
    _validate(doc)
    assert doc["schema"] == bench.SCHEMA and doc["options"]["quick"] is True
    assert doc["options"]["configs"] == ["tiny"]
    assert doc["device"]["kind"] == ("cuda" if doc["detected"]["cuda"] else "cpu")
    assert doc["versions"]["dd3g_sdk"] and doc["versions"]["torch"]
    assert doc["models"]["tiny"]["num_gaussians"] == bench.PRESET_NUM_GAUSSIANS["tiny"]
    assert "median ms" in r.stdout and "wrote" in r.stdout  # the printed table
    # the document is meant to be shared: no local paths
    assert doc["command"].startswith("dd3g bench") and os.sep not in doc["command"]
    assert os.sep not in (doc["detected"]["raster_library"]["path"] or "")


def test_quick_covers_every_section_with_sane_numbers(quick):
    doc, _ = quick
    cases = {c["name"]: c for c in doc["cases"]}
    assert not [c for c in doc["cases"] if c["status"] == "error"]
    must = ["generator/tiny/torch/fp32/b1", "preprocess/png1024/32", "io/write_ply/4096/sh0",
            "io/write_splat/4096/sh0", f"e2e/tiny/{doc['options']['resolution']}"]
    for name in must:
        assert cases[name]["status"] == "ok", cases[name]
    assert any(c["section"] == "render" and c["status"] == "ok" for c in doc["cases"])
    for c in doc["cases"]:
        if c["status"] == "ok":
            assert 0 < c["min_ms"] <= c["median_ms"] <= c["p90_ms"], c
            assert c["min_ms"] <= c["mean_ms"] and c["repeats"] >= 3
    # file sizes are exact: a .splat record is 32 bytes; a degree-0 PLY row 14 floats
    assert cases["io/write_splat/4096/sh0"]["extra"]["file_bytes"] == 32 * 4096
    assert cases["io/write_ply/4096/sh0"]["extra"]["file_bytes"] > 14 * 4 * 4096
    e2e = cases[f"e2e/tiny/{doc['options']['resolution']}"]["extra"]["stages_median_ms"]
    assert e2e["generate"] > 0 and e2e["render"] > 0
    # onnxruntime is timed when the export extra is installed, else skipped with the way out
    ort = cases["generator/tiny/onnxruntime/cpu/b1"]
    assert ort["status"] == "ok" or "--model" in ort["reason"]


def test_quick_without_torch_skips_what_needs_it(tmp_path):
    out = tmp_path / "nt.json"
    r = _run_cli(["bench", "--quick", "--json", str(out)], block_torch=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads(out.read_text())
    _validate(doc)
    assert doc["detected"]["torch"] is False and doc["versions"]["torch"] is None
    cases = {c["name"]: c for c in doc["cases"]}
    assert cases["preprocess/png1024/32"]["status"] == "ok"
    assert cases["io/write_ply/4096/sh0"]["status"] == "ok"
    assert "--model" in cases["generator/tiny/onnxruntime/cpu/b1"]["reason"]
    assert cases["generator/tiny/torch"]["status"] == "skipped"
    assert cases["render"]["status"] == "skipped"


def test_onnx_model_without_torch(tmp_path):
    """What a Jetson owner without torch runs: an exported model on onnxruntime."""
    torch = pytest.importorskip("torch")
    onnx_export = pytest.importorskip("dd3g_export.onnx")
    from dd3g_sdk.model.pepd import PEPD, PEPDConfig

    torch.manual_seed(0)
    model_path = onnx_export.to_onnx(PEPD(PEPDConfig.preset("tiny")), tmp_path / "tiny.onnx",
                                     onnx_export.OnnxExportConfig(simplify=False, check=False))
    out = tmp_path / "onnx.json"
    r = _run_cli(["bench", "--quick", "--model", str(model_path), "--json", str(out), "--sections",
                  "generator,e2e,io"], block_torch=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads(out.read_text())
    _validate(doc)
    cases = {c["name"]: c for c in doc["cases"]}
    ort = cases["generator/model/onnxruntime/cpu/b1"]
    assert ort["status"] == "ok" and ort["median_ms"] > 0 and ort["extra"]["num_gaussians"] == 4096
    assert cases["generator/model/torch"]["reason"] == "--model is for onnxruntime"
    assert cases["e2e/model/128"]["status"] == "skipped"
    assert cases["io/write_ply/4096/sh0"]["status"] == "ok"  # sized from the ONNX metadata
    assert doc["models"]["model"]["image_size"] == 32


def test_bad_json_target_fails_before_running(tmp_path, capsys):
    rc = main(["bench", "--quick", "--json", str(tmp_path / "missing" / "x.json")])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err


def test_bad_list_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--config", "tiny,huge"])
    assert e.value.code == 2
    assert "huge" in capsys.readouterr().err


# ---- timing helpers ---------------------------------------------------------------------------------------------
def test_summarize_matches_plain_twin():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 10, 37):
        s = list(rng.exponential(3.0, n))
        got = bench.summarize(s)
        srt = sorted(s)
        pos = 0.9 * (n - 1)  # linear interpolation between order statistics
        lo, hi = math.floor(pos), math.ceil(pos)
        p90 = srt[lo] + (srt[hi] - srt[lo]) * (pos - lo)
        assert got["median_ms"] == pytest.approx(statistics.median(s), rel=1e-12)
        assert got["p90_ms"] == pytest.approx(p90, rel=1e-12)
        assert got["min_ms"] == min(s) and got["mean_ms"] == pytest.approx(statistics.fmean(s), rel=1e-12)
        assert got["repeats"] == n
    with pytest.raises(ValueError):
        bench.summarize([])


def test_plan_repeats_and_time_host_count_calls():
    assert bench.plan_repeats(1.0, 50, 10.0) == 50
    assert bench.plan_repeats(1000.0, 50, 10.0) == 10
    assert bench.plan_repeats(1e6, 50, 10.0) == 3  # never fewer than 3 runs
    assert bench.plan_repeats(1e6, 2, 10.0) == 2  # ... unless fewer were asked for
    calls = []
    samples = bench.time_host(lambda: calls.append(1), repeats=7, warmup=2)
    assert len(samples) == 7 and len(calls) == 9 and all(s >= 0 for s in samples)


def test_preset_tables_match_pepd_configs():
    pepd = pytest.importorskip("dd3g_sdk.model.pepd")
    for name in bench.PRESETS:
        cfg = pepd.PEPDConfig.preset(name)
        assert bench.PRESET_IMAGE_SIZE[name] == cfg.image_size
        assert bench.PRESET_NUM_GAUSSIANS[name] == cfg.num_gaussians


def test_synthetic_scene_is_deterministic_and_object_like():
    a, b = bench.synthetic_scene(2000, seed=3), bench.synthetic_scene(2000, seed=3)
    assert a.allclose(b, rtol=0, atol=0) and a.sh_degree == 3
    assert np.linalg.norm(a.means, axis=1).max() <= bench.SCENE_RADIUS + 1e-6
    assert 0.3 <= a.opacities.min() and a.opacities.max() <= 1.0
    assert not bench.synthetic_scene(2000, seed=4).allclose(a)


def test_driver_version_parsing(monkeypatch):
    texts = {"/proc/driver/nvidia/version":
             "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  (dvs-builder@U16)"}
    monkeypatch.setattr(bench, "_read_text", lambda p: texts.get(p))
    assert bench.nvidia_driver_version() == "580.95.05"
    texts["/proc/driver/nvidia/version"] = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22"
    assert bench.nvidia_driver_version() == "550.54.14"


# ---- README tables ---------------------------------------------------------------------------------------------
def test_committed_readme_tables_are_current():
    mt = _load("make_tables")
    assert mt.main(["--check"]) == 0, "benchmarks/README.md is stale: run python benchmarks/make_tables.py"


def test_make_tables_detects_stale_and_survives_foreign_files(tmp_path, quick):
    pytest.importorskip("matplotlib")
    mt = _load("make_tables")
    res = tmp_path / "results"
    shutil.copytree(BENCH / "results", res)
    for name in ("README.md", "rasterizer_latency.png"):
        if (BENCH / name).exists():
            shutil.copy(BENCH / name, tmp_path / name)
    args = ["--results", str(res), "--readme", str(tmp_path / "README.md")]
    assert mt.main(args + ["--check"]) == 0  # the committed README matches the committed JSON
    (res / "bench_ci.json").write_text(json.dumps(quick[0]))
    (res / "zz_foreign.json").write_text(json.dumps({"hello": [1, 2]}))
    (res / "zz_broken.json").write_text("{not json")
    assert mt.main(args + ["--check"]) == 1
    assert mt.main(args) == 0
    assert mt.main(args + ["--check"]) == 0
    text = (tmp_path / "README.md").read_text()
    assert "`zz_foreign.json`" in text and "`zz_broken.json`" in text and "`bench_ci.json`" in text
    row = next(c for c in quick[0]["cases"] if c["name"] == "generator/tiny/torch/fp32/b1")
    cells = f"| tiny | torch | {row['params']['device']} | fp32 | 1 | "
    assert f"{cells}{mt.fmt(row['median_ms'])} |" in text
    # edit that very cell: the bare number can also occur outside the generated block (a median of "100" did)
    text2 = text.replace(f"{cells}{mt.fmt(row['median_ms'])} |", f"{cells}123456789 |", 1)
    assert text2 != text
    (tmp_path / "README.md").write_text(text2)
    assert mt.main(args + ["--check"]) == 1  # a hand edit inside the generated block is caught


def test_make_tables_number_format():
    mt = _load("make_tables")
    assert [mt.fmt(v) for v in (1234.5, 12.345, 1.2345, 0.12345, 0.0012345, 0.0, None, 16384, True)] == \
        ["1234", "12.3", "1.23", "0.123", "1.23e-03", "0", "-", "16,384", "yes"]


# ---- cost model ----------------------------------------------------------------------------------------------
def test_flop_counter_matches_hand_count():
    torch = pytest.importorskip("torch")
    cm = _load("cost_model")
    b, lq, lk, heads, d, din = 2, 12, 20, 3, 8, 16
    lin = torch.nn.Linear(din, heads * d)

    def fn(x, kv):
        q = lin(x).reshape(b, lq, heads, d).transpose(1, 2)
        k = lin(kv).reshape(b, lk, heads, d).transpose(1, 2)
        return torch.nn.functional.scaled_dot_product_attention(q, k, k)

    got = cm.count_forward(fn, torch.randn(b, lq, din), torch.randn(b, lk, din))
    linear = 2 * b * (lq + lk) * din * heads * d
    attention = 2 * (2 * b * heads * lq * lk * d)  # q k^T and (softmax) v
    assert got["flops"] == linear + attention
    assert got["unfused_bytes"] > 4 * (b * lq * din + b * lk * din)  # at least the inputs were read


def test_intersection_count_matches_loop_twin():
    torch = pytest.importorskip("torch")
    cm = _load("cost_model")
    from dd3g_sdk.render.reference import ALPHA_MIN, EXTEND_MAX, project, quat_scale_to_covar

    g = bench.synthetic_scene(300, seed=1)
    g.opacities[:5] = 0.002  # below 1/255: culled
    W = H = 96
    cam = bench.scene_camera(W)
    t = g.to_torch()
    m2, cov, depth = (x[0].double().numpy() for x in project(
        t["means"], quat_scale_to_covar(t["quats"], t["scales"]), torch.tensor(cam.world_to_cam[None]).float(),
        torch.tensor(cam.K[None]).float(), W, H))
    ranges = cm.tile_ranges(m2, cov, g.opacities, depth, W, H)
    total = 0
    for i in range(len(g)):  # the plain loop: every tile whose square meets the Gaussian's box
        a, c, op = cov[i, 0, 0], cov[i, 1, 1], float(g.opacities[i])
        if op < ALPHA_MIN or depth[i] < 0.01 or a * c - cov[i, 0, 1] ** 2 <= 0:
            continue
        ext = min(math.sqrt(2 * math.log(op / ALPHA_MIN)), EXTEND_MAX)
        rx, ry = math.ceil(ext * math.sqrt(a)), math.ceil(ext * math.sqrt(c))
        x, y = m2[i]
        if not (x + rx > 0 and x - rx < W and y + ry > 0 and y - ry < H):
            continue
        for ty in range(H // 16):
            for tx in range(W // 16):
                if x - rx < (tx + 1) * 16 and x + rx > tx * 16 and y - ry < (ty + 1) * 16 and y + ry > ty * 16:
                    total += 1
    assert cm.count_intersections(ranges) == total > 0
    assert (ranges[:5] == 0).all()


def test_committed_cost_model_is_consistent():
    doc = json.loads((BENCH / "results" / "cost_model.json").read_text())
    assert doc["kind"] == "cost_model"
    by = {p["preset"]: p for p in doc["pepd"]}
    assert set(by) == set(bench.PRESETS)
    for name, p in by.items():
        assert p["num_gaussians"] == bench.PRESET_NUM_GAUSSIANS[name]
        assert p["min_bytes_half"] < p["min_bytes_fp32"] < p["unfused_bytes"]
        h = p["floor"]["fp32"]
        assert h["floor_ms"] == pytest.approx(max(h["flops_ms"], h["bytes_ms"]))
        assert h["flops_ms"] == pytest.approx(p["flops"] / doc["ceilings"]["fp32_flops"] * 1e3)
    assert by["tiny"]["flops"] < by["small"]["flops"] < by["base"]["flops"]
