"""benchmarks/raster_block_timing.py on the CPU: its reading of a frame's per-block records (no GPU).

The GPU side (a -DDD3G_RASTER_DIAG=3 build writing the records) ran on the H200 (benchmarks/rasterizer_notes.md
run 10); here: the record layout matches the C struct, and the analysis names the right critical block, tail and
correlation on records made by hand.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from _scripts import ROOT, load_benchmark


@pytest.fixture(scope="module")
def timing():
    return load_benchmark("raster_block_timing")


def test_record_layout_matches_the_cuda_struct(timing):
    src = (ROOT / "cuda/src/dd3g_raster.cu").read_text()
    body = re.search(r"struct DiagRecord \{[^\n]*\n(.*?)\n\};", src, re.S).group(1)
    fields = []
    for ctype, names in re.findall(r"(unsigned long long|unsigned)\s+([^;]+);", body):
        for name in names.split(","):
            fields.append((name.strip(), 8 if ctype == "unsigned long long" else 4))
    assert [n for n, _ in fields] == list(timing.RECORD.names)
    assert [size for _, size in fields] == [timing.RECORD[n].itemsize for n in timing.RECORD.names]
    assert timing.RECORD.itemsize == sum(size for _, size in fields) == 40  # no padding on either side


def test_analysis_finds_the_critical_block_and_the_tail(timing):
    sms = 4
    rec = np.zeros(9, dtype=timing.RECORD)
    # eight short blocks (10 us) start together; one long block (100 us, the longest list) starts with them
    rec["t0"] = 5_000
    rec["t1"][:8] = 5_000 + 10_000
    rec["t1"][8] = 5_000 + 100_000
    rec["n"] = [10, 12, 14, 16, 18, 20, 22, 24, 400]
    rec["max_eval"] = [5, 6, 7, 8, 9, 10, 11, 12, 400]
    rec["rounds"][8] = 2
    a = timing.analyse(rec, sms, tiles_x=3)  # a 3 x 3 grid of tiles: block b is tile (b % 3, b // 3)
    assert a["blocks"] == 9 and a["nonempty_blocks"] == 9
    assert a["span_us"] == pytest.approx(100.0)
    assert a["longest"] == {"us": pytest.approx(100.0), "start_us": 0.0, "end_us": pytest.approx(100.0), "n": 400,
                            "rounds": 2, "max_eval": 400}
    assert a["max_running"] == 9
    assert (a["top"][0]["tile_x"], a["top"][0]["tile_y"], a["top"][0]["n"]) == (2, 2, 400)
    # after 10 us only the long block runs: fewer than `sms` blocks for 90 % of the span
    assert a["tail_fraction_below_sms"] == pytest.approx(0.9, abs=0.01)
    assert a["sum_block_us_over_sms"] == pytest.approx((8 * 10 + 100) / sms)
    assert a["corr_us_vs_max_eval"] > 0.9
    # blocks never written by the kernel (t1 = 0: an empty grid slot) are left out, and the others keep their tiles
    both = np.concatenate([np.zeros(3, dtype=timing.RECORD), rec])
    b = timing.analyse(both, sms, tiles_x=3)
    assert b["blocks"] == 9
    assert (b["top"][0]["tile_x"], b["top"][0]["tile_y"]) == (2, 3)  # block 11
