"""CPU check of the raster kernels' warp culling: cuda/src/raster_math.h `warp_mask` (called by stage_gaussian in
k_raster, the sorted path's raster kernel) is compiled for the host by cuda/tests/cull_twin.cpp and compared with a per-pixel
float64 brute force: a warp whose pixels the Gaussian can reach (alpha >= 1/255 with a 1e-4 relative allowance) must
have its bit, for 8 x 4 and 16 x 2 pixel warps; and the mask must stay tight (few bits for warps the Gaussian misses).

Run: python -m pytest tests/cuda/test_cull_twin.py -q
"""
from __future__ import annotations

from pathlib import Path

import pytest

from _cxx import build_twin, run_twin
from test_bin_twin import kernel_body

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cull_twin(tmp_path_factory) -> Path:
    return build_twin(tmp_path_factory, "cull_twin", ("-Wall", "-Wextra"))


@pytest.mark.parametrize("seed", [1, 2])
def test_warp_mask_never_culls_a_reached_warp(cull_twin, seed):
    stats = run_twin(cull_twin, seed, 20000)
    assert stats["missed"] == 0
    # the cases reached what matters: many warps needed and many culled, degenerate and too-faint Gaussians
    assert stats["needed"] > 500_000 and stats["tiles"] * 2 * 8 - stats["bits"] > 1_000_000
    assert stats["degenerate"] > 100 and stats["faint"] > 50
    # tight: under 5 % of the set bits belong to warps with no pixel within sigma <= ln(255 o) + 0.25
    assert stats["loose"] < 0.05 * stats["bits"]


def test_raster_kernels_stage_the_twinned_mask():
    src = (ROOT / "cuda/src/dd3g_raster.cu").read_text()
    assert "dd3g::warp_mask<DD3G_RASTER_WARP_W>(" in kernel_body(src, "stage_gaussian")
    raster = kernel_body(src, "k_raster")
    assert "constexpr bool kCull = DD3G_RASTER_WARP_CULL;" in raster
    assert "stage_gaussian<kCull>(" in raster and "blend_staged<kCount, kCull>(" in raster
    binned = kernel_body(src, "k_raster_binned")
    assert "stage_gaussian<false>(" in binned and "blend_staged<kCount, false>(" in binned
    # on by default, with 8 x 4 pixel warps
    assert "#define DD3G_RASTER_WARP_CULL 1" in src and "#define DD3G_RASTER_WARP_W 8" in src
