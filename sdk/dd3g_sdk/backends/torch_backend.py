"""PEPD on PyTorch (CPU or CUDA), from a checkpoint folder (config.json + model.safetensors)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .base import OUTPUT_NAMES, Backend, ModelInfo

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def _import_torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - depends on the install
        raise ImportError("the torch backend needs PyTorch: pip install 'dd3g-sdk[torch]' "
                          "(or export the model to ONNX and load the .onnx file)") from None
    return torch


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, path: str | Path | None = None, device: str | None = None, precision: str | None = None,
                 model=None):
        torch = _import_torch()
        from ..model.pepd import PEPD

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        precision = precision or "fp32"
        if precision not in _DTYPES:
            raise ValueError(f"precision must be one of {sorted(_DTYPES)}, got {precision!r}")
        if precision != "fp32" and self.device.type == "cpu":
            raise ValueError(f"precision {precision} needs a CUDA device; use fp32 on CPU")
        self.precision = precision
        self.model = model if model is not None else PEPD.from_pretrained(path)
        self.model.to(self.device).eval()
        self._source = str(path) if path is not None else "<in-memory model>"

    @property
    def info(self) -> ModelInfo:
        from ..config import to_dict

        cfg = self.model.config
        return ModelInfo(image_size=cfg.image_size, noise_shape=tuple(self.model.noise_shape),
                         num_gaussians=self.model.num_gaussians, sh_degree=cfg.sh_degree, views=cfg.views,
                         config=to_dict(cfg), source=self._source, precision=self.precision)

    def run(self, image: np.ndarray, noise: np.ndarray) -> dict[str, np.ndarray]:
        torch = _import_torch()
        dtype = getattr(torch, _DTYPES[self.precision])
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype,
                                                    enabled=self.precision != "fp32"):
            out = self.model(torch.from_numpy(np.ascontiguousarray(image)).to(self.device),
                             torch.from_numpy(np.ascontiguousarray(noise)).to(self.device))
        return {k: out[k].float().cpu().numpy() for k in OUTPUT_NAMES}


def check_checkpoint_dir(path: Path) -> None:
    for name in ("config.json", "model.safetensors"):
        if not (path / name).is_file():
            raise InputError(path, f"not a dd3g checkpoint folder: {name} is missing")
