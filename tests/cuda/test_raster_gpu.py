"""GPU correctness of the CUDA rasteriser against the torch reference and gsplat 1.5.3 (`rasterization`, classic).

Needs a CUDA GPU and the built library (build/libdd3g_raster.so, or DD3G_RASTER_LIB); gsplat for the gsplat
comparisons. Outputs are poisoned with NaN before every call and every C status is checked (the binding raises).
Run on a GPU host:  python -m pytest tests/cuda/test_raster_gpu.py -q
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

from _scenes import cameras, random_scene

pytestmark = pytest.mark.gpu

TOL = 1e-3  # mean absolute difference allowed for rgb and alpha (issue #9)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def torch():
    import torch

    return torch


@pytest.fixture(scope="module")
def lib():
    from dd3g_sdk.render import cuda as rc

    if not rc.is_available():
        pytest.skip("libdd3g_raster not built")
    return rc.load_library()


def to_dev(torch, scene: dict, dtype=None) -> dict:
    dt = dtype or torch.float32
    return {k: torch.from_numpy(v).cuda().to(dt) for k, v in scene.items()}


def ours(torch, lib, g: dict, vm, Ks, W, H, background=None, options=None, capacity=0):
    """One low-level call with NaN-poisoned outputs; returns (rgb, alpha, depth, stats)."""
    from dd3g_sdk.render import cuda as rc

    opts = options or rc.RasterOptions()
    N, K, C = g["means"].shape[0], g["sh"].shape[1], vm.shape[0]
    dtype = "float16" if g["means"].dtype == torch.float16 else "float32"
    cap = capacity or max(65536, 64 * N * C)
    cfg = lib.make_config(N, C, W, H, K, dtype, cap, opts)
    ws = torch.empty(lib.workspace_size(cfg), dtype=torch.uint8, device="cuda")
    # the workspace is poisoned too (nothing may rely on it starting at zero): every (int, int) pair reads as the
    # one-entry tile range [0, 1) and every 64-bit counter as 2^32, so a range or a counter that the frame forgot
    # to clear changes the image (or faults) or the stats
    w32 = ws.view(torch.int32)
    w32[0::2], w32[1::2] = 0, 1
    rgb = torch.full((C, H, W, 3), float("nan"), device="cuda")
    alpha = torch.full((C, H, W), float("nan"), device="cuda")
    depth = torch.full((C, H, W), float("nan"), device="cuda")
    bg = None if background is None else torch.as_tensor(background, dtype=torch.float32, device="cuda").expand(C, 3).contiguous()
    lib.forward(cfg, means=g["means"], quats=g["quats"], scales=g["scales"], opacities=g["opacities"], sh=g["sh"],
                viewmats=vm, Ks=Ks, background=bg, rgb=rgb, alpha=alpha, depth=depth, workspace=ws,
                workspace_bytes=ws.numel(), stream=torch.cuda.current_stream())
    stats = lib.read_stats(ws, torch.cuda.current_stream())
    torch.cuda.synchronize()
    for name, t in (("rgb", rgb), ("alpha", alpha), ("depth", depth)):
        assert not torch.isnan(t).any(), f"{name}: unwritten (NaN poison left) or NaN output"
    assert stats.intersections <= stats.capacity, stats
    if not opts.count_evaluations:
        assert stats.evaluations == 0, stats
    return rgb, alpha[..., None], depth[..., None], stats


def reference(torch, g, vm, Ks, W, H, background=None):
    from dd3g_sdk.render.reference import rasterize

    f = {k: v.float() for k, v in g.items()}
    bg = None if background is None else torch.as_tensor(background, dtype=torch.float32, device="cuda")
    with torch.no_grad():
        return rasterize(f["means"], f["quats"], f["scales"], f["opacities"], f["sh"], vm, Ks, W, H, background=bg)


def gsplat_render(torch, g, vm, Ks, W, H, background=None):
    gsplat = pytest.importorskip("gsplat")
    K = g["sh"].shape[1]
    C = vm.shape[0]
    with torch.no_grad():
        # gsplat 1.5.3 asserts on `backgrounds` with render_mode RGB+ED (it appends a depth channel to them and
        # then checks the old shape), so composite the background here: rgb + (1 - alpha) * bg, as it would.
        out, alpha, _ = gsplat.rasterization(g["means"], g["quats"], g["scales"], g["opacities"], g["sh"], vm, Ks, W, H,
                                             sh_degree=int(math.isqrt(K)) - 1, render_mode="RGB+ED",
                                             rasterize_mode="classic")
    rgb = out[..., :3]
    if background is not None:
        bg = torch.as_tensor(background, dtype=torch.float32, device="cuda").expand(C, 3)
        rgb = rgb + (1.0 - alpha) * bg[:, None, None, :]
    return rgb, alpha, out[..., 3:4]


def surface_scene(n: int, seed: int) -> dict:
    """An object-like scene: flat Gaussians on the surface of a rounded cube, oriented along the normal."""
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n, 3))
    p = p / (np.abs(p).max(1, keepdims=True) + 1e-9) * 0.5  # on the cube [-0.5, 0.5]^3 ...
    p = 0.7 * p + 0.3 * p / np.linalg.norm(p, axis=1, keepdims=True) * 0.6  # ... rounded
    nrm = p / np.linalg.norm(p, axis=1, keepdims=True)
    # quaternion rotating z onto the normal
    z = np.array([0, 0, 1.0])
    axis = np.cross(z, nrm)
    s = np.linalg.norm(axis, axis=1, keepdims=True)
    ang = np.arctan2(s[:, 0], nrm @ z)
    axis = axis / np.maximum(s, 1e-9)
    q = np.concatenate([np.cos(ang / 2)[:, None], axis * np.sin(ang / 2)[:, None]], 1)
    spacing = math.sqrt(6.0 / n)
    scales = np.stack([spacing * rng.uniform(0.6, 1.2, n), spacing * rng.uniform(0.6, 1.2, n),
                       np.full(n, spacing * 0.05)], 1)
    k = 4
    sh = rng.normal(scale=0.15, size=(n, k, 3))
    sh[:, 0] = (0.5 + 0.4 * np.sin(6 * p)) / 0.28209479177387814 - 0.5 / 0.28209479177387814
    f = np.float32
    return {"means": p.astype(f), "quats": q.astype(f), "scales": scales.astype(f),
            "opacities": rng.uniform(0.6, 1.0, n).astype(f), "sh": sh.astype(f)}


def mean_abs(a, b) -> float:
    return float((a - b).abs().mean())


def psnr(a, b) -> float:
    mse = float(((a - b) ** 2).mean())
    return 99.0 if mse == 0 else 10 * math.log10(1.0 / mse)


SCENES = {
    "random_sh3": lambda: random_scene(3000, 16, seed=11),
    "random_sh0": lambda: random_scene(3000, 1, seed=12),
    "surface_sh1": lambda: surface_scene(20000, seed=13),
}


@pytest.mark.parametrize("name", sorted(SCENES))
def test_matches_reference_and_gsplat(torch, lib, name):
    W, H = 200, 136
    g = to_dev(torch, SCENES[name]())
    vm, Ks = (torch.from_numpy(x).cuda() for x in cameras(3, W, H))
    bg = (1.0, 1.0, 1.0)
    rgb, alpha, depth, stats = ours(torch, lib, g, vm, Ks, W, H, background=bg)
    assert stats.intersections > 0
    r_rgb, r_alpha, r_depth = reference(torch, g, vm, Ks, W, H, background=bg)
    assert mean_abs(rgb, r_rgb) <= TOL and mean_abs(alpha, r_alpha) <= TOL
    s_rgb, s_alpha, s_depth = gsplat_render(torch, g, vm, Ks, W, H, background=bg)
    assert mean_abs(rgb, s_rgb) <= TOL and mean_abs(alpha, s_alpha) <= TOL
    solid = (s_alpha > 0.5)
    assert float((depth - s_depth).abs()[solid].mean()) < 1e-3


def test_tight_tiles_and_exact_count_give_the_same_image(torch, lib):
    from dd3g_sdk.render import cuda as rc

    W, H = 160, 120
    g = to_dev(torch, random_scene(4000, 9, seed=21))
    vm, Ks = (torch.from_numpy(x).cuda() for x in cameras(2, W, H))
    a = ours(torch, lib, g, vm, Ks, W, H, options=rc.RasterOptions(tight_tiles=True))
    b = ours(torch, lib, g, vm, Ks, W, H, options=rc.RasterOptions(tight_tiles=False))
    c = ours(torch, lib, g, vm, Ks, W, H, options=rc.RasterOptions(tight_tiles=True, exact_count=True))
    assert a[3].intersections < b[3].intersections
    for x, y in ((a, b), (a, c)):
        for i in range(3):
            assert torch.equal(x[i], y[i])


def test_fp16_psnr(torch, lib):
    W, H = 256, 256
    scene = surface_scene(30000, seed=31)
    vm, Ks = (torch.from_numpy(x).cuda() for x in cameras(2, W, H))
    full = ours(torch, lib, to_dev(torch, scene), vm, Ks, W, H, background=(1, 1, 1))
    half = ours(torch, lib, to_dev(torch, scene, torch.float16), vm, Ks, W, H, background=(1, 1, 1))
    assert psnr(half[0], full[0]) >= 40.0


def test_edge_cases(torch, lib):
    W, H = 96, 80
    vm, Ks = (torch.from_numpy(x).cuda() for x in cameras(1, W, H))
    bg = (0.25, 0.5, 0.75)
    # N = 0: background everywhere, alpha 0, depth 0
    g0 = to_dev(torch, random_scene(0, 1, seed=0))
    rgb, alpha, depth, st = ours(torch, lib, g0, vm, Ks, W, H, background=bg)
    assert st.intersections == 0
    assert torch.allclose(rgb, torch.tensor(bg, device="cuda").expand_as(rgb)) and alpha.abs().max() == 0
    # N = 1, plus all-behind-the-camera, border, zero scales: compare with gsplat and the reference
    s = random_scene(40, 4, seed=41)
    cam_pos = np.linalg.inv(vm[0].cpu().numpy())[:3, 3]
    s["means"][:10] = (cam_pos * 1.5).astype(np.float32)  # behind the camera (beyond it, looking away)
    s["scales"][10:15] = 0.0  # degenerate: only the 0.3 px^2 low-pass remains
    s["means"][15:20] = s["means"][15:20] * 0.2 + np.array([0.55, 0.0, 0.0], np.float32)  # near the border
    for sub in (slice(0, 1), slice(10, 11), slice(0, 10), slice(0, 40)):
        g = to_dev(torch, {k: v[sub] for k, v in s.items()})
        rgb, alpha, depth, _ = ours(torch, lib, g, vm, Ks, W, H, background=bg)
        r = reference(torch, g, vm, Ks, W, H, background=bg)
        assert mean_abs(rgb, r[0]) <= TOL and mean_abs(alpha, r[1]) <= TOL
    g = to_dev(torch, {k: v[:10] for k, v in s.items()})
    rgb, alpha, _, st = ours(torch, lib, g, vm, Ks, W, H, background=bg)
    assert st.intersections == 0 and alpha.abs().max() == 0


def test_one_million_gaussians_vs_gsplat(torch, lib):
    W, H = 512, 512
    n = 1_000_000
    s = random_scene(n, 1, seed=51, spread=1.0, scale=(0.002, 0.01))
    g = to_dev(torch, s)
    vm, Ks = (torch.from_numpy(x).cuda() for x in cameras(1, W, H))
    rgb, alpha, depth, st = ours(torch, lib, g, vm, Ks, W, H, background=(1, 1, 1))
    assert st.intersections > n // 2
    s_rgb, s_alpha, _ = gsplat_render(torch, g, vm, Ks, W, H, background=(1, 1, 1))
    assert mean_abs(rgb, s_rgb) <= TOL and mean_abs(alpha, s_alpha) <= TOL


def test_rasterizer_grows_capacity_and_graph_replay(torch, lib):
    from dd3g_sdk.render import cuda as rc

    W, H = 128, 128
    g = to_dev(torch, random_scene(5000, 4, seed=61))
    vm, Ks = (torch.from_numpy(x).cuda() for x in cameras(2, W, H))
    r = rc.CudaRasterizer(library=lib)
    r._capacity = 1000  # far too small: the first call must grow it and re-render
    rgb, alpha, depth = r(g["means"], g["quats"], g["scales"], g["opacities"], g["sh"], vm, Ks, W, H)
    assert r.last_stats.intersections <= r._capacity
    ref = ours(torch, lib, g, vm, Ks, W, H)
    assert torch.equal(rgb, ref[0])
    # overflow without growing: the needed count is reported
    cfg = lib.make_config(5000, 2, W, H, 4, "float32", 1000, rc.RasterOptions())
    ws = torch.empty(lib.workspace_size(cfg), dtype=torch.uint8, device="cuda")
    out = torch.empty((2, H, W, 3), device="cuda")
    lib.forward(cfg, means=g["means"], quats=g["quats"], scales=g["scales"], opacities=g["opacities"], sh=g["sh"],
                viewmats=vm, Ks=Ks, rgb=out, workspace=ws, workspace_bytes=ws.numel(),
                stream=torch.cuda.current_stream())
    st = lib.read_stats(ws, torch.cuda.current_stream())
    assert st.intersections > st.capacity == 1000
    # exact-count mode refuses instead
    cfg = lib.make_config(5000, 2, W, H, 4, "float32", 1000, rc.RasterOptions(exact_count=True))
    ws = torch.empty(lib.workspace_size(cfg), dtype=torch.uint8, device="cuda")
    status = lib.forward(cfg, means=g["means"], quats=g["quats"], scales=g["scales"], opacities=g["opacities"],
                         sh=g["sh"], viewmats=vm, Ks=Ks, rgb=out, workspace=ws, workspace_bytes=ws.numel(),
                         stream=torch.cuda.current_stream())
    assert status == rc.ERROR_WORKSPACE_TOO_SMALL
    # CUDA graph: capture one forward call, change the inputs in place, replay
    cap = 4 * st.intersections
    cfg = lib.make_config(5000, 2, W, H, 4, "float32", cap, rc.RasterOptions())
    ws = torch.empty(lib.workspace_size(cfg), dtype=torch.uint8, device="cuda")
    rgb_g = torch.full((2, H, W, 3), float("nan"), device="cuda")
    side = torch.cuda.Stream()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(side):
        with torch.cuda.graph(graph, stream=side):
            lib.forward(cfg, means=g["means"], quats=g["quats"], scales=g["scales"], opacities=g["opacities"],
                        sh=g["sh"], viewmats=vm, Ks=Ks, rgb=rgb_g, workspace=ws, workspace_bytes=ws.numel(),
                        stream=side)
    g2 = to_dev(torch, random_scene(5000, 4, seed=62))
    for k in g:
        g[k].copy_(g2[k])
    graph.replay()
    torch.cuda.synchronize()
    expect = ours(torch, lib, g2, vm, Ks, W, H)[0]
    assert torch.equal(rgb_g, expect)


def binned_max() -> int:
    """DD3G_RASTER_BINNED_MAX of the default build: frames with at most this many (camera, Gaussian) pairs bin."""
    src = (ROOT / "cuda/src/dd3g_raster.cu").read_text()
    return 1 << int(re.search(r"#define DD3G_RASTER_BINNED_MAX \(1u << (\d+)\)", src).group(1))


# builds that take the binned path at every size (the default does up to binned_max() pairs)
ALWAYS_BINNED = {"build/binned_all/libdd3g_raster.so", "build/binned_s64/libdd3g_raster.so",
                 "build/binned_s4096/libdd3g_raster.so"}
# builds that bin as the default does (up to binned_max() pairs)
BINNED_BY_SIZE = {"default", "build/bin_split1/libdd3g_raster.so"}


@pytest.mark.parametrize("variant,n", [("build/emit_staged/libdd3g_raster.so", 6000), ("default", 530_000),
                                       ("default", 6000), ("default", 30_000), ("default", 40_000),
                                       ("build/bin_split1/libdd3g_raster.so", 6000),
                                       ("build/emit_flat/libdd3g_raster.so", 6000),
                                       ("build/emit_flat/libdd3g_raster.so", 530_000),
                                       ("build/nofold/libdd3g_raster.so", 6000),
                                       ("build/binned_off/libdd3g_raster.so", 6000),
                                       ("build/binned_all/libdd3g_raster.so", 6000),
                                       ("build/binned_all/libdd3g_raster.so", 530_000),
                                       ("build/binned_s64/libdd3g_raster.so", 6000),
                                       ("build/binned_s4096/libdd3g_raster.so", 6000),
                                       ("build/key32/libdd3g_raster.so", 40_000),
                                       ("build/key32/libdd3g_raster.so", 530_000)])
def test_emit_variants_render_identical_images(torch, lib, variant, n):
    """The staged (coalesced) intersection-list writer and the per-thread one write the same list, so every
    output and the intersection count are bit-identical to a build with -DDD3G_RASTER_EMIT=0
    (build/emit_old/libdd3g_raster.so, or DD3G_RASTER_LIB_BASELINE): tight and rect binning, several cameras,
    runs longer than one shared-memory window, and a capacity that cuts the list short (the clamp).
    "build/emit_staged" always uses the staged writer (-DDD3G_RASTER_EMIT=1), "build/emit_flat" the flat one
    (one thread per list position, =3), "build/nofold" clears the tile ranges and counters with two memsets
    (-DDD3G_RASTER_FOLD_MEMSETS=0) instead of in k_pad; "default" is the library under test, which takes the binned
    path (count, scan, scatter, shared-memory sort per tile) up to DD3G_RASTER_BINNED_MAX pairs (6,000 x 2 cameras)
    and the staged writer above it (40,000 and 530,000 x 2 cameras). "build/binned_off" never bins; "build/binned_all" always
    does, "build/binned_s64" with a 64-key tile sort (rounds of radix selection in almost every tile),
    "build/binned_s4096" with 4,096 keys; "build/key32" keeps the list's keys 32-bit where the default stores them in
    16 bits (-DDD3G_RASTER_KEY16=0). The default build's count and scatter kernels give a Gaussian 4 threads up
    to 2^15 pairs (6,000 x 2 cameras) and 2 above (30,000 x 2); "build/bin_split1" one. 40,000 x 2 cameras is
    sorted with a projection block per camera, 530,000 x 2 with one block projecting both cameras. The binned path orders every
    tile by the same
    (depth, number) keys, so its images are bit-identical too, and so is the evaluation count, except that the
    binned raster kernel does not cull warps (the sorted one does: it evaluates fewer pairs); when the capacity
    cuts the list short it drops other entries than the default path does (tiles at the end of the list, not the
    deepest Gaussians), so there only the counts are compared. Since run 14 the sorted path's list has an entry per
    group of 2 x 2 tiles and the binned path one per tile, so a binned frame's intersection count is not the
    baseline's (test_tile_groups_render_identical_images compares the two lists' sizes)."""
    from dd3g_sdk.render import cuda as rc

    path = Path(os.environ.get("DD3G_RASTER_LIB_BASELINE", ROOT / "build/emit_old/libdd3g_raster.so"))
    if not path.is_file() or path.resolve() == Path(lib.path).resolve():
        pytest.skip(f"no second build of the library at {path}")
    old = rc.RasterLibrary(path)
    if variant == "default":
        new = lib
    else:
        if not (ROOT / variant).is_file():
            pytest.skip(f"no build at {variant}")
        new = rc.RasterLibrary(ROOT / variant)
    W, H = 512, 384
    s = random_scene(n, 4, seed=71, scale=(0.01, 0.12) if n < 10_000 else (0.002, 0.02))
    s["scales"][:20] *= 6.0  # a few Gaussians over hundreds of tiles: runs longer than one window
    g = to_dev(torch, s)
    vm, Ks = (torch.from_numpy(x).cuda() for x in cameras(2, W, H))

    def render(library, opts, cap):
        cfg = library.make_config(n, 2, W, H, 4, "float32", cap, opts)
        ws = torch.empty(library.workspace_size(cfg), dtype=torch.uint8, device="cuda")
        out = [torch.full(shape, float("nan"), device="cuda") for shape in ((2, H, W, 3), (2, H, W), (2, H, W))]
        library.forward(cfg, means=g["means"], quats=g["quats"], scales=g["scales"], opacities=g["opacities"],
                        sh=g["sh"], viewmats=vm, Ks=Ks, background=None, rgb=out[0], alpha=out[1], depth=out[2],
                        workspace=ws, workspace_bytes=ws.numel(), stream=torch.cuda.current_stream())
        st = library.read_stats(ws, torch.cuda.current_stream())
        torch.cuda.synchronize()
        return out, st

    room = (64 if n < 10_000 else 16) * n * 2
    _, st = render(new, rc.RasterOptions(tight_tiles=True), room)
    needed = st.intersections
    assert 0 < needed <= room
    binned = variant in ALWAYS_BINNED or (variant in BINNED_BY_SIZE and 2 * n <= binned_max())
    for opts, cap in ((rc.RasterOptions(tight_tiles=True), room), (rc.RasterOptions(tight_tiles=False), room),
                      (rc.RasterOptions(tight_tiles=True, count_evaluations=True), room),
                      (rc.RasterOptions(tight_tiles=True), needed), (rc.RasterOptions(tight_tiles=True), needed // 2 + 7)):
        a, sa = render(new, opts, cap)
        b, sb = render(old, opts, cap)
        assert sa.capacity == sb.capacity
        assert sa.intersections == sb.intersections or binned
        if binned:  # the binned raster kernel does not cull warps (the baseline's sorted one does): same or more
            assert sa.evaluations >= sb.evaluations
        else:
            assert sa.evaluations == sb.evaluations
        if opts.count_evaluations:
            assert sa.evaluations > 0
        for x, y in zip(a, b):
            assert not torch.isnan(x).any()
            if not (binned and cap < needed):
                assert torch.equal(x, y)


@pytest.mark.parametrize("variant", ["default", "build/binned_s64/libdd3g_raster.so"])
def test_binned_dense_tile_in_rounds(torch, lib, variant):
    """12,000 faint Gaussians over one small patch: the centre tiles hold several thousand entries each, more than
    one shared-memory sort (2,048 keys; 64 in build/binned_s64), so the binned raster kernel sorts and blends them
    in rounds of radix selection. Same image as the default path's (bit for bit, against build/emit_old) and as
    the torch reference (issue tolerance)."""
    from dd3g_sdk.render import cuda as rc

    path = Path(os.environ.get("DD3G_RASTER_LIB_BASELINE", ROOT / "build/emit_old/libdd3g_raster.so"))
    if not path.is_file():
        pytest.skip(f"no baseline build at {path}")
    new = lib if variant == "default" else (rc.RasterLibrary(ROOT / variant) if (ROOT / variant).is_file() else None)
    if new is None:
        pytest.skip(f"no build at {variant}")
    n, W, H = 12_000, 96, 96
    assert n <= binned_max()
    rng = np.random.default_rng(81)
    s = random_scene(n, 4, seed=81, scale=(0.004, 0.012))
    s["means"] = (rng.normal(size=(n, 3)) * 0.03).astype(np.float32)  # a patch a few tiles wide at the centre
    s["opacities"] = rng.uniform(0.01, 0.05, n).astype(np.float32)  # faint: blending goes deep into the list
    g = to_dev(torch, s)
    vm, Ks = (torch.from_numpy(x).cuda() for x in cameras(1, W, H))
    old = rc.RasterLibrary(path)
    a = ours(torch, new, g, vm, Ks, W, H, options=rc.RasterOptions(count_evaluations=True))
    b = ours(torch, old, g, vm, Ks, W, H, options=rc.RasterOptions(count_evaluations=True))
    assert a[3].intersections > 3 * 2048 and b[3].intersections > 0  # several rounds in the densest tiles
    assert a[3].evaluations >= b[3].evaluations  # binned: no warp culling, unlike the baseline's sorted kernel
    for x, y in zip(a[:3], b[:3]):
        assert torch.equal(x, y)
    r = reference(torch, g, vm, Ks, W, H)
    assert mean_abs(a[0], r[0]) <= TOL and mean_abs(a[1], r[1]) <= TOL


def same_outputs(torch, lib_a, lib_b, g, vm, Ks, W, H, opts):
    """One frame from each library (ours: poisoned outputs); rgb, alpha and depth must be bit-identical and
    NaN-free. Returns both results (outputs, stats) for the caller's checks of the counts."""
    a = ours(torch, lib_a, g, vm, Ks, W, H, options=opts)
    b = ours(torch, lib_b, g, vm, Ks, W, H, options=opts)
    for x, y in zip(a[:3], b[:3]):
        assert not torch.isnan(x).any()
        assert torch.equal(x, y)
    return a, b


