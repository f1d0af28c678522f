"""antimatter15 `.splat` files (the compact format of the antimatter15/splat WebGL viewer).

No header; 32 bytes per Gaussian, little-endian:

    position  float32 x 3   world units
    scale     float32 x 3   linear standard deviations (not log)
    colour    uint8 x 4     R, G, B from the DC term (0.5 + C0 * sh[:, 0]), A = opacity, each round(v * 255)
    rotation  uint8 x 4     (w, x, y, z) of the unit quaternion, each round(q * 128 + 128) clipped to 0..255

Gaussians are sorted by scale volume x opacity, largest first (the sort key of the viewer's own converter,
-exp(scale_0 + scale_1 + scale_2) * sigmoid(opacity)), so a viewer that streams the file shows the big,
opaque ones first. Higher SH bands are dropped: the format has only a base colour.

Quantisation: positions and scales are exact float32; colour and opacity are within 0.5/255; quaternion
components within 1/256 before normalisation.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._fileio import atomic_write, existing_file
from ..errors import InputError
from ..gaussians import Gaussians, rgb_to_sh0, sh0_to_rgb

SPLAT_DTYPE = np.dtype([("position", "<f4", (3,)), ("scale", "<f4", (3,)), ("rgba", "u1", (4,)),
                        ("rot", "u1", (4,))])
assert SPLAT_DTYPE.itemsize == 32


def splat_order(g: Gaussians) -> np.ndarray:  # [N] int64
    """Indices that sort `g` by scale volume x opacity, descending (stable, so ties keep their order)."""
    key = -np.prod(g.scales.astype(np.float64), axis=1) * g.opacities.astype(np.float64)
    return np.argsort(key, kind="stable")


def splat_records(g: Gaussians) -> np.ndarray:  # [N] SPLAT_DTYPE, in `splat_order`
    g = g[splat_order(g)] if len(g) else g
    rec = np.empty(len(g), SPLAT_DTYPE)
    rec["position"] = g.means
    rec["scale"] = g.scales
    rgba = np.concatenate([sh0_to_rgb(g.sh[:, 0]), g.opacities[:, None]], axis=1)
    rec["rgba"] = np.clip(np.rint(rgba.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    rec["rot"] = np.clip(np.rint(g.quats.astype(np.float64) * 128.0 + 128.0), 0, 255).astype(np.uint8)
    return rec


def write_splat(g: Gaussians, path: str | os.PathLike) -> Path:
    """Write `g` as an antimatter15 .splat file, atomically (SH bands above 0 are dropped)."""
    g.validate()
    rec = splat_records(g)
    with atomic_write(path, "wb") as f:
        f.write(rec.tobytes())
    return Path(path)


def read_splat(path: str | os.PathLike) -> Gaussians:
    """Read an antimatter15 .splat file into `Gaussians` (SH degree 0, quaternions normalised)."""
    p = existing_file(path)
    size = p.stat().st_size
    if size % SPLAT_DTYPE.itemsize:
        raise InputError(p, f"not a .splat file: its size ({size} bytes) is not a multiple of "
                            f"{SPLAT_DTYPE.itemsize} bytes")
    rec = np.fromfile(p, dtype=SPLAT_DTYPE)
    if rec.size * SPLAT_DTYPE.itemsize != size:  # the file changed under us
        raise InputError(p, "could not read the whole file")
    q = (rec["rot"].astype(np.float64) - 128.0) / 128.0
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(norm > 0, q / np.where(norm > 0, norm, 1.0), np.array([1.0, 0.0, 0.0, 0.0]))
    rgba = rec["rgba"].astype(np.float32) / 255.0
    sh = rgb_to_sh0(rgba[:, :3])[:, None, :]
    try:
        return Gaussians(rec["position"].astype(np.float32), rec["scale"].astype(np.float32),
                         q.astype(np.float32), rgba[:, 3].copy(), sh)
    except ValueError as e:  # NaN/Inf positions, negative scales
        raise InputError(p, f"bad Gaussians: {e}") from None
