"""Shared pieces of the pytest-benchmark suites in benchmarks/ (run by hand, not by the CI test run).

    OMP_NUM_THREADS=2 python -m pytest benchmarks/bench_io.py benchmarks/bench_e2e.py -q    # CPU
    python -m pytest benchmarks/ -q                                                          # everything here

- `pytest benchmarks/` collects the bench_*.py files (pytest's default pattern is test_*.py).
- `gpu`-marked cases are skipped without CUDA, as in tests/.
- `cuda_bench(benchmark, fn)`: GPU timing with CUDA events after warm-up (dd3g_sdk.bench.time_cuda). The median
  and p90 go into the benchmark's `extra_info` ("cuda_median_ms", "cuda_p90_ms", "cuda_runs"); pytest-benchmark's
  own table shows the same calls timed on the host with a synchronisation after each.
- CPU cases use pytest-benchmark's calibration directly (`benchmark(fn)`).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
os.environ.setdefault("OMP_NUM_THREADS", "2")


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


HAS_CUDA = _has_cuda()


def pytest_collect_file(file_path: Path, parent):
    # Files given on the command line are collected by pytest itself; this adds them for `pytest benchmarks/`.
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_") and file_path.parent == HERE
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and Path(str(item.fspath)).parent == HERE:
            item.add_marker(skip)


@pytest.fixture
def cuda_bench():
    """cuda_bench(benchmark, fn, repeats=50, warmup=5) -> {"median_ms", "p90_ms", ...} (CUDA events)."""
    def run(benchmark, fn, repeats: int = 50, warmup: int = 5) -> dict:
        import torch

        from dd3g_sdk.bench import summarize, time_cuda

        stats = summarize(time_cuda(fn, repeats, warmup))
        benchmark.extra_info.update({"cuda_median_ms": stats["median_ms"], "cuda_p90_ms": stats["p90_ms"],
                                     "cuda_runs": stats["repeats"], "device": torch.cuda.get_device_name()})

        def synced():
            fn()
            torch.cuda.synchronize()

        benchmark.pedantic(synced, rounds=max(5, repeats // 5), iterations=1, warmup_rounds=1)
        return stats

    return run


@pytest.fixture(scope="session")
def input_png(tmp_path_factory) -> Path:
    """A 1024x1024 RGBA PNG (a noisy disc on a transparent background), written once per session."""
    from dd3g_sdk.bench import write_test_image

    return write_test_image(tmp_path_factory.mktemp("bench-input") / "input.png", 1024)
