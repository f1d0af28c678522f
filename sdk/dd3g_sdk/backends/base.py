"""The small interface every runtime backend implements, and the choice of backend for a path."""
from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cameras import ViewSetConfig
from ..errors import InputError

log = logging.getLogger("dd3g_sdk")

OUTPUT_NAMES = ("means", "scales", "quats", "opacities", "sh")


@dataclass(frozen=True)
class ModelInfo:
    """What a caller needs to feed a model and read its output, whatever the backend."""
    image_size: int  # the square input image side, pixels
    noise_shape: tuple[int, int, int, int]  # (V, 3, h, w): the teacher's initial noise for one image
    num_gaussians: int  # N per image
    sh_degree: int
    views: ViewSetConfig  # the cameras the model predicts for (view 0 = the input view)
    config: dict  # the full model config (JSON form)
    source: str  # where it was loaded from
    precision: str  # "fp32", "fp16" or "bf16"


class Backend(ABC):
    """Runs PEPD: (image, noise) -> activated Gaussian attributes, on numpy arrays."""

    name: str = "?"

    @property
    @abstractmethod
    def info(self) -> ModelInfo: ...

    @abstractmethod
    def run(self, image: np.ndarray, noise: np.ndarray) -> dict[str, np.ndarray]:
        """image [B, 3, S, S] float32 0..1, noise [B, V, 3, h, w] float32 ->
        dict(means [B,N,3], scales [B,N,3], quats [B,N,4], opacities [B,N], sh [B,N,K,3]) float32."""

    def __repr__(self) -> str:
        i = self.info
        return f"{type(self).__name__}({i.source}, {i.precision}, {i.num_gaussians} Gaussians)"


def _kind(path: Path) -> str:
    if path.is_dir():
        return "torch"
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnxruntime"
    if suffix in (".engine", ".plan", ".trt"):
        return "tensorrt"
    if suffix == ".safetensors":
        return "torch"
    raise InputError(path, "unknown model file type (expected a checkpoint folder, .onnx or .engine)")


def open_backend(path: str | os.PathLike, backend: str = "auto", device: str | None = None,
                 precision: str | None = None) -> Backend:
    """Open the model at `path` with `backend` ("auto", "torch", "onnxruntime", "tensorrt")."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, "model not found")
    kind = _kind(p)
    if p.suffix.lower() == ".safetensors":
        p = p.parent
    if backend not in ("auto", "torch", "onnxruntime", "tensorrt"):
        raise ValueError(f"unknown backend {backend!r}: use auto, torch, onnxruntime or tensorrt")
    if backend != "auto" and backend != kind:
        raise InputError(p, f"a {kind} model cannot run on the {backend} backend (export it first: dd3g export)")
    if kind == "torch":
        from .torch_backend import TorchBackend

        b: Backend = TorchBackend(p, device=device, precision=precision)
    elif kind == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend

        b = OnnxRuntimeBackend(p, device=device)
    else:
        from .tensorrt_backend import TensorRTBackend

        b = TensorRTBackend(p)
    log.info("dd3g: %s backend for %s", b.name, p)
    return b
