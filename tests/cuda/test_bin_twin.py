"""CPU check of the binned (small-scene) path: cuda/src/bin_sort.h (the per-thread pieces that k_bin_count,
k_bin_scan, k_bin_scatter and k_raster_binned of cuda/src/dd3g_raster.cu call) is compiled for the host by
cuda/tests/bin_twin.cpp, which runs the path phase by phase: the tile walk (against emit_walk.h's walk),
counts -> ranges -> slots reserved per block and taken in a random order (every tile's range holds its own
entries, nothing at or past the capacity), and the per-tile sort in one piece or in progressive rounds (split by one
histogram, or by exact radix selection where that histogram is lumpy; the blend order must equal the sorted
(depth bits, number) keys, which is the default path's order).

Run: python -m pytest tests/cuda/test_bin_twin.py -q
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from _cxx import build_twin, run_twin

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bin_twin(tmp_path_factory) -> Path:
    return build_twin(tmp_path_factory, "bin_twin", ("-Wall", "-Wextra"))


@pytest.mark.parametrize("seed", [1, 2])
def test_binned_path_matches_plain_cpp(bin_twin, seed):
    stats = run_twin(bin_twin, seed, 120)
    # the random cases reached the paths that matter
    assert stats["walk_tiles"] > 100_000
    assert stats["split_walks"] > 1000  # walks shared by several threads (rows split between them)
    assert stats["blocks"] > 1000  # count / scatter blocks reserving slots
    assert stats["clamped"] > 30  # capacity below the list size
    assert stats["multi_round"] > 30  # tiles sorted in several rounds
    assert stats["split_rounds"] > 100  # rounds cut by the one-histogram split
    assert stats["exact_rounds"] > 30  # lumpy rounds that fell back to the exact radix selection
    assert stats["keys"] > 100_000


def kernel_body(src: str, name: str) -> str:
    """The text of the first definition of `name` (functions here are defined before they are called)."""
    start = re.search(rf"\b{name}\(", src).start()
    return src[start: src.index("\n}\n", start)]


def test_binned_kernels_call_the_twinned_code():
    """The twin only proves something if the kernels run the header's functions, not a copy of them."""
    src = (ROOT / "cuda/src/dd3g_raster.cu").read_text()
    assert "dd3g::bin_range(" in kernel_body(src, "k_bin_scan")
    assert kernel_body(src, "k_bin_scatter").count("dd3g::bin_walk_rows(") == 1
    assert kernel_body(src, "k_bin_count").count("dd3g::bin_walk_rows(") == 1
    assert "sub, kSplit," in kernel_body(src, "k_bin_count") and "sub, kSplit," in kernel_body(src, "k_bin_scatter")
    assert "dd3g::bitonic_step(" in kernel_body(src, "block_sort_keys")
    raster = kernel_body(src, "k_raster_binned")
    for fn in ("bin_select_match", "bin_select_digit", "bin_select_pick", "bin_key", "bin_key_index",
               "bin_round_target", "bin_split_shift", "bin_split_is_pick", "bin_split_thr"):
        assert f"dd3g::{fn}(" in raster, fn
    assert "block_sort_keys(" in raster
    # the default build takes the binned path for small frames
    assert re.search(r"#ifndef DD3G_RASTER_BINNED_MAX\s+#define DD3G_RASTER_BINNED_MAX \(1u << \d+\)", src)
    assert "p.CN <= (int64_t)DD3G_RASTER_BINNED_MAX" in kernel_body(src, "binned") and "if (binned(P))" in src
