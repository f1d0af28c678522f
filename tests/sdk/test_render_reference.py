"""Tests of the reference rasteriser (dd3g_sdk.render): analytic cases, a naive per-pixel twin, gradients.

Run: OMP_NUM_THREADS=1 python -m pytest tests/sdk/test_render_reference.py -q
"""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dd3g_sdk import Gaussians  # noqa: E402
from dd3g_sdk.cameras import look_at, orbit_camera  # noqa: E402
from dd3g_sdk.gaussians import C0, quat_to_rotmat  # noqa: E402
from dd3g_sdk.render import RenderResult, eval_sh, rasterize, render  # noqa: E402
from dd3g_sdk.render.reference import ALPHA_MAX, ALPHA_MIN, EPS2D, T_MIN  # noqa: E402
from dd3g_sdk.render.sh import C1  # noqa: E402

F64 = torch.float64


# ---- helpers --------------------------------------------------------------------------------------
def _cam(eye=(0.0, 0.0, 0.0), target=(0.0, 0.0, 1.0), f=60.0, W=32, H=32, cx=None, cy=None, dtype=F64):
    """viewmat [1, 4, 4], K [1, 3, 3] of an OpenCV camera; the default looks down +z from the origin."""
    vm = np.eye(4) if tuple(eye) == (0.0, 0.0, 0.0) and tuple(target) == (0.0, 0.0, 1.0) else look_at(eye, target)
    K = np.array([[f, 0, W / 2 if cx is None else cx], [0, f, H / 2 if cy is None else cy], [0, 0, 1]])
    return torch.tensor(vm, dtype=dtype)[None], torch.tensor(K, dtype=dtype)[None]


def _scene(means, scales, opacities, colors=None, sh=None, quats=None, dtype=F64):
    """Torch tensors of Gaussians given as lists; isotropic when scales are scalars; colours -> SH DC."""
    means = torch.tensor(means, dtype=dtype)
    n = means.shape[0]
    scales = torch.tensor(scales, dtype=dtype)
    if scales.ndim == 1:
        scales = scales[:, None].expand(n, 3).clone()
    if sh is None:
        sh = ((torch.tensor(np.asarray(colors), dtype=dtype) - 0.5) / C0)[:, None, :]
    quats = torch.tensor([[1.0, 0, 0, 0]] * n, dtype=dtype) if quats is None else torch.tensor(quats, dtype=dtype)
    return dict(means=means, quats=quats, scales=scales, opacities=torch.tensor(opacities, dtype=dtype),
                sh=torch.as_tensor(sh, dtype=dtype))


def _render(s, vm, K, W=32, H=32, bg=(1.0, 1.0, 1.0), **kw):
    bg_t = None if bg is None else torch.tensor(bg, dtype=s["means"].dtype)
    return rasterize(s["means"], s["quats"], s["scales"], s["opacities"], s["sh"], vm, K, W, H,
                     background=bg_t, **kw)


def _random_scene(n, seed, degree=2, dtype=F64, spread=0.6):
    rng = np.random.default_rng(seed)
    k = (degree + 1) ** 2
    sh = rng.normal(0, 0.3, (n, k, 3))
    sh[:, 0] = (rng.uniform(0, 1, (n, 3)) - 0.5) / C0
    return dict(means=torch.tensor(rng.uniform(-spread, spread, (n, 3)), dtype=dtype),
                quats=torch.tensor(rng.normal(size=(n, 4)), dtype=dtype),  # not normalised on purpose
                scales=torch.tensor(np.exp(rng.uniform(np.log(0.02), np.log(0.15), (n, 3))), dtype=dtype),
                opacities=torch.tensor(rng.uniform(0.05, 1.0, n), dtype=dtype),
                sh=torch.tensor(sh, dtype=dtype))


def _orbit(az, el, W, H, dtype=F64, radius=2.0):
    c = orbit_camera(az, el, radius, 40.0, W, H)
    return torch.tensor(c.world_to_cam, dtype=dtype)[None], torch.tensor(c.K, dtype=dtype)[None]


