"""Shared by the distillation tests: a random tiny teacher and its quadruples, made once per session."""
from __future__ import annotations

from pathlib import Path

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
