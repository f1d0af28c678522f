"""The seeded noise that PEPD and the teacher share.

A seed picks one of the many plausible objects for an image: PEPD reads the teacher's initial noise N, so
every backend and the quadruple generator must draw the same N for the same seed. numpy's Philox stream is
the same on every platform and needs no torch.
"""
from __future__ import annotations

import numpy as np


def draw_noise(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal float32 noise of `shape` for `seed` (any non-negative int)."""
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.Generator(np.random.Philox(int(seed))).standard_normal(shape, dtype=np.float32)