def naive_render(s, vm, K, W, H, bg, near=0.01, far=1e10):
    """The same rules written pixel-parallel with a Python loop over Gaussians in depth order (float64):
    no tiles, no bounding boxes, every Gaussian evaluated at every pixel."""
    g = {k: v.detach().double().numpy() for k, v in s.items()}
    R, t = vm[0, :3, :3].double().numpy(), vm[0, :3, 3].double().numpy()
    fx, fy, cx, cy = (float(K[0, 0, 0]), float(K[0, 1, 1]), float(K[0, 0, 2]), float(K[0, 1, 2]))
    campos = -R.T @ t
    degree = int(round(math.sqrt(g["sh"].shape[1]))) - 1
    jj, ii = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    items = []
    for n in range(g["means"].shape[0]):
        x, y, z = R @ g["means"][n] + t
        if z < near or z > far or g["opacities"][n] < 1 / 255:
            continue
        q = g["quats"][n] / np.linalg.norm(g["quats"][n])
        Rq = quat_to_rotmat(q)
        cov3 = Rq @ np.diag(g["scales"][n] ** 2) @ Rq.T
        u = np.clip(x / z, -(cx / fx + 0.3 * W / (2 * fx)), (W - cx) / fx + 0.3 * W / (2 * fx))
        v = np.clip(y / z, -(cy / fy + 0.3 * H / (2 * fy)), (H - cy) / fy + 0.3 * H / (2 * fy))
        J = np.array([[fx / z, 0, -fx * u / z], [0, fy / z, -fy * v / z]])
        cov2 = J @ R @ cov3 @ R.T @ J.T + 0.3 * np.eye(2)
        if np.linalg.det(cov2) <= 0:
            continue
        color = np.maximum(eval_sh(degree, g["sh"][n:n + 1], (g["means"][n] - campos)[None])[0] + 0.5, 0)
        items.append((z, (fx * x / z + cx, fy * y / z + cy), np.linalg.inv(cov2), g["opacities"][n], color))
    items.sort(key=lambda it: it[0])  # stable: equal depths keep input order
    T = np.ones((H, W))
    rgb, dsum = np.zeros((H, W, 3)), np.zeros((H, W))
    done = np.zeros((H, W), bool)
    for z, mu, conic, op, color in items:
        dx, dy = mu[0] - jj, mu[1] - ii
        sig = 0.5 * (conic[0, 0] * dx * dx + conic[1, 1] * dy * dy) + conic[0, 1] * dx * dy
        a = np.minimum(0.999, op * np.exp(-sig))
        ok = (sig >= 0) & (a >= 1 / 255) & ~done
        nT = T * (1 - a)
        stop = ok & (nT <= 1e-4)
        done |= stop
        ok &= ~stop
        w = np.where(ok, a * T, 0)
        rgb += w[..., None] * color
        dsum += w * z
        T = np.where(ok, nT, T)
    alpha = 1 - T
    return rgb + T[..., None] * np.asarray(bg), alpha, dsum / np.maximum(alpha, 1e-10)


# ---- one Gaussian -----------------------------------------------------------------------------------
# Camera at the origin looking down +z, principal point on a pixel centre (16.5, 16.5) -> pixel (16, 16).
# An isotropic Gaussian on the axis at depth z0 has screen covariance ((f s / z0)^2 + 0.3) I; the numbers
# give exactly 3 px of standard deviation.
Z0, S0 = 2.0, 0.1
F0 = Z0 * math.sqrt(9.0 - EPS2D) / S0
SIG_PX = 3.0


def _one(opacity=0.6, color=(0.2, 0.4, 0.9), dtype=F64):
    s = _scene([[0.0, 0.0, Z0]], [S0], [opacity], colors=[color], dtype=dtype)
    vm, K = _cam(f=F0, cx=16.5, cy=16.5, dtype=dtype)
    return s, vm, K


