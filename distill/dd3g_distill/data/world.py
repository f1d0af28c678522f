"""The procedural object world: seeded random 3D objects and a batched torch SDF ray-marcher.

An object is a union of 2-6 primitives (sphere, box, cylinder, cone, torus), each with a random pose and
size, a colour and a procedural texture (solid, stripes, checkers). It is shaded Lambertian + ambient under
one fixed light (given in world coordinates, so every view of an object agrees), and normalised so that its
bounding box fits [-0.5, 0.5]^3 centred on the origin (the project's object convention).

Object `k` of split `s` is `object_spec(s, k)`: a pure function of (s, k) seeded by a hash of both, so the
train / val / test splits never share an object and every machine builds the same one.

Rendering uses the project's camera convention (dd3g_sdk.cameras: OpenCV frame, `viewmats` world-to-camera
[.., 4, 4], intrinsics `Ks` in pixels, pixel (i, j) centred at (j + 0.5, i + 0.5)). Outputs:
- rgba  [B, C, 4, H, W] float 0..1, straight (not premultiplied) colour + coverage alpha,
- depth [B, C, H, W] camera z (OpenCV, along +z, world units) of the surface; 0 where `mask` is False,
- mask  [B, C, H, W] bool, alpha >= 0.5.
`composite_white(rgba)` gives the white-background images that the teacher and PEPD consume.

Write a folder of RGBA input images (view 0 of the view set = the input view), the stand-in for the
paper's RGBA images from 2D generators:

    python -m dd3g_distill.data.world --split train --count 1000 --out data/procworld_train --size 256
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from dd3g_sdk.cameras import Camera, ViewSetConfig, stack_intrinsics, stack_viewmats
from dd3g_sdk.errors import InputError

SPLITS = ("train", "val", "test")
KINDS = ("sphere", "box", "cylinder", "cone", "torus")
TEXTURES = ("solid", "stripes", "checkers")
MAX_PRIMITIVES = 6
BOUND_RADIUS = 0.8661  # radius of the sphere around [-0.5, 0.5]^3 (sqrt(3)/2, rounded up)


@dataclass(frozen=True)
class Primitive:
    """One primitive in world units (after normalisation).

    Local frame: x_local = rotation @ (x_world - center). `params` by kind (local frame, axis = local y):
    sphere (r, -, -, -); box (half x, half y, half z, -); cylinder (radius, half height, -, -);
    cone (bottom radius at y=-h, half height h, top radius, -); torus (major R in xz, minor r, -, -).
    Texture: `color` and `color2` alternate every 1/tex_freq world units, along local axis `tex_axis`
    (stripes) or along all three local axes (checkers); solid uses `color` only.
    """
    kind: str
    center: tuple[float, float, float]
    rotation: tuple[float, ...]  # 9 numbers, row-major 3x3, world -> local
    params: tuple[float, float, float, float]
    color: tuple[float, float, float]
    color2: tuple[float, float, float]
    texture: str
    tex_freq: float
    tex_axis: int


@dataclass(frozen=True)
class ObjectSpec:
    split: str
    index: int
    primitives: tuple[Primitive, ...]


# ---- object generation ------------------------------------------------------------------------------------

def object_seed(split: str, k: int) -> int:
    """64-bit seed of object `k` of `split` (sha256 of both: splits get unrelated streams)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if int(k) < 0:
        raise ValueError(f"object index must be >= 0, got {k}")
    digest = hashlib.sha256(f"dd3g-procworld/v1/{split}/{int(k)}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.standard_normal(4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def _random_color(rng: np.random.Generator) -> np.ndarray:
    # HSV with enough saturation/value that objects stand out from the white background.
    h, s, v = rng.uniform(0, 1), rng.uniform(0.4, 0.9), rng.uniform(0.6, 1.0)
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _local_half_extent(kind: str, p: np.ndarray) -> np.ndarray:
    if kind == "sphere":
        return np.array([p[0]] * 3)
    if kind == "box":
        return p[:3].copy()
    if kind == "cylinder":
        return np.array([p[0], p[1], p[0]])
    if kind == "cone":
        r = max(p[0], p[2])
        return np.array([r, p[1], r])
    if kind == "torus":
        return np.array([p[0] + p[1], p[1], p[0] + p[1]])
    raise ValueError(kind)


def object_spec(split: str, k: int) -> ObjectSpec:
    """Object `k` of `split` ("train", "val", "test"): a pure function of (split, k)."""
    rng = np.random.default_rng(object_seed(split, k))
    n = int(rng.integers(2, MAX_PRIMITIVES + 1))
    raw = []
    for _ in range(n):
        kind = KINDS[int(rng.integers(len(KINDS)))]
        size = rng.uniform(0.18, 0.42)
        if kind == "sphere":
            params = [size, 0, 0, 0]
        elif kind == "box":
            params = list(size * rng.uniform(0.45, 1.0, 3)) + [0]
        elif kind == "cylinder":
            params = [size * rng.uniform(0.4, 0.9), size * rng.uniform(0.5, 1.2), 0, 0]
        elif kind == "cone":
            params = [size * rng.uniform(0.6, 1.0), size * rng.uniform(0.6, 1.2), size * rng.uniform(0.0, 0.3), 0]
        else:  # torus
            params = [size * rng.uniform(0.7, 1.0), size * rng.uniform(0.2, 0.4), 0, 0]
        center = rng.uniform(-0.25, 0.25, 3)  # close together: mostly one connected object
        rot = _random_rotation(rng)
        color = _random_color(rng)
        texture = TEXTURES[int(rng.choice(3, p=[0.4, 0.3, 0.3]))]
        # The second colour is a lighter or darker shade, sometimes another hue: readable patterns.
        color2 = _random_color(rng) if rng.uniform() < 0.4 else np.clip(color * rng.choice([0.45, 1.6]), 0, 1)
        freq = rng.uniform(3.0, 7.0)
        raw.append((kind, center, rot, np.array(params, np.float64), color, color2, texture, freq,
                    int(rng.integers(3))))
    # Normalise: axis-aligned box of the union (each primitive's rotated local box), centred, longest side 1.
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for kind, center, rot, params, *_ in raw:
        half = np.abs(rot.T) @ _local_half_extent(kind, params)  # world extent of the rotated local box
        lo, hi = np.minimum(lo, center - half), np.maximum(hi, center + half)
    mid, scale = (lo + hi) / 2, 1.0 / float((hi - lo).max())
    prims = []
    for kind, center, rot, params, color, color2, texture, freq, axis in raw:
        prims.append(Primitive(kind, tuple(float(v) for v in (center - mid) * scale),
                               tuple(float(v) for v in rot.reshape(-1)),
                               tuple(float(v) for v in params * scale), tuple(float(v) for v in color),
                               tuple(float(v) for v in color2), texture, float(freq / scale), axis))
    return ObjectSpec(split, int(k), tuple(prims))


# ---- packing and the SDF ----------------------------------------------------------------------------------

def pack_specs(specs: Sequence[ObjectSpec], device=None) -> dict:
    """Stack objects into padded tensors [B, P=6, ...] (padding has kind -1, which never hits).

    kind [B, P] long, rot [B, P, 3, 3] world->local, center [B, P, 3], params [B, P, 4], color, color2
    [B, P, 3], tex [B, P] long (index into TEXTURES), freq [B, P], axis [B, P] long.
    """
    import torch

    b, p = len(specs), MAX_PRIMITIVES
    kind = np.full((b, p), -1, np.int64)
    rot = np.tile(np.eye(3, dtype=np.float32), (b, p, 1, 1))
    center = np.zeros((b, p, 3), np.float32)
    params = np.zeros((b, p, 4), np.float32)
    color = np.ones((b, p, 3), np.float32)
    color2 = np.ones((b, p, 3), np.float32)
    tex = np.zeros((b, p), np.int64)
    freq = np.ones((b, p), np.float32)
    axis = np.zeros((b, p), np.int64)
    for i, s in enumerate(specs):
        for j, pr in enumerate(s.primitives):
            kind[i, j] = KINDS.index(pr.kind)
            rot[i, j] = np.asarray(pr.rotation, np.float32).reshape(3, 3)
            center[i, j], params[i, j] = pr.center, pr.params
            color[i, j], color2[i, j] = pr.color, pr.color2
            tex[i, j], freq[i, j], axis[i, j] = TEXTURES.index(pr.texture), pr.tex_freq, pr.tex_axis
    arrays = dict(kind=kind, rot=rot, center=center, params=params, color=color, color2=color2, tex=tex,
                  freq=freq, axis=axis)
    return {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}


def primitive_sdf(kind, q, params):
    """Exact signed distance of every primitive kind, selected per primitive.

    kind [...] long (index into KINDS; -1 = padding, distance 1e3), q [..., 3] points in the primitive's
    local frame, params [..., 4] -> [...] (shapes broadcast).
    """
    import torch

    x, y, z = q.unbind(-1)
    p0, p1, p2, _ = params.unbind(-1)
    rxz = torch.sqrt(x * x + z * z + 1e-12)
    d_sphere = q.norm(dim=-1) - p0
    qb = q.abs() - params[..., :3]
    d_box = qb.clamp(min=0).norm(dim=-1) + qb.amax(-1).clamp(max=0)
    # capped cylinder along y: radius p0, half height p1
    dx, dy = rxz - p0, y.abs() - p1
    d_cyl = torch.maximum(dx, dy).clamp(max=0) + torch.sqrt(dx.clamp(min=0) ** 2 + dy.clamp(min=0) ** 2)
    # capped cone along y (Inigo Quilez's exact form): bottom radius r1 at y=-h, top radius r2 at y=+h
    r1, h, r2 = p0, p1, p2
    ca_x = rxz - torch.minimum(rxz, torch.where(y < 0, r1, r2))
    ca_y = y.abs() - h
    k2x, k2y = r2 - r1, 2 * h
    tt = (((r2 - rxz) * k2x + (h - y) * k2y) / (k2x * k2x + k2y * k2y + 1e-12)).clamp(0, 1)
    cb_x, cb_y = rxz - r2 + k2x * tt, y - h + k2y * tt
    sign = torch.where((cb_x < 0) & (ca_y < 0), -1.0, 1.0)
    d_cone = sign * torch.sqrt(torch.minimum(ca_x * ca_x + ca_y * ca_y, cb_x * cb_x + cb_y * cb_y))
    # torus in the local xz plane: major radius p0, minor p1
    d_torus = torch.sqrt((rxz - p0) ** 2 + y * y) - p1
    all_d = torch.stack([d_sphere, d_box, d_cyl, d_cone, d_torus], -1)  # [..., 5]
    k = kind.expand(all_d.shape[:-1])
    d = all_d.gather(-1, k.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(k >= 0, d, torch.full_like(d, 1e3))


def scene_sdf(packed: dict, obj, x):
    """Distance of points to their objects. obj [A] object index per point, x [A, 3] world ->
    (distance [A], index of the nearest primitive [A], points in every primitive's local frame [A, P, 3])."""
    rot, center = packed["rot"][obj], packed["center"][obj]  # [A, P, 3, 3], [A, P, 3]
    q = ((x[:, None, None, :] - center[:, :, None, :]) * rot).sum(-1)  # R (x - c)
    d = primitive_sdf(packed["kind"][obj], q, packed["params"][obj])
    dmin, arg = d.min(1)
    return dmin, arg, q


# ---- the renderer -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RenderConfig:
    """Ray-marcher options. Units: world (objects fit [-0.5, 0.5]^3)."""
    steps: int = 80  # sphere-tracing iterations
    hit_eps: float = 1e-3  # a ray stops when the distance falls below this
    hit_tol: float = 4e-3  # after the last step, distance below this counts as a hit (grazing rays)
    supersample: int = 1  # render ss x ss samples per pixel and average (anti-aliasing)
    ambient: float = 0.45
    light_dir: tuple[float, float, float] = (0.45, 0.8, 0.4)  # towards the light, world frame


@dataclass
class RenderOutput:
    rgba: "object"  # [B, C, 4, H, W] 0..1, straight alpha
    depth: "object"  # [B, C, H, W] camera z, 0 where not mask
    mask: "object"  # [B, C, H, W] bool


def _pixel_rays(viewmats, Ks, width: int, height: int):
    """viewmats [B, C, 4, 4], Ks [B, C, 3, 3] -> origins, unit dirs [B, C, H*W, 3], z-per-unit-t [B, C, H*W]."""
    import torch

    dev, dt = viewmats.device, viewmats.dtype
    i, j = torch.meshgrid(torch.arange(height, device=dev, dtype=dt) + 0.5,
                          torch.arange(width, device=dev, dtype=dt) + 0.5, indexing="ij")
    fx, fy, cx, cy = (Ks[..., 0, 0, None], Ks[..., 1, 1, None], Ks[..., 0, 2, None], Ks[..., 1, 2, None])
    d_cam = torch.stack([(j.reshape(-1) - cx) / fx, (i.reshape(-1) - cy) / fy,
                         torch.ones_like(cx).expand(*cx.shape[:-1], height * width)], -1)  # [B, C, HW, 3]
    norm = d_cam.norm(dim=-1, keepdim=True)
    R, t = viewmats[..., :3, :3], viewmats[..., :3, 3]
    dirs = torch.einsum("bcji,bcnj->bcni", R, d_cam / norm)  # R^T d
    origin = -torch.einsum("bcji,bcj->bci", R, t)  # -R^T t
    return origin[:, :, None].expand_as(dirs), dirs, (1.0 / norm[..., 0])


def render(specs: Sequence[ObjectSpec], viewmats, Ks, width: int, height: int,
           cfg: RenderConfig = RenderConfig(), device=None) -> RenderOutput:
    """Render B objects from C cameras each.

    viewmats: [C, 4, 4] (same cameras for every object) or [B, C, 4, 4], world-to-camera (OpenCV).
    Ks: [C, 3, 3] or [B, C, 3, 3] pixel intrinsics for `width` x `height`. numpy or torch.
    Sphere tracing runs on the rays still marching only (finished rays drop out), so the cost follows
    the number of (ray, step) pairs that matter.
    """
    import torch
    import torch.nn.functional as F

    device = torch.device(device) if device is not None else (
        viewmats.device if isinstance(viewmats, torch.Tensor) else torch.device("cpu"))
    vm = torch.as_tensor(np.asarray(viewmats) if not isinstance(viewmats, torch.Tensor) else viewmats)
    K = torch.as_tensor(np.asarray(Ks) if not isinstance(Ks, torch.Tensor) else Ks)
    vm, K = vm.to(device, torch.float32), K.to(device, torch.float32)
    b = len(specs)
    if vm.ndim == 3:
        vm = vm[None].expand(b, *vm.shape)
    if K.ndim == 3:
        K = K[None].expand(b, *K.shape)
    if vm.shape[:2] != K.shape[:2] or vm.shape[0] != b:
        raise ValueError(f"viewmats {list(vm.shape)} and Ks {list(K.shape)} do not match {b} objects")
    c = vm.shape[1]
    ss = int(cfg.supersample)
    if ss > 1:  # sub-pixel centres of an ss x ss grid average back to the pixel centre
        K = K.clone()
        K[..., :2, :] *= ss
    hh, ww = height * ss, width * ss
    packed = pack_specs(specs, device)
    origin, dirs, z_per_t = _pixel_rays(vm, K, ww, hh)
    o, d, zpt = origin.reshape(-1, 3), dirs.reshape(-1, 3), z_per_t.reshape(-1)  # M = B*C*hh*ww rays
    obj = torch.arange(b, device=device).repeat_interleave(c * hh * ww)
    # Start on the bounding sphere of [-0.5, 0.5]^3; rays that miss it never hit.
    bq = (o * d).sum(-1)
    disc = bq * bq - ((o * o).sum(-1) - BOUND_RADIUS ** 2)
    sq = disc.clamp(min=0).sqrt()
    t = (-bq - sq).clamp(min=0)
    t_far = -bq + sq
    live = torch.nonzero(disc > 0).squeeze(1)  # ids of the rays still marching
    marched = live
    for _ in range(cfg.steps):
        if live.numel() == 0:
            break
        tl = t[live]
        dist, _, _ = scene_sdf(packed, obj[live], o[live] + tl[:, None] * d[live])
        converged = dist < cfg.hit_eps
        tl = torch.where(converged, tl, tl + dist)  # converged rays stay where they are
        t[live] = tl
        live = live[~(converged | (tl > t_far[live]))]
    # Hits, normals (tetrahedral finite differences) and textures on the rays that reached a surface.
    dist, _, _ = scene_sdf(packed, obj[marched], o[marched] + t[marched, None] * d[marched])
    hid = marched[(dist < cfg.hit_tol) & (t[marched] <= t_far[marched])]
    ho, dh = obj[hid], d[hid]
    e = 5e-4
    taps = torch.tensor([[1, -1, -1], [-1, -1, 1], [-1, 1, -1], [1, 1, 1]], device=device, dtype=torch.float32)

    def normal(p):
        n = sum(tap * scene_sdf(packed, ho, p + e * tap)[0][:, None] for tap in taps)
        return n / n.norm(dim=-1, keepdim=True).clamp(min=1e-12)

    # Sphere tracing stops up to hit_eps / cos(incidence) short of the surface (a lot for grazing rays):
    # three Newton steps on f(t) = sdf(o + t d), f'(t) = n . d, bring t onto the surface.
    th = t[hid]
    for _ in range(3):
        x = o[hid] + th[:, None] * dh
        f = scene_sdf(packed, ho, x)[0]
        slope = (normal(x) * dh).sum(-1)
        th = th + (f / (-slope).clamp(min=0.1)).clamp(-0.02, 0.02)
    t[hid] = th
    x = o[hid] + th[:, None] * dh
    _, arg, q = scene_sdf(packed, ho, x)
    n = normal(x)

    def prim(name):  # the nearest primitive's attribute per hit
        return packed[name][ho, arg]

    ql = q[torch.arange(len(hid), device=device), arg]  # [H, 3] local point
    cell = torch.floor(ql * prim("freq")[:, None]).long()
    stripe = cell.gather(-1, prim("axis")[:, None])[:, 0] % 2
    checker = cell.sum(-1) % 2
    tex = prim("tex")
    alt = torch.where(tex == 1, stripe, torch.where(tex == 2, checker, torch.zeros_like(checker))).bool()
    albedo = torch.where(alt[:, None], prim("color2"), prim("color"))
    light = torch.tensor(cfg.light_dir, device=device, dtype=torch.float32)
    light = light / light.norm()
    shade = cfg.ambient + (1 - cfg.ambient) * (n @ light).clamp(min=0)
    m = o.shape[0]
    rgb = torch.ones(m, 3, device=device)
    rgb[hid] = (albedo * shade[:, None]).clamp(0, 1)
    hitf = torch.zeros(m, device=device)
    hitf[hid] = 1.0
    zc = torch.zeros(m, device=device)
    zc[hid] = t[hid] * zpt[hid]  # camera z = t * cos(angle to the optical axis)
    # [B*C, ...] images, then the ss x ss pooling
    rgb = rgb.reshape(b * c, hh, ww, 3).permute(0, 3, 1, 2)
    hitf = hitf.reshape(b * c, 1, hh, ww)
    zc = zc.reshape(b * c, 1, hh, ww)
    if ss > 1:
        cover = F.avg_pool2d(hitf, ss)
        rgb = F.avg_pool2d(rgb * hitf, ss) / cover.clamp(min=1e-8)
        rgb = torch.where(cover > 0, rgb, torch.ones_like(rgb))
        zc = F.avg_pool2d(zc, ss) / cover.clamp(min=1e-8)  # mean depth of the sub-samples that hit
        hitf = cover
    mask = hitf[:, 0] >= 0.5
    depth = torch.where(mask, zc[:, 0], torch.zeros_like(zc[:, 0]))
    rgba = torch.cat([rgb, hitf], 1).reshape(b, c, 4, height, width)
    return RenderOutput(rgba, depth.reshape(b, c, height, width), mask.reshape(b, c, height, width))


def view_set_tensors(view_set: ViewSetConfig, size: int) -> tuple[np.ndarray, np.ndarray, list[Camera]]:
    """(viewmats [V, 4, 4], Ks [V, 3, 3], cameras) of the view set at `size` x `size`."""
    cams = view_set.cameras(size, size)
    return stack_viewmats(cams), stack_intrinsics(cams), cams


def render_views(specs: Sequence[ObjectSpec], size: int, view_set: ViewSetConfig = ViewSetConfig(),
                 cfg: RenderConfig = RenderConfig(), device=None) -> RenderOutput:
    """Render every object from the V cameras of `view_set` at `size` x `size` (view 0 = input view)."""
    vm, K, _ = view_set_tensors(view_set, size)
    return render(specs, vm, K, size, size, cfg, device)


def composite_white(rgba):
    """[..., 4, H, W] straight-alpha RGBA -> [..., 3, H, W] on a white background."""
    a = rgba[..., 3:4, :, :]
    return rgba[..., :3, :, :] * a + (1 - a)


# ---- CLI: write the RGBA input folder ---------------------------------------------------------------------

def write_input_folder(split: str, count: int, out: str | Path, size: int = 256, start: int = 0,
                       supersample: int = 2, batch: int = 16, device=None,
                       view_set: ViewSetConfig = ViewSetConfig(), progress: bool = True) -> list[Path]:
    """Render objects start..start+count-1 of `split` from view 0 of `view_set` to `out/{split}_{k:06d}.png`.

    The PNGs are 8-bit RGBA (straight alpha): the format that distillation reads from any image folder.
    """
    import torch
    from PIL import Image
    from tqdm import tqdm

    from dd3g_sdk._fileio import atomic_write

    if split not in SPLITS:
        raise InputError(None, f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if count < 1 or start < 0 or size < 8:
        raise InputError(None, f"need count >= 1, start >= 0 and size >= 8 (got {count}, {start}, {size})")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "output path exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    vm, K, _ = view_set_tensors(view_set, size)
    cfg = RenderConfig(supersample=supersample)
    paths = []
    ks = list(range(start, start + count))
    for i in tqdm(range(0, count, batch), disable=not progress, desc=f"render {split}"):
        chunk = ks[i:i + batch]
        res = render([object_spec(split, k) for k in chunk], vm[:1], K[:1], size, size, cfg, device)
        img = (res.rgba[:, 0].permute(0, 2, 3, 1).clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
        for k, arr in zip(chunk, img):
            p = out / f"{split}_{k:06d}.png"
            with atomic_write(p) as f:
                Image.fromarray(arr, "RGBA").save(f, format="PNG")
            paths.append(p)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dd3g_distill.data.world", description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="train", choices=SPLITS)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--supersample", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    try:
        paths = write_input_folder(args.split, args.count, args.out, args.size, args.start, args.supersample,
                                   args.batch, args.device)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} RGBA images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
