"""Data for distillation: the procedural object world and folders of input images.

`ImageFolder(folder, cfg)` is the distillation input: any folder of images (RGBA PNGs from a background
remover, or `python -m dd3g_distill.data.world --split train --count N --out DIR`), each loaded with
`dd3g_sdk.preprocess.load_image(path, cfg)` -> float32 [S, S, 3] in 0..1 on white.

Note on framing: `load_image` crops RGBA images to their alpha bounding box and re-centres them at the given
`PreprocessConfig` fill (for a PEPD model: `PreprocessConfig.framing(cfg.image_size, cfg.input_fill)`). The
world's quadruples do not go through it: their input is the view-0 render at the camera's own framing, which
the ground truth shares (dd3g_distill.quadruples).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dd3g_sdk.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class ImageFolder:
    """The images of `folder` (sorted by name, not recursive), loaded on access with `load_image`."""

    def __init__(self, folder: str | os.PathLike, cfg=None):
        from dd3g_sdk.preprocess import PreprocessConfig

        self.root = Path(folder)
        if not self.root.is_dir():
            raise InputError(self.root, "image folder not found")
        self.cfg = cfg if cfg is not None else PreprocessConfig()
        self.paths = sorted(p for p in self.root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise InputError(self.root, f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:  # [S, S, 3] float32 0..1
        from dd3g_sdk.preprocess import load_image

        return load_image(self.paths[i], self.cfg)


__all__ = ["ImageFolder", "IMAGE_SUFFIXES"]
