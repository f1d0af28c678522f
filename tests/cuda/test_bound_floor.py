"""benchmarks/bound_floor.py on the CPU: the floor of a frame against the bound, from a table and a profile.

The inputs here are made by hand, so every number can be worked out independently; the GPU results it was written
for are benchmarks/results/rasterizer_*_run16*.json (notes run 16).
"""
from __future__ import annotations

import json

import pytest

from _scripts import ROOT, load_benchmark


@pytest.fixture(scope="module")
def bf():
    return load_benchmark("bound_floor")


def _table(n=1_000_000, evals=20_000_000, bound_ms=0.05, graph_ms=0.4):
    return {"gpu": "test GPU", "ceilings": {"copy_bytes_per_s": 4e12, "fp32_flops": 5e13},
            "rows": [{"N": n, "res": 512, "cams": 1, "sh_degree": 3, "graph_ms": graph_ms, "graph_evaluations": evals,
                      "bound_ms": bound_ms, "bound_term": "bytes"},
                     {"N": 16, "res": 64, "cams": 1, "sh_degree": 0, "graph_ms": 0.01, "graph_evaluations": 1,
                      "bound_ms": 1e-4, "bound_term": "flops"}]}  # not profiled: left out


def _profile(sms=100, mhz=2000):
    kernels = {
        "void (anonymous namespace)::k_project<float, 1>(unsigned int": 100.0,
        "void (anonymous namespace)::k_raster<false, 1>(int, int": 120.0,
        "void cub::CUB_300001_SM_900::detail::radix_sort::DeviceRadixSortOnesweepKernel<cub::CUB_30": 50.0,
        "void cub::CUB_300001_SM_900::detail::radix_sort::DeviceRadixSortOnesweepKernel<cub::CUB_30 (2)": 20.0,
        "void (anonymous namespace)::k_emit_staged<unsigned short, 1>(unsigned int": 40.0,
        "Memset (Device)": 10.0,
    }
    return {"gpu": "test GPU", "sms": sms, "max_sm_clock_mhz": mhz,
            "profiles": {"1000000/512/1": {"total_us": sum(kernels.values()), "kernels_us": kernels}}}


def test_parts_and_floor_worked_by_hand(bf):
    rows = bf.floor_rows(_table(), _profile()["profiles"], sms=100, clock_ghz=2.0)
    assert len(rows) == 1
    r = rows[0]
    read = 1_000_000 * 59 * 4 / 4e12 * 1e6  # 59 floats a Gaussian at SH degree 3: 59.0 us
    blend = 20_000_000 * 18.5 / (100 * 128 * 2e9) * 1e6  # 14.45 us
    assert r["path"] == "sorted"
    assert r["read_us"] == pytest.approx(read, abs=0.05)
    assert r["blend_floor_us"] == pytest.approx(blend, abs=0.05)
    assert r["sort_us"] == pytest.approx(70.0)
    # other: emit 40 + memset 10 + projection beyond its read (100 - 59) + raster beyond its floor (120 - 14.45)
    other = 50 + (100 - read) + (120 - blend)
    assert r["other_us"] == pytest.approx(other, abs=0.1)
    assert r["floor_x"] == pytest.approx((read + blend) / 50, abs=0.01)
    assert r["floor_with_sort_x"] == pytest.approx((read + blend + 70) / 50, abs=0.01)
    slack = 150 - read - blend  # 3 x the 50-us bound
    assert r["slack_us"] == pytest.approx(slack, abs=0.1)
    assert r["cut_needed"] == pytest.approx(1 - slack / (70 + other), abs=1e-3)
    assert r["frame_x"] == pytest.approx(8.0)
    # every microsecond of the profile lands in exactly one part
    assert r["read_us"] + r["blend_floor_us"] + r["sort_us"] + r["other_us"] == pytest.approx(340.0, abs=0.2)


def test_binned_frames_use_the_binned_loop_and_no_sort(bf):
    prof = {"1000000/512/1": {"total_us": 0, "kernels_us": {
        "void (anonymous namespace)::k_raster_binned<false>(int, int": 30.0,
        "void (anonymous namespace)::k_bin_count<float, 4>(unsigned int": 5.0,
        "void (anonymous namespace)::k_bin_scatter<4>(unsigned int": 7.0}}}
    r = bf.floor_rows(_table(), prof, sms=100, clock_ghz=2.0)[0]
    assert r["path"] == "binned" and r["sort_us"] == 0
    assert r["blend_floor_us"] == pytest.approx(20_000_000 * 17.5 / (100 * 128 * 2e9) * 1e6, abs=0.05)
    # the projection (5 us) is below its read time (59 us): only the 5 us measured are taken off
    assert r["other_us"] == pytest.approx(7 + (30 - r["blend_floor_us"]), abs=0.1)
    assert r["cut_needed"] == 0.0  # 3 x 50 us leaves room for all of it


def test_cli_writes_the_rows_and_reads_the_profiles_clock(bf, tmp_path, capsys):
    (tmp_path / "t.json").write_text(json.dumps(_table()))
    (tmp_path / "p.json").write_text(json.dumps(_profile(sms=100, mhz=1000)))
    out = tmp_path / "floor.json"
    assert bf.main([str(tmp_path / "t.json"), str(tmp_path / "p.json"), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["sms"] == 100 and doc["clock_ghz"] == 1.0
    assert [r["config"] for r in doc["rows"]] == ["1000000/512/1"]
    assert doc["rows"][0]["blend_floor_us"] == pytest.approx(20_000_000 * 18.5 / (100 * 128 * 1e9) * 1e6, abs=0.05)
    assert "1000000/512/1" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["not json", json.dumps({"rows": []})])
def test_cli_bad_input_is_one_line_and_writes_nothing(bf, tmp_path, capsys, bad):
    (tmp_path / "t.json").write_text(json.dumps(_table()))
    (tmp_path / "p.json").write_text(bad)
    out = tmp_path / "floor.json"
    assert bf.main([str(tmp_path / "t.json"), str(tmp_path / "p.json"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "p.json" in err
    assert not out.exists()


def test_committed_floor_matches_its_inputs(bf):
    """The committed run-16 floor file is what the script makes of the committed table and profiles."""
    res = ROOT / "benchmarks/results"
    doc = json.loads((res / "rasterizer_bound_floor_h200_run16.json").read_text())
    table = json.loads((res / doc["table"]).read_text())
    prof = json.loads((res / doc["profiles"]).read_text())
    assert bf.floor_rows(table, prof["profiles"], doc["sms"], doc["clock_ghz"]) == doc["rows"]
    assert len(doc["rows"]) == 16
