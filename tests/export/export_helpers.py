"""Helpers of the export tests (imported by conftest.py and the tests).

- `dummy_onnx`: a tiny hand-built ONNX with PEPD's IO contract and real dd3g metadata (no torch export, so
  metadata / backend / builder tests cost milliseconds). Its outputs are a simple function of the inputs
  (see `dummy_reference`), so a backend that runs it can be checked exactly.
- `FakeTensorRT` / `FakeCudart`: stand-ins with the API surface of TensorRT 10, 11 and TensorRT-RTX, and of
  cuda-python's runtime module, recording what the code under test asked for. No GPU here can run an engine
  (see shared/gpu-env/README.md), so the builder and backend logic is tested against these.
- `tiny_exports`: the real PEPD `tiny` preset exported once per session (fp32 dynamic batch, fp16 batch 1).
"""
from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from dd3g_sdk.cameras import ViewSetConfig

DUMMY_S, DUMMY_V, DUMMY_H = 8, 2, 4  # image side, views, noise side: N = V * H * H


@dataclass(frozen=True)
class DummyConfig:
    image_size: int = DUMMY_S
    sh_degree: int = 0
    views: ViewSetConfig = field(default_factory=lambda: ViewSetConfig(num_views=DUMMY_V))


class DummyModel:
    config = DummyConfig()
    noise_shape = (DUMMY_V, 3, DUMMY_H, DUMMY_H)
    num_gaussians = DUMMY_V * DUMMY_H * DUMMY_H


def dummy_reference(image: np.ndarray, noise: np.ndarray) -> dict[str, np.ndarray]:
    """What the dummy graph computes, in numpy."""
    b = image.shape[0]
    m = noise.transpose(0, 1, 3, 4, 2).reshape(b, -1, 3) + image.mean(axis=(1, 2, 3))[:, None, None]
    sig = 1 / (1 + np.exp(-m))
    quats = np.concatenate([np.ones_like(m[..., :1]), m], -1)
    return {"means": m, "scales": 0.1 * sig, "quats": quats, "opacities": 1 / (1 + np.exp(-m.mean(-1))),
            "sh": m[:, :, None, :]}


