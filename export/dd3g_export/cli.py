"""`dd3g export`: a PEPD checkpoint to ONNX or to a TensorRT engine.

    dd3g export runs/pepd-small --format onnx -o model.onnx
    dd3g export runs/pepd-small --format onnx --fp16 --dynamic-batch -o model_fp16.onnx
    dd3g export runs/pepd-small --format engine --fp16 --workspace 4 -o model.engine
    dd3g export model_fp16.onnx --format engine -o model.engine          (from an exported ONNX)
    dd3g export runs/pepd-small --format engine --fp16 --compute-capability 8.9 -o model.engine   (TensorRT-RTX)

Bad input prints one line (`dd3g: error: <file>: <problem>`) and returns 2; a failed engine build or a
missing TensorRT returns 1. Nothing is written on failure.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from dd3g_sdk.errors import InputError, report


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="PEPD checkpoint folder (config.json + model.safetensors); "
                                                 "for --format engine also an exported .onnx")
    p.add_argument("--format", choices=["onnx", "engine"], default="onnx", help="output type (default onnx)")
    p.add_argument("--fp16", action="store_true",
                   help="fp16 weights and compute, fp32 inputs/outputs (sensitive ops stay fp32)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, 17..21 (default 18)")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="symbolic batch axis (engines: optimisation profile 1..--max-batch)")
    p.add_argument("--workspace", type=float, default=4.0, metavar="GB", help="TensorRT workspace limit, GiB")
    p.add_argument("--max-batch", type=int, default=8, help="largest batch of a dynamic-batch engine (default 8)")
    p.add_argument("--compute-capability", action="append", default=None, metavar="CC",
                   help="TensorRT-RTX build target such as 8.9 or 12.0 (repeatable; default: this GPU)")
    p.add_argument("--tensorrt", choices=["auto", "tensorrt", "tensorrt_rtx_bindings"], default="auto",
                   help="which TensorRT module to build with (default: the first installed)")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    p.add_argument("-o", "--out", type=Path, required=True, help="output .onnx or .engine file")


def run_export(args: argparse.Namespace) -> int:
    """Run `dd3g export` for parsed `args`; returns the exit status."""
    try:
        if args.format == "onnx":
            return _export_onnx(args)
        return _export_engine(args)
    except ValueError as e:  # InputError, and option combinations the builder refuses (e.g. an unknown target)
        return report(e, 2)
    except (ImportError, RuntimeError) as e:  # a missing package; EngineBuildError and friends
        return report(e, 1)


def _onnx_config(args):
    from .onnx import OnnxExportConfig

    return OnnxExportConfig(opset=args.opset, fp16=args.fp16, dynamic_batch=args.dynamic_batch,
                            simplify=not args.no_simplify)


def _export_onnx(args) -> int:
    from dd3g_sdk._fileio import check_writable_target

    from .onnx import to_onnx

    check_writable_target(args.out)
    if args.checkpoint.suffix.lower() == ".onnx":
        raise InputError(args.checkpoint, "already an ONNX file; --format onnx needs a checkpoint folder")
    out = to_onnx(args.checkpoint, args.out, _onnx_config(args))
    print(f"wrote {out} ({'fp16' if args.fp16 else 'fp32'}, opset {args.opset}, "
          f"{'dynamic' if args.dynamic_batch else 'batch 1'}, {out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _export_engine(args) -> int:
    from dd3g_sdk._fileio import check_writable_target
    from dd3g_sdk.backends.tensorrt_backend import read_engine_sidecar, sidecar_path

    from .onnx import to_onnx
    from .tensorrt import EngineConfig, to_engine

    check_writable_target(args.out)
    ecfg = EngineConfig(workspace_gb=args.workspace, precision="fp16" if args.fp16 else None,
                        max_batch=args.max_batch, compute_capabilities=tuple(args.compute_capability or ()),
                        module=None if args.tensorrt == "auto" else args.tensorrt)
    if args.checkpoint.suffix.lower() == ".onnx":
        out = to_engine(args.checkpoint, args.out, ecfg)
    else:
        # Check TensorRT is there before the (slow) ONNX export.
        from dd3g_sdk.backends.tensorrt_backend import detect_tensorrt

        detect_tensorrt(ecfg.module)
        with tempfile.TemporaryDirectory(prefix="dd3g-export-") as tmp:
            onnx_path = to_onnx(args.checkpoint, Path(tmp) / "model.onnx", _onnx_config(args))
            out = to_engine(onnx_path, args.out, ecfg)
    t = read_engine_sidecar(out)["tensorrt"]
    print(f"wrote {out} with {'TensorRT-RTX' if t['flavour'] == 'tensorrt-rtx' else 'TensorRT'} {t['version']} "
          f"({t['module']}), {t['precision']}, for compute capability {', '.join(t['target_compute_capabilities'])}, "
          f"{out.stat().st_size / 1e6:.1f} MB in {t['build_seconds']:.1f} s; metadata in {sidecar_path(out).name}")
    return 0
