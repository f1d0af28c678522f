"""Evaluate a PEPD checkpoint on held-out objects of the procedural world.

    dd3g evaluate runs/distill-small                       # a run folder (its final/ or latest checkpoint)
    dd3g evaluate runs/distill-small/final --num-objects 32 --json results.json --picture turntable.png

For object k of the test split: the input image II (the view-0 render at the camera's framing, as in the
quadruples), the noise of seed `seed_offset + k`, one PEPD pass, then:
- novel views: the Gaussians rendered at `novel_azimuths` azimuths (offset by half a step from the teacher's
  0/90/180/270) at each of `novel_elevations` (not the teacher's 20 degrees), against ground-truth renders of
  the object: PSNR, SSIM (white background, whole image) and mask IoU (rendered alpha > 0.5 vs coverage >= 0.5);
- teacher views: the Gaussians at the teacher's V cameras against the teacher's own output OI for the same
  (II, N) (the student-vs-teacher gap), and against ground truth; the teacher's OI against ground truth too
  (what the teacher itself gets right: an upper bound for a student that copies it);
- Gaussian depth: the camera depth of each teacher view's pixel-aligned Gaussians against the ground-truth
  depth of their pixels, on the object's pixels: mean absolute error (world units) and Pearson correlation of
  the per-pixel mean over the pixel's Gaussians (pooled over the V views of an object). A model that renders its
  views right with Gaussians at the wrong depth shows here (docs/distill.md, "What limits the students");
- inference time: median wall time of one PEPD forward pass (batch 1) on the device, after warm-up;
- with `samples` = K >= 2: K noises per object (seeds `seed_offset + k + j * SAMPLE_SEED_STRIDE`, j = 0..K-1;
  j = 0 is the noise above), the novel views of each, and `metrics.sample_scores` over them: `novel_energy`
  (energy score, RMS units, lower is better: a proper score that treats a model that samples and one that
  outputs a mean alike), `novel_error`, `novel_spread`, `novel_calibration` (1 = the truth looks like one more
  sample), `novel_mean_psnr` (of the K samples' mean), `novel_sample_psnr` (mean over the K samples).
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from dd3g_sdk._fileio import atomic_write, atomic_write_text
from dd3g_sdk.config import to_dict
from dd3g_sdk.errors import InputError


@dataclass(frozen=True)
class EvalConfig:
    """Held-out evaluation. Angles in degrees, sizes in pixels."""
    split: str = "test"
    num_objects: int = 64
    first_index: int = 0
    seed_offset: int = 0  # noise seed of test object k = seed_offset + k
    novel_azimuths: int = 8  # evenly spaced, starting at 180/novel_azimuths (between the teacher's views)
    novel_elevations: tuple[float, ...] = (5.0, 35.0)
    render_size: int = 128  # novel-view resolution
    input_render_size: int = 256  # view 0 rendered at this size, then area-downsampled (as in the quadruples)
    supersample: int = 2  # anti-aliasing of the ground truth
    teacher_gap: bool = True  # run the teacher on the same inputs (needs a teacher)
    ode_steps: int = 25
    batch_size: int = 16
    timing_runs: int = 20
    picture_objects: int = 4  # objects in the turntable picture
    samples: int = 1  # noises per object for the sample scores (>= 2 turns them on)

    def __post_init__(self) -> None:
        for name in ("num_objects", "novel_azimuths", "render_size", "input_render_size", "supersample",
                     "ode_steps", "batch_size", "timing_runs", "samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"EvalConfig.{name} must be >= 1")
        if not self.novel_elevations:
            raise ValueError("EvalConfig.novel_elevations must not be empty")


# noise seed of object k's j-th sample: seed_offset + k + j * SAMPLE_SEED_STRIDE (object indices stay below it)
SAMPLE_SEED_STRIDE = 1_000_003


# ---- metric aggregation --------------------------------------------------------------------------------------

def mean_finite(values: Sequence[float]) -> float:
    """Mean over the finite values (inf PSNR of identical images and NaN are left out); NaN if none."""
    v = [float(x) for x in values if math.isfinite(float(x))]
    return float(sum(v) / len(v)) if v else float("nan")


def aggregate(per_object: dict[str, Sequence[float]]) -> dict[str, float]:
    """Per-object values -> one number each: `mean_finite`, except the calibration ratio (`metrics.sample_scores`),
    which is infinite for a model that ignores its noise and so is summarised by its median."""
    out = {k: mean_finite(v) for k, v in per_object.items() if len(v)}
    for k, v in per_object.items():
        if k.endswith("calibration") and len(v):
            out[k] = float(statistics.median(float(x) for x in v))
    return out


def psnr_from_mse(mse: float, max_val: float = 1.0) -> float:
    return float("inf") if mse == 0 else 10.0 * math.log10(max_val ** 2 / mse)


# ---- checkpoints --------------------------------------------------------------------------------------------

def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A PEPD folder (config.json + model.safetensors), a run folder (its final/, else its latest checkpoint)."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, "checkpoint not found")
    if (p / "model.safetensors").is_file() and (p / "config.json").is_file():
        return p
    if (p / "final" / "model.safetensors").is_file():
        return p / "final"
    latest = p / "checkpoints" / "latest.json"
    if latest.is_file():
        return p / "checkpoints" / json.loads(latest.read_text())["dir"]
    raise InputError(p, "not a PEPD checkpoint (config.json + model.safetensors) or a distillation run folder")


def novel_cameras(cfg: EvalConfig, views, size: int):
    """The novel-view cameras: (list of Camera, viewmats [C,4,4], Ks [C,3,3])."""
    from dd3g_sdk.cameras import orbit_camera, stack_intrinsics, stack_viewmats

    n = cfg.novel_azimuths
    cams = [orbit_camera(180.0 / n + 360.0 * a / n, el, views.radius, views.fov_deg, size, size)
            for el in cfg.novel_elevations for a in range(n)]
    return cams, stack_viewmats(cams), stack_intrinsics(cams)


# ---- evaluation ---------------------------------------------------------------------------------------------

class EvalSet:
    """The held-out inputs and references, computed once and shared by every model evaluated on them.

    Per object (batches of `cfg.batch_size`): image [b,3,S,S] (the view-0 render, PEPD's and the teacher's
    input), noise [b,V,3,h,w], ground truth at the novel cameras (gt_novel [b,C,3,R,R], cov_novel [b,C,1,R,R])
    and at the teacher's cameras (gt_teacher [b,V,3,h,w], depth_teacher [b,V,h,w]: camera z, 0 off the object),
    and the teacher's output oi [b,V,3,h,w] when a teacher is given.
    """

    def __init__(self, cfg: EvalConfig, views, image_size: int, noise_shape, teacher=None, device=None,
                 progress: bool = True):
        import torch
        from tqdm.auto import tqdm

        from dd3g_sdk.cameras import stack_intrinsics, stack_viewmats
        from dd3g_sdk.noise import draw_noise

        from .quadruples import render_ground_truth, render_input, to_u8
        from .train import freeze_teacher

        self.cfg, self.views, self.image_size = cfg, views, image_size
        self.noise_shape = tuple(int(v) for v in noise_shape)
        h = self.noise_shape[-1]
        dev = self.device = torch.device(device or "cpu")
        if teacher is not None:
            teacher = freeze_teacher(teacher, dev)
            if tuple(teacher.sample_shape) != self.noise_shape:
                raise InputError(None, f"teacher samples {list(teacher.sample_shape)} but the model reads noise "
                                       f"{list(self.noise_shape)}")
        R = cfg.render_size
        _, self.vm_n, self.K_n = novel_cameras(cfg, views, R)
        tcams = views.cameras(h, h)
        self.vm_t, self.K_t = stack_viewmats(tcams), stack_intrinsics(tcams)
        self.indices = list(range(cfg.first_index, cfg.first_index + cfg.num_objects))
        self.batches: list[dict] = []
        t0 = time.perf_counter()
        for a in tqdm(range(0, len(self.indices), cfg.batch_size), desc="evaluation set", unit="batch",
                      disable=not progress):
            idx = self.indices[a:a + cfg.batch_size]
            img_np = render_input(cfg.split, idx, image_size, cfg.input_render_size,
                                  views.cameras(image_size, image_size)[0], dev)
            b = {"index": idx,
                 "image": torch.from_numpy(to_u8(img_np).astype(np.float32) / 255).to(dev),  # 8 bits, as a user's
                 "noise": torch.from_numpy(np.stack([draw_noise(cfg.seed_offset + k, self.noise_shape)
                                                     for k in idx])).to(dev)}
            if cfg.samples > 1:  # [b, K-1, V, 3, h, w]: the other noises of each object
                b["more_noise"] = torch.from_numpy(np.stack([np.stack([
                    draw_noise(cfg.seed_offset + k + j * SAMPLE_SEED_STRIDE, self.noise_shape)
                    for j in range(1, cfg.samples)]) for k in idx])).to(dev)
            gt, cov, _ = render_ground_truth(cfg.split, idx, self.vm_n, self.K_n, R, cfg.supersample, dev)
            b["gt_novel"], b["cov_novel"] = torch.from_numpy(gt).to(dev), torch.from_numpy(cov).to(dev)
            gt_t, _, depth_t = render_ground_truth(cfg.split, idx, self.vm_t, self.K_t, h, cfg.supersample, dev)
            b["gt_teacher"], b["depth_teacher"] = torch.from_numpy(gt_t).to(dev), torch.from_numpy(depth_t).to(dev)
            if teacher is not None:
                with torch.no_grad():  # the teacher reads the same 8-bit view-0 render as the student
                    b["oi"] = teacher.ode(b["noise"], teacher.condition(b["image"]),
                                          steps=cfg.ode_steps).float().clamp(0, 1)
            self.batches.append(b)
        self.seconds = time.perf_counter() - t0


def depth_agreement(z, gt) -> tuple[float, float]:
    """(mean |z - gt|, Pearson correlation) over the pixels where gt > 0; NaN where undefined (no object pixel,
    or a constant map). z, gt: tensors of one shape (camera depths, world units)."""
    on = gt > 0
    if int(on.sum()) < 2:
        return float("nan"), float("nan")
    a, b = z[on].double(), gt[on].double()
    err = float((a - b).abs().mean())
    a, b = a - a.mean(), b - b.mean()
    den = float(a.norm() * b.norm())
    return err, float((a * b).sum()) / den if den > 0 else float("nan")


def other_views_share(opacities, views: int):  # opacities [B, N] -> [B]
    """Share of the total opacity held by the Gaussians of source views 1..V-1 (N in view-major order).

    (V-1)/V when every view contributes alike; near 0 when the model has collapsed onto view 0, the one that sees
    the input (docs/distill.md, "16,384 objects")."""
    per_view = opacities.float().reshape(opacities.shape[0], views, -1).sum(-1)  # [B, V]
    return per_view[:, 1:].sum(1) / per_view.sum(1).clamp_min(1e-12)


def evaluate_model(model, es: EvalSet) -> dict:
    """Metrics of `model` (a PEPD) on the evaluation set `es` (see the module docstring)."""
    import torch

    from .losses import gaussian_depth
    from .metrics import iou, psnr, sample_scores, ssim
    from .train import render_batch

    dev = es.device
    model = model.to(dev).eval()
    mc = model.config
    if tuple(model.noise_shape) != es.noise_shape or mc.image_size != es.image_size:
        raise InputError(None, "the model's input sizes differ from the evaluation set's")
    R, h = es.cfg.render_size, es.noise_shape[-1]
    vm_n, K_n = torch.from_numpy(es.vm_n).to(dev), torch.from_numpy(es.K_n).to(dev)
    vm_t, K_t = torch.from_numpy(es.vm_t).to(dev), torch.from_numpy(es.K_t).to(dev)
    per: dict[str, list[float]] = {k: [] for k in ("novel_psnr", "novel_ssim", "novel_iou", "student_vs_teacher_psnr",
                                                   "student_vs_teacher_ssim", "student_vs_gt_teacher_views_psnr",
                                                   "student_vs_gt_input_view_psnr",
                                                   "teacher_vs_gt_psnr", "gaussian_depth_error",
                                                   "gaussian_depth_corr", "other_views_opacity_share")}
    for b in es.batches:
        n = len(b["index"])
        with torch.no_grad():
            g = model(b["image"], b["noise"])
            rgb, alpha = render_batch(g, vm_n.expand(n, -1, -1, -1), K_n.expand(n, -1, -1, -1), R, R)
            per["novel_psnr"] += psnr(rgb, b["gt_novel"]).mean(1).tolist()
            per["novel_ssim"] += ssim(rgb, b["gt_novel"]).mean(1).tolist()
            per["novel_iou"] += iou(alpha[:, :, 0] > 0.5, b["cov_novel"][:, :, 0] >= 0.5).mean(1).tolist()
            rgb_t, _ = render_batch(g, vm_t.expand(n, -1, -1, -1), K_t.expand(n, -1, -1, -1), h, h)
            per_view = psnr(rgb_t, b["gt_teacher"])  # [n, V]; view 0 is the input view
            per["student_vs_gt_teacher_views_psnr"] += per_view.mean(1).tolist()
            per["student_vs_gt_input_view_psnr"] += per_view[:, 0].tolist()
            z = gaussian_depth(g["means"], vm_t.expand(n, -1, -1, -1), (h, h)).mean(-1)  # [n, V, h, h]
            for zi, di in zip(z, b["depth_teacher"]):
                err, corr = depth_agreement(zi, di)
                per["gaussian_depth_error"].append(err)
                per["gaussian_depth_corr"].append(corr)
            per["other_views_opacity_share"] += other_views_share(g["opacities"], mc.num_views).tolist()
            if "more_noise" in b:
                views = [rgb]
                for j in range(b["more_noise"].shape[1]):
                    gj = model(b["image"], b["more_noise"][:, j])
                    views.append(render_batch(gj, vm_n.expand(n, -1, -1, -1), K_n.expand(n, -1, -1, -1), R, R)[0])
                for name, v in sample_scores(torch.stack(views, 1), b["gt_novel"]).items():
                    per.setdefault(f"novel_{name}", []).extend(v.tolist())
            if "oi" in b:
                per["student_vs_teacher_psnr"] += psnr(rgb_t, b["oi"]).mean(1).tolist()
                per["student_vs_teacher_ssim"] += ssim(rgb_t, b["oi"]).mean(1).tolist()
                per["teacher_vs_gt_psnr"] += psnr(b["oi"], b["gt_teacher"]).mean(1).tolist()
    timing = time_inference(model, dev, es.cfg.timing_runs)
    return {
        "num_objects": len(es.indices), "split": es.cfg.split,
        "metrics": aggregate(per), "inference": timing,
        "per_object": {k: [round(x, 4) for x in v] for k, v in per.items() if v},
        "eval_config": to_dict(es.cfg), "model_config": to_dict(mc), "environment": environment(dev),
    }


def evaluate(checkpoint: str | os.PathLike, cfg: EvalConfig = EvalConfig(), teacher=None, device=None,
             progress: bool = True) -> dict:
    """Load a checkpoint (PEPD folder or run folder) and evaluate it on `cfg` (see the module docstring)."""
    from dd3g_sdk.model import PEPD

    from .train import pick_device

    dev = pick_device(device)
    ck = resolve_checkpoint(checkpoint)
    model = PEPD.from_pretrained(ck)
    teacher = teacher if cfg.teacher_gap else None
    es = EvalSet(cfg, model.config.views, model.config.image_size, model.noise_shape, teacher, dev, progress)
    res = evaluate_model(model, es)
    return {"checkpoint": str(ck), **res}


def time_inference(model, dev, runs: int = 20) -> dict:
    """Median wall time of one forward pass (batch 1), synchronised, after 3 warm-up passes."""
    import torch

    img = torch.rand(1, *model.image_shape, device=dev)
    noise = torch.randn(1, *model.noise_shape, device=dev)
    times = []
    with torch.no_grad():
        for i in range(runs + 3):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            model(img, noise)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i >= 3:
                times.append(time.perf_counter() - t0)
    return {"median_ms": round(1e3 * statistics.median(times), 3), "min_ms": round(1e3 * min(times), 3),
            "runs": runs, "batch": 1, "device": str(dev), "dtype": str(model.dtype).replace("torch.", "")}


def environment(dev) -> dict:
    import datetime

    import torch

    env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "torch": torch.__version__, "python": platform.python_version(), "device": str(dev)}
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
        env["cuda"] = torch.version.cuda
    else:
        env["cpu"] = platform.processor() or platform.machine()
    return env


# ---- pictures -----------------------------------------------------------------------------------------------

def turntable_picture(model, split: str, indices: Sequence[int], path: str | os.PathLike, seed_offset: int = 0,
                      views: int = 8, size: int = 96, input_render_size: int = 256, device=None,
                      images: Sequence[np.ndarray] | None = None, seeds: Sequence[int] | None = None) -> Path:
    """A PNG with two rows per object: [input | `views` turntable renders of the Gaussians] and
    [blank | the same cameras rendered from the ground truth]. `images` ([S,S,3] 0..1) replaces the world's
    inputs (then `indices` only names the noise seeds and there is no ground-truth row). `seeds` gives each row's
    noise seed (default `seed_offset + index`); repeating an index with several seeds shows that many samples of
    one object above a single ground-truth row."""
    import torch
    from PIL import Image

    from dd3g_sdk.cameras import stack_intrinsics, stack_viewmats, turntable
    from dd3g_sdk.noise import draw_noise

    from .quadruples import render_ground_truth, render_input, to_u8
    from .train import render_batch

    dev = torch.device(device or "cpu")
    model = model.to(dev).eval()
    mc = model.config
    cams = turntable(views, mc.views.elevation_deg, mc.views.radius, mc.views.fov_deg, size, size)
    vm, K = stack_viewmats(cams), stack_intrinsics(cams)
    if images is None:
        img_np = render_input(split, indices, mc.image_size, input_render_size, mc.views.cameras(64, 64)[0], dev)
    else:
        img_np = np.stack([np.asarray(x, np.float32).transpose(2, 0, 1) for x in images])
    img = torch.from_numpy(to_u8(img_np).astype(np.float32) / 255).to(dev)
    if seeds is not None and len(seeds) != len(indices):
        raise ValueError(f"got {len(indices)} indices but {len(seeds)} seeds")
    seeds = [seed_offset + int(k) for k in indices] if seeds is None else [int(x) for x in seeds]
    noise = torch.from_numpy(np.stack([draw_noise(k, tuple(model.noise_shape)) for k in seeds])).to(dev)
    b = len(indices)
    with torch.no_grad():
        rgb, _ = render_batch(model(img, noise), torch.from_numpy(vm).to(dev).expand(b, -1, -1, -1),
                              torch.from_numpy(K).to(dev).expand(b, -1, -1, -1), size, size)
    rgb = rgb.clamp(0, 1).cpu().numpy()  # [B, C, 3, H, W]
    gt = render_ground_truth(split, indices, vm, K, size, 2, dev)[0] if images is None else None
    rows = []
    for i in range(b):
        inp = np.asarray(Image.fromarray(to_u8(img_np[i].transpose(1, 2, 0))).resize((size, size), Image.NEAREST))
        rows.append(np.concatenate([inp] + [to_u8(v.transpose(1, 2, 0)) for v in rgb[i]], 1))
        if gt is not None and (i == b - 1 or indices[i + 1] != indices[i]):  # after an object's last sample
            blank = np.full((size, size, 3), 255, np.uint8)
            rows.append(np.concatenate([blank] + [to_u8(v.transpose(1, 2, 0)) for v in gt[i]], 1))
    grid = np.concatenate(rows, 0)
    p = Path(path)
    with atomic_write(p) as f:
        Image.fromarray(grid).save(f, format="PNG")
    return p


# ---- reporting ----------------------------------------------------------------------------------------------

TABLE_COLUMNS = (("novel_psnr", "PSNR novel"), ("novel_ssim", "SSIM novel"), ("novel_iou", "IoU novel"),
                 ("student_vs_teacher_psnr", "vs teacher PSNR"), ("student_vs_gt_teacher_views_psnr",
                                                                  "teacher views vs GT PSNR"),
                 ("gaussian_depth_corr", "Gaussian depth corr"),
                 ("other_views_opacity_share", "views 1+ opacity share"))
SAMPLE_COLUMNS = (("novel_energy", "energy score novel"), ("novel_spread", "spread novel"),
                  ("novel_calibration", "calibration novel"))  # shown when evaluated with samples >= 2


def format_table(rows: dict[str, dict]) -> str:
    """Markdown table of {model name: evaluate() result}."""
    cols = TABLE_COLUMNS + (SAMPLE_COLUMNS if any("novel_energy" in r["metrics"] for r in rows.values()) else ())
    head = "| model | " + " | ".join(t for _, t in cols) + " | inference ms |"
    lines = [head, "|" + "---|" * (len(cols) + 2)]
    for name, res in rows.items():
        m = res["metrics"]
        cells = [f"{m[k]:.3f}" if k in m and math.isfinite(m[k]) else "-" for k, _ in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {res['inference']['median_ms']:.2f} |")
    return "\n".join(lines)


def write_result(result: dict, path: str | os.PathLike) -> Path:
    return atomic_write_text(path, json.dumps(result, indent=2) + "\n")