def test_single_gaussian_centre_and_profile():
    op, col, bg = 0.6, np.array([0.2, 0.4, 0.9]), np.array([1.0, 0.5, 0.0])
    s, vm, K = _one(op, tuple(col))
    rgb, alpha, depth = _render(s, vm, K, bg=tuple(bg))
    rgb, alpha, depth = rgb[0].numpy(), alpha[0, ..., 0].numpy(), depth[0, ..., 0].numpy()
    # centre pixel: opacity-weighted colour over the background
    np.testing.assert_allclose(rgb[16, 16], op * col + (1 - op) * bg, atol=1e-12)
    assert alpha[16, 16] == pytest.approx(op, abs=1e-12)
    assert depth[16, 16] == pytest.approx(Z0, abs=1e-12)
    # one standard deviation (3 px, including the 0.3 px^2 low-pass) away, along each axis
    for (i, j) in [(16 + 3, 16), (16 - 3, 16), (16, 16 + 3), (16, 16 - 3)]:
        assert alpha[i, j] == pytest.approx(op * math.exp(-0.5), abs=1e-12)
    # diagonal pixel (2, 2) away: squared distance 8 px^2
    assert alpha[18, 18] == pytest.approx(op * math.exp(-0.5 * 8 / SIG_PX**2), abs=1e-12)
    # the 1/255 skip: alpha = op exp(-r^2 / 2 sigma^2) >= 1/255 inside r* and exactly 0 outside
    r_star = SIG_PX * math.sqrt(2 * math.log(255 * op))  # ~ 9.5 px
    assert int(r_star) == 9
    assert alpha[16, 16 + 9] == pytest.approx(op * math.exp(-0.5 * 81 / 9), abs=1e-12)
    assert alpha[16, 16 + 10] == 0.0 and (rgb[16, 16 + 10] == bg).all()
    # well beyond 3 sigma: nothing at all
    far_mask = np.hypot(*np.meshgrid(np.arange(32) - 16, np.arange(32) - 16)) > 3.5 * SIG_PX
    assert (alpha[far_mask] == 0).all() and (depth[far_mask] == 0).all()


def test_alpha_clamp():
    s, vm, K = _one(opacity=1.0, color=(0.0, 1.0, 0.0))
    rgb, alpha, _ = _render(s, vm, K, bg=(1.0, 1.0, 1.0))
    assert alpha[0, 16, 16, 0].item() == pytest.approx(ALPHA_MAX, abs=1e-12)
    np.testing.assert_allclose(rgb[0, 16, 16].numpy(), [1 - ALPHA_MAX, 1.0, 1 - ALPHA_MAX], atol=1e-12)


def test_behind_camera_and_near_plane_contribute_nothing():
    # one behind the camera, one nearer than `near` (0.01); both would cover the centre if projected
    s = _scene([[0.0, 0.0, -2.0], [0.0, 0.0, 0.005]], [0.3, 0.001], [0.9, 0.9], colors=[[1, 0, 0], [0, 0, 1]])
    for v in s.values():
        v.requires_grad_(True)
    vm, K = _cam(f=F0, cx=16.5, cy=16.5)
    rgb, alpha, depth = _render(s, vm, K, bg=(0.3, 0.6, 0.9))
    assert (alpha == 0).all() and (depth == 0).all()
    assert torch.allclose(rgb, torch.tensor([0.3, 0.6, 0.9], dtype=F64).expand_as(rgb), atol=0)
    (rgb.sum() + alpha.sum()).backward()
    for k in ("means", "scales", "opacities", "sh"):
        assert s[k].grad is None or (s[k].grad == 0).all(), k
    # the same Gaussian moved just beyond `near` does render
    s2 = _scene([[0.0, 0.0, 0.02]], [0.0002], [0.9], colors=[[0, 0, 1]])
    assert _render(s2, vm, K)[1][0, 16, 16, 0] > 0.5


