"""Preprocessing and file writing (CPU, pytest-benchmark calibration).

    OMP_NUM_THREADS=2 python -m pytest benchmarks/bench_io.py -q
    python -m pytest benchmarks/bench_io.py -q --benchmark-json io.json     # pytest-benchmark's own JSON

Cases:
- preprocess: a 1024x1024 RGBA PNG (from the session fixture `input_png`) decoded, cropped to the object and
  resized to the model input (32 for "tiny", 64 for "small" and "base") with dd3g_sdk.preprocess.load_image.
- write_ply / write_splat: N Gaussians (the PEPD "small" output count 16384, and 200000) of SH degree 0 and 3
  written with dd3g_sdk.io.write_gaussians: atomic, so each write includes a temporary file, fsync and rename.
- read_ply: the same files read back (validation included).
"""
from __future__ import annotations

import pytest

from dd3g_sdk.bench import synthetic_scene
from dd3g_sdk.io import read_gaussians, write_gaussians
from dd3g_sdk.preprocess import PreprocessConfig, load_image


@pytest.mark.parametrize("size", [32, 64])
def test_preprocess_png1024(benchmark, input_png, size):
    cfg = PreprocessConfig(size=size)
    out = benchmark(load_image, input_png, cfg)
    assert out.shape == (size, size, 3)
    benchmark.extra_info.update(input="RGBA PNG 1024x1024", image_size=size)


@pytest.mark.parametrize("degree", [0, 3])
@pytest.mark.parametrize("n", [16_384, 200_000])
def test_write_ply(benchmark, tmp_path, n, degree):
    g = synthetic_scene(n, sh_degree=degree)
    path = tmp_path / "out.ply"
    benchmark(write_gaussians, g, path)
    benchmark.extra_info.update(num_gaussians=n, sh_degree=degree, file_bytes=path.stat().st_size)
    assert len(read_gaussians(path)) == n


@pytest.mark.parametrize("n", [16_384, 200_000])
def test_write_splat(benchmark, tmp_path, n):
    g = synthetic_scene(n, sh_degree=0)
    path = tmp_path / "out.splat"
    benchmark(write_gaussians, g, path)
    benchmark.extra_info.update(num_gaussians=n, file_bytes=path.stat().st_size)
    assert path.stat().st_size == 32 * n


@pytest.mark.parametrize("degree", [0, 3])
def test_read_ply(benchmark, tmp_path, degree):
    n = 200_000
    path = write_gaussians(synthetic_scene(n, sh_degree=degree), tmp_path / "in.ply")
    g = benchmark(read_gaussians, path)
    assert len(g) == n and g.sh_degree == degree
    benchmark.extra_info.update(num_gaussians=n, sh_degree=degree)
