"""Shared by the distillation tests: a random tiny teacher and its quadruples, made once per session."""
from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "distill_tiny.json"


def tiny_setup(tmp_path_factory):
    """A random tiny teacher (saved) and its quadruples, made once per test session."""
    from dd3g_distill.quadruples import generate_quadruples
    from dd3g_distill.teacher import DiffusersMVTeacher
    from dd3g_distill.train import load_distill_config, model_config

    base = tmp_path_factory.getbasetemp() / "dd3g-distill-tiny"
    cfg = load_distill_config(CONFIG)
    if not (base / "data" / "manifest.json").is_file():
        teacher = DiffusersMVTeacher.from_unet_config(model_config(cfg).unet, seed=0).eval()
        teacher.save_pretrained(base / "teacher", dtype=None)
        generate_quadruples(cfg.quadruples, base / "data", teacher, progress=False)
    return base / "teacher", base / "data"


def ssim_loops(x: np.ndarray, y: np.ndarray, win: int = 11, sigma: float = 1.5) -> float:
    """Reference twin of the SSIM kernels (losses.ssim, metrics.ssim): explicit loops over channels and
    'valid' window positions, float64, averaged over channels and windows. x, y: [C, H, W]."""
    g = np.exp(-((np.arange(win) - (win - 1) / 2) ** 2) / (2 * sigma ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    vals = []
    for c in range(x.shape[0]):
        for i in range(x.shape[1] - win + 1):
            for j in range(x.shape[2] - win + 1):
                px, py = x[c, i:i + win, j:j + win], y[c, i:i + win, j:j + win]
                mx, my = (w * px).sum(), (w * py).sum()
                vx, vy = (w * px * px).sum() - mx * mx, (w * py * py).sum() - my * my
                cxy = (w * px * py).sum() - mx * my
                vals.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


def loss_before_after(trainer, steps: int) -> tuple[float, float]:
    """A teacher trainer's loss on the batch of step 0, before and after `steps` training steps on that batch."""
    import torch

    batch = trainer.batch_for_step(0)
    with torch.no_grad():
        before = float(trainer.loss(batch))
    for _ in range(steps):
        trainer.train_step(batch)
    with torch.no_grad():
        after = float(trainer.loss(batch))
    return before, after


def ode_inputs(teacher, seed: int = 1):
    """A teacher's condition for a random 32x32 image and two different initial noises (one object each)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    cond = teacher.condition(torch.rand(1, 3, 32, 32, generator=g))
    n1 = torch.randn(1, *teacher.sample_shape, generator=g)
    n2 = torch.randn(1, *teacher.sample_shape, generator=g)
    return cond, n1, n2
