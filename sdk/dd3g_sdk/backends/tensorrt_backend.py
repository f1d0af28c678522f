"""PEPD on a serialized TensorRT engine, through cuda-python (cuda.bindings: device buffers and a stream).

An engine is only valid for the TensorRT version that built it and for the GPUs it was built for, and a
mismatch crashes or fails obscurely inside TensorRT. So the backend reads the sidecar JSON that `dd3g export`
writes beside the engine (`model.engine.json`, see dd3g_export.metadata) and refuses, with an InputError naming
the file, an engine that another TensorRT version or another GPU built, before TensorRT sees it.

Which TensorRT: stock `tensorrt` (10.x with builder flags; 11.x strongly typed only) or TensorRT-RTX
(`tensorrt_rtx_bindings`, for RTX GPUs). `detect_tensorrt()` says which is installed; the backend imports the
one named in the sidecar. Nothing here is imported at module load: this file imports without TensorRT or CUDA.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import InputError
from .base import OUTPUT_NAMES, Backend, ModelInfo

SIDECAR_VERSION = 1
MODULES = ("tensorrt", "tensorrt_rtx_bindings")  # import names, in order of preference


# ---- sidecar ---------------------------------------------------------------------------------------------
def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """`model.engine` -> `model.engine.json`."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def read_engine_sidecar(engine_path: str | os.PathLike) -> dict:
    """The parsed sidecar of an engine; InputError if it is missing or malformed."""
    engine_path = Path(engine_path)
    sc = sidecar_path(engine_path)
    if not sc.is_file():
        raise InputError(engine_path, f"no sidecar metadata {sc.name} beside the engine; build engines with "
                                      "`dd3g export ... --format engine`, which writes it")
    try:
        doc = json.loads(sc.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(sc, f"engine sidecar is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("dd3g_engine_sidecar") != SIDECAR_VERSION:
        raise InputError(sc, f"not a dd3g engine sidecar (version {SIDECAR_VERSION} expected)")
    for key in ("metadata", "tensorrt", "engine"):
        if not isinstance(doc.get(key), dict):
            raise InputError(sc, f"engine sidecar has no {key!r} section")
    for key in ("flavour", "module", "version", "target_compute_capabilities"):
        if key not in doc["tensorrt"]:
            raise InputError(sc, f"engine sidecar: tensorrt.{key} is missing")
    return doc


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---- which TensorRT --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorRTModule:
    """An importable TensorRT flavour."""
    module: Any  # the imported Python module
    name: str  # import name: "tensorrt" or "tensorrt_rtx_bindings"
    flavour: str  # "tensorrt-10", "tensorrt-11" (11 and later: strongly typed only) or "tensorrt-rtx"
    version: str

    @property
    def strongly_typed_only(self) -> bool:
        """True where precision comes from the network's types alone (no BuilderFlag.FP16)."""
        return self.flavour != "tensorrt-10"

    @property
    def label(self) -> str:
        return f"{'TensorRT-RTX' if self.flavour == 'tensorrt-rtx' else 'TensorRT'} {self.version} ({self.name})"


def classify_tensorrt(module: Any, name: str) -> TensorRTModule:
    """Name the flavour of an imported TensorRT module; ValueError for versions before 10."""
    version = str(getattr(module, "__version__", "") or "")
    if name == "tensorrt_rtx_bindings":
        return TensorRTModule(module, name, "tensorrt-rtx", version)
    m = re.match(r"(\d+)\.", version)
    if not m:
        raise ValueError(f"cannot read the version of module {name!r} ({version!r})")
    major = int(m.group(1))
    if major < 10:
        raise ValueError(f"TensorRT {version} is too old: dd3g needs TensorRT 10 or later (or TensorRT-RTX)")
    return TensorRTModule(module, name, "tensorrt-10" if major == 10 else "tensorrt-11", version)


def detect_tensorrt(prefer: str | None = None,
                    importer: Callable[[str], Any] = importlib.import_module) -> TensorRTModule:
    """The installed TensorRT: `prefer` ("tensorrt" or "tensorrt_rtx_bindings") if given, else the first of
    MODULES that imports. ImportError says what to install when none does."""
    names = (prefer,) if prefer else MODULES
    if prefer and prefer not in MODULES:
        raise ValueError(f"unknown TensorRT module {prefer!r}: use one of {MODULES}")
    problems = []
    for name in names:
        try:
            mod = importer(name)
        except Exception as e:  # ImportError, or a stub package that fails on import
            problems.append(f"{name}: {type(e).__name__}: {e}")
            continue
        try:
            return classify_tensorrt(mod, name)
        except ValueError as e:
            problems.append(f"{name}: {e}")
    raise ImportError("no usable TensorRT: install TensorRT 10+ (`tensorrt`) or TensorRT-RTX "
                      "(`tensorrt_rtx_bindings`). Tried: " + "; ".join(problems))


RTX_CORE_SONAME = "libtensorrt_rtx.so.1"
RTX_CORE_UNVERSIONED = "libtensorrt_rtx.so"


def ensure_rtx_core_link(libs_dir: str | os.PathLike | None = None) -> Path | None:
    """Make TensorRT-RTX's ONNX parser able to import plugin nodes; returns the link's path (None: no TensorRT-RTX
    libraries found, nothing to do).

    Why: TensorRT-RTX 1.7.1's ONNX parser (libtensorrt_onnxparser_rtx.so.1) reaches the builder's plugin entry
    point through dlopen("libtensorrt_rtx.so") - the unversioned name - when a node is a plugin. The pip wheel
    tensorrt-rtx-cu13-libs ships only libtensorrt_rtx.so.1, so that dlopen fails, the parser throws inside a
    noexcept path, and the process dies with "terminate called without an active exception" right after
    "Successfully created plugin". The parser's RUNPATH is $ORIGIN, so a link libtensorrt_rtx.so ->
    libtensorrt_rtx.so.1 beside it is enough (found 2026-11-27 with gdb; LD_LIBRARY_PATH set after start-up
    cannot help, as the loader reads it once). `libs_dir` defaults to the `tensorrt_rtx_libs` package's folder.
    InputError naming the folder when the link is missing and cannot be written there.
    """
    if libs_dir is None:
        import importlib.util

        spec = importlib.util.find_spec("tensorrt_rtx_libs")
        if spec is None or not spec.submodule_search_locations:
            return None
        libs_dir = next(iter(spec.submodule_search_locations))
    d = Path(libs_dir)
    core, link = d / RTX_CORE_SONAME, d / RTX_CORE_UNVERSIONED
    if not core.is_file():
        return None
    if link.exists():
        return link
    tmp = d / f".{RTX_CORE_UNVERSIONED}.{os.getpid()}.tmp"
    try:
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(RTX_CORE_SONAME)
        os.replace(tmp, link)  # atomic: two processes racing both end with the same link
    except OSError as e:
        raise InputError(d, f"TensorRT-RTX's parser needs {RTX_CORE_UNVERSIONED} -> {RTX_CORE_SONAME} here to import "
                            f"plugin nodes and the link cannot be made ({e.strerror}); run: ln -s {RTX_CORE_SONAME} "
                            f"{link}") from None
    return link


# ---- which GPU -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "major.minor", e.g. "9.0"

    def to_dict(self) -> dict:
        return {"name": self.name, "compute_capability": self.compute_capability}


def _cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python 11.x/12.x layout
        except ImportError:
            raise ImportError("the TensorRT backend needs cuda-python: pip install cuda-python "
                              "(cuda-bindings); pycuda is not used") from None
    return cudart


def _check(result, what: str):
    """Unpack a cuda-python (err, *values) tuple; raise RuntimeError on an error code."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(getattr(err, "value", err)) != 0:  # cudaError_t is an enum; 0 = cudaSuccess
        raise RuntimeError(f"CUDA error in {what}: {err}")
    return values[0] if len(values) == 1 else tuple(values)


def current_gpu(device: int = 0, cudart=None) -> GpuInfo:
    """Name and compute capability of CUDA device `device` (via cuda-python)."""
    cudart = cudart or _cudart()
    prop = _check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode("utf-8", "replace")
    return GpuInfo(str(name), f"{int(prop.major)}.{int(prop.minor)}")


# ---- compatibility ---------------------------------------------------------------------------------------
def check_engine_compatible(engine_path: Path, sidecar: Mapping[str, Any], installed: TensorRTModule | None,
                            gpu: GpuInfo) -> None:
    """Raise InputError (naming the engine) unless `installed` TensorRT and `gpu` can run this engine.

    - Same flavour and exact version: serialized engines are not portable across TensorRT versions.
    - TensorRT-RTX: the GPU's compute capability must be one of the engine's targets.
    - Stock TensorRT: the same GPU model and compute capability as the build GPU, unless the engine was
      built hardware-compatible (then any GPU of compute capability >= 8.0).
    """
    check_engine_version(engine_path, sidecar, installed)
    check_engine_gpu(engine_path, sidecar, gpu)


_REBUILD = "rebuild it on this machine: dd3g export CKPT --format engine"


def check_engine_version(engine_path: Path, sidecar: Mapping[str, Any], installed: TensorRTModule | None) -> None:
    t = sidecar["tensorrt"]
    built = f"{'TensorRT-RTX' if t['flavour'] == 'tensorrt-rtx' else 'TensorRT'} {t['version']}"
    if installed is None:
        raise InputError(engine_path, f"built with {built} (module {t['module']}), which is not installed; "
                                      f"install that version or {_REBUILD}")
    if installed.flavour != t["flavour"] or installed.name != t["module"] or installed.version != t["version"]:
        raise InputError(engine_path, f"built with {built} but {installed.label} is installed; engines are tied "
                                      f"to the TensorRT version: {_REBUILD}")


def check_engine_gpu(engine_path: Path, sidecar: Mapping[str, Any], gpu: GpuInfo) -> None:
    t = sidecar["tensorrt"]
    targets = [str(c) for c in t["target_compute_capabilities"]]
    if t["flavour"] == "tensorrt-rtx":
        if gpu.compute_capability not in targets:
            raise InputError(engine_path, f"built for compute capability {', '.join(targets)}; this GPU "
                                          f"({gpu.name}, {gpu.compute_capability}) is not one of them: {_REBUILD}")
        return
    if t.get("hardware_compatible"):
        if float(gpu.compute_capability) < 8.0:
            raise InputError(engine_path, f"hardware-compatible engines need compute capability >= 8.0; this GPU "
                                          f"({gpu.name}) has {gpu.compute_capability}")
        return
    bg = t.get("build_gpu") or {}
    if bg.get("name") != gpu.name or bg.get("compute_capability") != gpu.compute_capability:
        raise InputError(engine_path, f"built for another GPU ({bg.get('name')}, compute capability "
                                      f"{bg.get('compute_capability')}); this is {gpu.name} "
                                      f"({gpu.compute_capability}): {_REBUILD}")


def check_engine_file(engine_path: Path, sidecar: Mapping[str, Any]) -> bytes:
    """The engine's bytes, after checking their size and sha256 against the sidecar."""
    data = engine_path.read_bytes()
    e = sidecar["engine"]
    if len(data) != int(e.get("bytes", -1)):
        raise InputError(engine_path, f"engine is {len(data)} bytes but its sidecar says {e.get('bytes')}: "
                                      "truncated, or the sidecar belongs to another engine")
    if hashlib.sha256(data).hexdigest() != e.get("sha256"):
        raise InputError(engine_path, "engine's sha256 does not match its sidecar: corrupt, or the sidecar belongs "
                                      "to another engine")
    return data


# ---- the backend -----------------------------------------------------------------------------------------
class TensorRTBackend(Backend):
    """Runs a dd3g engine. Inputs/outputs are float32 numpy; the engine's internal precision is its own."""

    name = "tensorrt"

    def __init__(self, path: str | os.PathLike, device: int = 0, *, _trt: TensorRTModule | None = None,
                 _cuda=None, _gpu: GpuInfo | None = None):
        # The underscore arguments let tests run the whole path with stand-ins for TensorRT and CUDA.
        from ..onnx_meta import parse_metadata

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(self.path, "engine file not found")
        sidecar = read_engine_sidecar(self.path)
        self._info = parse_metadata(sidecar["metadata"], self.path)
        self._sidecar = sidecar
        t = sidecar["tensorrt"]
        if _trt is None:
            try:
                _trt = detect_tensorrt(prefer=t["module"])
            except (ImportError, ValueError):
                _trt = None
        check_engine_version(self.path, sidecar, _trt)
        self._cudart = _cuda or _cudart()
        _check(self._cudart.cudaSetDevice(device), "cudaSetDevice")
        check_engine_gpu(self.path, sidecar, _gpu or current_gpu(device, self._cudart))
        data = check_engine_file(self.path, sidecar)

        trt = _trt.module
        self._trt = _trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise InputError(self.path, f"{_trt.label} could not deserialize the engine (see its log above)")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if sorted(inputs) != ["image", "noise"] or not set(OUTPUT_NAMES) <= set(names):
            raise InputError(self.path, f"engine tensors {names} are not PEPD's (image, noise -> "
                                        f"{', '.join(OUTPUT_NAMES)})")
        for n in names:
            if self._engine.get_tensor_dtype(n) != trt.DataType.FLOAT:
                raise InputError(self.path, f"engine tensor {n!r} is {self._engine.get_tensor_dtype(n)}, "
                                            "expected float32 inputs/outputs")
        self._stream = _check(self._cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def tensorrt(self) -> TensorRTModule:
        return self._trt

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self._cudart.cudaFree(ptr), "cudaFree")
            ptr = int(_check(self._cudart.cudaMalloc(nbytes), "cudaMalloc"))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, image: np.ndarray, noise: np.ndarray) -> dict[str, np.ndarray]:
        from .onnxruntime_backend import check_inputs

        image, noise = check_inputs(self._info, image, noise)
        cudart, ctx = self._cudart, self._context
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, arr in (("image", image), ("noise", noise)):
            if not ctx.set_input_shape(name, tuple(arr.shape)):
                raise ValueError(f"the engine does not accept {name} of shape {list(arr.shape)} (batch outside "
                                 "its optimisation profile?)")
            ptr = self._buffer(name, arr.nbytes)
            _check(cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, h2d, self._stream), "cudaMemcpyAsync")
            ctx.set_tensor_address(name, ptr)
        out = {}
        for name in OUTPUT_NAMES:
            out[name] = np.empty(tuple(ctx.get_tensor_shape(name)), np.float32)
            ctx.set_tensor_address(name, self._buffer(name, out[name].nbytes))
        if not ctx.execute_async_v3(int(self._stream)):
            raise RuntimeError(f"{self._trt.label}: execute_async_v3 failed for {self.path}")
        for name, arr in out.items():
            _check(cudart.cudaMemcpyAsync(arr.ctypes.data, self._buffers[name][0], arr.nbytes, d2h, self._stream),
                   "cudaMemcpyAsync")
        _check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return out

    def close(self) -> None:
        """Free the device buffers and the stream (also done at garbage collection)."""
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        for ptr, _ in getattr(self, "_buffers", {}).values():
            cudart.cudaFree(ptr)
        self._buffers = {}
        if getattr(self, "_stream", None) is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

