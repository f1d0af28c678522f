"""Build a serialized TensorRT engine from a dd3g ONNX export, plus its sidecar JSON.

One code path for three TensorRT flavours; what differs sits behind a small adapter (`adapter_for`):

| flavour       | network                    | fp16                                 | targets                      |
|---------------|----------------------------|--------------------------------------|------------------------------|
| TensorRT 10.x | weakly typed               | BuilderFlag.FP16 (fp32 or fp16 ONNX) | the build GPU                |
| TensorRT 11.x | strongly typed (only kind) | from the ONNX's types: export --fp16 | the build GPU                |
| TensorRT-RTX  | strongly typed (only kind) | from the ONNX's types: export --fp16 | ComputeCapability list (AOT) |

TensorRT-RTX builds ahead of time for a list of compute capabilities (`EngineConfig.compute_capabilities`,
e.g. ("8.9", "12.0")), so it can build on a GPU it cannot run on (an H100 builds; only 8.x / 12.x run).

Usage:
    from dd3g_export.tensorrt import EngineConfig, to_engine
    to_engine("model_fp16.onnx", "model.engine", EngineConfig(workspace_gb=4))
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from dd3g_sdk._fileio import atomic_write, check_writable_target
from dd3g_sdk.backends.tensorrt_backend import (GpuInfo, TensorRTModule, current_gpu, detect_tensorrt,
                                                ensure_rtx_core_link, file_sha256, sidecar_path)
from dd3g_sdk.errors import InputError
from dd3g_sdk.onnx_meta import parse_metadata, read_onnx_metadata

from .metadata import write_engine_sidecar

log = logging.getLogger("dd3g_export")


class EngineBuildError(RuntimeError):
    """TensorRT parsed the ONNX but could not build an engine (its log says why)."""


@dataclass(frozen=True)
class EngineConfig:
    """Options of `to_engine`.

    workspace_gb: builder workspace memory-pool limit, GiB.
    precision: None = the ONNX's own (its dd3g.precision). "fp16" on an fp32 ONNX works only on TensorRT 10
        (BuilderFlag.FP16); strongly typed TensorRT (11, RTX) needs an fp16 ONNX (dd3g export --fp16).
    opt_batch / max_batch: the optimisation profile of a dynamic-batch ONNX (min batch is 1).
    compute_capabilities: TensorRT-RTX targets such as ("8.9", "12.0"); () = the GPU it builds on.
    optimization_level: builder optimisation level 0..5 (None: TensorRT's default, 3).
    module: force "tensorrt" or "tensorrt_rtx_bindings" (None: the first that imports).
    """
    workspace_gb: float = 4.0
    precision: str | None = None
    opt_batch: int = 1
    max_batch: int = 8
    compute_capabilities: tuple[str, ...] = ()
    optimization_level: int | None = None
    module: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in (None, "fp32", "fp16"):
            raise ValueError(f"precision must be None, 'fp32' or 'fp16', got {self.precision!r}")
        if not 1 <= self.opt_batch <= self.max_batch:
            raise ValueError(f"need 1 <= opt_batch <= max_batch, got {self.opt_batch}, {self.max_batch}")
        if self.workspace_gb <= 0:
            raise ValueError(f"workspace_gb must be > 0, got {self.workspace_gb}")
        for cc in self.compute_capabilities:
            if not re.fullmatch(r"\d+\.\d+", str(cc)):
                raise ValueError(f"compute capability must look like '8.9', got {cc!r}")


# ---- the adapter ----------------------------------------------------------------------------------------
class _Adapter:
    """What differs between TensorRT flavours: network flags, precision, build targets."""

    def __init__(self, trt: TensorRTModule):
        self.trt = trt
        self.m = trt.module

    def network_flags(self) -> int:
        return 0

    def set_precision(self, config, precision: str, onnx_precision: str, onnx_path: Path) -> None:
        raise NotImplementedError

    def set_targets(self, config, ccs: tuple[str, ...], gpu: GpuInfo | None) -> list[str]:
        """Configure the build targets; return the compute capabilities the engine will run on."""
        if ccs and (gpu is None or list(ccs) != [gpu.compute_capability]):
            raise ValueError(f"{self.trt.label} builds for the GPU it runs on; compute_capabilities is a "
                             "TensorRT-RTX option")
        if gpu is None:
            raise EngineBuildError(f"{self.trt.label} needs a CUDA GPU to build an engine")
        return [gpu.compute_capability]


class _TensorRT10(_Adapter):
    def network_flags(self) -> int:
        return 0  # explicit batch is the default in 10.x; weakly typed so BuilderFlag.FP16 applies

    def set_precision(self, config, precision, onnx_precision, onnx_path):
        if precision == "fp16" or onnx_precision == "fp16":
            config.set_flag(self.m.BuilderFlag.FP16)


class _StronglyTyped(_Adapter):
    def network_flags(self) -> int:
        flag = getattr(self.m.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        return 0 if flag is None else 1 << int(flag)

    def set_precision(self, config, precision, onnx_precision, onnx_path):
        if precision != onnx_precision:
            raise InputError(onnx_path, f"{self.trt.label} is strongly typed: the precision comes from the ONNX, "
                                        f"which is {onnx_precision}; export an {precision} ONNX first "
                                        f"(dd3g export CKPT --format onnx{' --fp16' if precision == 'fp16' else ''})")


class _TensorRT11(_StronglyTyped):
    pass


class _TensorRTRTX(_StronglyTyped):
    def supported(self) -> dict[str, Any]:
        """'8.9' -> ComputeCapability.SM89 for every SM member of the installed enum."""
        out = {}
        enum = self.m.ComputeCapability
        for name in list(getattr(enum, "__members__", None) or dir(enum)):
            m = re.fullmatch(r"SM(\d+)(\d)", name)
            if m:
                out[f"{m.group(1)}.{m.group(2)}"] = getattr(enum, name)
        return out

    def set_targets(self, config, ccs, gpu):
        table = self.supported()
        if not ccs:
            if gpu is None or gpu.compute_capability not in table:
                have = "no GPU" if gpu is None else f"{gpu.name} ({gpu.compute_capability})"
                raise ValueError(f"{self.trt.label} cannot target the build GPU, {have}; pass compute "
                                 f"capabilities explicitly (supported: {', '.join(sorted(table))})")
            config.num_compute_capabilities = 1
            config.set_compute_capability(self.m.ComputeCapability.CURRENT, 0)
            return [gpu.compute_capability]
        bad = [c for c in ccs if c not in table]
        if bad:
            raise ValueError(f"{self.trt.label} cannot target compute capability {', '.join(bad)} "
                             f"(supported: {', '.join(sorted(table))})")
        config.num_compute_capabilities = len(ccs)
        for i, c in enumerate(ccs):
            if not config.set_compute_capability(table[c], i):
                raise EngineBuildError(f"{self.trt.label} refused compute capability {c}")
        return list(ccs)


def adapter_for(trt: TensorRTModule) -> _Adapter:
    return {"tensorrt-10": _TensorRT10, "tensorrt-11": _TensorRT11, "tensorrt-rtx": _TensorRTRTX}[trt.flavour](trt)


# ---- build ------------------------------------------------------------------------------------------------
def _gpu_or_none() -> GpuInfo | None:
    try:
        return current_gpu()
    except Exception:
        try:
            import torch

            if torch.cuda.is_available():
                return GpuInfo(torch.cuda.get_device_name(0), "%d.%d" % torch.cuda.get_device_capability(0))
        except Exception:
            pass
    return None


def to_engine(onnx_path: str | os.PathLike, out: str | os.PathLike, cfg: EngineConfig = EngineConfig(), *,
              _trt: TensorRTModule | None = None, _gpu: Callable[[], GpuInfo | None] = _gpu_or_none) -> Path:
    """Build `out` (a serialized engine) and `out`.json (its sidecar) from a dd3g ONNX export.

    Returns `out`. Raises InputError for a bad ONNX or output path (nothing is written), ImportError when no
    TensorRT is installed, EngineBuildError when TensorRT cannot build. Logs which TensorRT was used; the
    sidecar records it. (`_trt` and `_gpu` let tests run the path with a stand-in TensorRT.)
    """
    onnx_path, out = Path(onnx_path), check_writable_target(out)
    meta = read_onnx_metadata(onnx_path)
    info = parse_metadata(meta, onnx_path)
    dynamic = meta.get("dd3g.dynamic_batch") == "true"
    trt = _trt or detect_tensorrt(cfg.module)
    adapter = adapter_for(trt)
    m = trt.module
    precision = cfg.precision or info.precision
    gpu = _gpu()
    log.info("dd3g export: building a %s engine with %s", precision, trt.label)
    if trt.flavour == "tensorrt-rtx" and _trt is None:
        ensure_rtx_core_link()  # else a plugin node kills the process inside the parser (see its docstring)

    t0 = time.perf_counter()
    logger = m.Logger(m.Logger.WARNING)
    builder = m.Builder(logger)
    network = builder.create_network(adapter.network_flags())
    parser = m.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(onnx_path, f"{trt.label} could not parse the ONNX: {errors or 'no detail'}")
    config = builder.create_builder_config()
    workspace = int(cfg.workspace_gb * (1 << 30))
    config.set_memory_pool_limit(m.MemoryPoolType.WORKSPACE, workspace)
    if cfg.optimization_level is not None:
        config.builder_optimization_level = int(cfg.optimization_level)
    adapter.set_precision(config, precision, info.precision, onnx_path)
    targets = adapter.set_targets(config, tuple(cfg.compute_capabilities), gpu)
    profile = None
    if dynamic:
        prof = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            t = network.get_input(i)
            rest = tuple(int(d) for d in t.shape)[1:]
            prof.set_shape(t.name, (1, *rest), (cfg.opt_batch, *rest), (cfg.max_batch, *rest))
        config.add_optimization_profile(prof)
        profile = {"min": 1, "opt": cfg.opt_batch, "max": cfg.max_batch}
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"{trt.label} could not build an engine from {onnx_path} (see its log above)")
    data = memoryview(serialized).cast("B") if not isinstance(serialized, (bytes, bytearray)) else serialized
    seconds = time.perf_counter() - t0

    sha = hashlib.sha256(data).hexdigest()
    with atomic_write(out, "wb") as f:
        f.write(data)
    try:
        write_engine_sidecar(out, meta, {
            "flavour": trt.flavour, "module": trt.name, "version": trt.version,
            "strongly_typed": trt.strongly_typed_only, "precision": precision,
            "build_gpu": gpu.to_dict() if gpu else None, "target_compute_capabilities": targets,
            "hardware_compatible": False, "batch_profile": profile, "workspace_bytes": workspace,
            "build_seconds": round(seconds, 3),
        }, engine_sha256=sha, engine_bytes=len(data), onnx_path=onnx_path, onnx_sha256=file_sha256(onnx_path))
    except BaseException:
        out.unlink(missing_ok=True)  # an engine without its sidecar would be refused anyway
        raise
    log.info("dd3g export: %s -> %s (%d bytes, %.1f s) and %s", onnx_path, out, len(data), seconds,
             sidecar_path(out).name)
    return out
