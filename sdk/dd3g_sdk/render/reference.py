"""Reference 3D Gaussian rasteriser in torch: differentiable, readable, CPU-friendly.

It is the twin that the CUDA rasteriser (cuda/) and gsplat are tested against, and the renderer that the
distillation code uses when there is no GPU. It follows gsplat 1.5.3's `rasterization(...,
rasterize_mode="classic", packed=True)` with `render_mode="RGB+ED"` (rules read from its source):

Projection (per camera, per Gaussian)
- camera-space mean m_c = R m + t from the world-to-camera `viewmats`; culled if z < near or z > far.
- 3D covariance Sigma = R_q S S R_q^T (quats (w, x, y, z), normalised here; scales = linear std-devs).
- 2D covariance (pixels^2) = J R Sigma R^T J^T + 0.3 I (0.3 px^2 low-pass, "eps2d"), with the perspective
  Jacobian J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]] where tx = z * clamp(x/z, -(cx/fx + 0.3 tan_fovx),
  (W - cx)/fx + 0.3 tan_fovx), tan_fovx = W / (2 fx) (ty likewise): x/z is clamped to 1.3x the field of view
  for a centred principal point. Culled if det <= 0.
- mean2d = (fx x/z + cx, fy y/z + cy) in pixels; pixel (row i, col j) has its centre at (j + 0.5, i + 0.5).
- Culled if opacity < 1/255. Extent: the axis-aligned box with half-sizes ceil(e sqrt(cov2d_xx)),
  ceil(e sqrt(cov2d_yy)), e = min(3.33, sqrt(2 ln(255 opacity))): exactly the box around the ellipse where
  opacity * exp(-d^2/2) >= 1/255. So the box never cuts off a contribution; it only says which tiles to visit,
  and the image does not depend on the tile size. Gaussians whose box misses the image are culled.
- colour = max(eval_sh(deg, sh, mean - camera centre) + 0.5, 0)   (render/sh.py).

Compositing (per pixel, front to back in increasing camera z; equal z keeps input order, as gsplat's
stable radix sort does)
- alpha_i = min(0.999, opacity_i * exp(-sigma_i)), sigma_i = 0.5 d^T conic d, d = mean2d - pixel centre,
  conic = cov2d^-1. Skipped (contributes nothing, T unchanged) if alpha_i < 1/255 or sigma_i < 0.
- Stop before the first Gaussian that would bring T * (1 - alpha_i) to <= 1e-4 (it and all after it are out).
- w_i = alpha_i * T_i with T_i = prod_{j<i, kept} (1 - alpha_j); T = transmittance after the last kept one.
- rgb = sum_i w_i c_i + T * background;  alpha = 1 - T;  depth = sum_i w_i z_i / max(alpha, 1e-10), the
  expected camera-space z of the visible surface (gsplat's "ED"), 0 where nothing was hit.

Gradients flow to means, quats, scales, opacities and sh (and viewmats/Ks); the discrete decisions (culling,
tile lists, the 1/255 skip, the 1e-4 stop, the 0.999 clamp) are piecewise constant, as in gsplat.

Implementation: tiles of `tile_size`^2 pixels. Every (camera, Gaussian) pair that survives culling is listed
in each tile its box touches; lists are sorted by depth. Tiles are processed in chunks of similar list length
so that one chunk is a dense [tiles, pixels, Gaussians] block: alphas, cumprod transmittance, weighted sums.

Checked against gsplat 1.5.3 on an H200 (tests/sdk/test_render_reference.py::test_matches_gsplat_1_5_3):
mean abs RGB difference 1e-7, i.e. float rounding only.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from . import RenderResult
from .sh import NUM_COEFFS, eval_sh

ALPHA_MIN = 1.0 / 255.0  # skip a Gaussian at a pixel below this alpha (gsplat ALPHA_THRESHOLD)
ALPHA_MAX = 0.999  # alpha clamp (gsplat 1.5.3; the original 3DGS code uses 0.99)
T_MIN = 1e-4  # stop before transmittance would reach this
EPS2D = 0.3  # low-pass added to the 2D covariance diagonal, pixels^2
EXTEND_MAX = 3.33  # cap of the box half-size in standard deviations
DEPTH_EPS = 1e-10  # depth = sum(w z) / max(alpha, DEPTH_EPS)
CHUNK_ELEMENTS = 1 << 18  # pixels x Gaussians per dense block: 1 MB float32 temporaries stay in cache


def quat_scale_to_covar(quats: Tensor, scales: Tensor) -> Tensor:
    """quats [N, 4] (w, x, y, z), any norm > 0; scales [N, 3] linear -> covariances [N, 3, 3]."""
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    R = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(q.shape[:-1] + (3, 3))
    M = R * scales[..., None, :]  # R S
    return M @ M.transpose(-1, -2)


def project(means: Tensor, covars: Tensor, viewmats: Tensor, Ks: Tensor, width: int, height: int
            ) -> tuple[Tensor, Tensor, Tensor]:
    """EWA projection of every Gaussian into every camera.

    means [N, 3], covars [N, 3, 3] world; viewmats [C, 4, 4] world-to-camera; Ks [C, 3, 3] pixels.
    Returns (mean2d [C, N, 2] pixels, cov2d [C, N, 2, 2] pixels^2 including the 0.3 px^2 low-pass,
    depth [C, N] camera z). No culling here.
    """
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]  # [C, 3, 3], [C, 3]
    p = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # [C, N, 3]
    x, y, z = p.unbind(-1)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    # Clamp the direction used in the Jacobian (not the mean) to 1.3x the field of view: far off-screen
    # Gaussians would otherwise get huge, meaningless footprints from the linearisation.
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_xp, lim_xn = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_yp, lim_yn = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    rz = 1.0 / z
    tx = z * torch.minimum(lim_xp, torch.maximum(-lim_xn, x * rz))
    ty = z * torch.minimum(lim_yp, torch.maximum(-lim_yn, y * rz))
    zero = torch.zeros_like(z)
    J = torch.stack([fx * rz, zero, -fx * tx * rz * rz,
                     zero, fy * rz, -fy * ty * rz * rz], -1).reshape(z.shape + (2, 3))  # [C, N, 2, 3]
    cov_c = R[:, None] @ covars[None] @ R[:, None].transpose(-1, -2)  # [C, N, 3, 3]
    cov2d = J @ cov_c @ J.transpose(-1, -2)
    cov2d = cov2d + EPS2D * torch.eye(2, dtype=cov2d.dtype, device=cov2d.device)
    mean2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], -1)
    return mean2d, cov2d, z


def rasterize(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, sh: Tensor,
              viewmats: Tensor, Ks: Tensor, width: int, height: int, background: Tensor | None = None,
              near: float = 0.01, far: float = 1e10, tile_size: int = 16) -> tuple[Tensor, Tensor, Tensor]:
    """Render Gaussians into C cameras (rules in the module docstring).

    means [N, 3] world; quats [N, 4] (w, x, y, z); scales [N, 3] linear std-devs; opacities [N] 0..1;
    sh [N, K, 3], K in (1, 4, 9, 16); viewmats [C, 4, 4] world-to-camera (OpenCV); Ks [C, 3, 3] pixels;
    background [3] or [C, 3] (None = black, i.e. premultiplied colour).
    Returns rgb [C, H, W, 3], alpha [C, H, W, 1] = 1 - T, depth [C, H, W, 1] = expected camera z.
    Computes in the dtype of `means` (float32 as gsplat, or float64 for gradient checks).
    `tile_size` changes speed only, never the image: 8 is about 2x faster than 16 for small (64 px) images.
    """
    N = _check_inputs(means, quats, scales, opacities, sh, viewmats, Ks, width, height, tile_size)
    C, dev, dt = viewmats.shape[0], means.device, means.dtype
    degree = {v: k for k, v in NUM_COEFFS.items()}[sh.shape[1]]
    viewmats, Ks = viewmats.to(dt), Ks.to(dt)
    if background is not None:
        background = torch.as_tensor(background, dtype=dt, device=dev).expand(C, 3)

    # ---- projection and culling -------------------------------------------------------------------
    mean2d, cov2d, depth = project(means, quat_scale_to_covar(quats, scales), viewmats, Ks, width, height)
    a, b, c = cov2d[..., 0, 0], cov2d[..., 0, 1], cov2d[..., 1, 1]  # [C, N]
    det = a * c - b * b
    with torch.no_grad():
        op = opacities.detach().expand(C, N)
        visible = (depth >= near) & (depth <= far) & (det > 0) & (op >= ALPHA_MIN)
        extend = torch.sqrt(2.0 * torch.log(op.clamp_min(ALPHA_MIN) / ALPHA_MIN)).clamp_max(EXTEND_MAX)
        rx = torch.ceil(extend * torch.sqrt(a.detach().clamp_min(0)))
        ry = torch.ceil(extend * torch.sqrt(c.detach().clamp_min(0)))
        m2 = mean2d.detach()
        visible &= (rx > 0) | (ry > 0)
        visible &= (m2[..., 0] + rx > 0) & (m2[..., 0] - rx < width) & (m2[..., 1] + ry > 0) & (m2[..., 1] - ry < height)
        visible &= torch.isfinite(m2).all(-1)
    cam_ids, gs_ids = visible.nonzero(as_tuple=True)  # the (camera, Gaussian) pairs to draw, [M]
    M = cam_ids.shape[0]

    # Per-pair attributes, plus one dummy pair at index M (opacity 0 -> alpha 0) used to pad tile lists.
    det_v = det[cam_ids, gs_ids]
    conic = torch.stack([c[cam_ids, gs_ids], -b[cam_ids, gs_ids], a[cam_ids, gs_ids]], -1) / det_v[:, None]
    campos = -torch.einsum("cji,cj->ci", viewmats[:, :3, :3], viewmats[:, :3, 3])  # R^T (-t), [C, 3]
    dirs = means[gs_ids] - campos[cam_ids]
    colors = (eval_sh(degree, sh[gs_ids], dirs) + 0.5).clamp_min(0.0)  # [M, 3]
    xy = _pad_one(mean2d[cam_ids, gs_ids])  # [M + 1, 2]
    conic = _pad_one(conic)  # [M + 1, 3]
    opac = _pad_one(opacities[gs_ids])  # [M + 1]
    colors = _pad_one(colors)  # [M + 1, 3]
    z = _pad_one(depth[cam_ids, gs_ids])  # [M + 1]

    # ---- tile lists -------------------------------------------------------------------------------
    tw, th = math.ceil(width / tile_size), math.ceil(height / tile_size)
    n_tiles = C * th * tw
    with torch.no_grad():
        # Tile range of each box: [t_min, t_max) like gsplat's intersect_tile.
        tx0 = torch.floor((m2[cam_ids, gs_ids, 0] - rx[cam_ids, gs_ids]) / tile_size).clamp(0, tw).long()
        tx1 = torch.ceil((m2[cam_ids, gs_ids, 0] + rx[cam_ids, gs_ids]) / tile_size).clamp(0, tw).long()
        ty0 = torch.floor((m2[cam_ids, gs_ids, 1] - ry[cam_ids, gs_ids]) / tile_size).clamp(0, th).long()
        ty1 = torch.ceil((m2[cam_ids, gs_ids, 1] + ry[cam_ids, gs_ids]) / tile_size).clamp(0, th).long()
        # Depth order first (stable: equal depths keep input order), then a stable sort by tile keeps
        # each tile's list in depth order.
        order = torch.sort(z[:M].detach(), stable=True).indices
        nx, ny = (tx1 - tx0)[order], (ty1 - ty0)[order]
        count = nx * ny
        pair = torch.repeat_interleave(order, count)  # [n_isect] pair index, depth order
        k = torch.arange(pair.shape[0], device=dev) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        nxp = torch.repeat_interleave(nx, count)
        tile = (cam_ids[pair] * th + ty0[pair] + k // nxp) * tw + tx0[pair] + k % nxp
        tile, perm = torch.sort(tile, stable=True)
        pair = pair[perm]
        per_tile = torch.bincount(tile, minlength=n_tiles)  # [n_tiles]
        start = torch.cumsum(per_tile, 0) - per_tile

    # ---- per-tile compositing, in chunks of tiles with similar list lengths -----------------------
    P = tile_size * tile_size
    ly, lx = torch.meshgrid(torch.arange(tile_size, device=dev), torch.arange(tile_size, device=dev), indexing="ij")
    ly, lx = ly.reshape(-1), lx.reshape(-1)  # [P] pixel offsets inside a tile, row-major
    bg = background if background is not None else torch.zeros(C, 3, dtype=dt, device=dev)
    tile_order = torch.argsort(per_tile, descending=True, stable=True)
    counts = per_tile[tile_order].tolist()
    outs, done_tiles, s = [], [], 0
    while s < n_tiles:
        g = counts[s]
        if g == 0:  # the rest have no Gaussians: empty
            ids = tile_order[s:]
            empty = torch.zeros(ids.shape[0], P, 5, dtype=dt, device=dev)
            empty[..., 4] = 1.0  # T = 1
            outs.append(empty)
            done_tiles.append(ids)
            break
        e = min(n_tiles, s + max(1, CHUNK_ELEMENTS // (P * g)))
        ids = tile_order[s:e]
        outs.append(_composite_tiles(ids, g, start, per_tile, pair, xy, conic, opac, colors, z,
                                     lx, ly, tile_size, th, tw, M))
        done_tiles.append(ids)
        s = e
    out = torch.cat(outs)[torch.argsort(torch.cat(done_tiles))]  # [n_tiles, P, 5] back in tile order
    # tiles -> images: [C, th, tw, ts, ts, 5] -> [C, th, ts, tw, ts, 5] -> crop the padding pixels
    out = out.reshape(C, th, tw, tile_size, tile_size, 5).permute(0, 1, 3, 2, 4, 5)
    out = out.reshape(C, th * tile_size, tw * tile_size, 5)[:, :height, :width]
    if M == 0:
        # Nothing visible: keep the outputs attached to the inputs (zero gradients) so that a training
        # step on a degenerate prediction can still call backward().
        out = out + 0.0 * sum(p.reshape(-1)[:1].sum() for p in (means, quats, scales, opacities, sh))
    rgb_acc, depth_acc, T = out[..., 0:3], out[..., 3:4], out[..., 4:5]
    alpha = 1.0 - T
    rgb = rgb_acc + T * bg[:, None, None, :]
    depth_out = depth_acc / alpha.clamp_min(DEPTH_EPS)
    return rgb, alpha, depth_out


def _pad_one(v: Tensor) -> Tensor:
    """Append one all-zero row (the dummy pair: opacity 0, so alpha 0 at every pixel)."""
    return torch.cat([v, v.new_zeros((1,) + tuple(v.shape[1:]))])


def _composite_tiles(ids: Tensor, g: int, start: Tensor, per_tile: Tensor, pair: Tensor, xy: Tensor,
                     conic: Tensor, opac: Tensor, colors: Tensor, z: Tensor, lx: Tensor, ly: Tensor,
                     tile_size: int, th: int, tw: int, dummy: int) -> Tensor:
    """Composite B tiles (global ids [B]) with at most g Gaussians each.

    Returns [B, P, 5]: sum w_i c_i (3), sum w_i z_i (1), final transmittance T (1); P = tile_size^2 pixels
    in row-major order inside the tile.
    """
    with torch.no_grad():
        slot = torch.arange(g, device=ids.device)
        n = per_tile[ids][:, None]
        pos = (start[ids][:, None] + slot).clamp_max(max(pair.shape[0] - 1, 0))
        idx = torch.where(slot < n, pair[pos], torch.full_like(pos, dummy))  # [B, g], dummy pads
        local = ids % (th * tw)
        px = ((local % tw) * tile_size)[:, None] + lx + 0.5  # [B, P] pixel centres
        py = ((local // tw) * tile_size)[:, None] + ly + 0.5
    dt = xy.dtype
    dx = xy[idx, 0][:, None, :] - px[:, :, None].to(dt)  # [B, P, g]
    dy = xy[idx, 1][:, None, :] - py[:, :, None].to(dt)
    cn = conic[idx]  # [B, g, 3]
    sigma = 0.5 * (cn[:, None, :, 0] * dx * dx + cn[:, None, :, 2] * dy * dy) + cn[:, None, :, 1] * dx * dy
    alpha = (opac[idx][:, None, :] * torch.exp(-sigma)).clamp_max(ALPHA_MAX)
    alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
    one_minus = 1.0 - alpha
    T_incl = torch.cumprod(one_minus, -1)  # transmittance after each Gaussian
    # T is non-increasing, so "T after me > T_MIN" holds for a prefix: exactly gsplat's early stop.
    keep = T_incl.detach() > T_MIN
    T_excl = torch.cat([torch.ones_like(T_incl[..., :1]), T_incl[..., :-1]], -1)
    w = torch.where(keep, alpha * T_excl, torch.zeros_like(alpha))  # [B, P, g]
    T_final = torch.where(keep, one_minus, torch.ones_like(one_minus)).prod(-1)  # [B, P]
    rgb = w @ colors[idx]  # [B, P, 3]
    dsum = (w @ z[idx][..., None])  # [B, P, 1]
    return torch.cat([rgb, dsum, T_final[..., None]], -1)


def _check_inputs(means, quats, scales, opacities, sh, viewmats, Ks, width, height, tile_size) -> int:
    if means.ndim != 2 or means.shape[1] != 3:
        raise ValueError(f"rasterize: means must be [N, 3], got {list(means.shape)}")
    N = means.shape[0]
    for name, v, shape in (("quats", quats, (N, 4)), ("scales", scales, (N, 3)), ("opacities", opacities, (N,))):
        if tuple(v.shape) != shape:
            raise ValueError(f"rasterize: {name} must be {list(shape)}, got {list(v.shape)}")
    if sh.ndim != 3 or sh.shape[0] != N or sh.shape[2] != 3 or sh.shape[1] not in NUM_COEFFS.values():
        raise ValueError(f"rasterize: sh must be [N, K, 3] with N={N}, K in (1, 4, 9, 16), got {list(sh.shape)}")
    if viewmats.ndim != 3 or viewmats.shape[1:] != (4, 4):
        raise ValueError(f"rasterize: viewmats must be [C, 4, 4], got {list(viewmats.shape)}")
    if Ks.shape != (viewmats.shape[0], 3, 3):
        raise ValueError(f"rasterize: Ks must be [C, 3, 3] with C={viewmats.shape[0]}, got {list(Ks.shape)}")
    if int(width) <= 0 or int(height) <= 0 or int(tile_size) <= 0:
        raise ValueError(f"rasterize: width, height, tile_size must be > 0, got {width}, {height}, {tile_size}")
    return N


def render(g, cameras: Sequence, background: Sequence[float] | None = (1.0, 1.0, 1.0),
           device: str | None = None) -> RenderResult:
    """Render `Gaussians` into `cameras` (all of one size) with no gradients -> numpy RenderResult.

    background: RGB in 0..1 (default white, the model's convention), or None for black / premultiplied.
    device: None picks the project's CUDA rasteriser when a GPU and its library are present (same rules,
    tested against this reference), else this reference on the CPU; "cpu" forces the reference.
    """
    from ..cameras import stack_intrinsics, stack_viewmats

    cams = list(cameras)
    if not cams:
        raise ValueError("render: need at least one camera")
    W, H = cams[0].width, cams[0].height
    if any((c.width, c.height) != (W, H) for c in cams):
        raise ValueError("render: all cameras must have the same width and height")
    raster = rasterize
    if device is None:
        device = "cpu"
        if torch.cuda.is_available():
            from . import cuda

            if cuda.is_available():
                device, raster = "cuda", cuda.rasterize
    elif str(device).startswith("cuda"):
        from . import cuda

        if cuda.is_available():
            raster = cuda.rasterize
    t = g.to_torch(device)
    with torch.no_grad():
        rgb, alpha, depth = raster(
            t["means"], t["quats"], t["scales"], t["opacities"], t["sh"],
            torch.from_numpy(stack_viewmats(cams)).to(device), torch.from_numpy(stack_intrinsics(cams)).to(device),
            W, H, background=None if background is None else torch.tensor(background, dtype=torch.float32, device=device))
    return RenderResult(rgb=rgb.cpu().numpy(), alpha=alpha[..., 0].cpu().numpy(), depth=depth[..., 0].cpu().numpy())


__all__ = ["rasterize", "render", "project", "quat_scale_to_covar", "ALPHA_MIN", "ALPHA_MAX", "T_MIN", "EPS2D"]