def test_two_gaussians_compositing_order_and_closed_form():
    a1, a2 = 0.7, 0.5
    c1, c2, bg = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0])
    near_g, far_g = [0.0, 0.0, 2.0], [0.0, 0.0, 3.0]
    vm, K = _cam(f=F0, cx=16.5, cy=16.5)
    outs = []
    for order in ([0, 1], [1, 0]):
        m, o, c = [near_g, far_g], [a1, a2], [c1, c2]
        s = _scene([m[i] for i in order], [0.15, 0.15], [o[i] for i in order], colors=[c[i] for i in order])
        outs.append(_render(s, vm, K, bg=tuple(bg)))
    for x, y in zip(outs[0], outs[1]):
        assert torch.equal(x, y)
    rgb, alpha, depth = (t[0, 16, 16].numpy() for t in outs[0])
    np.testing.assert_allclose(rgb, a1 * c1 + (1 - a1) * a2 * c2 + (1 - a1) * (1 - a2) * bg, atol=1e-12)
    assert alpha[0] == pytest.approx(1 - (1 - a1) * (1 - a2), abs=1e-12)
    assert depth[0] == pytest.approx((a1 * 2.0 + (1 - a1) * a2 * 3.0) / (1 - (1 - a1) * (1 - a2)), abs=1e-12)
    assert rgb[0] > rgb[1]  # the nearer (red) one dominates


def test_transmittance_cutoff():
    # 7 layers of opacity 0.8 on the axis: T after k layers = 0.2^k = 0.2, .04, .008, .0016, 3.2e-4, 6.4e-5.
    # The 6th would take T to 6.4e-5 <= 1e-4, so it and everything behind it are dropped.
    op, L = 0.8, 7
    cols = np.random.default_rng(1).uniform(0, 1, (L, 3))
    s = _scene([[0.0, 0.0, 2.0 + 0.1 * k] for k in range(L)], [0.1] * L, [op] * L, colors=cols.tolist())
    vm, K = _cam(f=F0, cx=16.5, cy=16.5)
    bg = np.array([1.0, 1.0, 1.0])
    rgb, alpha, _ = (t[0, 16, 16].numpy() for t in _render(s, vm, K, bg=tuple(bg)))
    kept = 5
    assert (1 - op) ** kept > T_MIN >= (1 - op) ** (kept + 1)
    expect = sum(op * (1 - op) ** k * cols[k] for k in range(kept)) + (1 - op) ** kept * bg
    np.testing.assert_allclose(rgb, expect, atol=1e-12)
    assert alpha[0] == pytest.approx(1 - (1 - op) ** kept, abs=1e-12)
    # including the 6th layer would change the colour by op * 0.2^5 * c_5, far above the tolerance
    assert np.abs(op * (1 - op) ** kept * (cols[kept] - bg)).max() > 1e-5


# ---- spherical harmonics ---------------------------------------------------------------------------
def test_eval_sh_degree1_direct_formula():
    rng = np.random.default_rng(0)
    sh = rng.normal(size=(1, 4, 3))
    d = np.array([[0.3, -1.2, 2.0]])
    x, y, z = d[0] / np.linalg.norm(d[0])
    direct = C0 * sh[0, 0] - C1 * y * sh[0, 1] + C1 * z * sh[0, 2] - C1 * x * sh[0, 3]
    np.testing.assert_allclose(eval_sh(1, sh, d)[0], direct, atol=1e-14)
    # torch and numpy share the code path and agree
    t = eval_sh(1, torch.tensor(sh), torch.tensor(d))
    np.testing.assert_allclose(t.numpy()[0], direct, atol=1e-14)
    # the length of the direction does not matter
    np.testing.assert_allclose(eval_sh(1, sh, 7.5 * d), eval_sh(1, sh, d), atol=1e-14)