def make_dummy_onnx(path: Path, *, dynamic_batch: bool = True, precision: str = "fp32", metadata=True,
                    extra_meta: dict | None = None) -> Path:
    import onnx
    from onnx import TensorProto, helper

    from dd3g_export.metadata import build_metadata

    B = "batch" if dynamic_batch else 1
    S, V, H = DUMMY_S, DUMMY_V, DUMMY_H
    N = V * H * H
    f = TensorProto.FLOAT
    c = lambda name, vals, t=TensorProto.INT64: helper.make_tensor(name, t, [len(vals)], vals)  # noqa: E731
    nodes = [
        helper.make_node("ReduceMean", ["image", "axes123"], ["imean"], keepdims=1),  # [B,1,1,1]
        helper.make_node("Squeeze", ["imean", "ax3"], ["imean3"]),  # [B,1,1]
        helper.make_node("Transpose", ["noise"], ["nt"], perm=[0, 1, 3, 4, 2]),
        helper.make_node("Reshape", ["nt", "shape_m"], ["nr"]),
        helper.make_node("Add", ["nr", "imean3"], ["means"]),
        helper.make_node("Sigmoid", ["means"], ["sig"]),
        helper.make_node("Mul", ["sig", "tenth"], ["scales"]),
        helper.make_node("Pad", ["means", "pads", "one"], ["quats"], mode="constant"),
        helper.make_node("ReduceMean", ["means", "axm1"], ["mm"], keepdims=0),
        helper.make_node("Sigmoid", ["mm"], ["opacities"]),
        helper.make_node("Unsqueeze", ["means", "ax2"], ["sh"]),
    ]
    inits = [c("axes123", [1, 2, 3]), c("ax3", [3]), c("shape_m", [0, N, 3]), c("axm1", [-1]), c("ax2", [2]),
             c("pads", [0, 0, 1, 0, 0, 0]), helper.make_tensor("tenth", f, [], [0.1]),
             helper.make_tensor("one", f, [], [1.0])]
    graph = helper.make_graph(
        nodes, "dummy_pepd",
        [helper.make_tensor_value_info("image", f, [B, 3, S, S]),
         helper.make_tensor_value_info("noise", f, [B, V, 3, H, H])],
        [helper.make_tensor_value_info("means", f, [B, N, 3]), helper.make_tensor_value_info("scales", f, [B, N, 3]),
         helper.make_tensor_value_info("quats", f, [B, N, 4]), helper.make_tensor_value_info("opacities", f, [B, N]),
         helper.make_tensor_value_info("sh", f, [B, N, 1, 3])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    if metadata:
        meta = build_metadata(DummyModel(), precision=precision, opset=18, dynamic_batch=dynamic_batch)
        meta.update(extra_meta or {})
        for k, v in meta.items():
            model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


# ---- TensorRT and cuda-python stand-ins ---------------------------------------------------------------------
class _Enum(SimpleNamespace):
    @property
    def __members__(self):
        return dict(vars(self))


class FakeTensorRT:
    """The TensorRT Python API surface that dd3g uses. flavour: "10", "11" or "rtx"."""

    def __init__(self, flavour: str = "10", version: str | None = None, fail_build: bool = False):
        self.flavour = flavour
        self.__version__ = version or {"10": "10.7.0.23", "11": "11.0.0.1", "rtx": "1.7.1.116"}[flavour]
        self.fail_build = fail_build
        self.calls: list[tuple] = []
        rec = self.calls.append
        trt = self

        class Logger:
            WARNING = 2
            Severity = SimpleNamespace(WARNING=2)

            def __init__(self, severity=2):
                self.severity = severity

        self.Logger = Logger
        self.BuilderFlag = (_Enum(TF32=7, DEBUG=1) if flavour != "10" else _Enum(FP16=0, TF32=7, DEBUG=1))
        self.NetworkDefinitionCreationFlag = _Enum(STRONGLY_TYPED=5) if flavour != "10" else _Enum(
            STRONGLY_TYPED=5, EXPLICIT_BATCH=0)
        self.MemoryPoolType = _Enum(WORKSPACE=0)
        self.TensorIOMode = _Enum(NONE=0, INPUT=1, OUTPUT=2)
        self.DataType = _Enum(FLOAT=0, HALF=1)
        if flavour == "rtx":
            self.ComputeCapability = _Enum(NONE=-1, CURRENT=0, SM75=75, SM80=80, SM86=86, SM89=89, SM120=120,
                                           SM121=121)

        class Tensor:
            def __init__(self, name, shape):
                self.name, self.shape = name, shape

        class Network:
            def __init__(self, flags):
                self.flags, self.inputs = flags, []

            @property
            def num_inputs(self):
                return len(self.inputs)

            def get_input(self, i):
                return self.inputs[i]

        class Error:
            def __init__(self, msg):
                self.msg = msg

            def __str__(self):
                return self.msg

        class OnnxParser:
            def __init__(self, network, logger):
                self.network, self.errors = network, []

            @property
            def num_errors(self):
                return len(self.errors)

            def get_error(self, i):
                return self.errors[i]

            def parse_from_file(self, path):
                import onnx

                rec(("parse", path))
                try:
                    m = onnx.load(path, load_external_data=False)
                except Exception as e:
                    self.errors.append(Error(f"ModelImporter: failed to parse: {e}"))
                    return False
                for i in m.graph.input:
                    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in i.type.tensor_type.shape.dim)
                    self.network.inputs.append(Tensor(i.name, dims))
                self.network.onnx = m
                return True

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, lo, opt, hi):
                self.shapes[name] = (lo, opt, hi)

        class Config:
            def __init__(self):
                self.flags, self.pools, self.profiles, self.ccs = set(), {}, [], {}
                self.num_compute_capabilities = 0
                self.builder_optimization_level = 3

            def set_flag(self, flag):
                self.flags.add(flag)

            def set_memory_pool_limit(self, pool, size):
                self.pools[pool] = size

            def add_optimization_profile(self, p):
                self.profiles.append(p)
                return len(self.profiles) - 1

            def set_compute_capability(self, cc, index):
                if not 0 <= index < self.num_compute_capabilities:
                    return False
                self.ccs[index] = cc
                return True

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                rec(("create_network", flags))
                return Network(flags)

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                rec(("build", network, config))
                if trt.fail_build:
                    return None
                spec = {"inputs": {t.name: list(t.shape) for t in network.inputs},
                        "outputs": {o.name: [d.dim_value if d.HasField("dim_value") else -1
                                             for d in o.type.tensor_type.shape.dim] for o in network.onnx.graph.output},
                        "version": trt.__version__}
                return b"FAKE-ENGINE" + json.dumps(spec).encode()

        self.Builder, self.OnnxParser = Builder, OnnxParser

        class Context:
            def __init__(self, engine):
                self.engine, self.shapes, self.addr = engine, {}, {}

            def set_input_shape(self, name, shape):
                want = self.engine.spec["inputs"][name]
                ok = len(shape) == len(want) and all(w in (-1, s) for w, s in zip(want, shape))
                if ok:
                    self.shapes[name] = tuple(shape)
                return ok

            def get_tensor_shape(self, name):
                b = self.shapes["image"][0]
                return tuple(b if d == -1 else d for d in self.engine.spec["outputs"][name])

            def set_tensor_address(self, name, ptr):
                self.addr[name] = ptr
                return True

            def _host(self, name, shape):
                n = int(np.prod(shape))
                buf = (ctypes.c_float * n).from_address(self.addr[name])
                return np.frombuffer(buf, np.float32, n).reshape(shape)

            def execute_async_v3(self, stream):
                rec(("execute", stream))
                image = self._host("image", self.shapes["image"])
                noise = self._host("noise", self.shapes["noise"])
                for name, val in dummy_reference(image, noise).items():
                    self._host(name, self.get_tensor_shape(name))[...] = val
                return True

        class Engine:
            def __init__(self, spec):
                self.spec = spec
                self.names = list(spec["inputs"]) + list(spec["outputs"])

            @property
            def num_io_tensors(self):
                return len(self.names)

            def get_tensor_name(self, i):
                return self.names[i]

            def get_tensor_mode(self, name):
                return trt.TensorIOMode.INPUT if name in self.spec["inputs"] else trt.TensorIOMode.OUTPUT

            def get_tensor_dtype(self, name):
                return trt.DataType.FLOAT

            def create_execution_context(self):
                return Context(self)

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, data):
                rec(("deserialize", len(data)))
                data = bytes(data)
                if not data.startswith(b"FAKE-ENGINE"):
                    return None
                return Engine(json.loads(data[len(b"FAKE-ENGINE"):]))

        self.Runtime = Runtime

    @property
    def module_name(self) -> str:
        return "tensorrt_rtx_bindings" if self.flavour == "rtx" else "tensorrt"

    def as_module(self):
        from dd3g_sdk.backends.tensorrt_backend import classify_tensorrt

        return classify_tensorrt(self, self.module_name)