@pytest.mark.parametrize("variant,n", [("default", 6000), ("default", 530_000),
                                       ("build/warp16/libdd3g_raster.so", 530_000)])
def test_warp_culling_renders_identical_images(torch, lib, variant, n):
    """Warp culling (DD3G_RASTER_WARP_CULL: the sorted path's raster kernel, 8 x 4 pixel warps) skips, per warp, the
    staged Gaussians whose alpha >= 1/255 region misses all of the warp's pixels: the same pixels, fewer evaluated
    pairs. Against build/cull_off (no culling, 16 x 2 pixel warps: run 11's raster kernels): the default build and
    build/warp16 (culling with 16 x 2 warps) give bit-identical outputs and the same intersection count, tight and
    rect binning; sorted frames (530,000 x 2 cameras) evaluate fewer pairs, binned ones (6,000 x 2: no culling, only
    the 8 x 4 warp layout) as many. build/cull_off lists per tile (tile groups need culling), the default and
    build/warp16 per group of 2 x 2 tiles on sorted frames: fewer entries there, the same images."""
    from dd3g_sdk.render import cuda as rc

    base = ROOT / "build/cull_off/libdd3g_raster.so"
    for path in (base, ROOT / variant if variant != "default" else base):
        if not path.is_file():
            pytest.skip(f"no build at {path} (cuda/tests/build_emit_variants.sh)")
    new = lib if variant == "default" else rc.RasterLibrary(ROOT / variant)
    old = rc.RasterLibrary(base)
    W, H = 512, 384
    s = random_scene(n, 4, seed=93, scale=(0.01, 0.12) if n < 10_000 else (0.002, 0.02))
    s["scales"][:20] *= 6.0  # a few large Gaussians: masks with every bit set next to ones with one
    g = to_dev(torch, s)
    vm, Ks = (torch.from_numpy(x).cuda() for x in cameras(2, W, H))
    for tight in (True, False):
        opts = rc.RasterOptions(tight_tiles=tight, count_evaluations=True)
        a, b = same_outputs(torch, new, old, g, vm, Ks, W, H, opts)
        if n * 2 <= binned_max():
            assert a[3].intersections == b[3].intersections > 0
            assert a[3].evaluations == b[3].evaluations > 0
        else:
            assert 0 < a[3].intersections < b[3].intersections
            assert 0 < a[3].evaluations < b[3].evaluations