def _sh_basis(degree, dirs):  # [M, 3] -> [M, K] basis values
    k = (degree + 1) ** 2
    eye = np.eye(k)[:, :, None].repeat(3, 2)  # one coefficient set per basis function
    return np.stack([eval_sh(degree, np.broadcast_to(eye[j], (dirs.shape[0], k, 3)), dirs)[:, 0]
                     for j in range(k)], 1)


def test_eval_sh_basis_orthonormal_and_signs():
    # Gauss-Legendre in cos(theta) x uniform in phi integrates these degree <= 6 products exactly.
    zs, wz = np.polynomial.legendre.leggauss(8)
    ph = np.arange(16) * 2 * np.pi / 16
    Z, PH = np.meshgrid(zs, ph, indexing="ij")
    r = np.sqrt(1 - Z**2)
    dirs = np.stack([r * np.cos(PH), r * np.sin(PH), Z], -1).reshape(-1, 3)
    w = (wz[:, None] * np.full(16, 2 * np.pi / 16)).reshape(-1)
    Y = _sh_basis(3, dirs)
    np.testing.assert_allclose((Y * w[:, None]).T @ Y, np.eye(16), atol=1e-12)
    # 3DGS sign convention at a generic direction, in Sloan's polynomial form (independent of sh.py's form)
    d = np.array([[0.48, -0.6, 0.64]])  # unit
    x, y, z = d[0]
    expect = [C0, -C1 * y, C1 * z, -C1 * x,
              1.0925484305920792 * x * y, -1.0925484305920792 * y * z, 0.9461746957575601 * z * z - 0.3153915652525201,
              -1.0925484305920792 * x * z, 0.5462742152960395 * (x * x - y * y),
              -0.5900435899266435 * (x * 2 * x * y + y * (x * x - y * y)), 2.890611442640554 * x * y * z,
              (-2.285228997322329 * z * z + 0.4570457994644658) * y, z * (1.865881662950577 * z * z - 1.119528997770346),
              (-2.285228997322329 * z * z + 0.4570457994644658) * x, 1.445305721320277 * z * (x * x - y * y),
              -0.5900435899266435 * (x * (x * x - y * y) - y * 2 * x * y)]
    np.testing.assert_allclose(_sh_basis(3, d)[0], expect, atol=1e-12)


def test_sh_degree1_colour_follows_view_direction():
    mean = np.array([0.1, -0.05, 0.2])
    sh = np.zeros((1, 4, 3))
    sh[0, 0] = [0.2, -0.1, 0.0]
    sh[0, 1:] = [[0.4, 0.0, -0.2], [0.0, 0.5, 0.1], [-0.3, 0.2, 0.6]]
    s = _scene([mean.tolist()], [0.05], [0.8], sh=sh)
    cols = []
    for az in (0.0, 90.0, 200.0):
        c = orbit_camera(az, 30.0, 2.0, 40.0, 33, 33)
        vm, K = torch.tensor(c.world_to_cam)[None], torch.tensor(c.K)[None]
        uv, _ = c.project(mean[None])
        i, j = int(uv[0, 1]), int(uv[0, 0])
        rgb, alpha, _ = _render(s, vm, K, W=33, H=33, bg=(0.0, 0.0, 0.0))
        a = alpha[0, i, j, 0].item()
        d = mean - c.position
        x, y, z = d / np.linalg.norm(d)
        colour = np.maximum(0.5 + C0 * sh[0, 0] + C1 * (-y * sh[0, 1] + z * sh[0, 2] - x * sh[0, 3]), 0)
        np.testing.assert_allclose(rgb[0, i, j].numpy(), a * colour, atol=1e-12)
        cols.append(rgb[0, i, j].numpy() / a)
    assert np.abs(cols[0] - cols[1]).max() > 0.05 and np.abs(cols[1] - cols[2]).max() > 0.05


