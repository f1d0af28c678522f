"""The `dd3g::GaussianRasterize` node: ONNX emission and a TensorRT / TensorRT-RTX Python IPluginV3.

An engine can go from image to pixels in one `execute` when the export appends this node after PEPD's heads:
inputs  means [N,3], quats [N,4], scales [N,3], opacities [N], sh [N,K,3] (all float32 or all float16),
        viewmats [C,4,4], Ks [C,3,3], background [C,3] (float32)
outputs rgb [C,H,W,3], alpha [C,H,W,1], depth [C,H,W,1] (float32; gsplat-1.5.3 classic semantics, see
        cuda/include/dd3g_raster.h)
attributes width, height, near_plane, far_plane, eps2d, max_intersections (0 = 8 C N + 65536), tight_tiles,
        plugin_namespace "dd3g", plugin_version "1" (what TensorRT's ONNX parser uses to find the plugin).

- `GaussianRasterize` (torch.nn.Module): in eager mode it renders (CUDA library when the inputs are on CUDA and
  the library is built, else the torch reference); under `torch.onnx.export(..., dynamo=False)` (the exporter
  dd3g_export.onnx uses) it emits the node. Nothing changes in an export unless you put this module in the graph.
- `GaussianRasterizePlugin` / `GaussianRasterizePluginCreator`: IPluginV3 (Core + Build + Runtime) written in
  Python against the TensorRT Python API; its enqueue calls libdd3g_raster through ctypes with TensorRT's
  device pointers, stream and workspace (the plugin asks TensorRT for the workspace the library needs). Every
  callback catches its own exceptions and logs them: an exception escaping into TensorRT's C++ aborts the process.
- `register_plugin(trt)` registers the creator; `build_check(...)` builds an engine containing the node (the
  check that runs on the GPU host with TensorRT-RTX, which builds for sm_89/sm_120 ahead of time on an H100).

The C++ plugin for deployment is cuda/plugin/gaussian_rasterize_plugin.cpp (same node, same attributes).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger("dd3g_export.plugin")

# TensorRT keeps raw pointers to Python creators and plugins: they must outlive every builder and engine that
# uses them, so the ones made here are kept for the life of the process.
_KEEP_ALIVE: list = []
# DD3G_PLUGIN_TRACE=1 prints one line per callback (flushed), to locate a failure inside TensorRT's C++.
_TRACE = os.environ.get("DD3G_PLUGIN_TRACE", "") not in ("", "0")


def _trace(what: str) -> None:
    if _TRACE:
        print(f"[dd3g plugin] {what}", flush=True)

PLUGIN_NAME = "GaussianRasterize"
PLUGIN_NAMESPACE = "dd3g"
PLUGIN_VERSION = "1"
NUM_INPUTS = 8
NUM_OUTPUTS = 3


@dataclass(frozen=True)
class RasterizeAttributes:
    """The node's attributes (the render options that are fixed in an engine)."""
    width: int
    height: int
    near_plane: float = 0.01
    far_plane: float = 1e10
    eps2d: float = 0.3
    max_intersections: int = 0  # capacity of the intersection list (entries); 0 = 8 * C * N + 65536
    tight_tiles: int = 1

    def __post_init__(self) -> None:
        if int(self.width) < 1 or int(self.height) < 1:
            raise ValueError(f"width and height must be >= 1, got {self.width}x{self.height}")
        if int(self.max_intersections) < 0:
            raise ValueError("max_intersections must be >= 0")

    def as_fields(self) -> dict[str, Any]:
        return {"width": int(self.width), "height": int(self.height), "near_plane": float(self.near_plane),
                "far_plane": float(self.far_plane), "eps2d": float(self.eps2d),
                "max_intersections": int(self.max_intersections), "tight_tiles": int(self.tight_tiles)}


# ---------------------------------------------------------------------------------------------------------------
# ONNX emission (torch)

