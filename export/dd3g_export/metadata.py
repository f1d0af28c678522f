"""What an exported model carries about itself: ONNX `metadata_props` and the TensorRT engine sidecar JSON.

The key list and the torch-free readers live in `dd3g_sdk.onnx_meta` (the runtime must read them without this
package); this module builds the values from a PEPD model and writes the engine sidecar.

Engine sidecar: `<engine file>.json` beside the engine (stock TensorRT tools still read the engine itself):

    {"dd3g_engine_sidecar": 1,
     "metadata": {"dd3g.format": "1", ...},          # the same dd3g.* keys as the ONNX it was built from
     "tensorrt": {"flavour": "tensorrt-rtx" | "tensorrt-10" | "tensorrt-11", "module": ..., "version": ...,
                  "strongly_typed": bool, "precision": "fp32" | "fp16",
                  "build_gpu": {"name": ..., "compute_capability": "9.0"} | null,
                  "target_compute_capabilities": ["8.9", ...],   # GPUs the engine may run on
                  "hardware_compatible": false, "batch_profile": {"min": 1, "opt": 1, "max": 8} | null,
                  "workspace_bytes": int, "build_seconds": float},
     "engine": {"file": "model.engine", "bytes": int, "sha256": hex},
     "onnx": {"file": "model.onnx", "sha256": hex}}
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from dd3g_sdk import __version__
from dd3g_sdk._fileio import atomic_write_text
from dd3g_sdk.config import to_dict
from dd3g_sdk.onnx_meta import (CAMERA_CONVENTION, FORMAT_VERSION, PREFIX, dd3g_metadata, parse_metadata,
                                read_onnx_metadata)
from dd3g_sdk.backends.tensorrt_backend import SIDECAR_VERSION, read_engine_sidecar, sidecar_path

__all__ = ["build_metadata", "gaussian_layout", "input_layout", "read_engine_sidecar", "read_onnx_metadata",
           "parse_metadata", "sidecar_path", "write_engine_sidecar"]


def gaussian_layout(num_gaussians: int, sh_degree: int) -> dict[str, Any]:
    """The documented output layout (activated values, float32, batch first)."""
    n, k = num_gaussians, (sh_degree + 1) ** 2
    return {
        "means": {"shape": ["B", n, 3], "dtype": "float32", "units": "world; object fits [-0.5,0.5]^3"},
        "scales": {"shape": ["B", n, 3], "dtype": "float32", "units": "linear standard deviations, > 0"},
        "quats": {"shape": ["B", n, 4], "dtype": "float32", "units": "rotation (w, x, y, z), unit norm"},
        "opacities": {"shape": ["B", n], "dtype": "float32", "units": "0..1"},
        "sh": {"shape": ["B", n, k, 3], "dtype": "float32",
               "units": "3DGS real SH; colour = clamp(0.5 + SH(dir).sh, 0); sh[:,0]*C0 = DC"},
    }


def input_layout(image_size: int, noise_shape) -> dict[str, Any]:
    v, c, h, w = (int(x) for x in noise_shape)
    return {
        "image": {"shape": ["B", 3, image_size, image_size], "dtype": "float32",
                  "range": "0..1 RGB, channels first, white background, seen by view 0"},
        "noise": {"shape": ["B", v, c, h, w], "dtype": "float32",
                  "range": "standard normal: the teacher's initial noise (dd3g_sdk.noise.draw_noise(seed, ...))"},
    }


def build_metadata(model, *, precision: str, opset: int, dynamic_batch: bool) -> dict[str, str]:
    """The `metadata_props` of a PEPD model's ONNX export (prefixed keys, string values)."""
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be fp32 or fp16, got {precision!r}")
    cfg = model.config
    noise_shape = [int(x) for x in model.noise_shape]
    n, sh_degree, size = int(model.num_gaussians), int(cfg.sh_degree), int(cfg.image_size)
    values = {
        "format": FORMAT_VERSION,
        "model": "PEPD",
        "config": json.dumps(to_dict(cfg), sort_keys=True),
        "image_size": str(size),
        "noise_shape": json.dumps(noise_shape),
        "num_gaussians": str(n),
        "sh_degree": str(sh_degree),
        "views": json.dumps(to_dict(cfg.views), sort_keys=True),
        "gaussian_layout": json.dumps(gaussian_layout(n, sh_degree)),
        "inputs": json.dumps(input_layout(size, noise_shape)),
        "camera_convention": CAMERA_CONVENTION,
        "precision": precision,
        "dynamic_batch": "true" if dynamic_batch else "false",
        "opset": str(int(opset)),
        "sdk_version": __version__,
    }
    meta = {PREFIX + k: v for k, v in values.items()}
    parse_metadata(meta, "<export>")  # what we write must read back
    return meta


def write_engine_sidecar(engine_path: str | os.PathLike, metadata: Mapping[str, str], tensorrt: Mapping[str, Any],
                         engine_sha256: str, engine_bytes: int, onnx_path: str | os.PathLike | None = None,
                         onnx_sha256: str | None = None) -> Path:
    """Write `<engine>.json` atomically. `metadata` holds the ONNX's dd3g.* keys (prefixed)."""
    engine_path = Path(engine_path)
    doc = {
        "dd3g_engine_sidecar": SIDECAR_VERSION,
        "metadata": {PREFIX + k: v for k, v in dd3g_metadata(metadata).items()},
        "tensorrt": dict(tensorrt),
        "engine": {"file": engine_path.name, "bytes": int(engine_bytes), "sha256": engine_sha256},
        "onnx": {"file": Path(onnx_path).name if onnx_path else None, "sha256": onnx_sha256},
    }
    return atomic_write_text(sidecar_path(engine_path), json.dumps(doc, indent=2, sort_keys=True) + "\n")
