"""Image and geometry metrics shared by the teacher's evaluation and distillation.

Images are torch tensors in 0..1, channels first: [..., C, H, W]; every metric returns one value per image
(the leading dims `...`). Masks are bool [..., H, W].

- `psnr`: 10 log10(max^2 / MSE), MSE over all channels and (masked) pixels; inf when identical.
- `ssim`: Wang et al. 2004, Gaussian window 11x11 sigma 1.5, K1 0.01, K2 0.03, computed per channel over
  the 'valid' window positions (no padding) and averaged over channels and positions.
- `iou`: |A and B| / |A or B|, 1 when both masks are empty.
- `warp_consistency`: multi-view consistency by reprojection with known depth (see its docstring).
- `sample_scores`: K samples of a probabilistic prediction (one model, K noises) against the truth: energy
  score, error, spread, calibration (see its docstring).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
         max_val: float = 1.0) -> torch.Tensor:
    """pred, target [..., C, H, W]; mask [..., H, W] bool (None = all pixels) -> [...] dB (nan if mask empty)."""
    err = (pred.float() - target.float()) ** 2
    if mask is None:
        mse = err.flatten(-3).mean(-1)
    else:
        m = mask[..., None, :, :].float().expand_as(err)
        mse = (err * m).flatten(-3).sum(-1) / m.flatten(-3).sum(-1)  # 0/0 = nan: no pixels, no value
    return 10 * torch.log10(max_val ** 2 / mse)


def _gaussian_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    return g / g.sum()


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5,
         data_range: float = 1.0) -> torch.Tensor:
    """pred, target [..., C, H, W] (H, W >= window) -> [...] mean SSIM."""
    shape = pred.shape
    c, h, w = shape[-3:]
    if h < window or w < window:
        raise ValueError(f"ssim needs images of at least {window}x{window}, got {h}x{w}")
    x = pred.double().reshape(-1, 1, h, w)
    y = target.double().reshape(-1, 1, h, w)
    g = _gaussian_window(window, sigma, x.device, x.dtype)

    def blur(t):  # separable Gaussian, 'valid' positions only
        return F.conv2d(F.conv2d(t, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.reshape(*shape[:-3], c, -1).mean((-1, -2)).to(pred.dtype if pred.is_floating_point() else torch.float32)


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a, b [..., H, W] bool -> [...] intersection over union (1 where both are empty)."""
    a, b = a.bool(), b.bool()
    inter = (a & b).flatten(-2).sum(-1).float()
    union = (a | b).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def reproject(depth_dst: torch.Tensor, viewmat_dst: torch.Tensor, K_dst: torch.Tensor,
              viewmat_src: torch.Tensor, K_src: torch.Tensor):
    """Where every pixel of the destination view lands in the source view.

    depth_dst [H, W] camera z of the destination view (0 = no surface); viewmats [4, 4] world-to-camera,
    Ks [3, 3] (OpenCV, pixel centres at +0.5). Returns (uv_src [H, W, 2] pixel coords in the source view,
    z_src [H, W] depth of the same 3D point in the source camera).
    """
    h, w = depth_dst.shape
    dev, dt = depth_dst.device, torch.float64
    i, j = torch.meshgrid(torch.arange(h, device=dev, dtype=dt) + 0.5,
                          torch.arange(w, device=dev, dtype=dt) + 0.5, indexing="ij")
    Kd, Ks_ = K_dst.to(dt), K_src.to(dt)
    z = depth_dst.to(dt)
    p_cam = torch.stack([(j - Kd[0, 2]) / Kd[0, 0] * z, (i - Kd[1, 2]) / Kd[1, 1] * z, z], -1)
    c2w = torch.linalg.inv(viewmat_dst.to(dt))
    p_world = p_cam @ c2w[:3, :3].T + c2w[:3, 3]
    vs = viewmat_src.to(dt)
    p_src = p_world @ vs[:3, :3].T + vs[:3, 3]
    zs = p_src[..., 2]
    uv = torch.stack([Ks_[0, 0] * p_src[..., 0] / zs + Ks_[0, 2], Ks_[1, 1] * p_src[..., 1] / zs + Ks_[1, 2]], -1)
    return uv, zs