def _make_function():
    import torch

    class _RasterizeFn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, means, quats, scales, opacities, sh, viewmats, Ks, background, width, height, near_plane,
                    far_plane, eps2d, max_intersections, tight_tiles):
            if torch.onnx.is_in_onnx_export():  # tracing for export: only the output shapes matter
                C = int(viewmats.shape[0])
                z = means.new_zeros((C, int(height), int(width), 4), dtype=torch.float32)
                return z[..., :3].clone(), z[..., 3:].clone(), z[..., 3:].clone()
            return _render_eager(means, quats, scales, opacities, sh, viewmats, Ks, background, int(width),
                                 int(height), float(near_plane), float(far_plane))

        @staticmethod
        def symbolic(g, means, quats, scales, opacities, sh, viewmats, Ks, background, width, height, near_plane,
                     far_plane, eps2d, max_intersections, tight_tiles):
            outs = g.op(f"{PLUGIN_NAMESPACE}::{PLUGIN_NAME}", means, quats, scales, opacities, sh, viewmats, Ks,
                        background, width_i=int(width), height_i=int(height), near_plane_f=float(near_plane),
                        far_plane_f=float(far_plane), eps2d_f=float(eps2d),
                        max_intersections_i=int(max_intersections), tight_tiles_i=int(tight_tiles),
                        plugin_namespace_s=PLUGIN_NAMESPACE, plugin_version_s=PLUGIN_VERSION, outputs=NUM_OUTPUTS)
            try:  # declare the output types/shapes so that ONNX shape inference and readers see them
                C = viewmats.type().sizes()[0]
                for o, last in zip(outs, (3, 1, 1)):
                    o.setType(viewmats.type().with_sizes([C, int(height), int(width), last]))
            except Exception:  # unknown camera count: leave the shapes to the consumer
                pass
            return outs

    return _RasterizeFn


def _render_eager(means, quats, scales, opacities, sh, viewmats, Ks, background, width, height, near, far):
    """Eager-mode rendering: the CUDA library on CUDA tensors when it is built, else the torch reference."""
    if means.is_cuda:
        from dd3g_sdk.render import cuda as rc

        if rc.is_available():
            return rc.rasterize(means, quats, scales, opacities, sh, viewmats, Ks, width, height, background,
                                near=near, far=far)
    from dd3g_sdk.render.reference import rasterize

    f = lambda t: t.float()  # noqa: E731  (the reference computes in the dtype of means)
    return rasterize(f(means), f(quats), f(scales), f(opacities), f(sh), viewmats.float(), Ks.float(), width, height,
                     background=background.float(), near=near, far=far)


_module_cls = None


def GaussianRasterize(attributes: RasterizeAttributes):  # noqa: N802  (a factory that reads like a class)
    """A torch module: forward(means, quats, scales, opacities, sh, viewmats, Ks, background) -> (rgb, alpha,
    depth); renders in eager mode and exports as one `dd3g::GaussianRasterize` node. torch is imported here, not
    at module import, so that the TensorRT plugin part of this file works without torch."""
    global _module_cls
    if _module_cls is None:
        import torch

        fn = _make_function()

        class _GaussianRasterize(torch.nn.Module):
            def __init__(self, attributes: RasterizeAttributes):
                super().__init__()
                self.attributes = attributes

            def forward(self, means, quats, scales, opacities, sh, viewmats, Ks, background):
                a = self.attributes
                return fn.apply(means, quats, scales, opacities, sh, viewmats, Ks, background, a.width, a.height,
                                a.near_plane, a.far_plane, a.eps2d, a.max_intersections, a.tight_tiles)

        _module_cls = _GaussianRasterize
    return _module_cls(attributes)


# ---------------------------------------------------------------------------------------------------------------
# TensorRT Python plugin

def _field_value(f) -> Any:
    import numpy as np

    data = np.asarray(f.data).reshape(-1)
    if data.dtype.kind in "SUO" or data.dtype == np.uint8 and f.name.startswith("plugin_"):
        return bytes(np.asarray(f.data, dtype=np.uint8)).decode(errors="replace").rstrip("\0")
    return data[0].item() if data.size else None


