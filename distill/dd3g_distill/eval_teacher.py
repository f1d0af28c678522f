"""Measure a multi-view teacher on held-out procedural objects: fidelity, silhouettes, multi-view consistency.

    python -m dd3g_distill.eval_teacher --teacher distill/dd3g_distill/teachers/procworld-mv64 \
        --count 64 --steps 50 --guidance 1,2 --json benchmarks/results/teacher_procworld.json \
        --grid benchmarks/results/teacher_procworld.png

For test-split objects 0..count-1: the ground truth is the V views of the teacher's view set rendered by
the procedural world (the same renderer, resolution and supersampling as the training data); the condition
is ground-truth view 0 (the input view); the initial noise of object k is `draw_noise(k, sample_shape)`.
The teacher's DDIM output (`ode`, eta = 0) is compared with the ground truth:

- psnr / ssim: per view, averaged; `*_input_view` = view 0 (reconstruction of the condition),
  `*_novel_views` = views 1..V-1 (generation);
- silhouette_iou: the teacher's foreground (min over RGB < 0.9 on the white background) against the
  ground-truth mask, novel views;
- consistency_psnr: `metrics.warp_consistency` with ground-truth depth: each view is warped into its
  neighbours (both directions) through the ground-truth geometry and compared on co-visible pixels, PSNR
  averaged over pairs weighted by co-visible pixel count. The same number for the ground-truth images is
  the ceiling of this measure (texture resampling and silhouette blending keep it finite); a teacher whose
  views drift from each other or from the true geometry scores lower.
- with `--samples K` (K >= 2): K noises per object (seeds k + j * SAMPLE_SEED_STRIDE, j = 0..K-1; j = 0 is the
  run above) and `metrics.sample_scores` over the novel views: energy score (RMS units, lower is better; proper,
  so a sampler and a mean are compared fairly), error, spread, calibration (1 = the ground truth looks like one
  more sample), PSNR of the samples' mean and mean PSNR of the samples; the baselines get the same scores
  (deterministic: energy = error);
- baselines on the same objects: `white` (predict an empty white image for every view) and `copy_input`
  (predict the input image for every view): a useful teacher beats both on the novel views.

Writes a JSON of the numbers (with the GPU, torch/CUDA versions and date) and a grid PNG whose rows are
input | teacher views 0..V-1 | ground-truth views 0..V-1.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dd3g_sdk._fileio import atomic_write, atomic_write_text
from dd3g_sdk.errors import InputError
from dd3g_sdk.noise import draw_noise

from .data.world import RenderConfig, composite_white, object_spec, render_views, view_set_tensors
from .evaluate import SAMPLE_SEED_STRIDE, aggregate
from .metrics import iou, psnr, sample_scores, ssim, warp_consistency
from .teacher import load_teacher_folder

FG_THRESHOLD = 0.9  # a pixel is foreground when its darkest channel is below this (white background)


def ground_truth(count: int, size: int, teacher, split: str = "test", supersample: int = 2, device="cpu",
                 chunk: int = 64) -> dict:
    """Ground-truth views [N, V, 3, h, w] (white background), depth [N, V, h, w], mask [N, V, h, w]."""
    views, depth, mask = [], [], []
    vs = teacher.config.views
    for i in range(0, count, chunk):
        specs = [object_spec(split, k) for k in range(i, min(i + chunk, count))]
        r = render_views(specs, size, vs, RenderConfig(supersample=supersample), device)
        # the same 8-bit quantisation as the training cache
        views.append(torch.round(composite_white(r.rgba).clamp(0, 1) * 255) / 255)
        depth.append(r.depth)
        mask.append(r.mask)
    return {"views": torch.cat(views), "depth": torch.cat(depth), "mask": torch.cat(mask)}


@torch.no_grad()
def sample_teacher(teacher, cond_images: torch.Tensor, seeds: Sequence[int], steps: int, guidance_scale: float,
                   batch: int = 32) -> torch.Tensor:
    """cond_images [N, 3, S, S] 0..1 -> teacher views [N, V, 3, h, w] 0..1 (noise of item i: draw_noise(seeds[i]))."""
    out = []
    for i in range(0, len(seeds), batch):
        noise = torch.from_numpy(np.stack([draw_noise(s, teacher.sample_shape) for s in seeds[i:i + batch]]))
        cond = teacher.condition(cond_images[i:i + batch].to(teacher.device))
        out.append(teacher.ode(noise.to(teacher.device), cond, steps=steps, guidance_scale=guidance_scale).float().cpu())
    return torch.cat(out)


def _consistency(images: torch.Tensor, depth: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor) -> float:
    """Mean over objects of the co-visibility-weighted warp PSNR (see module docstring)."""
    vals = []
    for n in range(images.shape[0]):
        p, cnt = warp_consistency(images[n].double(), depth[n], viewmats, Ks)
        ok = torch.isfinite(p) & (cnt > 0)
        if ok.any():
            vals.append(float((p[ok] * cnt[ok]).sum() / cnt[ok].sum()))
    return float(np.mean(vals)) if vals else math.nan


def score(pred: torch.Tensor, gt: dict, viewmats: torch.Tensor, Ks: torch.Tensor) -> dict:
    """Metrics of predicted views [N, V, 3, h, w] against the ground truth (means over objects)."""
    views, mask = gt["views"], gt["mask"]
    p = psnr(pred, views)  # [N, V]
    s = ssim(pred, views)
    fg = pred.amin(2) < FG_THRESHOLD
    finite = lambda x: float(x[torch.isfinite(x)].mean()) if torch.isfinite(x).any() else math.inf  # noqa: E731
    return {
        "psnr": finite(p), "psnr_input_view": finite(p[:, 0]), "psnr_novel_views": finite(p[:, 1:]),
        "ssim": float(s.mean()), "ssim_input_view": float(s[:, 0].mean()), "ssim_novel_views": float(s[:, 1:].mean()),
        "silhouette_iou_novel_views": float(iou(fg[:, 1:], mask[:, 1:]).mean()),
        "consistency_psnr": _consistency(pred, gt["depth"], viewmats, Ks),
    }


def sample_summary(samples: torch.Tensor, gt_views: torch.Tensor) -> dict:
    """samples [N, K, V, 3, h, w], gt_views [N, V, 3, h, w] -> `metrics.sample_scores` over the novel views
    (1..V-1), summarised over objects by `evaluate.aggregate`."""
    sc = sample_scores(samples[:, :, 1:], gt_views[:, 1:])
    return {"samples": int(samples.shape[1]), **aggregate({k: v.tolist() for k, v in sc.items()})}


def grid_image(cond: torch.Tensor, pred: torch.Tensor, gt: torch.Tensor, rows: int = 8, scale: int = 2,
               gap: int = 2) -> np.ndarray:
    """Rows of input | teacher views | ground-truth views, uint8 [H, W, 3] (white gaps, a grey bar between groups)."""
    rows = min(rows, pred.shape[0])
    v, _, h, w = pred.shape[1:]
    tiles_per_row = 1 + 2 * v
    bar = 4
    width = tiles_per_row * w + (tiles_per_row - 1) * gap + 2 * bar
    img = np.ones((rows * h + (rows - 1) * gap, width, 3), np.float32)
    for r in range(rows):
        y = r * (h + gap)
        tiles = [cond[r]] + list(pred[r]) + list(gt[r])
        x = 0
        for i, t in enumerate(tiles):
            img[y:y + h, x:x + w] = t.permute(1, 2, 0).clamp(0, 1).numpy()
            x += w + gap
            if i in (0, v):  # a grey bar after the input and after the teacher's views
                img[y:y + h, x - gap:x - gap + bar] = 0.6
                x += bar
    img = (img * 255 + 0.5).astype(np.uint8)
    return np.repeat(np.repeat(img, scale, 0), scale, 1)


def evaluate(teacher, count: int = 32, steps: int = 50, guidance_scales: Sequence[float] = (1.0,),
             split: str = "test", supersample: int = 2, batch: int = 32, grid_rows: int = 8,
             samples: int = 1) -> tuple[dict, dict]:
    """Returns (results dict, {guidance: grid uint8 image}). `samples` >= 2 adds the sample scores."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    size = teacher.config.resolution
    gt = ground_truth(count, size, teacher, split, supersample, teacher.device)
    gt = {k: v.cpu() for k, v in gt.items()}
    vm, K, _ = view_set_tensors(teacher.config.views, size)
    vm, K = torch.from_numpy(vm).double(), torch.from_numpy(K).double()
    cond = gt["views"][:, 0]
    results: dict = {"ground_truth": {"consistency_psnr": _consistency(gt["views"], gt["depth"], vm, K)}}
    white = torch.ones_like(gt["views"])
    copy_in = cond[:, None].expand_as(gt["views"]).contiguous()
    results["baseline_white"] = score(white, gt, vm, K)
    results["baseline_copy_input"] = score(copy_in, gt, vm, K)
    if samples > 1:
        results["baseline_white"]["sample_scores"] = sample_summary(white[:, None], gt["views"])
        results["baseline_copy_input"]["sample_scores"] = sample_summary(copy_in[:, None], gt["views"])
    grids = {}
    for g in guidance_scales:
        t0 = time.time()
        pred = sample_teacher(teacher, cond, list(range(count)), steps, g, batch)
        sample_s = time.time() - t0
        r = score(pred, gt, vm, K)
        r["sample_seconds"] = round(sample_s, 2)
        # determinism: the first objects again, same noise -> same views
        again = sample_teacher(teacher, cond[:2], [0, 1], steps, g, batch)
        r["rerun_max_abs_diff"] = float((again - pred[:2]).abs().max())
        if samples > 1:
            t0 = time.time()
            more = [sample_teacher(teacher, cond, [k + j * SAMPLE_SEED_STRIDE for k in range(count)], steps, g, batch)
                    for j in range(1, samples)]
            r["sample_scores"] = sample_summary(torch.stack([pred, *more], 1), gt["views"])
            r["sample_scores"]["seconds"] = round(time.time() - t0, 2)
        results[f"teacher_guidance_{g:g}"] = r
        grids[g] = grid_image(cond, pred, gt["views"], grid_rows)
    return results, grids