@pytest.mark.parametrize("n,c,w,h", [(530_000, 2, 512, 384), (40_000, 2, 512, 384), (200_000, 1, 512, 512),
                                     (100_000, 8, 256, 256), (300_000, 1, 1000, 600)])
def test_tile_groups_render_identical_images(torch, lib, n, c, w, h):
    """The sorted path's list per group of 2 x 2 tiles (DD3G_RASTER_TILE_GROUPS=1, the default, run 14) against a
    list per tile (build/groups_off): each raster block keeps, in order, the entries of its group's list that carry
    its tile's bit, which are the Gaussians of its own per-tile list (tests/cuda/test_emit_twin.py checks that on the
    CPU), so outputs and evaluated pairs are identical, with fewer list entries. Tight and rect binning, 1 to 8
    cameras, the sorted path's two projection layouts (40,000 x 2: a block per camera), a 512^2 frame (256 groups:
    one radix pass), and a frame whose width and height are not multiples of 32 pixels (a half group at the edge)."""
    from dd3g_sdk.render import cuda as rc

    base = ROOT / "build/groups_off/libdd3g_raster.so"
    if not base.is_file():
        pytest.skip(f"no build at {base} (cuda/tests/build_emit_variants.sh)")
    tiles = rc.RasterLibrary(base)
    assert n * c > binned_max()  # the sorted path
    s = random_scene(n, 4, seed=101, scale=(0.002, 0.02))
    s["scales"][:20] *= 6.0  # a few large Gaussians: every bit of their groups' masks, computed rows
    g = to_dev(torch, s)
    vm, Ks = (torch.from_numpy(x).cuda() for x in cameras(c, w, h))
    for tight in (True, False):
        opts = rc.RasterOptions(tight_tiles=tight, count_evaluations=True)
        a, b = same_outputs(torch, lib, tiles, g, vm, Ks, w, h, opts)
        assert a[3].evaluations == b[3].evaluations > 0
        assert 0 < a[3].intersections < b[3].intersections


