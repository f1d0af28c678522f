"""N-C-II-OI quadruples: the teacher's noise, cameras, input image and multi-view output, pre-generated offline.

For object k of a split of the procedural world (dd3g_distill.data.world):
    II   input image: view 0 rendered as RGBA at the camera's own framing, area-downsampled onto white (see
         `render_input`). It is stored twice, as `image` (PEPD's input) and `cond_image` (the teacher's
         condition): the same pixels here, kept apart because a real teacher may read its condition at another
         size. PEPD's input is *not* re-cropped the way `dd3g_sdk.preprocess` frames a user's image: its Gaussians
         are pixel-aligned with view 0, so the input must show the object exactly where the ground truth and the
         teacher's view 0 show it (format v3; v2 stored a re-cropped `image`, which left the object's position and
         size in the world unknowable from the input: every student blurred). The SDK frames a user's image to the
         median fill of these renders instead (`PEPDConfig.input_fill`);
    N    noise = dd3g_sdk.noise.draw_noise(seed_offset + k, teacher.sample_shape)  (the seed the SDK uses);
    C    the teacher's cameras (its view set at the teacher's resolution): viewmats [V,4,4], Ks [V,3,3];
    OI   the teacher's deterministic DDIM ODE from N, conditioned on II: [V,3,h,w] in 0..1 (not made with
         `teacher_outputs=false`: a ground-truth-only store for the "3D data only" models).
Each shard also stores the ground-truth renders at C (`gt`, `gt_mask`), which the "3D data only" baseline
trains on and which distillation never reads, and, with `extra_views` E > 0, ground truth at E more cameras per
object (`extra_*`, seeded by the object: see `extra_cameras`): 3D data gives any view for free, and without
views other than C the Gaussians' depth is not learned (docs/distill.md, "What limits the students").

Layout of a quadruple folder:
    shard_00000.safetensors   tensors below, one row per object (uint8 images, float32 noise and cameras)
    shard_00000.json          sidecar: item range, sha256 of the shard, hash of the generation config
    manifest.json             written once every shard is done: config, teacher, shards with sha256
Tensors: index [n] int64 (object k), seed [n] int64, noise [n,V,3,h,w] f32, viewmats [n,V,4,4] f32,
Ks [n,V,3,3] f32, image [n,3,S,S] u8 (II as PEPD reads it), cond_image [n,3,S,S] u8 (II as the teacher reads it),
oi [n,V,3,h,w] u8 (with teacher_outputs), gt [n,V,3,h,w] u8, gt_mask [n,V,1,h,w] u8 (coverage),
gt_depth [n,V,h,w] f16 (camera z of the surface in world units, 0 off the object); with E extra views also
extra_viewmats [n,E,4,4] f32, extra_Ks [n,E,3,3] f32, extra_gt [n,E,3,h,w] u8, extra_mask [n,E,1,h,w] u8.

Resumable: a shard whose sidecar matches its file's sha256 and the config is skipped. Splits across
processes by shard index: shard i belongs to rank i % world (RANK / WORLD_SIZE from torchrun, or --shard r/n).

    python -m dd3g_distill.quadruples --config configs/distill_small.json           # one process
    torchrun --nproc-per-node 4 -m dd3g_distill.quadruples --config configs/distill_small.json
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dd3g_sdk._fileio import atomic_write_bytes, atomic_write_text
from dd3g_sdk.config import to_dict
from dd3g_sdk.errors import InputError

FORMAT = "dd3g-quadruples/v3"  # v2: gt_depth; v3: `image` is the plain view-0 render (pixel-aligned)
SHARD_KEYS = ("index", "seed", "noise", "viewmats", "Ks", "image", "cond_image", "oi", "gt", "gt_mask", "gt_depth")
EXTRA_KEYS = ("extra_viewmats", "extra_Ks", "extra_gt", "extra_mask")
NO_TEACHER_OUTPUTS = ("these quadruples hold no teacher outputs (made with quadruples.teacher_outputs=false): only "
                      "train.target=gt can read them")
# Elevation range of the extra ground-truth cameras (degrees): below and well above the teacher's ring, short of
# the pole (where an up vector of +y degenerates); the evaluation's novel cameras (5 and 35 degrees) lie inside.
EXTRA_ELEVATION_DEG = (-5.0, 50.0)


@dataclass(frozen=True)
class QuadrupleConfig:
    """What to generate. Sizes in pixels; `image_size` 0 means the PEPD input size of the model preset."""
    split: str = "train"
    num_objects: int = 2048
    first_index: int = 0  # objects first_index .. first_index + num_objects - 1 of the split
    seed_offset: int = 0  # noise seed of object k = seed_offset + k
    shard_size: int = 128  # objects per shard file
    batch_size: int = 64  # objects per teacher ODE call
    ode_steps: int = 25  # DDIM steps of the teacher's deterministic ODE
    image_size: int = 64  # II side (the PEPD input size)
    input_render_size: int = 256  # view 0 is rendered at this size as RGBA, then area-downsampled to image_size
    supersample: int = 2  # anti-aliasing of the ground-truth renders at C
    extra_views: int = 0  # ground truth at this many more cameras per object (the "3D data only" baseline's)
    # false: no teacher ODE, no `oi` (ground truth, noise and cameras only): a store for the "3D data only" models
    # that cannot be distilled from; the ODE is most of the generation time
    teacher_outputs: bool = True

    def __post_init__(self) -> None:
        from .data.world import SPLITS

        if self.split not in SPLITS:
            raise ValueError(f"QuadrupleConfig.split must be one of {SPLITS}, got {self.split!r}")
        for name in ("num_objects", "shard_size", "batch_size", "ode_steps", "image_size", "input_render_size",
                     "supersample"):
            if getattr(self, name) < 1:
                raise ValueError(f"QuadrupleConfig.{name} must be >= 1")
        if self.first_index < 0 or self.seed_offset < 0 or self.extra_views < 0:
            raise ValueError("QuadrupleConfig.first_index, seed_offset and extra_views must be >= 0")

    def keys(self) -> tuple[str, ...]:
        """The tensors of a shard made with this config."""
        return shard_keys(self.extra_views, self.teacher_outputs)


def shard_keys(extra_views: int, teacher_outputs: bool = True) -> tuple[str, ...]:
    """The tensors of a shard with `extra_views` extra ground-truth cameras per object, with or without the
    teacher's output `oi`."""
    base = SHARD_KEYS if teacher_outputs else tuple(k for k in SHARD_KEYS if k != "oi")
    return base + (EXTRA_KEYS if extra_views else ())


