"""Build a TensorRT-RTX engine that contains dd3g::GaussianRasterize from the C++ plugin library
(cuda/plugin/gaussian_rasterize_plugin.cpp -> build/libdd3g_trt_plugin.so, built elsewhere with
cuda/plugin/build_plugin.sh and carried; it loads build/libdd3g_raster.so from its own folder). The library is
registered with `trt.get_plugin_registry().load_library(path)` (TensorRT calls its getCreators); nothing of the
Python IPluginV3 in dd3g_export.plugin is registered. One case per process, so that an abort inside TensorRT
loses only that case:

    DD3G_PLUGIN_TRACE=1 python3 -X faulthandler cuda/tests/trt_cpp_plugin_check.py MODE [--lib PATH]

MODE: load            dlopen the library (ctypes), load_library, list the registered creators
      create          load, then create the plugin through the registered C++ creator from Python
      onnx | onnx16   load, parse the check graph (one dd3g::GaussianRasterize node, fp32 / fp16 Gaussians) and
                      build a serialized engine ahead of time for compute capability 8.9 (as the fp32/fp16 modes
                      of trt_build_check.py do)
--lib defaults to $DD3G_TRT_PLUGIN_LIB, else build/libdd3g_trt_plugin.so in the repository.
Prints one line "REPORT {json}" at the end. The engine is built, never run: TensorRT-RTX 1.7 builds for other
GPUs ahead of time on an H100/H200 but does not run engines there ("executed" is always false).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODES = ("load", "create", "onnx", "onnx16")
NAME, VERSION, NAMESPACE = "GaussianRasterize", "1", "dd3g"  # the C++ creator's getPluginName/Version/Namespace


def step(what: str) -> None:
    print(f"[trt_cpp_plugin_check] {what}", flush=True)


def finish(mode: str, report: dict, rc: int = 0) -> None:
    print("REPORT " + json.dumps({mode: report}), flush=True)
    sys.exit(rc)


def dlopen_check(path: Path, report: dict) -> bool:
    """Open the library the way TensorRT will (its dependencies resolved now), before TensorRT sees it."""
    if not path.is_file():
        report["errors"].append(f"{path} does not exist (build it with cuda/plugin/build_plugin.sh and carry build/)")
        return False
    try:
        lib = ctypes.CDLL(str(path), mode=os.RTLD_NOW | os.RTLD_LOCAL)
    except OSError as e:
        report["errors"].append(f"dlopen failed: {e}")
        return False
    report["dlopen"] = True
    report["symbols"] = {s: hasattr(lib, s) for s in ("getCreators", "setLoggerFinder", "getPluginCreators")}
    return report["symbols"]["getCreators"]


def creator_info(c) -> dict:
    info = {"type": type(c).__name__}
    for key in ("name", "plugin_version", "plugin_namespace"):
        try:
            info[key] = getattr(c, key)
        except Exception as e:  # an attribute a creator kind lacks
            info[key] = f"? ({e.__class__.__name__})"
    return info


def list_creators(registry) -> list[dict]:
    for attr in ("all_creators", "plugin_creator_list"):
        if hasattr(registry, attr):
            try:
                return [creator_info(c) for c in getattr(registry, attr)]
            except Exception as e:
                step(f"registry.{attr} failed: {e!r}")
    return []


def find_creator(trt, registry):
    if hasattr(registry, "get_creator"):
        return registry.get_creator(NAME, VERSION, NAMESPACE)
    return registry.get_plugin_creator(NAME, VERSION, NAMESPACE)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=MODES)
    ap.add_argument("--lib", default=os.environ.get("DD3G_TRT_PLUGIN_LIB", str(REPO / "build/libdd3g_trt_plugin.so")))
    args = ap.parse_args()
    mode = args.mode
    path = Path(args.lib).resolve()
    report: dict = {"lib": str(path), "dlopen": False, "loaded": False, "creator_found": False, "creators": [],
                    "executed": False, "errors": []}
    if mode.startswith("onnx"):
        report.update(parsed=False, built=False, engine_bytes=0, compute_capabilities=["8.9"])

    step(f"dlopen {path}")
    if not dlopen_check(path, report):
        finish(mode, report, 1)

    try:
        import tensorrt_rtx_bindings as trt
    except ImportError as e:
        report["errors"].append(f"tensorrt_rtx_bindings is not importable ({e}); on the GPU host install it with "
                                ". .gpu/install.sh after the two TensorRT-RTX part transfers (.gpu/README.md)")
        finish(mode, report, 2)
    report["module"] = trt.__name__
    # without this link a plugin node aborts the process inside the parser (DD3G_RTX_NO_LINK=1 shows it)
    if os.environ.get("DD3G_RTX_NO_LINK", "") in ("", "0"):
        from dd3g_sdk.backends.tensorrt_backend import ensure_rtx_core_link

        report["rtx_core_link"] = str(ensure_rtx_core_link())
    report["version"] = getattr(trt, "__version__", "?")
    step(f"tensorrt_rtx {report['version']} mode {mode}")
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    trace = os.environ.get("DD3G_PLUGIN_TRACE", "") not in ("", "0")
    logger = trt.Logger(trt.Logger.INFO if trace else trt.Logger.WARNING)

    # 1. register the library's creators (TensorRT dlopens it and calls getCreators / setLoggerFinder)
    registry = trt.get_plugin_registry()
    step("load_library")
    try:
        handle = registry.load_library(str(path))
    except Exception as e:
        report["errors"].append(f"load_library raised {e!r}")
        finish(mode, report, 1)
    report["loaded"] = handle is not None
    step(f"load_library -> {'a handle' if handle is not None else None}")
    report["creators"] = list_creators(registry)
    for c in report["creators"]:
        print(f"creator name={c.get('name')} version={c.get('plugin_version')} "
              f"namespace={c.get('plugin_namespace')} type={c.get('type')}", flush=True)
    creator = find_creator(trt, registry)
    report["creator_found"] = creator is not None
    if creator is not None:
        report["creator"] = creator_info(creator)
        try:
            report["creator"]["fields"] = [f.name for f in creator.field_names]
        except Exception as e:
            report["creator"]["fields"] = f"? ({e!r})"
    step(f"get_creator({NAME}, {VERSION}, {NAMESPACE}) -> {report['creator_found']}")
    if not report["loaded"] or not report["creator_found"]:
        report["errors"].append("the library did not register dd3g::GaussianRasterize version 1")
        finish(mode, report, 1)
    if mode == "load":
        finish(mode, report)

    sys.path[:0] = [str(REPO / "sdk"), str(REPO / "export")]
    from dd3g_export import plugin as P  # write_check_onnx, field_collection, the shared build tail _build

    attributes = P.RasterizeAttributes(256, 192)
    if mode == "create":
        # 2. what the ONNX parser does with the node's attributes, from Python
        step("create_plugin")
        plugin = creator.create_plugin("render", P.field_collection(trt, attributes), trt.TensorRTPhase.BUILD)
        report["plugin_created"] = plugin is not None
        report["plugin_type"] = type(plugin).__name__
        step(f"create_plugin -> {report['plugin_created']} ({report['plugin_type']})")
        finish(mode, report, 0 if plugin is not None else 1)

    # 3. parse the check graph (ONNX parser: op type GaussianRasterize, attributes plugin_version "1",
    #    plugin_namespace "dd3g") and build ahead of time for compute capability 8.9
    fp16 = mode == "onnx16"
    onnx_path = P.write_check_onnx(f"/tmp/dd3g_cpp_check_{mode}.onnx", n=4096, c=2, k=16, attributes=attributes,
                                   fp16=fp16)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    step("parse")
    ok = parser.parse(Path(onnx_path).read_bytes())
    report["errors"] += [str(parser.get_error(i)) for i in range(parser.num_errors)]
    report["parsed"] = bool(ok)
    step(f"parse -> {bool(ok)}")
    if not ok:
        finish(mode, report, 1)
    report["layers"] = [network.get_layer(i).type.name for i in range(network.num_layers)]
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 2 << 30)
    step("build_serialized_network (compute capability 8.9, ahead of time; not run)")
    P._build(trt, builder, network, config, tuple(report["compute_capabilities"]), report)
    step(f"build -> {report['built']} ({report['engine_bytes']} bytes)")
    finish(mode, report, 0 if report["built"] else 1)


if __name__ == "__main__":
    main()
