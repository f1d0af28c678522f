"""PEPD on onnxruntime, from an `.onnx` file exported by `dd3g export` (numpy + onnxruntime only, no torch).

Execution providers: the CPU provider by default; `device="cuda"` asks for the CUDA provider and
`device="tensorrt"` for onnxruntime's TensorRT provider (with CUDA and CPU behind it), both only where the
installed onnxruntime has them (onnxruntime-gpu). `device=None` or "auto" takes CUDA when it is there, else CPU.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..onnx_meta import INPUT_NAMES, ort_load_problem, parse_metadata, read_onnx_metadata
from .base import OUTPUT_NAMES, Backend, ModelInfo

log = logging.getLogger("dd3g_sdk")

_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - onnxruntime is a runtime dependency
        raise ImportError("the onnxruntime backend needs onnxruntime: pip install onnxruntime "
                          "(or onnxruntime-gpu for CUDA)") from None
    return ort


def choose_providers(device: str | None, available: list[str]) -> list[str]:
    """The provider list for `device` ("auto"/None, "cpu", "cuda", "tensorrt") given the `available` ones."""
    dev = (device or "auto").lower()
    if dev.startswith("cuda:"):
        dev = "cuda"
    if dev == "auto":
        return _PROVIDERS["cuda"] if "CUDAExecutionProvider" in available else _PROVIDERS["cpu"]
    if dev not in _PROVIDERS:
        raise ValueError(f"unknown onnxruntime device {device!r}: use auto, cpu, cuda or tensorrt")
    first = _PROVIDERS[dev][0]
    if first not in available:
        raise ValueError(f"device {device!r} needs onnxruntime's {first}, which this onnxruntime does not have "
                         f"(it has {', '.join(available)}); install onnxruntime-gpu or use device='cpu'")
    return [p for p in _PROVIDERS[dev] if p in available]


def check_inputs(info: ModelInfo, image: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous float32 copies of (image [B,3,S,S], noise [B,V,3,h,w]); ValueError naming a wrong shape."""
    image = np.ascontiguousarray(image, dtype=np.float32)
    noise = np.ascontiguousarray(noise, dtype=np.float32)
    s = info.image_size
    if image.ndim != 4 or image.shape[1:] != (3, s, s):
        raise ValueError(f"image must have shape [B, 3, {s}, {s}], got {list(image.shape)}")
    if noise.ndim != 5 or tuple(noise.shape[1:]) != tuple(info.noise_shape):
        raise ValueError(f"noise must have shape [B, {', '.join(map(str, info.noise_shape))}], got "
                         f"{list(noise.shape)}")
    if noise.shape[0] != image.shape[0]:
        raise ValueError(f"image and noise batch sizes differ ({image.shape[0]} vs {noise.shape[0]})")
    return image, noise


class OnnxRuntimeBackend(Backend):
    """Runs a dd3g ONNX export. `threads` sets onnxruntime's intra-op threads (None: its default)."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, device: str | None = None, threads: int | None = None):
        ort = _import_ort()
        self.path = Path(path)
        # Metadata first: a foreign or stripped ONNX fails here with a clear message, before a session exists.
        self._info = parse_metadata(read_onnx_metadata(self.path), self.path)
        self.providers = choose_providers(device, ort.get_available_providers())
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            so.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=self.providers)
        except Exception as e:
            raise InputError(self.path, ort_load_problem(e)) from None
        self._check_graph()
        self._batch_fixed = self._fixed_batch()
        log.info("dd3g: onnxruntime providers %s for %s", self.session.get_providers(), self.path)

    def _check_graph(self) -> None:
        ins = {i.name: i for i in self.session.get_inputs()}
        outs = {o.name for o in self.session.get_outputs()}
        if sorted(ins) != sorted(INPUT_NAMES) or not set(OUTPUT_NAMES) <= outs:
            raise InputError(self.path, f"graph inputs {sorted(ins)} / outputs {sorted(outs)} are not PEPD's "
                                        f"(image, noise -> {', '.join(OUTPUT_NAMES)})")
        i = self._info
        want = {"image": (3, i.image_size, i.image_size), "noise": tuple(i.noise_shape)}
        for name, shape in want.items():
            got = ins[name].shape
            if ins[name].type != "tensor(float)":
                raise InputError(self.path, f"graph input {name!r} is {ins[name].type}, expected float32")
            if len(got) != len(shape) + 1 or any(isinstance(g, int) and g != w for g, w in zip(got[1:], shape)):
                raise InputError(self.path, f"graph input {name!r} has shape {got}, but the metadata says "
                                            f"[B, {', '.join(map(str, shape))}]: wrong model or metadata")

    def _fixed_batch(self) -> int | None:
        b = self.session.get_inputs()[0].shape[0]
        return b if isinstance(b, int) else None

    @property
    def info(self) -> ModelInfo:
        return self._info

    def run(self, image: np.ndarray, noise: np.ndarray) -> dict[str, np.ndarray]:
        image, noise = check_inputs(self._info, image, noise)
        b = image.shape[0]
        if self._batch_fixed is not None and b != self._batch_fixed:
            # A fixed-batch export still serves any batch: run it in chunks of its batch size.
            if b % self._batch_fixed:
                raise ValueError(f"this export has a fixed batch of {self._batch_fixed} (export with "
                                 f"--dynamic-batch for others); got {b}")
            k = self._batch_fixed
            parts = [self.run(image[j:j + k], noise[j:j + k]) for j in range(0, b, k)]
            return {n: np.concatenate([p[n] for p in parts]) for n in OUTPUT_NAMES}
        res = self.session.run(list(OUTPUT_NAMES), {"image": image, "noise": noise})
        return {n: np.asarray(r, dtype=np.float32) for n, r in zip(OUTPUT_NAMES, res)}
