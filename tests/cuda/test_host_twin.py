"""CPU checks of the rasteriser's arithmetic: cuda/src/raster_math.h (the code the CUDA kernels include) is compiled
for the host by cuda/tests/host_twin.cpp and compared with independent float64 numpy twins of gsplat 1.5.3's
classic forward, and with the torch reference rasteriser (dd3g_sdk.render.reference).

Run: OMP_NUM_THREADS=1 python -m pytest tests/cuda/test_host_twin.py -q
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from _cxx import build_twin

from _scenes import cameras, random_scene
from dd3g_sdk.render.sh import eval_sh

ROOT = Path(__file__).resolve().parents[2]
W, H = 72, 56  # not multiples of 16: partial border tiles


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    return build_twin(tmp_path_factory, "host_twin", ("-Wall",))


def run_twin(exe: Path, tmp: Path, scene: dict, viewmat: np.ndarray, K: np.ndarray, tight: bool,
             near: float = 0.01, far: float = 1e10, eps2d: float = 0.3):
    n, k = scene["means"].shape[0], scene["sh"].shape[1]
    inp, out = tmp / f"in{int(tight)}.bin", tmp / f"out{int(tight)}.bin"
    with open(inp, "wb") as f:
        np.array([n, k, W, H, int(tight)], np.int32).tofile(f)
        np.concatenate([viewmat.reshape(-1), K.reshape(-1), [near, far, eps2d]]).astype(np.float32).tofile(f)
        for key in ("means", "quats", "scales", "opacities", "sh"):
            scene[key].astype(np.float32).reshape(-1).tofile(f)
    subprocess.run([str(exe), str(inp), str(out)], check=True)
    raw = out.read_bytes()
    per = np.frombuffer(raw[: n * 68], dtype=np.uint8).reshape(n, 68)
    proj = per[:, :44].copy().view(np.float32)  # visible, x, y, depth, opac, ca, cb, cc, r, g, b
    tiles = per[:, 44:].copy().view(np.int32)  # tx0, ty0, tx1, ty1, n_rect, n_tight
    img = np.frombuffer(raw[n * 68:], dtype=np.float32).reshape(H, W, 5)
    return proj, tiles, img


def gsplat_project_np(scene: dict, V: np.ndarray, K: np.ndarray, near=0.01, far=1e10, eps2d=0.3):
    """float64 numpy twin of gsplat 1.5.3 fully_fused_projection (pinhole, opacity-aware radius) + SH colour."""
    m = scene["means"].astype(np.float64)
    q = scene["quats"].astype(np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    R = np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                  2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                  2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).reshape(-1, 3, 3)
    Msc = R * scene["scales"].astype(np.float64)[:, None, :]
    cov = Msc @ Msc.transpose(0, 2, 1)
    Rv, t = V[:3, :3].astype(np.float64), V[:3, 3].astype(np.float64)
    pc = m @ Rv.T + t
    covc = Rv @ cov @ Rv.T
    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    xc, yc, zc = pc.T
    tfx, tfy = 0.5 * W / fx, 0.5 * H / fy
    tx = zc * np.minimum((W - cx) / fx + 0.3 * tfx, np.maximum(-(cx / fx + 0.3 * tfx), xc / zc))
    ty = zc * np.minimum((H - cy) / fy + 0.3 * tfy, np.maximum(-(cy / fy + 0.3 * tfy), yc / zc))
    J = np.zeros((len(m), 2, 3))
    J[:, 0, 0], J[:, 0, 2] = fx / zc, -fx * tx / zc**2
    J[:, 1, 1], J[:, 1, 2] = fy / zc, -fy * ty / zc**2
    c2 = J @ covc @ J.transpose(0, 2, 1) + eps2d * np.eye(2)
    det = c2[:, 0, 0] * c2[:, 1, 1] - c2[:, 0, 1] ** 2
    mx, my = fx * xc / zc + cx, fy * yc / zc + cy
    op = scene["opacities"].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ext = np.minimum(3.33, np.sqrt(2 * np.log(np.maximum(op, 1e-30) * 255.0)))
        rx, ry = np.ceil(ext * np.sqrt(c2[:, 0, 0])), np.ceil(ext * np.sqrt(c2[:, 1, 1]))
    vis = (zc >= near) & (zc <= far) & (det > 0) & (op >= 1 / 255)
    vis &= (mx + rx > 0) & (mx - rx < W) & (my + ry > 0) & (my - ry < H)
    conic = np.stack([c2[:, 1, 1], -c2[:, 0, 1], c2[:, 0, 0]], -1) / det[:, None]
    campos = -Rv.T @ t
    deg = {1: 0, 4: 1, 9: 2, 16: 3}[scene["sh"].shape[1]]
    rgb = np.maximum(eval_sh(deg, scene["sh"].astype(np.float64), m - campos) + 0.5, 0)
    return dict(visible=vis, x=mx, y=my, depth=zc, conic=conic, rgb=rgb, op=op)


def composite_np(p: dict) -> np.ndarray:
    """float64 per-pixel front-to-back compositing over all visible Gaussians (no tiles) -> [H, W, 5]."""
    idx = np.nonzero(p["visible"])[0]
    idx = idx[np.argsort(p["depth"][idx], kind="stable")]
    jj, ii = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    T = np.ones((H, W))
    out = np.zeros((H, W, 5))
    alive = np.ones((H, W), bool)
    for g in idx:
        dx, dy = p["x"][g] - jj, p["y"][g] - ii
        a, b, c = p["conic"][g]
        sig = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        al = np.minimum(0.999, p["op"][g] * np.exp(-sig))
        use = alive & (sig >= 0) & (al >= 1 / 255)
        nT = T * (1 - al)
        stop = use & (nT <= 1e-4)
        alive &= ~stop
        use &= ~stop
        wgt = np.where(use, al * T, 0.0)
        out[..., :3] += wgt[..., None] * p["rgb"][g]
        out[..., 4] += wgt * p["depth"][g]
        T = np.where(use, nT, T)
    out[..., 3] = 1 - T
    out[..., 4] /= np.maximum(out[..., 3], 1e-10)
    return out


@pytest.fixture(scope="module")
def case(twin, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("case")
    scene = random_scene(400, 16, seed=3)
    # a few Gaussians behind the camera, one at the border, one with zero scales
    scene["means"][:3] = np.array([[0, 0, 5.0], [0, 0, 3.0], [0.1, 0.2, 2.5]], np.float32)
    scene["scales"][5] = 0.0
    vm, Ks = cameras(1, W, H)
    proj_t, tiles_t, img_t = run_twin(twin, tmp, scene, vm[0], Ks[0], tight=True)
    proj_r, tiles_r, img_r = run_twin(twin, tmp, scene, vm[0], Ks[0], tight=False)
    ref = gsplat_project_np(scene, vm[0], Ks[0])
    return dict(scene=scene, vm=vm, Ks=Ks, proj=proj_t, tiles=tiles_t, img=img_t, img_rect=img_r, tiles_rect=tiles_r,
                ref=ref)


def test_projection_matches_float64_gsplat_twin(case):
    proj, ref = case["proj"], case["ref"]
    vis = proj[:, 0] > 0
    assert (vis == ref["visible"]).all(), np.nonzero(vis != ref["visible"])
    assert vis.sum() > 300 and (~vis).sum() >= 3  # the behind-camera ones are culled
    v = vis
    np.testing.assert_allclose(proj[v, 1], ref["x"][v], atol=2e-3)  # pixels
    np.testing.assert_allclose(proj[v, 2], ref["y"][v], atol=2e-3)
    np.testing.assert_allclose(proj[v, 3], ref["depth"][v], rtol=1e-5)
    np.testing.assert_allclose(proj[v, 5:8], ref["conic"][v], rtol=2e-3, atol=1e-5)
    np.testing.assert_allclose(proj[v, 8:11], ref["rgb"][v], atol=1e-4)


def test_tight_tiles_are_a_subset_and_lose_nothing(case):
    t, r = case["tiles"], case["tiles_rect"]
    vis = case["proj"][:, 0] > 0
    assert (t[vis, 5] <= t[vis, 4]).all()
    assert t[vis, 5].sum() < 0.9 * t[vis, 4].sum()  # elongated, rotated splats: tight binning drops tiles
    # every tile that holds a pixel with alpha >= 1/255 must be kept: brute force over all pixels
    ref = case["ref"]
    jj, ii = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    for g in np.nonzero(vis)[0][:150]:
        dx, dy = ref["x"][g] - jj, ref["y"][g] - ii
        a, b, c = ref["conic"][g]
        al = ref["op"][g] * np.exp(-(0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy))
        need = {(int(y) // 16, int(x) // 16) for y, x in zip(*np.nonzero(al >= 1 / 255 * (1 + 1e-3)))}
        assert len(need) <= t[g, 5], (g, len(need), t[g, 5])
    # and the images with and without tight binning are identical (same arithmetic, same order per pixel)
    np.testing.assert_array_equal(case["img"], case["img_rect"])


def test_image_matches_float64_compositing(case):
    img, ref = case["img"], composite_np(case["ref"])
    err = np.abs(img[..., :4] - ref[..., :4])
    assert err.mean() < 1e-4, err.mean()
    assert np.percentile(err, 99.9) < 2e-2
    cov = ref[..., 3] > 0.5  # expected depth where the surface is solid
    assert np.abs(img[..., 4][cov] - ref[..., 4][cov]).mean() < 1e-4


def test_image_matches_reference_rasteriser(case):
    torch = pytest.importorskip("torch")
    from dd3g_sdk.render.reference import rasterize

    s = case["scene"]
    t = {k: torch.from_numpy(v) for k, v in s.items()}
    rgb, alpha, depth = rasterize(t["means"], t["quats"], t["scales"], t["opacities"], t["sh"],
                                  torch.from_numpy(case["vm"]), torch.from_numpy(case["Ks"]), W, H)
    img = case["img"]
    assert np.abs(img[..., :3] - rgb[0].numpy()).mean() < 1e-4
    assert np.abs(img[..., 3] - alpha[0, ..., 0].numpy()).mean() < 1e-4
