"""Gaussian rendering.

- `rasterize(...)`: the differentiable torch reference rasteriser (render/reference.py), gsplat-1.5.3 rules.
- `render(gaussians, cameras, background=(1, 1, 1)) -> RenderResult`: numpy in, numpy out, no gradients.
- `eval_sh` (render/sh.py): SH colour, numpy or torch.

This package imports without torch: `rasterize` and `render` load torch on first use.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .sh import eval_sh


@dataclass
class RenderResult:
    """Rendered views, numpy float32, one entry per camera.

    rgb   [C, H, W, 3] colour in 0..1 (composited over the background)
    alpha [C, H, W]    accumulated opacity 1 - T
    depth [C, H, W]    expected camera-space z of the visible surface (sum w_i z_i / max(alpha, 1e-10)),
                       in world units; 0 where nothing was hit
    """
    rgb: np.ndarray
    alpha: np.ndarray
    depth: np.ndarray


def __getattr__(name: str):
    if name in ("rasterize", "render"):
        from . import reference

        return getattr(reference, name)
    raise AttributeError(f"module 'dd3g_sdk.render' has no attribute {name!r}")


__all__ = ["RenderResult", "eval_sh", "rasterize", "render"]
