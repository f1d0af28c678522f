"""PEPD distillation losses: explicit supervision (MSE + SSIM + mask) and implicit verification (SDS).

Images are float tensors in 0..1, channels-first: `[B, 3, H, W]` (views folded into the batch where needed).
The teacher works on x in [-1, 1]; `sds_loss` converts.

Explicit supervision compares renders of the predicted Gaussians at the teacher's cameras with the teacher's
multi-view output OI (or, for the "3D data only" baseline, with ground-truth renders).
Implicit verification is score distillation (DreamFusion's SDS): noise the rendered views at a random
timestep, let the frozen teacher predict the noise, and push the renders along w(t) (eps_hat - eps). The
teacher is run under `torch.no_grad()`: no gradient flows through it, only through the renders.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .prediction import prediction_to_epsilon


@dataclass(frozen=True)
class LossConfig:
    """Weights and switches of the distillation objective (see docs/distill.md)."""
    explicit: bool = True  # explicit supervision at the teacher's views
    implicit: bool = True  # implicit verification (SDS with the frozen teacher)
    w_mse: float = 1.0
    w_ssim: float = 0.2  # weight of (1 - SSIM)
    w_mask: float = 0.5  # weight of the mask term: MSE between rendered alpha and the target mask
    w_sds: float = 0.05  # the SDS weight reached at the end of the sigmoid ramp
    w_depth: float = 0.0  # ground-truth depth of the pixel-aligned Gaussians (target "gt" only; see depth_l1)
    w_own_view: float = 0.0  # each source view's Gaussians alone at its own camera (see train.own_view_render)
    sds_ramp_center: float = 0.5  # fraction of training where the ramp is at half weight
    sds_ramp_sharpness: float = 10.0  # slope of the ramp (per unit of training fraction)
    sds_t_min: float = 0.02  # SDS timesteps are drawn uniformly from [t_min, t_max] * num_train_timesteps
    sds_t_max: float = 0.50
    sds_guidance: float = 1.0  # classifier-free guidance of the verifier (1 = plain conditional prediction)
    mask_threshold: float = 0.04  # a teacher pixel is foreground when max |1 - rgb| exceeds this

    def __post_init__(self) -> None:
        if not (self.explicit or self.implicit):
            raise ValueError("at least one of LossConfig.explicit and LossConfig.implicit must be on")
        if self.w_own_view and not self.explicit:
            raise ValueError("LossConfig.w_own_view is a part of explicit supervision: it needs explicit=true")
        if not 0.0 <= self.sds_t_min < self.sds_t_max <= 1.0:
            raise ValueError("need 0 <= sds_t_min < sds_t_max <= 1")
        for name in ("w_mse", "w_ssim", "w_mask", "w_sds", "w_depth", "w_own_view"):
            if getattr(self, name) < 0:
                raise ValueError(f"LossConfig.{name} must be >= 0")


# ---- ramp ------------------------------------------------------------------------------------------------

def sigmoid_ramp(step: int, total_steps: int, center: float = 0.5, sharpness: float = 10.0) -> float:
    """Weight factor in (0, 1) that rises along a sigmoid over training (DD3G's implicit-verification schedule).

    0.5 at `center * total_steps`; `sharpness` is the slope in units of the training fraction.
    """
    frac = step / max(1, total_steps)
    return 1.0 / (1.0 + math.exp(-sharpness * (frac - center)))


# ---- SSIM ------------------------------------------------------------------------------------------------

def _gauss_window(size: int, sigma: float, device, dtype) -> Tensor:  # [size, size], sums to 1
    x = torch.arange(size, device=device, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return torch.outer(g, g).to(dtype)


def ssim(x: Tensor, y: Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> Tensor:
    """Per-image SSIM (Wang et al. 2004) with a Gaussian window, 'valid' windows only, channels averaged.

    x, y: [B, C, H, W] with H, W >= `window` (smaller images use a window of min(H, W), odd).
    Returns [B]. Differentiable. Constants K1 = 0.01, K2 = 0.03 of `data_range`.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim needs two [B, C, H, W] tensors of one shape, got {list(x.shape)} and {list(y.shape)}")
    b, c, h, w = x.shape
    window = min(window, h, w)
    window -= (window + 1) % 2  # keep it odd
    x, y = x.float(), y.float()
    k = _gauss_window(window, sigma, x.device, x.dtype).expand(c, 1, window, window)
    conv = lambda t: F.conv2d(t, k, groups=c)  # noqa: E731
    mx, my = conv(x), conv(y)
    sxx = conv(x * x) - mx * mx
    syy = conv(y * y) - my * my
    sxy = conv(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean(dim=(1, 2, 3))


def teacher_mask(rgb: Tensor, threshold: float = 0.04) -> Tensor:
    """A foreground mask for images on a white background: [B, 3, H, W] 0..1 -> [B, 1, H, W] in {0, 1}.

    The teacher produces no alpha; a pixel counts as object when any channel departs from white by more than
    `threshold` (the teacher's white background comes out within about 0.01 of 1).
    """
    return ((1.0 - rgb).abs().amax(dim=1, keepdim=True) > threshold).to(rgb.dtype)


# ---- explicit supervision --------------------------------------------------------------------------------

def explicit_terms(rgb: Tensor, alpha: Tensor, target_rgb: Tensor, target_mask: Tensor) -> dict[str, Tensor]:
    """Unweighted explicit-supervision terms (each a scalar mean over the batch).

    rgb: [B, 3, H, W] rendered colour 0..1 (composited on the target's background)
    alpha: [B, 1, H, W] rendered opacity 0..1
    target_rgb: [B, 3, H, W]; target_mask: [B, 1, H, W] in 0..1
    Returns dict(mse, ssim (= 1 - SSIM), mask (MSE of alpha vs mask)).
    """
    target_rgb = target_rgb.to(rgb.dtype)
    return {
        "mse": F.mse_loss(rgb, target_rgb),
        "ssim": 1.0 - ssim(rgb, target_rgb).mean(),
        "mask": F.mse_loss(alpha, target_mask.to(alpha.dtype)),
    }


def gaussian_depth(means: Tensor, viewmats: Tensor, size: tuple[int, int]) -> Tensor:
    """Camera depth of pixel-aligned Gaussians in their own views: [B, V, h, w, k], world units.

    means: [B, N, 3] world positions, N = V * h * w * k in (view, pixel row-major, Gaussian of the pixel) order, as
    PEPD emits them; viewmats: [B, V, 4, 4] world-to-camera of the V views the Gaussians come from; size: (h, w).
    """
    b, v = viewmats.shape[:2]
    h, w = size
    k = means.shape[1] // (v * h * w)
    if k < 1 or k * v * h * w != means.shape[1]:
        raise ValueError(f"{means.shape[1]} Gaussians are not {v} views x {h}x{w} pixels x k")
    m = means.float().reshape(b, v, h * w * k, 3)
    vm = viewmats.float()
    z = (m @ vm[..., 2:3, :3].transpose(-1, -2))[..., 0] + vm[..., 2:3, 3]  # row 2 of [R | t]: camera z
    return z.reshape(b, v, h, w, k)


def depth_l1(means: Tensor, viewmats: Tensor, gt_depth: Tensor) -> Tensor:
    """Mean |camera z - true z| of pixel-aligned Gaussians over the pixels that show the object, world units.

    means, viewmats: as `gaussian_depth`; gt_depth: [B, V, h, w] camera z of the surface, 0 where the pixel misses
    the object (those pixels are skipped).
    Why: supervised only through renders, each view's Gaussians can sit anywhere along their rays and still
    reproduce the images (docs/distill.md, "What limits the students"); 3D data knows where the surface is.
    """
    z = gaussian_depth(means, viewmats, tuple(gt_depth.shape[-2:]))
    gt = gt_depth.float()[..., None]
    on = (gt > 0).expand_as(z)
    if not on.any():
        return z.new_zeros(())
    return (z - gt).abs()[on].mean()


# ---- implicit verification (SDS) -------------------------------------------------------------------------

def sds_terms(views: Tensor, teacher, cond, viewmats: Tensor, timesteps: Tensor, eps: Tensor,
              alphas_cumprod: Tensor, guidance: float = 1.0, null_cond=None) -> dict[str, Tensor]:
    """Score-distillation surrogate for rendered views, with the frozen teacher as verifier.

    views: [B, V, 3, h, w] renders at the teacher's cameras, 0..1 (gradients flow into them)
    cond: the teacher's condition for the input images (`teacher.condition(image)`), passed through
    viewmats: [B, V, 4, 4] the teacher's cameras; timesteps: [B] int64; eps: [B, V, 3, h, w] the added noise
    alphas_cumprod: [T] the teacher scheduler's cumulative alphas
    guidance: classifier-free guidance scale; with guidance != 1, `null_cond` is the unconditional condition.

    Returns dict(sds=surrogate, sds_grad_rms=RMS of the SDS gradient). The surrogate
    0.5 * mean((x0 - sg(x0 - g))^2) has gradient g / numel with g = w(t) (eps_hat - eps), w(t) = 1 - alphabar_t
    (DreamFusion), so its *value* is not an objective to watch; its gradient is what counts. The teacher runs
    under no_grad: nothing is back-propagated through it. A v- or x0-predicting teacher is converted to epsilon.
    """
    x0 = views.float() * 2.0 - 1.0
    ab = alphas_cumprod.to(x0.device, torch.float32)[timesteps].view(-1, 1, 1, 1, 1)
    with torch.no_grad():
        x_t = ab.sqrt() * x0.detach() + (1.0 - ab).sqrt() * eps
        if guidance != 1.0:
            b = x_t.shape[0]
            both = {k: torch.cat([null_cond[k], cond[k]]) for k in cond}
            e_u, e_c = teacher.denoise(torch.cat([x_t, x_t]), torch.cat([timesteps, timesteps]), both,
                                       torch.cat([viewmats, viewmats])).float().split(b)
            pred = e_u + guidance * (e_c - e_u)
        else:
            pred = teacher.denoise(x_t, timesteps, cond, viewmats).float()
        pred = prediction_to_epsilon(pred, x_t, ab, getattr(teacher, "prediction_type", "epsilon"))
        grad = torch.nan_to_num((1.0 - ab) * (pred - eps))
    target = (x0 - grad).detach()
    loss = 0.5 * F.mse_loss(x0, target, reduction="mean")
    return {"sds": loss, "sds_grad_rms": grad.pow(2).mean().sqrt()}


def draw_sds_noise(seeds: Sequence[int], shape: tuple[int, ...], t_lo: int, t_hi: int,
                   device) -> tuple[Tensor, Tensor]:
    """Per-sample SDS timestep and noise from per-sample seeds: ([B] int64, [B, *shape] float32).

    Keyed on each sample (not on the process), so one global batch gets the same draws whether it runs in one
    process or is split across DDP ranks. Drawn on `device` by a generator of that device: the same numbers for
    the same seed on one device type (CPU and CUDA generators differ). Why on the device: on the CPU, a batch of
    64 at 4 x 3 x 64 x 64 took 42 ms a step (docs/distill.md, "Throughput"), plus the copy.
    """
    device = torch.device(device)
    ts, es = [], []
    for s in seeds:
        g = torch.Generator(device=device).manual_seed(int(s))
        ts.append(torch.randint(t_lo, t_hi + 1, (1,), generator=g, device=device))
        es.append(torch.randn(shape, generator=g, device=device))
    return torch.cat(ts), torch.stack(es)