# ---- distributed helpers (no process group needed: sharding is by index) -----------------------------------

def shard_assignment(shard: tuple[int, int] | None = None) -> tuple[int, int]:
    """(rank, world) from an explicit (i, n), else torchrun's RANK / WORLD_SIZE, else (0, 1)."""
    if shard is not None:
        r, n = int(shard[0]), int(shard[1])
    else:
        r, n = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if n < 1 or not 0 <= r < n:
        raise ValueError(f"bad shard assignment {r}/{n}: need 0 <= i < n")
    return r, n


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def config_hash(cfg: QuadrupleConfig, teacher_id: str) -> str:
    """Identity of what a shard holds: the generation config and the teacher. `num_objects` is left out (shard
    i holds the same objects whatever the total; its item count is checked separately), so a folder can be
    extended or cut to a prefix of finished shards."""
    d = to_dict(cfg)
    d.pop("num_objects")
    blob = json.dumps({"config": d, "teacher": teacher_id, "format": FORMAT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def teacher_identity(teacher) -> str:
    """A string that changes when anything that shapes `ode`'s output changes: the weights (sha256 over the
    state_dict), and, where the teacher has them, its config (teacher.json) and its scheduler's config."""
    import torch

    h = hashlib.sha256()
    for part in ("config", "scheduler"):
        obj = getattr(teacher, part, None)
        if obj is None:
            continue
        cfg = dict(obj.config) if part == "scheduler" and hasattr(obj, "config") else obj
        try:
            from dd3g_sdk.config import to_dict

            cfg = to_dict(cfg) if not isinstance(cfg, dict) else cfg
        except TypeError:
            cfg = repr(cfg)
        h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    for name, t in sorted(teacher.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# ---- inputs from the procedural world -----------------------------------------------------------------------

def render_input(split: str, indices: Sequence[int], image_size: int, render_size: int, camera,
                 device=None) -> np.ndarray:
    """The input images II of objects `indices`: one RGBA render by `camera` (view 0) at `render_size`, area
    averaged (premultiplied colour and coverage) to `image_size` and put over white, at the camera's own framing.
    Pixel-aligned with the ground truth at view 0: the teacher's training condition and PEPD's input alike.
    Returns [n, 3, S, S] float32 0..1."""
    import torch.nn.functional as F

    from dd3g_sdk.cameras import stack_intrinsics, stack_viewmats

    from .data.world import RenderConfig, object_spec, render

    if render_size % image_size:
        raise ValueError(f"input_render_size {render_size} must be a multiple of image_size {image_size}")
    cam = camera.resized(render_size, render_size)
    vm, K = stack_viewmats([cam]), stack_intrinsics([cam])
    res = render([object_spec(split, int(k)) for k in indices], vm, K, render_size, render_size,
                 RenderConfig(), device)
    rgba = res.rgba[:, 0].clamp(0, 1)  # [n, 4, R, R] straight alpha
    # area average of premultiplied colour and coverage, then over white (what supersampling would give)
    prem = F.avg_pool2d(torch_cat_premul(rgba), render_size // image_size)
    return (prem[:, :3] + (1 - prem[:, 3:4])).clamp(0, 1).cpu().numpy().astype(np.float32)


def torch_cat_premul(rgba):
    """[n, 4, H, W] straight alpha -> premultiplied colour and alpha, [n, 4, H, W]."""
    import torch

    return torch.cat([rgba[:, :3] * rgba[:, 3:4], rgba[:, 3:4]], 1)


def render_ground_truth(split: str, indices: Sequence[int], viewmats: np.ndarray, Ks: np.ndarray, size: int,
                        supersample: int = 2, device=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground truth of objects `indices` at cameras viewmats [C,4,4], Ks [C,3,3] (pixels at `size`).

    Returns (rgb on white [n, C, 3, H, W], coverage [n, C, 1, H, W], depth [n, C, H, W]) float32.
    """
    from .data.world import RenderConfig, composite_white, object_spec, render

    res = render([object_spec(split, int(k)) for k in indices], viewmats, Ks, size, size,
                 RenderConfig(supersample=supersample), device)
    rgb = composite_white(res.rgba).clamp(0, 1)
    return (rgb.cpu().numpy().astype(np.float32), res.rgba[:, :, 3:4].clamp(0, 1).cpu().numpy().astype(np.float32),
            res.depth.cpu().numpy().astype(np.float32))


def to_u8(x) -> np.ndarray:
    return (np.clip(np.asarray(x, np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)


def extra_cameras(split: str, k: int, count: int, like) -> tuple[np.ndarray, np.ndarray]:
    """`count` cameras of object `k` for extra ground truth: (viewmats [count,4,4], Ks [count,3,3]) float32.

    Azimuth uniform in [0, 360) and elevation uniform in EXTRA_ELEVATION_DEG (degrees), looking at the origin from
    the distance of camera `like` (a `dd3g_sdk.cameras.Camera`, the teacher's view 0) with its intrinsics. A pure
    function of (split, k): the same object always gets the same cameras, whatever the shard or process.
    """
    from dd3g_sdk.cameras import Camera, orbit_camera, stack_intrinsics, stack_viewmats

    from .data.world import object_seed

    rng = np.random.default_rng([object_seed(split, int(k)), 0xE7])
    az = rng.uniform(0.0, 360.0, count)
    el = rng.uniform(*EXTRA_ELEVATION_DEG, count)
    r = float(np.linalg.norm(like.position))
    cams = [Camera(orbit_camera(float(a), float(e), r).world_to_cam, like.fx, like.fy, like.cx, like.cy, like.width,
                   like.height) for a, e in zip(az, el)]
    return stack_viewmats(cams), stack_intrinsics(cams)


def teacher_cameras(teacher) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's cameras C: (viewmats [V,4,4], Ks [V,3,3]) float32 at its sample resolution."""
    from dd3g_sdk.cameras import stack_intrinsics, stack_viewmats

    cams = list(teacher.views)
    return stack_viewmats(cams), stack_intrinsics(cams)


# ---- generation -----------------------------------------------------------------------------------------------

def make_shard(cfg: QuadrupleConfig, teacher, indices: Sequence[int], device=None) -> dict[str, np.ndarray]:
    """Generate the quadruples (and ground truth) of objects `indices` as numpy arrays (see SHARD_KEYS)."""
    import torch

    from dd3g_sdk.noise import draw_noise

    device = torch.device(device or "cpu")
    indices = [int(k) for k in indices]
    V, _, h, _ = (int(s) for s in teacher.sample_shape)
    vm, K = teacher_cameras(teacher)
    ii = render_input(cfg.split, indices, cfg.image_size, cfg.input_render_size, teacher.views[0], device)
    gt, gt_mask, gt_depth = render_ground_truth(cfg.split, indices, vm, K, h, cfg.supersample, device)
    seeds = [cfg.seed_offset + k for k in indices]
    noise = np.stack([draw_noise(s, (V, 3, h, h)) for s in seeds])
    oi = []
    batches = range(0, len(indices), cfg.batch_size) if cfg.teacher_outputs else ()
    for a in batches:
        # The teacher reads the uint8-rounded condition that is stored: a quadruple is self-consistent.
        ci = torch.from_numpy(to_u8(ii[a:a + cfg.batch_size]).astype(np.float32) / 255).to(device)
        n = torch.from_numpy(noise[a:a + cfg.batch_size]).to(device)
        with torch.no_grad():
            out = teacher.ode(n, teacher.condition(ci), steps=cfg.ode_steps)
        oi.append(out.float().clamp(0, 1).cpu().numpy())
    n = len(indices)
    arrays = {
        "index": np.asarray(indices, np.int64), "seed": np.asarray(seeds, np.int64), "noise": noise,
        "viewmats": np.broadcast_to(vm, (n, *vm.shape)).copy(), "Ks": np.broadcast_to(K, (n, *K.shape)).copy(),
        "image": to_u8(ii), "cond_image": to_u8(ii), "gt": to_u8(gt),
        "gt_mask": to_u8(gt_mask), "gt_depth": gt_depth.astype(np.float16),
    }
    if cfg.teacher_outputs:
        arrays["oi"] = to_u8(np.concatenate(oi))
    if cfg.extra_views:
        cams = [extra_cameras(cfg.split, k, cfg.extra_views, teacher.views[0]) for k in indices]
        evm, eK = np.stack([c[0] for c in cams]), np.stack([c[1] for c in cams])
        egt, emask, _ = render_ground_truth(cfg.split, indices, evm, eK, h, cfg.supersample, device)
        arrays.update(extra_viewmats=evm, extra_Ks=eK, extra_gt=to_u8(egt), extra_mask=to_u8(emask))
    return arrays


def generate_quadruples(cfg: QuadrupleConfig, out_dir: str | os.PathLike, teacher, device=None,
                        shard: tuple[int, int] | None = None, progress: bool = True,
                        max_shards: int | None = None, max_seconds: float | None = None) -> dict:
    """Generate (or finish) the quadruple folder `out_dir`; this process does the shards of its rank.

    Returns a summary dict(done=[shard ids written now], skipped=[...], seconds, manifest=path or None).
    `max_shards` stops after writing that many shards (a test hook standing in for an interrupted job);
    `max_seconds` starts no new shard after that much time (then `finish_prefix` can publish what is done).
    """
    from safetensors.numpy import save
    from tqdm.auto import tqdm

    rank, world = shard_assignment(shard)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tid = teacher_identity(teacher)
    chash = config_hash(cfg, tid)
    num_shards = math.ceil(cfg.num_objects / cfg.shard_size)
    mine = [i for i in range(num_shards) if i % world == rank]
    done, skipped = [], []
    t0 = time.perf_counter()
    bar = tqdm(mine, desc=f"quadruples [{rank}/{world}]", unit="shard", disable=not progress)
    for i in bar:
        if shard_is_complete(out, i, chash, shard_range(cfg, i)[1]):
            skipped.append(i)
            continue
        if max_shards is not None and len(done) >= max_shards:
            break
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            break
        first, count = shard_range(cfg, i)
        arrays = make_shard(cfg, teacher, range(first, first + count), device)
        blob = save({k: np.ascontiguousarray(arrays[k]) for k in cfg.keys()},
                    # one metadata key: safetensors writes its metadata map in no fixed order, and shards
                    # must be byte-identical for the same inputs
                    metadata={"dd3g": json.dumps({"format": FORMAT, "config_hash": chash})})
        path = atomic_write_bytes(out / shard_name(i), blob)
        # The sidecar is written after the shard: a shard without a matching sidecar is redone.
        atomic_write_text(out / sidecar_name(i), json.dumps({
            "file": path.name, "shard": i, "first": first, "count": count, "config_hash": chash,
            "sha256": hashlib.sha256(blob).hexdigest()}, indent=2) + "\n")
        done.append(i)
    manifest = write_manifest_if_complete(out, cfg, tid, chash)
    return {"done": done, "skipped": skipped, "seconds": time.perf_counter() - t0,
            "manifest": str(manifest) if manifest else None, "rank": rank, "world": world}


def shard_name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"


def sidecar_name(i: int) -> str:
    return f"shard_{i:05d}.json"


def shard_range(cfg: QuadrupleConfig, i: int) -> tuple[int, int]:
    """(first object index, item count) of shard i."""
    first = cfg.first_index + i * cfg.shard_size
    return first, min(cfg.shard_size, cfg.first_index + cfg.num_objects - first)


def shard_is_complete(out: Path, i: int, chash: str, count: int) -> bool:
    side, path = out / sidecar_name(i), out / shard_name(i)
    if not (side.is_file() and path.is_file()):
        return False
    try:
        meta = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return meta.get("config_hash") == chash and meta.get("count") == count and meta.get("sha256") == sha256_file(path)


def finish_prefix(out_dir: str | os.PathLike, cfg: QuadrupleConfig, teacher) -> tuple[QuadrupleConfig, Path | None]:
    """Publish the longest run of finished full shards 0..k-1 as the data set (a time-boxed generation).

    Returns (the config with num_objects = k * shard_size, manifest path or None when no shard is done).
    """
    import dataclasses

    out = Path(out_dir)
    tid = teacher_identity(teacher)
    chash = config_hash(cfg, tid)
    k = 0
    while shard_is_complete(out, k, chash, cfg.shard_size) and (k + 1) * cfg.shard_size <= cfg.num_objects:
        k += 1
    if k == 0:
        return cfg, None
    cut = dataclasses.replace(cfg, num_objects=k * cfg.shard_size)
    return cut, write_manifest_if_complete(out, cut, tid, chash)


def write_manifest_if_complete(out: Path, cfg: QuadrupleConfig, teacher_id: str, chash: str) -> Path | None:
    """Write manifest.json when every shard's sidecar is present (any rank may; the content is the same)."""
    num_shards = math.ceil(cfg.num_objects / cfg.shard_size)
    shards = []
    for i in range(num_shards):
        side = out / sidecar_name(i)
        if not side.is_file():
            return None
        meta = json.loads(side.read_text())
        if meta.get("config_hash") != chash or meta.get("count") != shard_range(cfg, i)[1]:
            return None
        shards.append({k: meta[k] for k in ("file", "first", "count", "sha256")})
    manifest = {"format": FORMAT, "config": to_dict(cfg), "teacher": teacher_id, "config_hash": chash,
                "num_items": cfg.num_objects, "shards": shards}
    return atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")


# ---- reading ---------------------------------------------------------------------------------------------------

class QuadrupleSet:
    """All quadruples of a folder, verified against the manifest's sha256, held as torch tensors.

    Images stay uint8 until a batch is taken (`batch(idx)` returns float 0..1 on the set's device).
    """

    def __init__(self, tensors: dict[str, Any], manifest: dict, root: Path):
        self.t = tensors
        self.manifest = manifest
        self.root = root

    @classmethod
    def load(cls, root: str | os.PathLike, device=None, verify: bool = True,
             keys: Sequence[str] | None = None) -> "QuadrupleSet":
        import torch
        from safetensors.numpy import load_file

        root = Path(root)
        mpath = root / "manifest.json"
        if not mpath.is_file():
            raise InputError(root, "no manifest.json: quadruple generation has not finished here")
        try:
            manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise InputError(mpath, f"not valid JSON ({e})") from None
        if manifest.get("format") != FORMAT:
            raise InputError(mpath, f"format {manifest.get('format')!r} is not {FORMAT!r}")
        made = manifest.get("config", {})
        if keys is None:  # everything the shards were made with
            keys = shard_keys(made.get("extra_views", 0), made.get("teacher_outputs", True))
        elif "oi" in keys and not made.get("teacher_outputs", True):
            raise InputError(root, NO_TEACHER_OUTPUTS)
        parts: dict[str, list] = {k: [] for k in keys}
        for s in manifest["shards"]:
            p = root / s["file"]
            if not p.is_file():
                raise InputError(p, "shard listed in manifest.json is missing")
            if verify and sha256_file(p) != s["sha256"]:
                raise InputError(p, "sha256 does not match manifest.json (corrupt or replaced shard)")
            try:
                arrays = load_file(str(p))
            except Exception as e:  # noqa: BLE001 - safetensors raises several error types
                raise InputError(p, f"not a readable safetensors shard ({e})") from None
            for k in keys:
                if k not in arrays:
                    raise InputError(p, f"shard has no tensor {k!r}")
                parts[k].append(arrays[k])
        tensors = {k: torch.from_numpy(np.concatenate(v)).to(device) for k, v in parts.items()}
        return cls(tensors, manifest, root)

    def __len__(self) -> int:
        return int(next(iter(self.t.values())).shape[0])

    def batch(self, idx, keys: Sequence[str] | None = None) -> dict:
        """Rows `idx` (list or tensor of positions): uint8 images -> float32 0..1, others as stored."""
        import torch

        idx = torch.as_tensor(idx, dtype=torch.long, device=next(iter(self.t.values())).device)
        out = {}
        for k in keys or self.t.keys():
            v = self.t[k].index_select(0, idx)
            out[k] = v.float() / 255.0 if v.dtype == torch.uint8 else v
        return out


# ---- command line ---------------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m dd3g_distill.quadruples", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="distillation config JSON (its quadruples/teacher/data)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    ap.add_argument("--shard", default=None, help="this process's part, i/n (default: torchrun RANK/WORLD_SIZE)")
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    from .train import load_distill_config, load_teacher, pick_device

    try:
        cfg = load_distill_config(args.config, args.set)
        shard = tuple(int(v) for v in args.shard.split("/")) if args.shard else None
        device = pick_device(args.device)
        teacher = load_teacher(cfg.teacher, device)
        res = generate_quadruples(cfg.quadruples, cfg.data, teacher, device, shard=shard)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