# ---- whole scenes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("degree", [0, 3])
def test_matches_naive_per_pixel_twin(degree):
    """Tiled, chunked, vectorised renderer == naive loop (float64), incl. an image size that is not a
    multiple of the tile, rotated anisotropic Gaussians, and Gaussians far off-screen (Jacobian clamp)."""
    s = _random_scene(60, seed=degree, degree=degree)
    # two big Gaussians well outside the field of view whose footprint still reaches the image
    s["means"][:2] = torch.tensor([[1.6, 0.1, 0.2], [-0.3, -1.5, -0.4]], dtype=F64)
    s["scales"][:2] = 0.5
    W, H = 40, 28
    vm, K = _orbit(30.0, 20.0, W, H)
    bg = (0.2, 0.5, 0.8)
    rgb, alpha, depth = _render(s, vm, K, W=W, H=H, bg=bg)
    n_rgb, n_alpha, n_depth = naive_render(s, vm, K, W, H, bg)
    assert n_alpha[:4].max() > 0.05 or n_alpha[:, :4].max() > 0.05  # the off-screen pair reaches the border
    np.testing.assert_allclose(rgb[0].numpy(), n_rgb, atol=1e-9)
    np.testing.assert_allclose(alpha[0, ..., 0].numpy(), n_alpha, atol=1e-9)
    np.testing.assert_allclose(depth[0, ..., 0].numpy(), n_depth, atol=1e-8)


def test_float32_close_to_float64_twin():
    s64 = _random_scene(80, seed=5, degree=1)
    s32 = {k: v.float() for k, v in s64.items()}
    W = H = 32
    vm, K = _orbit(-40.0, 10.0, W, H)
    rgb, alpha, _ = _render(s32, vm.float(), K.float(), W=W, H=H)
    n_rgb, n_alpha, _ = naive_render(s64, vm, K, W, H, (1.0, 1.0, 1.0))
    # float32 rounding can flip a 1/255 or 1e-4 decision at a few pixels; the mean stays tiny
    assert np.abs(rgb[0].numpy() - n_rgb).mean() < 1e-5
    assert np.abs(alpha[0, ..., 0].numpy() - n_alpha).mean() < 1e-5


def test_tile_size_does_not_change_result():
    s = _random_scene(300, seed=3, degree=1, dtype=torch.float32)
    W, H = 48, 40
    vm, K = _orbit(45.0, 25.0, W, H, dtype=torch.float32)
    ref = _render(s, vm, K, W=W, H=H, tile_size=16)
    for ts in (8, 32, 5):
        out = _render(s, vm, K, W=W, H=H, tile_size=ts)
        for a, b in zip(out, ref):
            assert (a - b).abs().max().item() <= 1e-5, ts


def test_input_order_does_not_matter():
    s = _random_scene(120, seed=4, degree=2, dtype=torch.float32)
    perm = torch.randperm(120, generator=torch.Generator().manual_seed(0))
    vm, K = _orbit(10.0, 30.0, 32, 32, dtype=torch.float32)
    a = _render(s, vm, K)
    b = _render({k: v[perm] for k, v in s.items()}, vm, K)
    for x, y in zip(a, b):
        assert (x - y).abs().max().item() <= 1e-6


def test_camera_batch_equals_single_renders():
    s = _random_scene(150, seed=6, degree=2, dtype=torch.float32)
    cams = [_orbit(az, 20.0, 24, 24, dtype=torch.float32) for az in (0.0, 120.0)]
    vm, K = torch.cat([c[0] for c in cams]), torch.cat([c[1] for c in cams])
    bgs = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.2, 0.4]])
    batch = rasterize(*(s[k] for k in ("means", "quats", "scales", "opacities", "sh")), vm, K, 24, 24, background=bgs)
    for c in range(2):
        single = rasterize(*(s[k] for k in ("means", "quats", "scales", "opacities", "sh")), cams[c][0], cams[c][1],
                           24, 24, background=bgs[c])
        for x, y in zip(batch, single):
            # equal up to float32 summation order (chunks group tiles of both cameras differently)
            torch.testing.assert_close(x[c:c + 1], y, rtol=1e-5, atol=1e-6)
    assert not torch.equal(batch[0][0], batch[0][1])


