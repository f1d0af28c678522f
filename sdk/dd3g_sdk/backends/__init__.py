"""Runtime backends: one class per runtime behind `Backend` (torch, onnxruntime, TensorRT)."""
from .base import Backend, ModelInfo, open_backend

__all__ = ["Backend", "ModelInfo", "open_backend"]
