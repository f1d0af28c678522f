"""`dd3g bench`: benchmark whatever this machine supports and write one JSON document to send back.

    dd3g bench --quick                      # tiny model, few repeats: well under a minute on 2 CPU cores
    dd3g bench --json bench.json            # the full run (PEPD "small", every backend found here)
    dd3g bench --config tiny,small,base --batch 1,4 --json bench.json
    dd3g bench --model model.onnx --json bench.json      # an exported model (no torch needed)

What runs depends on what is installed; nothing is required beyond the SDK's own dependencies:
- generator    PEPD forward per config x backend x precision x batch. torch (random-initialised preset, or
               --model CKPT), onnxruntime (--model X.onnx, or the preset exported on the fly when dd3g_export
               and torch are installed), TensorRT / TensorRT-RTX (--model X.engine).
- render       the project's rasteriser (CUDA library when found, else the torch reference) and gsplat (CUDA
               only), on a synthetic object-like scene, per Gaussian count x resolution.
- e2e          image file -> preprocess -> generator -> Gaussians -> one rendered view (512x512 by default).
- preprocess   decode + crop + resize of an RGBA PNG to the model's input size.
- io           PLY and .splat writing (atomic: temporary file, fsync, rename).

Timing: on CUDA, CUDA events around each call after warm-up (device time, many runs); on CPU,
time.perf_counter around each call. Every case reports the median and the 90th percentile (linear
interpolation) in milliseconds and how many runs they come from. A case whose warm-up shows it is slow
gets fewer runs (at least 3) so that the whole run fits its time budget (--budget seconds per case).

The JSON document (schema: benchmarks/schema.json, `"schema": "dd3g-bench/1"`) records the device (GPU name,
driver, CUDA versions, Jetson model), the library versions, what was detected, the options and one entry per
case with status "ok", "skipped" (with the reason) or "error" (with the message). A failing case never stops
the others; the exit status is 1 if any case failed, else 0.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import __version__
from ._fileio import atomic_write_text, check_writable_target
from .errors import InputError

SCHEMA = "dd3g-bench/1"
SECTIONS = ("generator", "render", "e2e", "preprocess", "io")
BACKENDS = ("torch", "onnxruntime", "tensorrt")
PRESETS = ("tiny", "small", "base")
# Input side and Gaussian count of each PEPD preset, so that preprocessing and file writing can be sized
# without torch (dd3g_sdk.model.pepd imports torch). tests/sdk/test_bench.py checks them against PEPDConfig.
PRESET_IMAGE_SIZE = {"tiny": 32, "small": 64, "base": 64}
PRESET_NUM_GAUSSIANS = {"tiny": 4096, "small": 16384, "base": 32768}

# The synthetic rasteriser scene and camera, as in benchmarks/bench_rasterizer.py, so numbers compare:
# Gaussians uniform in a ball of radius 1, seen from radius 2, 20 degrees up, with a 60 degree field of view.
SCENE_RADIUS = 1.0
SCENE_CAMERA = {"azimuth_deg": 10.0, "elevation_deg": 20.0, "radius": 2.0, "fov_deg": 60.0}


# ---------------------------------------------------------------------------------------------------------
# options
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchOptions:
    """What `run` measures. Tuples are the values benchmarked (all combinations).

    None means "pick for this machine": see `resolve` (CUDA gets more cases and a larger scene than CPU).
    """
    quick: bool = False
    configs: tuple[str, ...] | None = None  # PEPD presets (random-initialised) unless `model` is given
    model: str | None = None  # a checkpoint folder, .onnx or .engine instead of the presets
    backends: tuple[str, ...] = BACKENDS
    precisions: tuple[str, ...] | None = None  # torch precisions: fp32 on CPU; fp32, fp16, bf16 on CUDA
    batches: tuple[int, ...] | None = None
    gaussians: tuple[int, ...] | None = None  # rasteriser scene sizes
    resolution: int | None = None  # square render side (render and e2e), pixels
    repeats: int | None = None  # timed runs per case (fewer if a case would overrun `budget_s`)
    warmup: int | None = None
    budget_s: float | None = None  # rough time limit of one case's timed runs, seconds
    sections: tuple[str, ...] = SECTIONS
    device: str | None = None  # torch device: "cpu" or "cuda" (default: cuda when available)
    threads: int | None = None  # torch / onnxruntime intra-op threads (default: theirs)
    seed: int = 0

    def resolve(self, cuda: bool) -> "BenchOptions":
        """Fill the None fields with this machine's defaults."""
        q = self.quick
        def pick(value, quick, gpu, cpu):
            return value if value is not None else (quick if q else gpu if cuda else cpu)

        return dataclasses.replace(
            self,
            configs=pick(self.configs, ("tiny",), ("small",), ("small",)),
            precisions=pick(self.precisions, ("fp32",) if not cuda else ("fp32", "fp16"), ("fp32", "fp16", "bf16"),
                            ("fp32",)),
            batches=pick(self.batches, (1,), (1, 4), (1,)),
            gaussians=pick(self.gaussians, (16_384,) if cuda else (4_096,), (16_384, 65_536, 200_000, 1_000_000),
                           (16_384, 65_536)),
            # The reference rasteriser needs seconds per 512x512 frame on a small CPU: quick runs use 128.
            resolution=pick(self.resolution, 512 if cuda else 128, 512, 512),
            repeats=pick(self.repeats, 5, 50, 20),
            warmup=pick(self.warmup, 1, 5, 2),
            budget_s=pick(self.budget_s, 3.0, 10.0, 15.0),
        )


