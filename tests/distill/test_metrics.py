"""Metrics against hand-computed values and plain reference implementations."""
import math

import numpy as np
import pytest
import torch

from dd3g_sdk.cameras import orbit_camera, stack_intrinsics, stack_viewmats
from dd3g_distill.data.world import ObjectSpec, Primitive, composite_white, render
from dd3g_distill.metrics import iou, psnr, reproject, sample_scores, ssim, warp_consistency
from distill_helpers import ssim_loops


def test_psnr_hand_values():
    a = torch.full((2, 3, 8, 8), 0.5)
    b = a + 0.1  # MSE 0.01 -> 20 dB
    np.testing.assert_allclose(psnr(a, b).numpy(), [20.0, 20.0], atol=1e-4)
    assert torch.isinf(psnr(a, a)).all()
    # masked: only the masked pixels count
    c = a.clone()
    c[:, :, :4] = 0.0  # error 0.5 in the top half
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[:, 4:] = True
    assert torch.isinf(psnr(c, a, mask)).all()
    mask[:, :4] = True  # MSE = 0.25 / 2
    np.testing.assert_allclose(psnr(c, a, mask).numpy(), 10 * math.log10(1 / 0.125), atol=1e-4)
    assert torch.isnan(psnr(c, a, torch.zeros(2, 8, 8, dtype=torch.bool))).all()
    np.testing.assert_allclose(psnr(a * 255, b * 255, max_val=255).numpy(), 20.0, atol=1e-3)


def test_ssim_identical_and_constant_images():
    x = torch.rand(1, 3, 16, 16)
    np.testing.assert_allclose(ssim(x, x).numpy(), 1.0, atol=1e-6)
    c1, c2 = 0.3, 0.7
    a, b = torch.full((1, 1, 12, 12), c1), torch.full((1, 1, 12, 12), c2)
    k1, k2 = 0.01 ** 2, 0.03 ** 2
    expect = (2 * c1 * c2 + k1) / (c1 * c1 + c2 * c2 + k1)  # variances 0: the structure term is k2/k2 = 1
    np.testing.assert_allclose(ssim(a, b).numpy(), expect, rtol=1e-6)
    with pytest.raises(ValueError):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


def test_ssim_matches_the_loop_reference():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 14, 15, generator=g)
    y = (x + 0.2 * torch.randn(2, 3, 14, 15, generator=g)).clamp(0, 1)
    got = ssim(x, y)
    for n in range(2):
        assert abs(float(got[n]) - ssim_loops(x[n].double().numpy(), y[n].double().numpy())) < 1e-6


def test_iou_hand_values():
    a = torch.zeros(3, 4, 4, dtype=torch.bool)
    b = torch.zeros(3, 4, 4, dtype=torch.bool)
    a[0, :2], b[0, 1:3] = True, True  # 4 shared of 12 -> 1/3
    a[1] = b[1] = True
    np.testing.assert_allclose(iou(a, b).numpy(), [1 / 3, 1.0, 1.0], atol=1e-6)  # both empty -> 1


def test_reproject_into_the_same_camera_is_the_identity():
    cam = orbit_camera(30, 20, 2.0, 40, 8, 6)
    depth = torch.rand(6, 8, dtype=torch.float64) + 1.5
    vm, K = torch.from_numpy(cam.world_to_cam), torch.from_numpy(cam.K)
    uv, z = reproject(depth, vm, K, vm, K)
    j, i = np.meshgrid(np.arange(8) + 0.5, np.arange(6) + 0.5)
    np.testing.assert_allclose(uv[..., 0].numpy(), j, atol=1e-9)
    np.testing.assert_allclose(uv[..., 1].numpy(), i, atol=1e-9)
    np.testing.assert_allclose(z.numpy(), depth.numpy(), atol=1e-9)
    # the reprojected 3D point agrees with Camera.project for another camera
    cam2 = orbit_camera(60, 10, 2.0, 40, 8, 6)
    uv2, z2 = reproject(depth, vm, K, torch.from_numpy(cam2.world_to_cam), torch.from_numpy(cam2.K))
    o, d = cam.rays()
    dz = (d @ cam.world_to_cam[:3, :3].T)[..., 2]
    pts = o + d * (depth.numpy() / dz)[..., None]
    ref_uv, ref_z = cam2.project(pts.reshape(-1, 3))
    np.testing.assert_allclose(uv2.reshape(-1, 2).numpy(), ref_uv, atol=1e-8)
    np.testing.assert_allclose(z2.reshape(-1).numpy(), ref_z, atol=1e-9)


