"""CPU check of the intersection-list writers: cuda/src/emit_walk.h (the index arithmetic that the k_emit and
k_emit_staged kernels of cuda/src/dd3g_raster.cu call) is compiled for the host by cuda/tests/emit_twin.cpp, which
makes the projection's row records (make_row_record) and runs the per-thread writer, the staged (shared-memory,
coalesced) writer phase by phase and the flat writer (one thread per list position) position by position, all
walking those records, against the list walked from the projected Gaussians directly, over random
rects, tight rows, culled Gaussians, disagreeing counts and capacities, and requires the same keys and values at
the same positions, nothing written at or past min(list size, capacity), and each block writing exactly its segment;
then the tile ranges that k_ranges finds by a 16-ary search in the tile-sorted list, against std::lower_bound.

Run: python -m pytest tests/cuda/test_emit_twin.py -q
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from _cxx import build_twin, run_twin

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def emit_twin(tmp_path_factory) -> Path:
    return build_twin(tmp_path_factory, "emit_twin", ("-Wall", "-Wextra"))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_staged_and_flat_writers_match_per_thread_writer(emit_twin, seed):
    stats = run_twin(emit_twin, seed, 150)
    # the random cases reached the paths that matter
    assert stats["entries"] > 100_000
    assert stats["clamped_cases"] > 20  # capacity below the list size
    assert stats["sentinel_entries"] > 100  # counts above the walk: the defensive fill
    assert stats["multi_round_cases"] > 20  # segments longer than one shared-memory window
    # k_ranges' 16-ary search: every tile's range of the tile-sorted lists (up to ~4M entries) equals lower_bound and
    # the runs, in at most 7 steps (log17(4M) < 5.4, plus the narrowing of the last few positions)
    assert stats["range_tiles"] > 100_000
    assert stats["range_max_steps"] <= 7
    # the writers walk the row records of k_project: recorded spans (up to 12 rows, 255 columns), and rects beyond
    # either limit computed from the centre and conic; both against the list walked from the Projected directly
    assert stats["recorded_pairs"] > 10_000
    assert stats["full_records"] > 50  # exactly kRecordRows rows
    assert stats["computed_pairs"] > 500
    # every case with a list per tile and per 2 x 2 group, each also with 16-bit keys (DD3G_RASTER_KEY16): the same list
    assert stats["key16_cases"] == 300
    # group lists (run 14): each tile's entries of its group's sorted list, by the tile's bit, are its own per-tile
    # list (what k_raster's staging relies on), checked over every non-empty tile of the cases with exact counts
    assert stats["group_filtered_tiles"] > 100_000


def kernel_body(src: str, name: str) -> str:
    start = src.index(f"\n{name}(")
    return src[start: src.index("\n}\n", start)]


def test_kernels_call_the_twinned_code():
    """The twin only proves something if the kernels run the header's functions, not a copy of them."""
    src = (ROOT / "cuda/src/dd3g_raster.cu").read_text()
    staged = kernel_body(src, "k_emit_staged")
    for fn in ("emit_block_segment", "emit_run", "emit_walk_begin", "emit_walk_fill", "emit_copy_out",
               "emit_first_window"):
        assert f"dd3g::{fn}(" in staged, fn
    assert staged.count("__syncthreads()") == 2
    old = kernel_body(src, "k_emit")
    assert "dd3g::emit_run(" in old and "dd3g::emit_run_serial(" in old
    flat = kernel_body(src, "k_emit_flat")
    assert "dd3g::emit_owner(" in flat and "dd3g::emit_entry_at(" in flat
    for body in (staged, old, flat):  # every writer walks the row records through the header's row_source
        assert "load_source(recs, pa, pb, idx, tight, GS)" in body
    loader = src[src.index("dd3g::RowSource load_source("):]
    loader = loader[:loader.index("\n}\n")]
    assert "dd3g::row_source(" in loader and "dd3g::row_source_compute(" in loader
    assert "n = dd3g::make_row_record(p, tight, gs, rec);" in src and "tight, GS, pa, pb, pc, nullptr, recs" in src  # the projection's count is the record's walk's
    # k_raster stages a group entry only with its tile's bit: (ty % 2) * 2 + tx % 2, as emit_walk.h's walk_value sets
    raster = kernel_body(src, "k_raster")
    assert "(v >> (dd3g::kGroupMaskShift + tp.sub)) & 1u" in raster
    assert "t.sub = (int)(((blockIdx.y & 1u) << 1) | (blockIdx.x & 1u));" in src
    ranges = kernel_body(src, "k_ranges")
    assert "dd3g::range_probe(" in ranges and "dd3g::range_narrow(" in ranges
    # the default build picks the writer by size (2); 0, 1 and 3 force the per-thread, staged and flat writer
    assert re.search(r"#ifndef DD3G_RASTER_EMIT\s+#define DD3G_RASTER_EMIT 2", src)
    assert "P.capacity <= (int64_t)DD3G_RASTER_STAGED_MAX_RUN * CN" in src
    assert "CN <= DD3G_RASTER_FLAT_MAX" in src