@pytest.mark.parametrize("n,k,c,w,h", [(530_000, 16, 2, 512, 384), (200_003, 9, 1, 512, 512), (40_001, 4, 2, 320, 256),
                                       (140_001, 1, 1, 256, 256), (100_000, 16, 8, 256, 256)])
def test_vector_sh_copy_renders_identical_images(torch, lib, n, k, c, w, h):
    """The projection's copy of SH rows into shared memory four floats a load (DD3G_RASTER_PROJ_VEC=1, the default,
    run 15) against one float a load (build/proj_scalar): the same floats land in the same places, so outputs, list
    entries and evaluated pairs are identical. SH degree 0-3 (rows of 3, 12, 27 and 48 floats: loads that cross a
    row's end), N not a multiple of the 128-Gaussian block (a partial last block), both projection layouts
    (40,001 x 2 cameras: a block per camera), 8 cameras, tight and rect binning, and an SH array at a 4-byte but not
    16-byte address (the scalar copy in both builds)."""
    from dd3g_sdk.render import cuda as rc

    base = ROOT / "build/proj_scalar/libdd3g_raster.so"
    if not base.is_file():
        pytest.skip(f"no build at {base} (cuda/tests/build_emit_variants.sh)")
    old = rc.RasterLibrary(base)
    assert n * c > binned_max()  # the sorted path
    s = random_scene(n, k, seed=107, scale=(0.002, 0.02))
    s["scales"][:20] *= 6.0
    g = to_dev(torch, s)
    flat = torch.empty(g["sh"].numel() + 1, device="cuda")  # the same values one float past a 16-byte boundary
    flat[1:] = g["sh"].reshape(-1)
    shifted = dict(g, sh=flat[1:].view(g["sh"].shape))
    assert shifted["sh"].data_ptr() % 16 == 4
    vm, Ks = (torch.from_numpy(x).cuda() for x in cameras(c, w, h))
    for scene, tight in ((g, True), (g, False), (shifted, True)):
        opts = rc.RasterOptions(tight_tiles=tight, count_evaluations=True)
        a, b = same_outputs(torch, lib, old, scene, vm, Ks, w, h, opts)
        assert a[3].intersections == b[3].intersections > 0
        assert a[3].evaluations == b[3].evaluations > 0
    r = reference(torch, g, vm, Ks, w, h) if n * c <= 100_000 else None  # the torch reference: small frames only
    if r is not None:
        a = ours(torch, lib, shifted, vm, Ks, w, h)
        assert mean_abs(a[0], r[0]) <= TOL and mean_abs(a[1], r[1]) <= TOL


