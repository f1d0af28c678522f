"""`Generator`: one image in, 3D Gaussians out.

    from dd3g_sdk import Generator
    gen = Generator.from_pretrained()            # the embedded default model
    g = gen("examples/toy_robot.png", seed=0)    # -> Gaussians
    views = gen.render(g, gen.turntable(8))      # -> RenderResult (rgb [C,H,W,3], alpha, depth)
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .backends.base import Backend, ModelInfo, open_backend
from .cameras import Camera, turntable
from .gaussians import Gaussians
from .noise import draw_noise

log = logging.getLogger("dd3g_sdk")

DEFAULT_MODEL_DIR = Path(__file__).parent / "weights" / "pepd-small"

ImageLike = Any  # str | Path | PIL.Image.Image | np.ndarray [H,W,3|4]


class Generator:
    """A PEPD model behind one backend. Same (image, seed) -> same Gaussians."""

    def __init__(self, backend: Backend):
        self.backend = backend

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, backend: str = "auto",
                        device: str | None = None, precision: str | None = None) -> "Generator":
        """Load a model: a checkpoint folder (torch), a `.onnx` file (onnxruntime) or a `.engine` (TensorRT).

        `path=None` loads the embedded default model. `backend="auto"` picks the runtime from the file type;
        `precision` is "fp32" (default), "fp16" or "bf16" (torch on CUDA only).
        """
        if path is None:
            if (DEFAULT_MODEL_DIR / "model.safetensors").is_file():
                path = DEFAULT_MODEL_DIR
            else:
                return cls._random_default(device, precision)
        return cls(open_backend(path, backend=backend, device=device, precision=precision))

    @classmethod
    def _random_default(cls, device, precision) -> "Generator":
        # Until a distilled checkpoint is embedded the SDK still runs end to end, honestly labelled.
        warnings.warn("no trained default model is installed: using a randomly initialised PEPD 'small' "
                      "(its output is not a meaningful object)", stacklevel=3)
        import torch

        from .backends.torch_backend import TorchBackend
        from .model.pepd import PEPD, PEPDConfig

        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = PEPD(PEPDConfig.preset("small"))
        return cls(TorchBackend(model=model, device=device, precision=precision))

    @property
    def info(self) -> ModelInfo:
        return self.backend.info

    def noise(self, seed: int) -> np.ndarray:  # [V, 3, h, w]
        """The teacher noise that `seed` stands for (the same on every backend)."""
        return draw_noise(seed, self.info.noise_shape)

    def preprocess(self, image: ImageLike) -> np.ndarray:  # [3, S, S] float32 0..1
        from .preprocess import PreprocessConfig, load_image

        # Framed as the model's training inputs were: its Gaussians are pixel-aligned with this image.
        cfg = PreprocessConfig.for_model(self.info)
        return np.ascontiguousarray(load_image(image, cfg).transpose(2, 0, 1))

    def __call__(self, images: ImageLike | Sequence[ImageLike], seed: int = 0, seeds: Sequence[int] | None = None,
                 batch_size: int = 8, min_opacity: float = 0.0, progress: bool = False):
        """Generate Gaussians.

        - one image, `seed`: -> Gaussians
        - one image, `seeds=[...]`: -> list (one object per seed)
        - a list of images: -> list (`seed` for each, or `seeds` pairwise)
        `min_opacity` > 0 drops nearly transparent Gaussians from the result; `gaussians.INVISIBLE_OPACITY` (what
        `dd3g generate` uses) drops only those that no renderer draws (about 2/3 of the default model's).
        """
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        if seeds is not None:
            seeds = [int(s) for s in seeds]
            if single:
                items = items * len(seeds)
            elif len(seeds) != len(items):
                raise ValueError(f"got {len(items)} images but {len(seeds)} seeds")
        else:
            seeds = [int(seed)] * len(items)
        steps = range(0, len(items), batch_size)
        if progress and len(items) > 1:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="generate", unit="batch")
        cache: dict[int, np.ndarray] = {}
        out: list[Gaussians] = []
        for start in steps:
            chunk = items[start:start + batch_size]
            # The same image object is preprocessed once when several seeds share it.
            imgs = np.stack([cache.setdefault(id(x), self.preprocess(x)) for x in chunk])
            out += self.generate(imgs, seeds[start:start + batch_size], min_opacity=min_opacity)
        return out[0] if single and len(out) == 1 else out

    def generate(self, images: np.ndarray, seeds: Sequence[int], min_opacity: float = 0.0) -> list[Gaussians]:
        """Already preprocessed images [B, 3, S, S] float32 0..1 (see `preprocess`) and one seed each."""
        images = np.asarray(images, np.float32)
        s = self.info.image_size
        if images.ndim != 4 or images.shape[1:] != (3, s, s):
            raise ValueError(f"images must be [B, 3, {s}, {s}] (use Generator.preprocess), got {list(images.shape)}")
        if len(seeds) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(seeds)} seeds")
        noise = np.stack([self.noise(int(k)) for k in seeds])
        res = self.backend.run(np.ascontiguousarray(images), noise)
        out = []
        for b in range(images.shape[0]):
            g = Gaussians(res["means"][b], res["scales"][b], _unit(res["quats"][b]),
                          np.clip(res["opacities"][b], 0, 1), res["sh"][b])
            out.append(g.prune(min_opacity) if min_opacity > 0 else g)
        return out

    def turntable(self, n: int = 8, size: int = 256, elevation_deg: float | None = None) -> list[Camera]:
        """`n` cameras around the object, matching the model's view set radius and field of view."""
        v = self.info.views
        return turntable(n, v.elevation_deg if elevation_deg is None else elevation_deg, v.radius, v.fov_deg,
                         size, size)

    def render(self, gaussians: Gaussians, cameras: Sequence[Camera] | Camera | None = None,
               background: Sequence[float] = (1.0, 1.0, 1.0)):
        """Render with this project's rasteriser: CUDA library when present, else the reference (torch).

        Returns RenderResult(rgb [C,H,W,3], alpha [C,H,W], depth [C,H,W]) as numpy arrays.
        """
        from .render import render

        if cameras is None:
            cameras = self.turntable(8)
        if isinstance(cameras, Camera):
            cameras = [cameras]
        return render(gaussians, list(cameras), background=background)


def _unit(q: np.ndarray) -> np.ndarray:
    # Backends in fp16 return quats normalised only to fp16 precision; Gaussians wants unit length in fp32.
    return (q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)).astype(np.float32)