# ---- gradients -------------------------------------------------------------------------------------
def test_gradients_flow_and_match_finite_differences():
    s = _random_scene(12, seed=7, degree=1, spread=0.25)
    s["scales"] = s["scales"] * 2
    W = H = 16
    vm, K = _orbit(20.0, 15.0, W, H)
    wts = [torch.rand(t, generator=torch.Generator().manual_seed(i), dtype=F64)
           for i, t in enumerate([(1, H, W, 3), (1, H, W, 1), (1, H, W, 1)])]

    def loss(p):
        rgb, alpha, depth = _render(p, vm, K, W=W, H=H, bg=(0.5, 0.5, 0.5))
        return (rgb * wts[0]).sum() + (alpha * wts[1]).sum() + 0.1 * (depth * wts[2]).sum()

    params = {k: v.clone().requires_grad_(True) for k, v in s.items()}
    loss(params).backward()
    gen = torch.Generator().manual_seed(1)
    for k in ("means", "quats", "scales", "opacities", "sh"):
        g = params[k].grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, k
        # directional derivative along a random direction vs central differences
        d = torch.randn(s[k].shape, generator=gen, dtype=F64)
        eps = 1e-6
        with torch.no_grad():
            lp = loss({**s, k: s[k] + eps * d}).item()
            lm = loss({**s, k: s[k] - eps * d}).item()
        fd, an = (lp - lm) / (2 * eps), (g * d).sum().item()
        assert an == pytest.approx(fd, rel=1e-5, abs=1e-7), k


# ---- numpy API, import, validation -------------------------------------------------------------------
def test_render_numpy_api():
    rng = np.random.default_rng(0)
    n = 200
    g = Gaussians.from_colors(rng.uniform(-0.4, 0.4, (n, 3)), rng.uniform(0.01, 0.05, (n, 3)), rng.normal(size=(n, 4)),
                              rng.uniform(0.2, 1, n), rng.uniform(0, 1, (n, 3)), sh_degree=1)
    cams = [orbit_camera(a, 20.0, 2.0, 40.0, 32, 24) for a in (0.0, 90.0)]
    r = render(g, cams)
    assert isinstance(r, RenderResult)
    assert r.rgb.shape == (2, 24, 32, 3) and r.alpha.shape == (2, 24, 32) and r.depth.shape == (2, 24, 32)
    assert r.rgb.dtype == np.float32
    assert 0.05 < r.alpha.mean() < 0.95
    hit = r.alpha > 0.5
    assert (r.depth[hit] > 1.2).all() and (r.depth[hit] < 2.8).all()  # objects in [-0.5, 0.5]^3 at distance 2
    assert (r.rgb[r.alpha == 0] == 1.0).all()  # white background
    empty = render(Gaussians.empty(), cams, background=(0.0, 0.0, 0.0))
    assert (empty.rgb == 0).all() and (empty.alpha == 0).all() and (empty.depth == 0).all()
    with pytest.raises(ValueError):
        render(g, [orbit_camera(0, 20, 2, 40, 32, 32), orbit_camera(0, 20, 2, 40, 16, 16)])


def test_bad_shapes_raise():
    s = _random_scene(4, seed=0, degree=0)
    vm, K = _orbit(0.0, 0.0, 8, 8)
    with pytest.raises(ValueError, match="sh"):
        rasterize(s["means"], s["quats"], s["scales"], s["opacities"], s["sh"][:, :, :2], vm, K, 8, 8)
    with pytest.raises(ValueError, match="Ks"):
        rasterize(s["means"], s["quats"], s["scales"], s["opacities"], s["sh"], vm, K[:, :2], 8, 8)
    with pytest.raises(ValueError, match="quats"):
        rasterize(s["means"], s["quats"][:3], s["scales"], s["opacities"], s["sh"], vm, K, 8, 8)


