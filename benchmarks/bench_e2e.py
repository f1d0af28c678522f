"""End to end: image file -> Gaussians -> one rendered 512x512 view.

    OMP_NUM_THREADS=2 python -m pytest benchmarks/bench_e2e.py -q      # CPU: "tiny", host clock, calibrated
    python -m pytest benchmarks/bench_e2e.py -q                         # GPU host: "small" and "base" too
    DD3G_BENCH_CONFIGS=small python -m pytest benchmarks/bench_e2e.py -q

Cases (random weights: latency does not depend on them):
- test_file_to_view[config]: `Generator(...)(png)` (decode, preprocess, noise, PEPD, copy back, Gaussians)
  then one 512x512 render of the result, image back on the host. The renderer is the project's: the CUDA
  rasteriser library on CUDA when it is found, else the torch reference on the torch device. Host clock
  (the result is a host image), pytest-benchmark calibration.
- test_device_pipeline[config-precision] (gpu): the same work without host round trips: PEPD forward on
  device tensors, then the rasteriser on its device outputs. CUDA events (median, p90 in extra_info).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dd3g_sdk.bench import make_render_fn  # noqa: E402
from dd3g_sdk.cameras import orbit_camera  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"
_ENV = os.environ.get("DD3G_BENCH_CONFIGS")
CONFIGS = _ENV.split(",") if _ENV else (["tiny", "small", "base"] if HAS_CUDA else ["tiny"])
RES = 512


def _renderer() -> str:
    if HAS_CUDA:
        from dd3g_sdk.render.cuda import is_available

        if is_available():
            return "dd3g-cuda"
    return "reference"


def _model(config: str):
    from dd3g_sdk.model.pepd import PEPD, PEPDConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return PEPD(PEPDConfig.preset(config)).eval().to(DEVICE)


def _camera(model):
    v = model.config.views
    return orbit_camera(30.0, v.elevation_deg, v.radius, v.fov_deg, RES, RES)


@pytest.mark.parametrize("config", CONFIGS)
def test_file_to_view(benchmark, input_png, config):
    from dd3g_sdk.backends.torch_backend import TorchBackend
    from dd3g_sdk.generator import Generator

    model = _model(config)
    gen = Generator(TorchBackend(model=model, device=DEVICE))
    cam, renderer = _camera(model), _renderer()

    def pipeline():
        g = gen(input_png, seed=0)
        rgb = make_render_fn(renderer, g.to_torch(DEVICE), cam, g.sh_degree)()[0]
        return rgb.cpu().numpy()

    rgb = benchmark(pipeline)
    assert rgb.shape == (1, RES, RES, 3) and np.isfinite(rgb).all()
    benchmark.extra_info.update(config=config, device=DEVICE, renderer=renderer, resolution=RES,
                                num_gaussians=model.num_gaussians)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("config", CONFIGS)
def test_device_pipeline(benchmark, cuda_bench, config, precision):
    model = _model(config)
    s = model.config.image_size
    gen = torch.Generator(device="cuda").manual_seed(0)
    img = torch.rand(1, 3, s, s, device="cuda", generator=gen)
    noise = torch.randn(1, *model.noise_shape, device="cuda", generator=gen)
    cam, renderer = _camera(model), _renderer()
    dtype = torch.float16 if precision == "fp16" else torch.float32

    def pipeline():
        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=precision != "fp32"):
            out = model(img, noise)
        t = {k: out[k][0].float().contiguous() for k in ("means", "quats", "scales", "opacities", "sh")}
        return make_render_fn(renderer, t, cam, model.config.sh_degree)()

    stats = cuda_bench(benchmark, pipeline)
    assert stats["median_ms"] > 0
    benchmark.extra_info.update(config=config, precision=precision, renderer=renderer, resolution=RES)