@pytest.mark.parametrize("n", [6000, 530_000])
def test_fast_tight_binning_renders_identical_images(torch, lib, n):
    """Tight binning with the GPU's approximate square root, division and logarithm (DD3G_RASTER_FAST_TIGHT=1, the
    default) against the exact operations (build/exact_tight): a tile can only change where a span's end sits within
    rounding of the padded region's edge, far outside every pixel's alpha >= 1/255 region, so the images are
    bit-identical and the lists differ by at most a few entries in millions (each such entry can change the evaluated
    pairs by at most the 256 pixels of its tile). Binned (6,000 x 2 cameras) and sorted (530,000 x 2) frames."""
    from dd3g_sdk.render import cuda as rc

    base = ROOT / "build/exact_tight/libdd3g_raster.so"
    if not base.is_file():
        pytest.skip(f"no build at {base} (cuda/tests/build_emit_variants.sh)")
    exact = rc.RasterLibrary(base)
    W, H = 512, 384
    s = random_scene(n, 4, seed=97, scale=(0.01, 0.12) if n < 10_000 else (0.002, 0.02))
    s["scales"][:20] *= 6.0
    g = to_dev(torch, s)
    vm, Ks = (torch.from_numpy(x).cuda() for x in cameras(2, W, H))
    opts = rc.RasterOptions(tight_tiles=True, count_evaluations=True)
    a = ours(torch, lib, g, vm, Ks, W, H, options=opts)
    b = ours(torch, exact, g, vm, Ks, W, H, options=opts)
    for x, y in zip(a[:3], b[:3]):
        assert not torch.isnan(x).any()
        assert torch.equal(x, y)
    d_isect = abs(a[3].intersections - b[3].intersections)
    assert b[3].intersections > 0 and d_isect <= max(2, b[3].intersections // 100_000)
    assert abs(a[3].evaluations - b[3].evaluations) <= 256 * d_isect


@pytest.mark.parametrize("n", [6000, 530_000])
def test_log2_blend_matches_the_written_form(torch, lib, n):
    """The blend loop in log2 units with its rejection pre-test (DD3G_RASTER_LOG2_BLEND=1, the default) against the
    loop as raster_math writes it (build/log2_off: =0), binned (6,000) and sorted (530,000) frames, 2 cameras.
    The two compute alpha = opacity * 2^p vs opacity * e^-sigma, so they differ by float rounding, and a pair whose
    alpha sits at the 1/255 cut-off may fall on either side: per-pixel differences stay below 1.5 x 1/255, on at most
    0.1 % of pixels above 1e-4, and the means within 1e-5; depth (where alpha > 0.5) within 1e-3 relative."""
    from dd3g_sdk.render import cuda as rc

    path = ROOT / "build/log2_off/libdd3g_raster.so"
    if not path.is_file():
        pytest.skip(f"no build at {path} (cuda/tests/build_emit_variants.sh)")
    W, H = 512, 384
    s = random_scene(n, 4, seed=91, scale=(0.01, 0.12) if n < 10_000 else (0.002, 0.02))
    g = to_dev(torch, s)
    vm, Ks = (torch.from_numpy(x).cuda() for x in cameras(2, W, H))
    opts = rc.RasterOptions(count_evaluations=True)
    a = ours(torch, lib, g, vm, Ks, W, H, options=opts)
    b = ours(torch, rc.RasterLibrary(path), g, vm, Ks, W, H, options=opts)
    assert a[3].intersections == b[3].intersections
    assert abs(a[3].evaluations - b[3].evaluations) <= 1e-4 * b[3].evaluations
    for x, y in zip(a[:2], b[:2]):
        assert not torch.isnan(x).any()
        d = (x - y).abs()
        assert float(d.max()) <= 1.5 / 255 and float(d.mean()) <= 1e-5
        assert float((d > 1e-4).float().mean()) <= 1e-3
    solid = (a[1] > 0.5) & (b[1] > 0.5)
    assert solid.any()
    rel = ((a[2] - b[2]).abs() / b[2].abs().clamp_min(1e-6))[solid]
    assert float(rel.max()) <= 1e-3


@pytest.mark.parametrize("n,c,side", [(1, 1, 64), (4096, 2, 256), (65536, 1, 512), (1_000_000, 8, 1024)])
def test_workspace_bound_covers_cub(lib, monkeypatch, n, c, side):
    """Where no CUDA device answers CUB's query (TensorRT building an engine ahead of time on a host without a GPU),
    the workspace size comes from a device-independent bound (cub_temp_bound in dd3g_raster.cu); that bound must
    cover what CUB asks for on a real GPU. DD3G_RASTER_WORKSPACE_BOUND=1 forces the bound."""
    from dd3g_sdk.render import cuda as rc

    cfg = lib.make_config(n, c, side, side, 16, "float32", max(65536, 64 * n * c), rc.RasterOptions())
    monkeypatch.delenv("DD3G_RASTER_WORKSPACE_BOUND", raising=False)
    real = lib.workspace_size(cfg)
    monkeypatch.setenv("DD3G_RASTER_WORKSPACE_BOUND", "1")
    bound = lib.workspace_size(cfg)
    assert bound >= real, (bound, real)
    assert bound <= 2 * real + (4 << 20), (bound, real)  # a bound, not a blank cheque