def warp_consistency(images: torch.Tensor, depth: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor,
                     pairs: list[tuple[int, int]] | None = None, depth_tol: float = 0.03):
    """Multi-view consistency of V images of one object, measured through ground-truth geometry.

    images [V, 3, H, W] 0..1 (generated or ground truth), depth [V, H, W] ground-truth camera z (0 = empty),
    viewmats [V, 4, 4], Ks [V, 3, 3]. For each (src, dst) pair (default: neighbouring views both ways),
    every destination pixel with a surface is lifted to 3D with the destination's depth and projected into
    the source view; it is co-visible if it lands inside the source image on a pixel whose depth agrees
    within `depth_tol` world units (not occluded) and whose four bilinear taps all lie on the surface
    (no blending with the background at silhouettes). The source image is sampled there (bilinear) and compared
    with the destination image on the co-visible pixels.

    Returns (psnr [P] dB per pair, covisible [P] pixel counts). For consistent views (a Lambertian object
    seen under a fixed light, as in the procedural world) the PSNR is high; warping generated images with
    ground-truth depth also penalises geometry that drifts from the ground truth.
    """
    v, _, h, w = images.shape
    if pairs is None:
        pairs = [(a, (a + 1) % v) for a in range(v)] + [((a + 1) % v, a) for a in range(v)]
    out_psnr, out_n = [], []
    for src, dst in pairs:
        uv, zs = reproject(depth[dst], viewmats[dst], Ks[dst], viewmats[src], Ks[src])
        inside = (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & (uv[..., 1] < h) & (depth[dst] > 0)
        # Occlusion test against the source's own depth at the nearest pixel (no interpolation across edges).
        jj = uv[..., 0].floor().clamp(0, w - 1).long()
        ii = uv[..., 1].floor().clamp(0, h - 1).long()
        d_src = depth[src][ii, jj].double()
        covis = inside & (d_src > 0) & ((d_src - zs).abs() < depth_tol)
        # Bilinear sampling must not blend in the background: all four taps must be on the surface.
        j0 = (uv[..., 0] - 0.5).floor().long()
        i0 = (uv[..., 1] - 0.5).floor().long()
        for di in (0, 1):
            for dj in (0, 1):
                ti, tj = (i0 + di).clamp(0, h - 1), (j0 + dj).clamp(0, w - 1)
                covis &= depth[src][ti, tj] > 0
        grid = torch.stack([uv[..., 0] / w * 2 - 1, uv[..., 1] / h * 2 - 1], -1)[None].to(images.dtype)
        warped = F.grid_sample(images[src:src + 1], grid, mode="bilinear", padding_mode="border",
                               align_corners=False)[0]
        n = int(covis.sum())
        out_n.append(n)
        out_psnr.append(psnr(warped, images[dst], covis).item() if n else math.nan)
    return torch.tensor(out_psnr, dtype=torch.float64), torch.tensor(out_n)


def sample_scores(samples: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Scores of K samples of a generative model against the one true outcome, per item.

    samples [B, K, ...] (K noises, same input), target [B, ...], values in 0..1 -> dict of [B] float64 tensors.
    With d(a, b) = ||a - b||_2 / sqrt(D), the RMS difference over the D values of an item:

    - error = mean_k d(x_k, y);  spread = mean over pairs k != l of d(x_k, x_l) (0 when K = 1);
    - energy = error - spread / 2: the energy score (Gneiting & Raftery 2007), a proper scoring rule (lower is
      better; no prediction beats the true distribution in expectation). For a deterministic model it equals
      the error, so a model that outputs the conditional mean and a model that samples are compared fairly;
      PSNR against one outcome rewards the mean (a perfect sampler's expected MSE is twice the mean's);
    - calibration = mean_k d(x_k, y)^2 / mean_{k != l} d(x_k, x_l)^2: 1 when the truth looks like one more
      sample (E|X - y|^2 = E|X - X'|^2 for y drawn like X), > 1 when the samples agree with each other more than
      with the truth (over-confident), < 1 when they spread more than the error needs; inf when spread is 0;
    - mean_psnr: PSNR of the samples' mean against y;  sample_psnr: mean over k of PSNR(x_k, y).
    """
    if samples.dim() < 2 or tuple(samples.shape[2:]) != tuple(target.shape[1:]) or samples.shape[0] != target.shape[0]:
        raise ValueError(f"samples [B, K, ...] and target [B, ...] disagree: {list(samples.shape)} vs "
                         f"{list(target.shape)}")
    x = samples.double().flatten(2)  # [B, K, D]
    y = target.double().flatten(1)[:, None]  # [B, 1, D]
    K, D = x.shape[1], x.shape[2]
    d2_y = ((x - y) ** 2).mean(-1)  # [B, K] squared RMS to the truth
    # each unordered pair once: the mean over pairs k != l is the same
    d2_pairs = torch.stack([((x[:, k] - x[:, l]) ** 2).mean(-1) for k in range(K) for l in range(k + 1, K)], 1) \
        if K > 1 else torch.zeros_like(d2_y[:, :1])  # [B, K(K-1)/2]
    error, spread = d2_y.sqrt().mean(1), d2_pairs.sqrt().mean(1)
    pair_ms = d2_pairs.mean(1)
    calibration = torch.where(pair_ms > 0, d2_y.mean(1) / pair_ms.clamp_min(1e-300),
                              torch.full_like(pair_ms, math.inf))
    mean_mse = ((x.mean(1) - y[:, 0]) ** 2).mean(-1)
    return {"energy": error - spread / 2, "error": error, "spread": spread, "calibration": calibration,
            "mean_psnr": -10 * torch.log10(mean_mse), "sample_psnr": (-10 * torch.log10(d2_y)).mean(1)}