def _csv(kind: Callable[[str], Any], choices: Sequence[str] | None = None) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        items = [s.strip() for s in text.split(",") if s.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        try:
            values = tuple(kind(s) for s in items)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad value in {text!r}") from None
        if choices is not None:
            bad = [v for v in values if v not in choices]
            if bad:
                raise argparse.ArgumentTypeError(
                    f"unknown {', '.join(map(str, bad))} (choose from {', '.join(choices)})")
        if kind is int and any(v < 1 for v in values):
            raise argparse.ArgumentTypeError(f"values must be >= 1, got {text!r}")
        return values
    return parse


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `dd3g bench` (the CLI calls this on its `bench` sub-parser)."""
    p.description = ("Benchmark what this machine supports (torch, CUDA, onnxruntime providers, TensorRT, the "
                     "dd3g CUDA rasteriser, gsplat), print a table and optionally write one JSON document. "
                     "See benchmarks/README.md for how to send results back.")
    p.add_argument("--quick", action="store_true", help="tiny model, small scene, few repeats (CI: < 1 minute)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the results document here")
    p.add_argument("--config", type=_csv(str, PRESETS), default=None, dest="configs",
                   help="PEPD presets to benchmark, e.g. tiny,small,base (default small; --quick: tiny)")
    p.add_argument("--model", default=None, help="benchmark this checkpoint folder, .onnx or .engine instead")
    p.add_argument("--backends", type=_csv(str, BACKENDS), default=BACKENDS,
                   help="generator backends to try (default: all that are installed)")
    p.add_argument("--precisions", type=_csv(str, ("fp32", "fp16", "bf16")), default=None,
                   help="torch precisions (default: fp32 on CPU; fp32,fp16,bf16 on CUDA)")
    p.add_argument("--batch", type=_csv(int), default=None, dest="batches", help="batch sizes, e.g. 1,4")
    p.add_argument("--gaussians", type=_csv(int), default=None, help="rasteriser scene sizes, e.g. 16384,200000")
    p.add_argument("--resolution", type=int, default=None, help="render side in pixels (default 512)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per case")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs before timing")
    p.add_argument("--budget", type=float, default=None, dest="budget_s",
                   help="rough seconds per case; slow cases get fewer runs (at least 3)")
    p.add_argument("--sections", type=_csv(str, SECTIONS), default=SECTIONS,
                   help=f"what to run (default all: {','.join(SECTIONS)})")
    p.add_argument("--device", default=None, choices=["cpu", "cuda"],
                   help="torch device (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads of torch and onnxruntime")


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    for name in ("resolution", "repeats", "threads"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise InputError(None, f"--{name} must be >= 1, got {v}")
    if args.warmup is not None and args.warmup < 0:
        raise InputError(None, f"--warmup must be >= 0, got {args.warmup}")
    return BenchOptions(quick=args.quick, configs=args.configs, model=args.model, backends=tuple(args.backends),
                        precisions=args.precisions, batches=args.batches, gaussians=args.gaussians,
                        resolution=args.resolution, repeats=args.repeats, warmup=args.warmup,
                        budget_s=args.budget_s, sections=tuple(args.sections), device=args.device,
                        threads=args.threads)


# ---------------------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------------------
def summarize(samples_ms: Sequence[float]) -> dict[str, float | int]:
    """median, p90 (linear interpolation between order statistics, numpy's default), min, mean; ms."""
    s = np.asarray(samples_ms, np.float64)
    if s.size == 0:
        raise ValueError("summarize: no samples")
    return {"median_ms": float(np.median(s)), "p90_ms": float(np.percentile(s, 90)), "min_ms": float(s.min()),
            "mean_ms": float(s.mean()), "repeats": int(s.size)}


def plan_repeats(estimate_ms: float, repeats: int, budget_s: float, minimum: int = 3) -> int:
    """How many timed runs fit `budget_s` at `estimate_ms` each: `repeats` at most, `minimum` at least."""
    if estimate_ms <= 0:
        return repeats
    return int(max(min(repeats, minimum), min(repeats, budget_s * 1e3 // estimate_ms)))


def time_host(fn: Callable[[], Any], repeats: int, warmup: int, budget_s: float = math.inf) -> list[float]:
    """Milliseconds of each of up to `repeats` calls of `fn` (time.perf_counter), after `warmup` calls.

    `fn` must finish its work before returning (numpy results, or a synchronising call)."""
    est = 0.0
    for _ in range(max(warmup, 1)):  # one untimed call at least: it also sizes the number of runs
        t0 = time.perf_counter()
        fn()
        est = (time.perf_counter() - t0) * 1e3
    out = []
    for _ in range(plan_repeats(est, repeats, budget_s)):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def time_cuda(fn: Callable[[], Any], repeats: int, warmup: int, budget_s: float = math.inf) -> list[float]:
    """Milliseconds of device time of each call of `fn` on the current CUDA stream (CUDA events).

    Warm-up calls (at least one) run first and are synchronised; the timed calls are queued back to back with
    an event pair around each and one synchronisation at the end, as an application would issue them."""
    import torch

    est = 0.0
    for _ in range(max(warmup, 1)):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        est = (time.perf_counter() - t0) * 1e3
    n = plan_repeats(est, repeats, budget_s)
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
    for a, b in ev:
        a.record()
        fn()
        b.record()
    torch.cuda.synchronize()
    return [a.elapsed_time(b) for a, b in ev]


def median_cuda_ms(fn: Callable[[], Any], repeats: int, warmup: int) -> float:
    """Median of `time_cuda(fn, repeats, warmup)`: the one CUDA-event timer of the benchmark scripts."""
    return statistics.median(time_cuda(fn, repeats, warmup))


# ---------------------------------------------------------------------------------------------------------
# environment
# ---------------------------------------------------------------------------------------------------------
def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package missing, or sys.modules[name] = None
        return False


def _import(name: str):
    """The module, or None when it is missing or fails to import (stubs that download on import, etc.)."""
    if not _has_module(name):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except Exception:
        return None


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        return None


def nvidia_driver_version() -> str | None:
    """The NVIDIA kernel driver release (e.g. "580.95.05"), from /proc or nvidia-smi; None if none found."""
    text = _read_text("/proc/driver/nvidia/version")
    if text:
        m = re.search(r"Kernel Module(?: for \S+)?\s+([0-9][0-9.]*)", text)
        if m:
            return m.group(1)
    smi = shutil.which("nvidia-smi")
    if smi:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            r = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                               text=True, timeout=10)
            if r.returncode == 0 and r.stdout.strip():
                return r.stdout.strip().splitlines()[0].strip()
    return None


def cuda_driver_api_version() -> str | None:
    """The CUDA version the installed driver supports (cuDriverGetVersion, e.g. 13000 -> "13.0"), or None."""
    import ctypes

    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        v = ctypes.c_int(0)
        with contextlib.suppress(Exception):
            if lib.cuDriverGetVersion(ctypes.byref(v)) == 0 and v.value > 0:
                return f"{v.value // 1000}.{v.value % 1000 // 10}"
    return None


def _cpu_name() -> str:
    text = _read_text("/proc/cpuinfo") or ""
    for key in ("model name", "Model", "Hardware"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
        if m:
            return m.group(1).strip()
    return platform.processor() or platform.machine()


def detect_environment(device: str | None = None) -> dict[str, Any]:
    """What this machine has: system, GPU, library versions, backends. Imports torch/onnxruntime if present."""
    system = {
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jetson_model": None,
        "l4t": None,
    }
    tegra = _read_text("/etc/nv_tegra_release")
    if tegra is not None:  # a Jetson: "# R36 (release), REVISION: 4.3, ..." and the board's name
        system["l4t"] = tegra.splitlines()[0].lstrip("# ").strip() if tegra else None
        system["jetson_model"] = _read_text("/proc/device-tree/model")
    torch = _import("torch")
    ort = _import("onnxruntime")
    cuda = bool(torch is not None and torch.cuda.is_available())
    gpu = None
    if cuda:
        idx = torch.cuda.current_device()
        prop = torch.cuda.get_device_properties(idx)
        driver_api = cuda_driver_api_version()
        gpu = {"name": torch.cuda.get_device_name(idx), "compute_capability": f"{prop.major}.{prop.minor}",
               "memory_gib": round(prop.total_memory / 2**30, 1), "multiprocessors": prop.multi_processor_count,
               "count": torch.cuda.device_count(), "driver": nvidia_driver_version(),
               "cuda_driver_api": driver_api, "cuda_runtime": torch.version.cuda}
    trt = _import("tensorrt")
    trt_rtx = _import("tensorrt_rtx_bindings") or _import("tensorrt_rtx")
    raster = {"available": False, "path": None, "version": None, "problem": None}
    try:
        from .render import cuda as rc

        lib = rc.load_library()
        # File name only: the document is meant to be shared, and a path can hold the user's name.
        raster.update(available=True, path=Path(lib.path).name, version=lib.version)
    except Exception as e:  # not built, or built for another machine: reported, not fatal
        raster["problem"] = f"{type(e).__name__}: {e}"[:300]
    versions = {
        "dd3g_sdk": __version__, "numpy": np.__version__, "pillow": _dist_version("pillow"),
        "torch": getattr(torch, "__version__", None), "onnxruntime": getattr(ort, "__version__", None),
        "onnx": _dist_version("onnx") if _has_module("onnx") else None,
        "tensorrt": getattr(trt, "__version__", None), "tensorrt_rtx": getattr(trt_rtx, "__version__", None),
        # gsplat compiles CUDA code when imported: its version is read from the package metadata only.
        "gsplat": _dist_version("gsplat") if _has_module("gsplat") else None,
    }
    torch_device = None
    if torch is not None:
        torch_device = device or ("cuda" if cuda else "cpu")
        if torch_device == "cuda" and not cuda:
            raise InputError(None, "--bench-device cuda: torch sees no CUDA device here")
    name = gpu["name"] if gpu and torch_device == "cuda" else (system["jetson_model"] or system["cpu"])
    return {
        "device": {"name": name, "kind": torch_device or "cpu"},
        "system": system,
        "gpu": gpu,
        "versions": versions,
        "detected": {
            "torch": torch is not None,
            "cuda": cuda,
            "onnxruntime_providers": list(ort.get_available_providers()) if ort is not None else [],
            "tensorrt": versions["tensorrt"],
            "tensorrt_rtx": versions["tensorrt_rtx"],
            "raster_library": raster,
            "gsplat": versions["gsplat"] is not None,
        },
    }


# ---------------------------------------------------------------------------------------------------------
# inputs: a synthetic scene and an input image
# ---------------------------------------------------------------------------------------------------------
def synthetic_scene(n: int, seed: int = 0, sh_degree: int = 3):
    """An object-like set of `n` Gaussians (float32): means uniform in a ball of radius 1, scales about 0.6 of
    the mean spacing, opacities 0.3..1, random rotations, DC colour spread over 0..1 and small higher bands."""
    from .gaussians import Gaussians

    rng = np.random.Generator(np.random.Philox(seed))
    d = rng.standard_normal((n, 3))
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    means = d * rng.random((n, 1)) ** (1 / 3) * SCENE_RADIUS
    q = rng.standard_normal((n, 4))
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    spacing = (4.19 * SCENE_RADIUS**3 / max(n, 1)) ** (1 / 3)  # volume of the ball / n, cube root
    scales = spacing * 0.6 * np.exp(0.3 * rng.standard_normal((n, 3)))
    opac = 0.3 + 0.7 * rng.random(n)
    k = (sh_degree + 1) ** 2
    sh = 0.2 * rng.standard_normal((n, k, 3))
    sh[:, 0] = rng.random((n, 3)) * 3 - 1.5
    return Gaussians(*(a.astype(np.float32) for a in (means, scales, q, opac, sh)))


def scene_camera(resolution: int):
    from .cameras import orbit_camera

    c = SCENE_CAMERA
    return orbit_camera(c["azimuth_deg"], c["elevation_deg"], c["radius"], c["fov_deg"], resolution, resolution)


def write_test_image(path: Path, size: int = 1024, seed: int = 0) -> Path:
    """An RGBA PNG of a noisy coloured disc on a transparent background (a cut-out photo stand-in)."""
    from PIL import Image

    rng = np.random.Generator(np.random.Philox(seed))
    yy, xx = np.mgrid[0:size, 0:size] / size
    r = np.hypot(xx - 0.55, (yy - 0.5) * 1.2)
    alpha = np.clip((0.35 - r) * size / 4, 0, 1)
    rgb = np.stack([xx, yy, 1 - xx], -1) * 0.7 + 0.3 * rng.random((size, size, 3))
    img = np.concatenate([rgb, alpha[..., None]], -1)
    Image.fromarray((img * 255 + 0.5).astype(np.uint8), "RGBA").save(path)
    return path


def make_render_fn(renderer: str, t: dict, cam, sh_degree: int,
                   background: Sequence[float] = (1.0, 1.0, 1.0)) -> Callable[[], Any]:
    """A call that renders one view with `renderer` ("dd3g-cuda", "gsplat" or "reference").

    t: torch tensors on one device, means [N,3], quats [N,4], scales [N,3], opacities [N], sh [N,K,3];
    cam: a dd3g_sdk.cameras.Camera. The call returns the renderer's own outputs (rgb first), left on the device.
    """
    import torch

    dev = t["means"].device
    vm = torch.from_numpy(np.ascontiguousarray(cam.world_to_cam[None], np.float32)).to(dev)  # [1, 4, 4]
    Ks = torch.from_numpy(np.ascontiguousarray(cam.K[None], np.float32)).to(dev)  # [1, 3, 3]
    bg = torch.tensor([list(background)], dtype=torch.float32, device=dev)  # [1, 3]
    W, H = cam.width, cam.height
    if renderer == "gsplat":
        import gsplat  # imported here only: it loads (or compiles) its CUDA extension

        def fn():
            # gsplat's default (packed) path refuses a [C, 4] background for RGB+ED in 1.5.3: composite the
            # background here, as benchmarks/bench_rasterizer.py does, so both renderers do the same work.
            with torch.no_grad():
                out, alpha, _ = gsplat.rasterization(t["means"], t["quats"], t["scales"], t["opacities"], t["sh"],
                                                     vm, Ks, W, H, sh_degree=sh_degree, render_mode="RGB+ED")
                return out[..., :3] + (1.0 - alpha) * bg[:, None, None, :], alpha
        return fn
    if renderer == "dd3g-cuda":
        from .render.cuda import rasterize
    elif renderer == "reference":
        from .render.reference import rasterize
    else:
        raise ValueError(f"unknown renderer {renderer!r}: use dd3g-cuda, gsplat or reference")

    def fn():
        with torch.no_grad():
            return rasterize(t["means"], t["quats"], t["scales"], t["opacities"], t["sh"], vm, Ks, W, H, background=bg)
    return fn


# ---------------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------------
class _Skip(Exception):
    """A case that this machine cannot run (missing library or device): recorded with its reason."""


@dataclass
class _Run:
    opts: BenchOptions
    env: dict
    tmp: Path
    cases: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    _cache: dict = field(default_factory=dict)
    echo: Callable[[dict], None] | None = None

    # ---- helpers ----
    @property
    def torch_device(self) -> str | None:
        return None if not self.env["detected"]["torch"] else self.env["device"]["kind"]

    @property
    def on_cuda(self) -> bool:
        return self.torch_device == "cuda"

    def timer(self, cuda: bool) -> tuple[str, Callable]:
        o = self.opts
        if cuda:
            return "cuda_events", lambda fn: time_cuda(fn, o.repeats, o.warmup, o.budget_s)
        return "perf_counter", lambda fn: time_host(fn, o.repeats, o.warmup, o.budget_s)

    def case(self, section: str, name: str, params: dict, body: Callable[[], dict]) -> None:
        """Run one case; `body` returns {"timer", "samples", optional "extra"} or raises _Skip."""
        entry = {"section": section, "name": name, "params": params}
        t0 = time.perf_counter()
        try:
            r = body()
            entry.update(status="ok", timer=r["timer"], **summarize(r["samples"]))
            if r.get("extra"):
                entry["extra"] = r["extra"]
        except _Skip as e:
            entry.update(status="skipped", reason=str(e))
        except Exception as e:  # recorded, and the run goes on (exit status 1 at the end)
            entry.update(status="error", reason=f"{type(e).__name__}: {e}"[:500])
            if os.environ.get("DD3G_BENCH_TRACEBACK"):
                traceback.print_exc()
        entry["wall_s"] = round(time.perf_counter() - t0, 3)
        self.cases.append(entry)
        if self.echo:
            self.echo(entry)

    def skip(self, section: str, name: str, reason: str, params: dict | None = None) -> None:
        entry = {"section": section, "name": name, "params": params or {}, "status": "skipped", "reason": reason,
                 "wall_s": 0.0}
        self.cases.append(entry)
        if self.echo:
            self.echo(entry)

    # ---- models ----
    def model_kind(self) -> str | None:
        if self.opts.model is None:
            return None
        p = Path(self.opts.model)
        if not p.exists():
            raise InputError(p, "model not found")
        from .backends.base import _kind

        return _kind(p)

    def torch_model(self, config: str):
        """The PEPD module (eval, on the torch device) for a preset or the --model checkpoint."""
        key = ("torch", config)
        if key not in self._cache:
            import torch

            from .model.pepd import PEPD, PEPDConfig

            if self.opts.model is not None:
                model = PEPD.from_pretrained(self.opts.model)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.opts.seed)
                    model = PEPD(PEPDConfig.preset(config))
            self._cache[key] = model.to(self.torch_device).eval()
        return self._cache[key]

    def onnx_path(self, config: str, dynamic: bool) -> Path:
        """--model X.onnx, or the preset/checkpoint exported here (needs torch + dd3g_export)."""
        if self.opts.model is not None and self.model_kind() == "onnxruntime":
            return Path(self.opts.model)
        key = ("onnx", config, dynamic)
        if key not in self._cache:
            if not self.env["detected"]["torch"]:
                raise _Skip("no ONNX model: pass --model model.onnx (exporting one here needs torch)")
            if not _has_module("dd3g_export") or not _has_module("onnx"):
                raise _Skip("no ONNX model: pass --model model.onnx or install dd3g-sdk[export] to export one")
            from dd3g_export.onnx import OnnxExportConfig, to_onnx

            model = self.torch_model(config)
            out = self.tmp / f"{config}{'_dyn' if dynamic else ''}.onnx"
            t0 = time.perf_counter()
            # onnxslim and the full checker are skipped: onnxruntime optimises the graph itself when it loads
            # it (ORT_ENABLE_ALL), and they would double the time of a quick run.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                to_onnx(model.cpu(), out, OnnxExportConfig(dynamic_batch=dynamic, simplify=False, check=False))
            model.to(self.torch_device)
            self.notes.append(f"exported {config} to ONNX for onnxruntime in {time.perf_counter() - t0:.1f} s "
                              f"(fp32, opset 18, not simplified)")
            self._cache[key] = out
        return self._cache[key]

    def model_facts(self, config: str) -> dict:
        """image_size, num_gaussians, noise_shape, sh_degree (and parameters with torch) of a config."""
        key = ("facts", config)
        if key in self._cache:
            return self._cache[key]
        kind = self.model_kind()
        if kind in ("onnxruntime", "tensorrt"):
            from .onnx_meta import parse_metadata, read_onnx_metadata

            if kind == "onnxruntime":
                info = parse_metadata(read_onnx_metadata(self.opts.model), self.opts.model)
            else:
                from .backends.tensorrt_backend import read_engine_sidecar

                info = parse_metadata(read_engine_sidecar(self.opts.model)["metadata"], self.opts.model)
            facts = {"image_size": info.image_size, "num_gaussians": info.num_gaussians,
                     "noise_shape": list(info.noise_shape), "sh_degree": info.sh_degree}
        elif self.env["detected"]["torch"]:
            m = self.torch_model(config)
            facts = {"image_size": m.config.image_size, "num_gaussians": m.num_gaussians,
                     "noise_shape": list(m.noise_shape), "sh_degree": m.config.sh_degree,
                     "parameters": m.num_parameters()}
        else:
            facts = {"image_size": PRESET_IMAGE_SIZE[config], "num_gaussians": PRESET_NUM_GAUSSIANS[config],
                     "noise_shape": None, "sh_degree": 0}
        self._cache[key] = facts
        return facts

    def configs(self) -> tuple[str, ...]:
        # With --model the "config" is that model; it is labelled "model" in the results.
        return ("model",) if self.opts.model is not None else tuple(self.opts.configs)

    # ---- sections ----
    def run_generator(self) -> None:
        for config in self.configs():
            for backend in self.opts.backends:
                getattr(self, f"_gen_{backend}")(config)

    def _inputs(self, facts: dict, batch: int) -> tuple[np.ndarray, np.ndarray]:
        from .noise import draw_noise

        rng = np.random.Generator(np.random.Philox(self.opts.seed))
        s = facts["image_size"]
        img = rng.random((batch, 3, s, s), dtype=np.float32)
        noise = np.stack([draw_noise(self.opts.seed + b, tuple(facts["noise_shape"])) for b in range(batch)])
        return img, noise

    def _gen_torch(self, config: str) -> None:
        kind = self.model_kind()
        if kind not in (None, "torch"):
            return self.skip("generator", f"generator/{config}/torch", f"--model is for {kind}")
        if not self.env["detected"]["torch"]:
            return self.skip("generator", f"generator/{config}/torch", "torch is not installed")
        for prec in self.opts.precisions:
            for batch in self.opts.batches:
                name = f"generator/{config}/torch/{prec}/b{batch}"
                params = {"config": config, "backend": "torch", "precision": prec, "batch": batch,
                          "device": self.torch_device}

                def body(prec=prec, batch=batch):
                    import torch

                    if prec != "fp32" and not self.on_cuda:
                        raise _Skip(f"{prec} needs CUDA (torch autocast on CPU is not what the SDK runs)")
                    model = self.torch_model(config)
                    facts = self.model_facts(config)
                    img, noise = (torch.from_numpy(a).to(self.torch_device) for a in self._inputs(facts, batch))
                    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[prec]

                    def fn():
                        with torch.inference_mode(), torch.autocast(self.torch_device, dtype=dtype,
                                                                    enabled=prec != "fp32"):
                            return model(img, noise)

                    timer_name, timer = self.timer(self.on_cuda)
                    return {"timer": timer_name, "samples": timer(fn),
                            "extra": {"num_gaussians": facts["num_gaussians"], "parameters": facts.get("parameters")}}

                self.case("generator", name, params, body)

    def _gen_onnxruntime(self, config: str) -> None:
        kind = self.model_kind()
        base = f"generator/{config}/onnxruntime"
        if kind not in (None, "torch", "onnxruntime"):
            return self.skip("generator", base, f"--model is for {kind}")
        if not _has_module("onnxruntime"):
            return self.skip("generator", base, "onnxruntime is not installed")
        providers = self.env["detected"]["onnxruntime_providers"]
        devices = ["cpu"] + (["cuda"] if "CUDAExecutionProvider" in providers else [])
        for dev in devices:
            for batch in self.opts.batches:
                params = {"config": config, "backend": "onnxruntime", "precision": "fp32", "batch": batch,
                          "device": dev}

                def body(dev=dev, batch=batch):
                    from .backends.onnxruntime_backend import OnnxRuntimeBackend

                    path = self.onnx_path(config, dynamic=max(self.opts.batches) > 1)
                    key = ("ort", str(path), dev)
                    if key not in self._cache:
                        self._cache[key] = OnnxRuntimeBackend(path, device=dev, threads=self.opts.threads)
                    b = self._cache[key]
                    facts = {"image_size": b.info.image_size, "noise_shape": b.info.noise_shape}
                    img, noise = self._inputs(facts, batch)
                    timer_name, timer = self.timer(False)  # session.run returns host arrays: it is synchronous
                    return {"timer": timer_name, "samples": timer(lambda: b.run(img, noise)),
                            "extra": {"providers": b.session.get_providers(), "precision_in_graph": b.info.precision,
                                      "num_gaussians": b.info.num_gaussians}}

                self.case("generator", f"{base}/{dev}/b{batch}", params, body)

    def _gen_tensorrt(self, config: str) -> None:
        det = self.env["detected"]
        name = f"generator/{config}/tensorrt"
        if self.model_kind() != "tensorrt":
            found = det["tensorrt"] or det["tensorrt_rtx"]
            why = ("pass --model model.engine (build one with `dd3g export --format engine`)" if found
                   else "TensorRT is not installed")
            return self.skip("generator", name, why)
        for batch in self.opts.batches:
            def body(batch=batch):
                from .backends.tensorrt_backend import TensorRTBackend

                if "trt" not in self._cache:
                    self._cache["trt"] = TensorRTBackend(self.opts.model)
                b = self._cache["trt"]
                img, noise = self._inputs({"image_size": b.info.image_size, "noise_shape": b.info.noise_shape}, batch)
                timer_name, timer = self.timer(False)  # run() copies results to the host: synchronous
                return {"timer": timer_name, "samples": timer(lambda: b.run(img, noise)),
                        "extra": {"precision_in_engine": b.info.precision}}

            self.case("generator", f"{name}/b{batch}",
                      {"config": config, "backend": "tensorrt", "precision": "engine", "batch": batch,
                       "device": "cuda"}, body)

    def _renderers(self) -> list[str]:
        out = []
        if self.on_cuda and self.env["detected"]["raster_library"]["available"]:
            out.append("dd3g-cuda")
        if self.on_cuda and self.env["detected"]["gsplat"]:
            out.append("gsplat")
        out.append("reference")
        return out

    def _render_fn(self, renderer: str, g, cam) -> Callable[[], Any]:
        return make_render_fn(renderer, g.to_torch(self.torch_device), cam, g.sh_degree)

    def run_render(self) -> None:
        if not self.env["detected"]["torch"]:
            return self.skip("render", "render", "torch is not installed (every rasteriser here runs on torch tensors)")
        res = self.opts.resolution
        renderers = self._renderers()
        for n in self.opts.gaussians:
            for renderer in renderers:
                name = f"render/{renderer}/{n}/{res}"
                params = {"renderer": renderer, "num_gaussians": n, "resolution": res, "cameras": 1,
                          "sh_degree": 3, "device": self.torch_device}
                # The torch reference keeps whole [tiles, pixels, Gaussians] blocks: beside a fast rasteriser
                # it is timed on the smallest scene only, as a sanity number.
                if renderer == "reference" and len(renderers) > 1 and n != min(self.opts.gaussians):
                    continue

                def body(renderer=renderer, n=n):
                    g = synthetic_scene(n, self.opts.seed)
                    fn = self._render_fn(renderer, g, scene_camera(res))
                    timer_name, timer = self.timer(self.on_cuda)
                    return {"timer": timer_name, "samples": timer(fn)}

                self.case("render", name, params, body)

    def run_e2e(self) -> None:
        res = self.opts.resolution
        for config in self.configs():
            name = f"e2e/{config}/{res}"
            params = {"config": config, "backend": "torch", "precision": "fp32", "resolution": res,
                      "device": self.torch_device or "cpu"}

            def body(config=config):
                if not self.env["detected"]["torch"]:
                    raise _Skip("torch is not installed (the generator runs on torch here, and rendering needs it)")
                if self.model_kind() not in (None, "torch"):
                    raise _Skip("end to end runs on the torch backend: --model is not a checkpoint")
                from .backends.torch_backend import TorchBackend
                from .cameras import orbit_camera
                from .generator import Generator

                gen = Generator(TorchBackend(model=self.torch_model(config), device=self.torch_device))
                path = self._image(1024)
                renderer = self._renderers()[0]
                v = gen.info.views
                cam = orbit_camera(30.0, v.elevation_deg, v.radius, v.fov_deg, res, res)
                stages: dict[str, list[float]] = {"generate": [], "render": []}

                def fn():
                    t0 = time.perf_counter()
                    g = gen(path, seed=self.opts.seed)  # decode, preprocess, noise, model, host copy
                    t1 = time.perf_counter()
                    out = self._render_fn(renderer, g, cam)()
                    rgb = out[0].cpu().numpy()  # the image on the host: the end of the pipeline
                    t2 = time.perf_counter()
                    stages["generate"].append((t1 - t0) * 1e3)
                    stages["render"].append((t2 - t1) * 1e3)
                    return rgb

                samples = time_host(fn, self.opts.repeats, self.opts.warmup, self.opts.budget_s)
                k = len(samples)  # the timed calls are the last k of each stage list
                return {"timer": "perf_counter", "samples": samples,
                        "extra": {"renderer": renderer, "num_gaussians": gen.info.num_gaussians,
                                  "stages_median_ms": {s: float(np.median(v[-k:])) for s, v in stages.items()}}}

            self.case("e2e", name, params, body)

    def _image(self, size: int) -> Path:
        p = self.tmp / f"input_{size}.png"
        if not p.exists():
            write_test_image(p, size, self.opts.seed)
        return p

    def run_preprocess(self) -> None:
        from .preprocess import PreprocessConfig, load_image

        sizes = sorted({self.model_facts(c)["image_size"] for c in self.configs()})
        for src in (1024,) if self.opts.quick else (1024, 2048):
            for s in sizes:
                def body(src=src, s=s):
                    path = self._image(src)
                    cfg = PreprocessConfig(size=s)
                    timer_name, timer = self.timer(False)
                    return {"timer": timer_name, "samples": timer(lambda: load_image(path, cfg))}

                self.case("preprocess", f"preprocess/png{src}/{s}",
                          {"input": f"RGBA PNG {src}x{src}", "image_size": s, "device": "cpu"}, body)

    def run_io(self) -> None:
        from .io import write_gaussians

        counts = sorted({self.model_facts(c)["num_gaussians"] for c in self.configs()})
        jobs = [(n, 0) for n in counts]
        if not self.opts.quick:
            jobs += [(200_000, 0), (200_000, 3)]
        for n, degree in jobs:
            g = None
            for fmt in ("ply", "splat"):
                if fmt == "splat" and degree > 0:
                    continue  # .splat stores no SH bands: the same file as degree 0

                def body(n=n, degree=degree, fmt=fmt):
                    nonlocal g
                    g = g if g is not None else synthetic_scene(n, self.opts.seed, sh_degree=degree)
                    path = self.tmp / f"out_{n}_{degree}.{fmt}"
                    timer_name, timer = self.timer(False)
                    samples = timer(lambda: write_gaussians(g, path))
                    size = path.stat().st_size
                    path.unlink()
                    return {"timer": timer_name, "samples": samples, "extra": {"file_bytes": size}}

                self.case("io", f"io/write_{fmt}/{n}/sh{degree}",
                          {"format": fmt, "num_gaussians": n, "sh_degree": degree, "device": "cpu"}, body)


# ---------------------------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------------------------
def run(opts: BenchOptions, echo: Callable[[dict], None] | None = None, command: str | None = None) -> dict:
    """Benchmark everything `opts` asks for that this machine supports; return the JSON-ready document."""
    env = detect_environment(opts.device)
    opts = opts.resolve(cuda=env["device"]["kind"] == "cuda")
    if opts.model is not None and not Path(opts.model).exists():
        raise InputError(opts.model, "model not found")
    torch = _import("torch")
    if torch is not None and opts.threads:
        torch.set_num_threads(opts.threads)
    started = datetime.datetime.now(datetime.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="dd3g-bench-") as tmp:
        r = _Run(opts, env, Path(tmp), echo=echo)
        for section in SECTIONS:
            if section in opts.sections:
                getattr(r, f"run_{section}")()
    facts = {}
    for c in r.configs():
        with contextlib.suppress(Exception):
            facts[c] = r.model_facts(c)
    opt = dataclasses.asdict(opts)
    opt["model"] = Path(opts.model).name if opts.model else None  # shared documents carry no local paths
    return {
        "schema": SCHEMA,
        "created": started.isoformat(timespec="seconds"),
        "duration_s": round((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(), 1),
        "command": command,
        **env,
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in opt.items()},
        "models": facts,
        "notes": r.notes,
        "cases": r.cases,
    }


def format_case(c: dict) -> tuple[str, str, str, str]:
    """(name, median, p90, note) strings of one case for the printed table."""
    if c["status"] == "ok":
        note = f"{c['repeats']} runs, {'CUDA events' if c['timer'] == 'cuda_events' else 'host clock'}"
        return c["name"], f"{c['median_ms']:.3f}", f"{c['p90_ms']:.3f}", note
    return c["name"], "-", "-", f"{c['status']}: {c['reason']}"


def print_table(doc: dict, file=None) -> None:
    file = file or sys.stdout
    title = f"dd3g bench on {doc['device']['name']} ({doc['device']['kind']})"
    rows = [format_case(c) for c in doc["cases"]]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        Console = None
    if Console is not None:
        t = Table(title=title)
        for col, just in (("case", "left"), ("median ms", "right"), ("p90 ms", "right"), ("", "left")):
            t.add_column(col, justify=just)
        for row in rows:
            t.add_row(*row)
        Console(file=file, width=max(100, shutil.get_terminal_size((120, 20)).columns)).print(t)
    else:
        w = max([len(r[0]) for r in rows] + [4])
        print(title, file=file)
        print(f"{'case':<{w}}  {'median ms':>10}  {'p90 ms':>10}", file=file)
        for name, med, p90, note in rows:
            print(f"{name:<{w}}  {med:>10}  {p90:>10}  {note}", file=file)
    for n in doc["notes"]:
        print(f"note: {n}", file=file)


def run_bench(args: argparse.Namespace) -> int:
    """`dd3g bench`: run, print the table, write --json. 0 if every case ran or was skipped, else 1."""
    if args.json is not None:
        check_writable_target(args.json)  # fail before minutes of benchmarking
    opts = options_from_args(args)

    def echo(c: dict) -> None:  # progress on stderr, so that stdout stays the table
        name, med, p90, note = format_case(c)
        print(f"  {name}: {med} ms (p90 {p90}) {note}", file=sys.stderr, flush=True)

    # Arguments that are paths keep only their file name (the document is meant to be shared).
    argv = [Path(a).name if os.sep in a else a for a in sys.argv[1:]]
    doc = run(opts, echo=echo, command="dd3g " + " ".join(argv))
    print_table(doc)
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(doc, indent=1, default=str) + "\n")
        print(f"wrote {args.json}")
    return 1 if any(c["status"] == "error" for c in doc["cases"]) else 0