def attributes_from_fields(fc) -> RasterizeAttributes:
    """RasterizeAttributes from a TensorRT PluginFieldCollection (unknown fields are ignored, with a log line)."""
    known = set(RasterizeAttributes.__dataclass_fields__)
    kw: dict[str, Any] = {}
    for f in fc:
        if f.name in known:
            kw[f.name] = _field_value(f)
        elif f.name not in ("plugin_namespace", "plugin_version"):
            log.warning("%s: ignoring unknown field %r", PLUGIN_NAME, f.name)
    for k in ("width", "height", "max_intersections", "tight_tiles"):
        if k in kw:
            kw[k] = int(kw[k])
    for k in ("near_plane", "far_plane", "eps2d"):
        if k in kw:
            kw[k] = float(kw[k])
    return RasterizeAttributes(**kw)


def fallback_workspace_bytes(n: int, c: int, width: int, height: int, capacity: int) -> int:
    """An upper bound of the library's workspace when it cannot be asked (no library or no GPU at build time):
    the buffers of dd3g_raster.cu's plan plus 64 MiB for CUB's temporary storage."""
    cap = capacity if capacity > 0 else 8 * c * n + 65536
    tiles = c * ((width + 15) // 16) * ((height + 15) // 16)
    per_gaussian = 3 * 16 + 8 + 4 + 4 * 4 + 2 * 8
    return int(256 * 40 + c * n * per_gaussian + cap * 16 + tiles * 8 + (64 << 20))


def field_collection(trt, attributes: RasterizeAttributes):
    """The node's attributes as a trt.PluginFieldCollection (float32 / int32 fields)."""
    import numpy as np

    fields = []
    for name, v in attributes.as_fields().items():
        if isinstance(v, float):
            fields.append(trt.PluginField(name, np.array([v], np.float32), trt.PluginFieldType.FLOAT32))
        else:
            fields.append(trt.PluginField(name, np.array([v], np.int32), trt.PluginFieldType.INT32))
    return trt.PluginFieldCollection(fields)


def _dims_exprs(trt, items: list):
    """A trt.DimsExprs holding `items` (the bindings accept a sequence or a size, depending on the version)."""
    try:
        return trt.DimsExprs(items)
    except TypeError:
        d = trt.DimsExprs(len(items))
        for i, v in enumerate(items):
            d[i] = v
        return d


def make_plugin_classes(trt):
    """The plugin and creator classes bound to a TensorRT Python module (`tensorrt` or `tensorrt_rtx_bindings`)."""

    class GaussianRasterizePlugin(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild,
                                  trt.IPluginV3OneRuntime):
        def __init__(self, attributes: Optional[RasterizeAttributes] = None, phase=None):
            trt.IPluginV3.__init__(self)
            trt.IPluginV3OneCore.__init__(self)
            trt.IPluginV3OneBuild.__init__(self)
            trt.IPluginV3OneRuntime.__init__(self)
            self.num_outputs = NUM_OUTPUTS
            self.plugin_namespace = PLUGIN_NAMESPACE
            self.plugin_name = PLUGIN_NAME
            self.plugin_version = PLUGIN_VERSION
            self.timing_cache_id = ""
            self.attributes = attributes or RasterizeAttributes(1, 1)
            self.phase = phase
            self.shape = (0, 0, 1, "float32")  # N, C, K, dtype: set by on_shape_change

        # -- core
        def get_capability_interface(self, type):
            _trace("get_capability_interface")
            return self

        def clone(self):
            _trace("clone")
            try:
                p = GaussianRasterizePlugin(self.attributes, self.phase)
                p.shape = self.shape
                _KEEP_ALIVE.append(p)
                return p
            except Exception:
                log.exception("%s.clone", PLUGIN_NAME)
                return None

        # -- build
        def get_output_data_types(self, input_types):
            _trace("get_output_data_types")
            return [trt.DataType.FLOAT] * NUM_OUTPUTS

        def get_output_shapes(self, inputs, shape_inputs, exprBuilder):
            _trace("get_output_shapes")
            try:
                a = self.attributes
                C = inputs[5][0]
                H, W = exprBuilder.constant(int(a.height)), exprBuilder.constant(int(a.width))
                return [_dims_exprs(trt, [C, H, W, exprBuilder.constant(last)]) for last in (3, 1, 1)]
            except Exception:
                log.exception("%s.get_output_shapes", PLUGIN_NAME)
                return []

        def supports_format_combination(self, pos, in_out, num_inputs):
            _trace("supports_format_combination")
            try:
                desc = in_out[pos].desc
                if desc.format != trt.TensorFormat.LINEAR:
                    return False
                if pos == 0:
                    return desc.type in (trt.DataType.FLOAT, trt.DataType.HALF)
                if pos < 5:  # Gaussian attributes share the dtype of means
                    return desc.type == in_out[0].desc.type
                return desc.type == trt.DataType.FLOAT  # cameras, background, outputs
            except Exception:
                log.exception("%s.supports_format_combination", PLUGIN_NAME)
                return False

        def configure_plugin(self, inp, out):
            _trace("configure_plugin")
            return None

        def get_workspace_size(self, inp, out):
            _trace("get_workspace_size")
            try:
                n = int(inp[0].max[0])
                k = int(inp[4].max[1])
                c = int(inp[5].max[0])
                half = inp[0].desc.type == trt.DataType.HALF
                return self._workspace_bytes(n, c, k, "float16" if half else "float32")
            except Exception:
                log.exception("%s.get_workspace_size", PLUGIN_NAME)
                return 0

        def _workspace_bytes(self, n, c, k, dtype) -> int:
            a = self.attributes
            try:
                from dd3g_sdk.render import cuda as rc

                lib = rc.load_library()
                cfg = lib.make_config(n, c, a.width, a.height, k, dtype, a.max_intersections, self._options())
                return lib.workspace_size(cfg)
            except Exception as e:  # no library, or no GPU at build time: a generous bound instead
                log.warning("%s: library workspace query failed (%s); using an upper bound", PLUGIN_NAME, e)
                return fallback_workspace_bytes(n, c, a.width, a.height, a.max_intersections)

        def _options(self):
            from dd3g_sdk.render import cuda as rc

            a = self.attributes
            return rc.RasterOptions(near_plane=a.near_plane, far_plane=a.far_plane, eps2d=a.eps2d,
                                    tight_tiles=bool(a.tight_tiles))

        def get_fields_to_serialize(self):
            _trace("get_fields_to_serialize")
            try:
                return field_collection(trt, self.attributes)
            except Exception:
                log.exception("%s.get_fields_to_serialize", PLUGIN_NAME)
                return trt.PluginFieldCollection([])

        # -- runtime
        def on_shape_change(self, inp, out):
            _trace("on_shape_change")
            try:
                dims = lambda i: tuple(int(x) for x in inp[i].dims)  # noqa: E731
                half = inp[0].type == trt.DataType.HALF
                self.shape = (dims(0)[0], dims(5)[0], dims(4)[1], "float16" if half else "float32")
            except Exception:
                log.exception("%s.on_shape_change", PLUGIN_NAME)

        def set_tactic(self, tactic):
            _trace("set_tactic")
            return None

        def get_valid_tactics(self):
            _trace("get_valid_tactics")
            return []

        def attach_to_context(self, context):
            _trace("attach_to_context")
            return self.clone()

        def enqueue(self, input_desc, output_desc, inputs, outputs, workspace, stream):
            _trace("enqueue")
            try:
                from dd3g_sdk.render import cuda as rc

                lib = rc.load_library()
                n, c, k, dtype = self.shape
                a = self.attributes
                cfg = lib.make_config(n, c, a.width, a.height, k, dtype, a.max_intersections, self._options())
                size = lib.workspace_size(cfg)
                lib.forward(cfg, means=int(inputs[0]), quats=int(inputs[1]), scales=int(inputs[2]),
                            opacities=int(inputs[3]), sh=int(inputs[4]), viewmats=int(inputs[5]), Ks=int(inputs[6]),
                            background=int(inputs[7]), rgb=int(outputs[0]), alpha=int(outputs[1]),
                            depth=int(outputs[2]), workspace=int(workspace), workspace_bytes=size, stream=int(stream))
                return 0
            except Exception:
                log.exception("%s.enqueue", PLUGIN_NAME)
                return -1

    class GaussianRasterizePluginCreator(trt.IPluginCreatorV3One):
        def __init__(self):
            import numpy as np

            trt.IPluginCreatorV3One.__init__(self)
            self.name = PLUGIN_NAME
            self.plugin_namespace = PLUGIN_NAMESPACE
            self.plugin_version = PLUGIN_VERSION
            f32, i32 = trt.PluginFieldType.FLOAT32, trt.PluginFieldType.INT32
            self.field_names = trt.PluginFieldCollection([
                trt.PluginField("width", np.array([], np.int32), i32),
                trt.PluginField("height", np.array([], np.int32), i32),
                trt.PluginField("near_plane", np.array([], np.float32), f32),
                trt.PluginField("far_plane", np.array([], np.float32), f32),
                trt.PluginField("eps2d", np.array([], np.float32), f32),
                trt.PluginField("max_intersections", np.array([], np.int32), i32),
                trt.PluginField("tight_tiles", np.array([], np.int32), i32),
            ])

        def create_plugin(self, name, fc, phase):
            _trace("create_plugin")
            try:
                p = GaussianRasterizePlugin(attributes_from_fields(fc), phase)
                _KEEP_ALIVE.append(p)
                return p
            except Exception:
                log.exception("%s.create_plugin", PLUGIN_NAME)
                return None

    return GaussianRasterizePlugin, GaussianRasterizePluginCreator


def register_plugin(trt):
    """Register the Python creator with `trt`'s plugin registry under namespace "dd3g"; returns the creator."""
    _, creator_cls = make_plugin_classes(trt)
    creator = creator_cls()
    _KEEP_ALIVE.append(creator)
    ok = trt.get_plugin_registry().register_creator(creator, PLUGIN_NAMESPACE)
    _trace(f"register_creator -> {ok}")
    return creator


def write_check_onnx(path: str | os.PathLike, n: int = 1024, c: int = 2, k: int = 4,
                     attributes: RasterizeAttributes = RasterizeAttributes(64, 48), fp16: bool = False) -> Path:
    """A minimal ONNX graph: eight inputs -> one dd3g::GaussianRasterize node -> three outputs."""
    import onnx
    from onnx import TensorProto, helper

    from dd3g_sdk._fileio import atomic_write_bytes

    gt = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info(name, t, shape) for name, t, shape in (
        ("means", gt, [n, 3]), ("quats", gt, [n, 4]), ("scales", gt, [n, 3]), ("opacities", gt, [n]),
        ("sh", gt, [n, k, 3]), ("viewmats", f, [c, 4, 4]), ("Ks", f, [c, 3, 3]), ("background", f, [c, 3]))]
    H, W = attributes.height, attributes.width
    outputs = [helper.make_tensor_value_info(name, f, shape) for name, shape in (
        ("rgb", [c, H, W, 3]), ("alpha", [c, H, W, 1]), ("depth", [c, H, W, 1]))]
    node = helper.make_node(PLUGIN_NAME, [i.name for i in inputs], [o.name for o in outputs], name="render",
                            domain=PLUGIN_NAMESPACE, plugin_namespace=PLUGIN_NAMESPACE,
                            plugin_version=PLUGIN_VERSION, **attributes.as_fields())
    graph = helper.make_graph([node], "dd3g_rasterize_check", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                    helper.make_opsetid(PLUGIN_NAMESPACE, 1)])
    return atomic_write_bytes(path, model.SerializeToString())


