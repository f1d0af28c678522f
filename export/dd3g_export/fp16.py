"""fp32 ONNX -> fp16 ONNX that strongly typed TensorRT (11.x, TensorRT-RTX) builds as fp16.

Weights and compute become float16; the graph inputs and outputs stay float32 (`keep_io_types`), so callers
and the SDK never see half floats. The numerically sensitive ops stay float32, with Casts around them:

- normalisations and their reductions (LayerNormalization, GroupNormalization, ReduceMean, Pow, Sqrt, ...):
  variances of activations overflow or lose all bits in fp16;
- Softmax: exp of large logits overflows fp16 (max 65504);
- Exp / Sigmoid / Softplus of the heads (PEPD's scales, opacities and colours are sigmoids): cheap, and an
  fp16 rounding of a logit would become a relative error of the activated value;
- ReduceL2 / ReduceSum / Sqrt of normalisations (the quaternion's norm).
The rest (Conv, MatMul/Gemm, attention matmuls, elementwise glue, and the short Add/Mul chain that places the
means along the camera rays) runs in fp16: measured with random weights (no trained checkpoint exists yet), it
keeps positions within the 2e-2 relative budget of issue #5 (tests/export/test_onnx_export.py). `keep_nodes`
can pin more nodes to fp32 by name.

onnxconverter-common's float16 converter does the rewrite; this module picks what stays fp32 and works around
its shared-initializer bug (`split_shared_initializers`).
"""
from __future__ import annotations

import warnings
from typing import Iterable

# Ops that stay float32 (inputs cast up, outputs cast down where their neighbours are fp16).
DEFAULT_FP32_OPS: tuple[str, ...] = (
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "BatchNormalization",
    "ReduceMean", "ReduceSum", "ReduceL2", "ReduceSumSquare", "Pow", "Sqrt", "Reciprocal",
    "Softmax", "LogSoftmax", "Exp", "Log", "Sigmoid", "Softplus", "Erf",
    "CumSum", "Range", "Resize", "RandomNormal", "RandomUniform",  # converter-unsafe or index-like ops
)


def to_fp16(model, fp32_ops: Iterable[str] = DEFAULT_FP32_OPS, keep_nodes: Iterable[str] = ()):
    """Return an fp16 copy of onnx ModelProto `model` with float32 inputs/outputs.

    fp32_ops: op types kept in float32; keep_nodes: node names kept in float32 (e.g. the heads that end in
    the outputs).
    """
    from onnxconverter_common import float16

    fp32_ops, keep_nodes = list(fp32_ops), list(keep_nodes)
    model = split_shared_initializers(model, fp32_ops, keep_nodes)
    # The converter warns about every fp32 value out of fp16 range it clips; min/max_positive_val keep
    # tiny weights from flushing to zero (they become the smallest normal fp16 instead).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="the float32 number", category=UserWarning)
        out = float16.convert_float_to_float16(
            model, keep_io_types=True, op_block_list=fp32_ops, node_block_list=keep_nodes,
            disable_shape_infer=False, min_positive_val=1e-7, max_finite_val=1e4,
        )
    return out


def split_shared_initializers(model, fp32_ops: Iterable[str], keep_nodes: Iterable[str] = ()):
    """A copy of `model` where no initializer feeds both an fp32-kept node and an fp16 node.

    The TorchScript exporter merges equal initializers (e.g. every zero bias and LayerNorm beta of a freshly
    initialised model into one tensor). onnxconverter-common then converts the shared tensor once, for one
    side only, and the graph gets a type error (Gemm with an fp32 bias). Giving the fp32 side its own copy
    fixes that; it costs only the duplicated bytes of the shared tensors.
    """
    import onnx

    blocked_ops, blocked_names = set(fp32_ops), set(keep_nodes)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {t.name: t for t in model.graph.initializer}
    users: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            if name in inits:
                users.setdefault(name, []).append(node)
    for name, nodes in users.items():
        kept = [n for n in nodes if n.op_type in blocked_ops or n.name in blocked_names]
        if not kept or len(kept) == len(nodes):
            continue
        copy = onnx.TensorProto()
        copy.CopyFrom(inits[name])
        copy.name = f"{name}__fp32"
        model.graph.initializer.append(copy)
        for node in kept:
            for i, inp in enumerate(node.input):
                if inp == name:
                    node.input[i] = copy.name
    return model


def fp16_fraction(model) -> float:
    """Share of floating-point initializer bytes stored as float16 (a quick check that weights moved)."""
    from onnx import TensorProto

    sizes = {TensorProto.FLOAT: 0, TensorProto.FLOAT16: 0}
    for t in model.graph.initializer:
        if t.data_type in sizes:
            n = 1
            for d in t.dims:
                n *= d
            sizes[t.data_type] += n * (4 if t.data_type == TensorProto.FLOAT else 2)
    total = sum(sizes.values())
    return sizes[TensorProto.FLOAT16] / total if total else 0.0


def convert_file(src, out, fp32_ops: Iterable[str] = DEFAULT_FP32_OPS):
    """fp32 dd3g ONNX file `src` -> fp16 dd3g ONNX file `out` (metadata carried over, dd3g.precision = fp16).

    Same result as `to_onnx(..., OnnxExportConfig(fp16=True))` from the same checkpoint, without tracing
    and simplifying again. Returns `out` as a Path; InputError for a bad `src` or output folder.
    """
    from pathlib import Path

    import onnx

    from dd3g_sdk._fileio import atomic_write_bytes, check_writable_target
    from dd3g_sdk.errors import InputError
    from dd3g_sdk.onnx_meta import parse_metadata, read_onnx_metadata

    out = check_writable_target(out)
    src = Path(src)
    info = parse_metadata(read_onnx_metadata(src), src)
    if info.precision != "fp32":
        raise InputError(src, f"already {info.precision}; convert_file needs an fp32 export")
    model = onnx.load(str(src))
    meta = {p.key: p.value for p in model.metadata_props}
    half = to_fp16(model, fp32_ops)
    del half.metadata_props[:]
    meta["dd3g.precision"] = "fp16"
    for k, v in meta.items():
        half.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(half, full_check=True)
    atomic_write_bytes(out, half.SerializeToString())
    return out
