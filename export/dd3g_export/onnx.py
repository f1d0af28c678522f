"""PEPD checkpoint -> ONNX (fp32 or fp16), self-describing through `metadata_props`.

    from dd3g_export.onnx import OnnxExportConfig, to_onnx
    to_onnx("runs/pepd-small", "model.onnx", OnnxExportConfig(fp16=True))

Graph contract (what every dd3g runtime feeds and reads):
    inputs   image [B, 3, S, S] float32 in 0..1 (channels first, white background, seen by view 0)
             noise [B, V, 3, h, w] float32: the teacher's initial noise (dd3g_sdk.noise.draw_noise(seed, ...))
    outputs  means [B, N, 3], scales [B, N, 3], quats [B, N, 4], opacities [B, N], sh [B, N, K, 3]: float32,
             activated values in the dd3g_sdk.gaussians conventions.
The cameras are the model's fixed view set, baked into the graph as constants. B is 1 unless
`dynamic_batch` (then any B; TensorRT builds a profile for 1..max_batch). The noise is an input, not drawn
inside the graph, so a seed means the same object on every backend and the graph is deterministic.

Steps: torch.onnx.export (TorchScript exporter: PEPD traces to a clean static graph in well under a second,
the dynamo exporter takes much longer for the same graph) -> onnxslim (constant folding, dead-node removal,
fusions) -> optional fp16 (dd3g_export.fp16) -> metadata -> onnx.checker (full check, with shape inference)
-> one atomic write. An existing file at `out` is replaced only once everything succeeded.
"""
from __future__ import annotations

import copy
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from dd3g_sdk._fileio import atomic_write_bytes, check_writable_target
from dd3g_sdk.backends.base import OUTPUT_NAMES
from dd3g_sdk.onnx_meta import INPUT_NAMES

from .metadata import build_metadata

log = logging.getLogger("dd3g_export")

MAX_PROTO_BYTES = 2_000_000_000  # protobuf's 2 GiB limit, with a margin


@dataclass(frozen=True)
class OnnxExportConfig:
    """opset: ONNX opset (17..20 tested: LayerNormalization needs 17). fp16: fp16 weights/compute, fp32 IO.
    dynamic_batch: a symbolic batch axis. simplify: run onnxslim. check: run onnx.checker (full)."""
    opset: int = 18
    fp16: bool = False
    dynamic_batch: bool = False
    simplify: bool = True
    check: bool = True

    def __post_init__(self) -> None:
        if not 17 <= int(self.opset) <= 21:
            raise ValueError(f"opset must be 17..21 (LayerNormalization needs 17), got {self.opset}")


def load_model(model_or_dir):
    """A PEPD instance as is, or a checkpoint folder loaded with PEPD.from_pretrained (InputError on bad input)."""
    from dd3g_sdk.model.pepd import PEPD

    if isinstance(model_or_dir, PEPD):
        return model_or_dir
    if isinstance(model_or_dir, (str, os.PathLike)):
        return PEPD.from_pretrained(model_or_dir)
    raise TypeError(f"expected a PEPD model or a checkpoint folder, got {type(model_or_dir).__name__}")


def _graph_module(model):
    """The module that is traced: (image, noise) -> the five outputs as a tuple, in OUTPUT_NAMES order."""
    import torch

    class Graph(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, image, noise):
            out = self.m(image, noise)
            return tuple(out[k] for k in OUTPUT_NAMES)

    return Graph(model)


def export_model_proto(model, cfg: OnnxExportConfig):
    """Trace `model` (a PEPD) and return the processed onnx ModelProto (slimmed, fp16 if asked, with metadata)."""
    import onnx
    import torch

    if next(model.parameters()).device.type != "cpu" or model.dtype != torch.float32 or model.training:
        model = copy.deepcopy(model).float().cpu()  # never change the caller's model
    model.eval()
    s, noise_shape = model.config.image_size, tuple(model.noise_shape)
    gen = torch.Generator().manual_seed(0)
    example = (torch.rand(1, 3, s, s, generator=gen), torch.randn(1, *noise_shape, generator=gen))
    dyn = {n: {0: "batch"} for n in (*INPUT_NAMES, *OUTPUT_NAMES)} if cfg.dynamic_batch else None
    with tempfile.TemporaryDirectory(prefix="dd3g-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # Shape-only Python branches (static here: only the batch is dynamic) warn while tracing.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(_graph_module(model), example, str(path), input_names=list(INPUT_NAMES),
                              output_names=list(OUTPUT_NAMES), opset_version=int(cfg.opset), dynamic_axes=dyn,
                              do_constant_folding=True, dynamo=False)
        proto = onnx.load(str(path))  # pulls in external data, if torch wrote any
    if cfg.simplify:
        import onnxslim

        proto = onnxslim.slim(proto)
    if cfg.fp16:
        from .fp16 import to_fp16

        proto = to_fp16(proto)
    del proto.metadata_props[:]
    for k, v in build_metadata(model, precision="fp16" if cfg.fp16 else "fp32", opset=cfg.opset,
                               dynamic_batch=cfg.dynamic_batch).items():
        proto.metadata_props.add(key=k, value=v)
    proto.producer_name, proto.doc_string = "dd3g-sdk", "PEPD (DD3G): image + teacher noise -> 3D Gaussians"
    _check_io(proto)
    if cfg.check:
        if proto.ByteSize() < MAX_PROTO_BYTES:
            onnx.checker.check_model(proto, full_check=True)
    return proto


def _check_io(proto) -> None:
    from onnx import TensorProto

    ins = [(i.name, i.type.tensor_type.elem_type) for i in proto.graph.input]
    outs = [(o.name, o.type.tensor_type.elem_type) for o in proto.graph.output]
    want_in = [(n, TensorProto.FLOAT) for n in INPUT_NAMES]
    want_out = [(n, TensorProto.FLOAT) for n in OUTPUT_NAMES]
    if ins != want_in or outs != want_out:  # a bug here, never user input
        raise RuntimeError(f"exported graph IO {ins} -> {outs} differs from the contract {want_in} -> {want_out}")


def to_onnx(model_or_dir, out: str | os.PathLike, cfg: OnnxExportConfig = OnnxExportConfig()) -> Path:
    """Export a PEPD (instance or checkpoint folder) to `out` (.onnx). Returns `out`.

    Raises InputError for a bad checkpoint or an output folder that does not exist (checked before any work;
    nothing is written on any failure).
    """
    out = check_writable_target(out)
    model = load_model(model_or_dir)
    proto = export_model_proto(model, cfg)
    if proto.ByteSize() >= MAX_PROTO_BYTES:
        raise ValueError(f"the exported graph is {proto.ByteSize() / 2**30:.1f} GiB, over protobuf's 2 GiB "
                         "limit; external-data export is not implemented")
    atomic_write_bytes(out, proto.SerializeToString())
    log.info("dd3g export: wrote %s (%s, %.1f MB, %d nodes)", out, "fp16" if cfg.fp16 else "fp32",
             out.stat().st_size / 1e6, len(proto.graph.node))
    return out