def test_render_package_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np\n"
            "import dd3g_sdk.render as r\n"
            "print(r.eval_sh(0, np.ones((2, 1, 3)), np.ones((2, 3))).shape, r.RenderResult.__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "(2, 3) RenderResult" in out.stdout


def test_constants_are_gsplat_1_5_3():
    assert (ALPHA_MIN, ALPHA_MAX, T_MIN, EPS2D) == (1 / 255, 0.999, 1e-4, 0.3)


# ---- against gsplat 1.5.3 (CUDA hosts with gsplat installed) ------------------------------------
def _gsplat_case(alpha_max=None):
    """(ours, gsplat) renders of one random scene on the GPU: rgb [C,H,W,3], alpha, expected depth."""
    gsplat = pytest.importorskip("gsplat")
    assert gsplat.__version__ == "1.5.3"
    import dd3g_sdk.render.reference as ref

    s = {k: v.float().cuda() for k, v in _random_scene(4000, seed=11, degree=3, spread=0.5).items()}
    s["scales"] = s["scales"] * 0.5
    s["opacities"][::4] = 1.0  # where one Gaussian alone covers a pixel, the 0.999 clamp shows
    W, H = 128, 96
    cams = [_orbit(az, 20.0, W, H, dtype=torch.float32) for az in (0.0, 135.0)]
    vm, K = torch.cat([c[0] for c in cams]).cuda(), torch.cat([c[1] for c in cams]).cuda()
    bg = torch.tensor([[1.0, 1.0, 1.0], [0.1, 0.3, 0.5]], device="cuda")
    old = ref.ALPHA_MAX
    try:
        if alpha_max is not None:
            ref.ALPHA_MAX = alpha_max
        ours = rasterize(s["means"], s["quats"], s["scales"], s["opacities"], s["sh"], vm, K, W, H, background=bg)
    finally:
        ref.ALPHA_MAX = old
    colors, alphas, _ = gsplat.rasterization(s["means"], s["quats"], s["scales"], s["opacities"], s["sh"], vm, K,
                                             W, H, near_plane=0.01, far_plane=1e10, sh_degree=3,
                                             render_mode="RGB+ED", rasterize_mode="classic")
    # gsplat 1.5.3 asserts on `backgrounds` together with "RGB+ED"; its background term is T * bg, T = 1 - alpha
    g_rgb = colors[..., :3] + (1.0 - alphas) * bg[:, None, None, :]
    return ours, (g_rgb, alphas, colors[..., 3:4])


@pytest.mark.gpu
def test_matches_gsplat_1_5_3():
    (rgb, alpha, depth), (g_rgb, g_alpha, g_depth) = _gsplat_case()
    d_rgb, d_alpha = (rgb - g_rgb).abs(), (alpha - g_alpha).abs()
    hit = (alpha > 0.5) & (g_alpha > 0.5)
    d_depth = (depth - g_depth).abs()[hit]
    print(f"vs gsplat 1.5.3: rgb mean {d_rgb.mean().item():.2e} max {d_rgb.max().item():.2e}; alpha mean "
          f"{d_alpha.mean().item():.2e} max {d_alpha.max().item():.2e}; depth (alpha>0.5) mean "
          f"{d_depth.mean().item():.2e} max {d_depth.max().item():.2e}; coverage {alpha.mean().item():.2f}")
    assert 0.2 < alpha.mean().item() < 0.95  # a scene with edges, overlaps and background
    assert d_rgb.mean().item() <= 1e-3 and d_alpha.mean().item() <= 1e-3  # the project's parity target
    # Same rules, so only float32 rounding (fast-math expf on the GPU) separates them; measured on an H200:
    # rgb mean 1e-7. A 0.99 clamp instead of 0.999 alone gives a mean above 1e-5 here.
    assert d_rgb.mean().item() <= 1e-5 and d_alpha.mean().item() <= 1e-5