class FakeCudart:
    """cuda-python runtime stand-in: 'device' memory is host memory, copies are memmoves."""

    def __init__(self, name: str = "NVIDIA GeForce RTX 4090", cc: tuple[int, int] = (8, 9)):
        self.prop = SimpleNamespace(name=name.encode() + b"\0\0", major=cc[0], minor=cc[1])
        self.mem: dict[int, ctypes.Array] = {}
        self.streams = 0
        self.freed: list[int] = []
        self.cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def cudaGetDeviceProperties(self, dev):
        return (0, self.prop)

    def cudaSetDevice(self, dev):
        return (0,)

    def cudaMalloc(self, n):
        buf = ctypes.create_string_buffer(int(n))
        ptr = ctypes.addressof(buf)
        self.mem[ptr] = buf
        return (0, ptr)

    def cudaFree(self, ptr):
        self.freed.append(ptr)
        self.mem.pop(ptr, None)
        return (0,)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        ctypes.memmove(dst, src, n)
        return (0,)

    def cudaStreamCreate(self):
        self.streams += 1
        return (0, 1000 + self.streams)

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaStreamDestroy(self, stream):
        return (0,)


def sidecar_with(path: Path, **tensorrt) -> None:
    """Rewrite fields of an engine sidecar's tensorrt section (for refusal tests)."""
    from dd3g_sdk.backends.tensorrt_backend import sidecar_path

    sc = sidecar_path(path)
    doc = json.loads(sc.read_text())
    doc["tensorrt"].update(tensorrt)
    sc.write_text(json.dumps(doc))


