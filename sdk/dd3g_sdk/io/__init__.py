"""Reading and writing 3D Gaussians: INRIA 3DGS `.ply` and antimatter15 `.splat`.

    from dd3g_sdk.io import read_gaussians, write_gaussians, describe
    g = read_gaussians("object.ply")
    write_gaussians(g, "object.splat")          # format from the suffix
    write_gaussians(g, "object.ply", pad_sh_degree=3)
    print(describe(g))

All writes are atomic (a temporary file renamed over the target). Bad files raise
`dd3g_sdk.errors.InputError` naming the file and the problem.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..gaussians import Gaussians
from .ply import read_ply, write_ply
from .splat import read_splat, write_splat

__all__ = ["FORMATS", "describe", "read_gaussians", "read_ply", "read_splat", "write_gaussians", "write_ply",
           "write_splat"]

FORMATS = {".ply": "ply", ".splat": "splat"}  # suffix (lower case) -> format name


def _format_of(path: Path) -> str | None:
    return FORMATS.get(path.suffix.lower())


def read_gaussians(path: str | os.PathLike) -> Gaussians:
    """Read a `.ply` (3DGS) or `.splat` file; the suffix picks the reader (case-insensitive)."""
    p = Path(path)
    fmt = _format_of(p)
    if fmt is None:
        raise InputError(p, f"unknown Gaussians file type {p.suffix or '(no suffix)'!r}: expected .ply or .splat")
    if not p.exists():
        raise InputError(p, "file not found")
    if not p.is_file():
        raise InputError(p, "not a file")
    return read_ply(p) if fmt == "ply" else read_splat(p)


def write_gaussians(g: Gaussians, path: str | os.PathLike, format: str | None = None,
                    pad_sh_degree: int | None = None) -> Path:
    """Write `g` atomically as `format` ("ply" or "splat"; default: from the suffix of `path`).

    pad_sh_degree: PLY only, zero-pads the SH coefficients up to this degree (see `write_ply`).
    """
    p = Path(path)
    fmt = format.lower().lstrip(".") if format is not None else _format_of(p)
    if fmt not in ("ply", "splat"):
        what = f"format {format!r}" if format is not None else f"file type {p.suffix or '(no suffix)'!r}"
        raise InputError(p, f"cannot write Gaussians: unknown {what} (expected ply or splat)")
    if fmt == "splat":
        if pad_sh_degree is not None:
            raise ValueError("pad_sh_degree applies to PLY files only (.splat stores no SH bands)")
        return write_splat(g, p)
    return write_ply(g, p, pad_sh_degree=pad_sh_degree)


def _stats(x: np.ndarray) -> dict | None:
    if x.size == 0:
        return None
    return {"min": float(x.min()), "mean": float(x.mean(dtype=np.float64)), "median": float(np.median(x)),
            "max": float(x.max())}


def describe(g: Gaussians) -> dict:
    """A JSON-ready summary (for `dd3g info`): count, SH degree, bounds of the means, opacity and scale stats.

    Scale stats are over all N*3 linear standard deviations (world units); bounds and stats are None when N = 0.
    """
    lo, hi = g.bounds()
    return {
        "count": len(g),
        "sh_degree": g.sh_degree,
        "bounds": {"min": [float(v) for v in lo], "max": [float(v) for v in hi]} if len(g) else None,
        "opacity": _stats(g.opacities),
        "scale": _stats(g.scales),
    }