def build_check(onnx_path: str | os.PathLike, trt=None, compute_capabilities: tuple[str, ...] = ("8.9",),
                workspace_gb: float = 2.0) -> dict:
    """Parse `onnx_path` with the plugin registered and build a serialized engine. Returns a report dict
    (parsed, built, engine_bytes, errors). TensorRT-RTX builds for `compute_capabilities` ahead of time."""
    if trt is None:
        try:
            import tensorrt_rtx_bindings as trt  # noqa: F811
        except ImportError:
            import tensorrt as trt  # noqa: F811
    report: dict[str, Any] = {"module": trt.__name__, "version": getattr(trt, "__version__", "?"), "parsed": False,
                              "built": False, "engine_bytes": 0, "errors": []}
    register_plugin(trt)
    logger = trt.Logger(trt.Logger.INFO if _TRACE else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    _trace("parse")
    ok = parser.parse(Path(onnx_path).read_bytes())
    _trace(f"parse -> {ok}")
    report["errors"] += [str(parser.get_error(i)) for i in range(parser.num_errors)]
    report["parsed"] = bool(ok)
    if not ok:
        return report
    report["layers"] = [network.get_layer(i).type.name for i in range(network.num_layers)]
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    return _build(trt, builder, network, config, compute_capabilities, report)


def build_check_network(trt=None, n: int = 4096, c: int = 2, k: int = 16,
                        attributes: RasterizeAttributes = RasterizeAttributes(256, 192), fp16: bool = False,
                        compute_capabilities: tuple[str, ...] = ("8.9",)) -> dict:
    """Like `build_check`, but the node is added with INetworkDefinition.add_plugin_v3 (no ONNX parser)."""
    if trt is None:
        import tensorrt_rtx_bindings as trt  # noqa: F811
    report: dict[str, Any] = {"module": trt.__name__, "path": "add_plugin_v3", "built": False, "engine_bytes": 0}
    creator = register_plugin(trt)
    logger = trt.Logger(trt.Logger.INFO if _TRACE else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    gt = trt.DataType.HALF if fp16 else trt.DataType.FLOAT
    f = trt.DataType.FLOAT
    ins = [network.add_input(name, t, shape) for name, t, shape in (
        ("means", gt, (n, 3)), ("quats", gt, (n, 4)), ("scales", gt, (n, 3)), ("opacities", gt, (n,)),
        ("sh", gt, (n, k, 3)), ("viewmats", f, (c, 4, 4)), ("Ks", f, (c, 3, 3)), ("background", f, (c, 3)))]
    plugin = creator.create_plugin(PLUGIN_NAME, field_collection(trt, attributes), trt.TensorRTPhase.BUILD)
    _KEEP_ALIVE.append(plugin)
    _trace("add_plugin_v3")
    layer = network.add_plugin_v3(ins, [], plugin)
    _trace(f"add_plugin_v3 -> {layer is not None}")
    for i, name in enumerate(("rgb", "alpha", "depth")):
        out = layer.get_output(i)
        out.name = name
        network.mark_output(out)
    report["output_shapes"] = [tuple(layer.get_output(i).shape) for i in range(3)]
    config = builder.create_builder_config()
    return _build(trt, builder, network, config, compute_capabilities, report)


def _build(trt, builder, network, config, compute_capabilities, report: dict) -> dict:
    """Target `compute_capabilities` (TensorRT-RTX), build, and record the outcome in `report`."""
    if hasattr(trt, "ComputeCapability") and compute_capabilities:
        table = {m.replace("SM", ""): getattr(trt.ComputeCapability, m)
                 for m in dir(trt.ComputeCapability) if m.startswith("SM")}
        config.num_compute_capabilities = len(compute_capabilities)
        for i, cc in enumerate(compute_capabilities):
            config.set_compute_capability(table[cc.replace(".", "")], i)
    _trace("build_serialized_network")
    serialized = builder.build_serialized_network(network, config)
    _trace(f"build_serialized_network -> {serialized is not None}")
    report["built"] = serialized is not None
    report["engine_bytes"] = 0 if serialized is None else int(serialized.nbytes)
    return report