def _json_safe(x):
    """nan / inf -> None (strict JSON: an undefined metric is null, e.g. PSNR of identical images)."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _device_info(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%d")}
    info["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return info


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dd3g_distill.eval_teacher", description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", required=True, help="teacher folder (unet/, scheduler/, image_encoder/, teacher.json)")
    ap.add_argument("--count", type=int, default=32)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", default="1", help="comma-separated guidance scales; the grid uses the first")
    ap.add_argument("--split", default="test")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--grid", default=None, help="grid PNG of the first guidance scale (others: NAME_g<scale>.png)")
    ap.add_argument("--grid-rows", type=int, default=8)
    ap.add_argument("--samples", type=int, default=1, help="noises per object for the sample scores (>= 2: on)")
    args = ap.parse_args(argv)
    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            scales = [float(x) for x in args.guidance.split(",")]
        except ValueError:
            raise InputError(None, f"--guidance must be comma-separated numbers, got {args.guidance!r}") from None
        if args.samples < 1:
            raise InputError(None, f"--samples must be >= 1, got {args.samples}")
        teacher = load_teacher_folder(args.teacher, device)
        results, grids = evaluate(teacher, args.count, args.steps, scales, args.split, batch=args.batch,
                                  grid_rows=args.grid_rows, samples=args.samples)
        training = Path(args.teacher) / "training.json"
        doc = {"teacher": str(args.teacher), **_device_info(device), "split": args.split, "count": args.count,
               "ddim_steps": args.steps, "samples": args.samples, "guidance_scales": scales, "grid_guidance": scales[0],
               "fg_threshold": FG_THRESHOLD, "results": results,
               "training": json.loads(training.read_text()) if training.is_file() else None}
        if args.json:
            atomic_write_text(args.json, json.dumps(_json_safe(doc), indent=2, allow_nan=False) + "\n")
        if args.grid:
            from PIL import Image

            grid = Path(args.grid)
            for i, g in enumerate(scales):  # the first scale at --grid, the others beside it (name_g<scale>.png)
                path = grid if i == 0 else grid.with_name(f"{grid.stem}_g{g:g}{grid.suffix}")
                with atomic_write(path) as f:
                    Image.fromarray(grids[g]).save(f, format="PNG")
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    keys = ["psnr_input_view", "psnr_novel_views", "ssim_novel_views", "silhouette_iou_novel_views",
            "consistency_psnr"]
    print(f"{'':28s}" + "".join(f"{k[:18]:>20s}" for k in keys))
    for name, r in results.items():
        print(f"{name:28s}" + "".join(f"{r.get(k, float('nan')):20.4f}" for k in keys))
    for name, r in results.items():
        if "sample_scores" in r:
            print(f"{name:28s} sample scores (novel views): " + ", ".join(
                f"{k} {v:.4f}" for k, v in r["sample_scores"].items() if k not in ("samples", "seconds")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