def test_warp_consistency_of_a_rendered_sphere():
    identity = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    sphere = ObjectSpec("test", 0, (Primitive("sphere", (0.0, 0.0, 0.0), identity, (0.45, 0, 0, 0), (0.8, 0.3, 0.2),
                                              (0.2, 0.3, 0.8), "solid", 4.0, 0),))
    cams = [orbit_camera(a, 20, 2.0, 40, 24, 24) for a in (0, 15, 90)]
    vm, K = torch.from_numpy(stack_viewmats(cams)).double(), torch.from_numpy(stack_intrinsics(cams)).double()
    r = render([sphere], vm.float(), K.float(), 24, 24)
    img = composite_white(r.rgba)[0].double()
    p, n = warp_consistency(img, r.depth[0], vm, K, pairs=[(0, 1), (1, 0), (0, 2)])
    assert (n > 20).all()
    assert (p > 35).all(), p  # Lambertian under a fixed light: the same colour from every view
    # a view that does not belong (a different colour) is inconsistent
    other = img.clone()
    other[1] = 1 - other[1]
    p2, _ = warp_consistency(other, r.depth[0], vm, K, pairs=[(0, 1)])
    assert p2[0] < 15


def test_sample_scores_hand_values():
    y = torch.zeros(1, 4)
    # two samples at +-0.1 everywhere: d(x, y) = 0.1 each, d(x1, x2) = 0.2, mean = y exactly
    x = torch.stack([torch.full((4,), 0.1), torch.full((4,), -0.1)])[None]
    s = sample_scores(x, y)
    assert s["error"].item() == pytest.approx(0.1)
    assert s["spread"].item() == pytest.approx(0.2)
    assert s["energy"].item() == pytest.approx(0.0, abs=1e-12)
    assert s["calibration"].item() == pytest.approx(0.01 / 0.04)
    assert s["mean_psnr"].item() == math.inf
    assert s["sample_psnr"].item() == pytest.approx(20.0)
    # a deterministic model (identical samples): energy = error, infinite calibration ratio
    d = sample_scores(torch.full((1, 3, 4), 0.5), torch.zeros(1, 4))
    assert d["energy"].item() == pytest.approx(0.5) and d["spread"].item() == 0
    assert d["calibration"].item() == math.inf
    assert d["mean_psnr"].item() == pytest.approx(d["sample_psnr"].item()) == pytest.approx(-20 * math.log10(0.5))
    # K = 1 works (spread 0) and shapes are checked
    assert sample_scores(torch.ones(2, 1, 3, 2, 2), torch.ones(2, 3, 2, 2))["error"].tolist() == [0, 0]
    with pytest.raises(ValueError, match="disagree"):
        sample_scores(torch.ones(2, 3, 4), torch.ones(2, 5))


def test_sample_scores_reward_a_calibrated_sampler_over_its_mean_and_a_blur():
    """Outcomes drawn from N(mu, s^2): samples from the same law are calibrated (ratio ~1) and have the best
    energy score; the mean itself has the better PSNR against one outcome (why PSNR alone misjudges samplers);
    an over-confident sampler (a quarter of the spread) scores worse than the true law."""
    g = torch.Generator().manual_seed(0)
    B, K, D, s = 64, 8, 2048, 0.1
    mu = torch.rand(B, D, generator=g)
    y = mu + s * torch.randn(B, D, generator=g)
    true_law = mu[:, None] + s * torch.randn(B, K, D, generator=g)
    narrow = mu[:, None] + s / 4 * torch.randn(B, K, D, generator=g)
    mean_only = mu[:, None].expand(B, K, D)
    a, n, m = (sample_scores(v, y) for v in (true_law, narrow, mean_only))
    assert a["calibration"].mean().item() == pytest.approx(1.0, abs=0.05)
    assert n["calibration"].mean().item() > 5
    assert a["energy"].mean() < m["energy"].mean() and a["energy"].mean() < n["energy"].mean()
    assert m["sample_psnr"].mean() > a["sample_psnr"].mean() + 2.5  # ~3 dB: twice the MSE
    assert a["mean_psnr"].mean() > a["sample_psnr"].mean() + 2  # averaging 8 samples approaches the mean
