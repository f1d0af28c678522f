"""Build a TensorRT-RTX engine that contains dd3g::GaussianRasterize (the Python IPluginV3 of
export/dd3g_export/plugin.py). One case per process, so that an abort inside TensorRT loses only that case.

    DD3G_PLUGIN_TRACE=1 python3 -X faulthandler cuda/tests/trt_build_check.py MODE
MODE: fp32 | fp16 | torch     (ONNX parser: check graph fp32/fp16, graph exported from torch)
      network | network16     (INetworkDefinition.add_plugin_v3, no parser)
      identity-onnx | identity-network   (a trivial 1-in/1-out Python IPluginV3: is it the platform or our plugin?)
Prints one line "REPORT {json}" at the end.
"""
import json
import logging
import os
import sys

import numpy as np

logging.basicConfig(level=logging.INFO, stream=sys.stdout)
import tensorrt_rtx_bindings as trt  # noqa: E402

from dd3g_export import plugin as P  # noqa: E402

mode = sys.argv[1]
print("tensorrt_rtx", trt.__version__, "mode", mode, flush=True)
# without this link a plugin node aborts the process inside the parser (DD3G_RTX_NO_LINK=1 shows it)
if os.environ.get("DD3G_RTX_NO_LINK", "") in ("", "0"):
    from dd3g_sdk.backends.tensorrt_backend import ensure_rtx_core_link  # noqa: E402

    print("rtx core link", ensure_rtx_core_link(), flush=True)


def identity_classes():
    class Ident(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild, trt.IPluginV3OneRuntime):
        def __init__(self):
            trt.IPluginV3.__init__(self)
            trt.IPluginV3OneCore.__init__(self)
            trt.IPluginV3OneBuild.__init__(self)
            trt.IPluginV3OneRuntime.__init__(self)
            self.num_outputs = 1
            self.plugin_namespace = ""
            self.plugin_name = "Dd3gIdentity"
            self.plugin_version = "1"
            self.timing_cache_id = ""

        def get_capability_interface(self, type):
            return self

        def get_output_data_types(self, input_types):
            return [input_types[0]]

        def get_output_shapes(self, inputs, shape_inputs, exprBuilder):
            return [trt.DimsExprs(inputs[0])]

        def get_fields_to_serialize(self):
            return trt.PluginFieldCollection([])

        def configure_plugin(self, inp, out):
            pass

        def on_shape_change(self, inp, out):
            pass

        def supports_format_combination(self, pos, in_out, num_inputs):
            d = in_out[pos].desc
            return d.format == trt.TensorFormat.LINEAR and d.type == trt.DataType.FLOAT

        def enqueue(self, input_desc, output_desc, inputs, outputs, workspace, stream):
            return 0

        def attach_to_context(self, context):
            return self.clone()

        def set_tactic(self, tactic):
            pass

        def clone(self):
            c = Ident()
            keep.append(c)
            return c

    class IdentCreator(trt.IPluginCreatorV3One):
        def __init__(self):
            trt.IPluginCreatorV3One.__init__(self)
            self.name = "Dd3gIdentity"
            self.plugin_namespace = ""
            self.plugin_version = "1"
            self.field_names = trt.PluginFieldCollection([])

        def create_plugin(self, name, fc, phase):
            p = Ident()
            keep.append(p)
            return p

    return Ident, IdentCreator


keep = []
if mode in ("fp32", "fp16"):
    path = P.write_check_onnx(f"/tmp/dd3g_check_{mode}.onnx", n=4096, c=2, k=16,
                              attributes=P.RasterizeAttributes(256, 192), fp16=mode == "fp16")
    rep = P.build_check(path, trt, ("8.9",))
elif mode in ("network", "network16"):
    rep = P.build_check_network(trt, fp16=mode == "network16")
elif mode.startswith("identity"):
    Ident, IdentCreator = identity_classes()
    creator = IdentCreator()
    keep.append(creator)
    print("register", trt.get_plugin_registry().register_creator(creator, ""), flush=True)
    logger = trt.Logger(trt.Logger.INFO)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    if mode == "identity-onnx":
        import onnx
        from onnx import TensorProto, helper
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])
        g = helper.make_graph([helper.make_node("Dd3gIdentity", ["x"], ["y"])], "g", [x], [y])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
        parser = trt.OnnxParser(network, logger)
        print("parse", flush=True)
        ok = parser.parse(m.SerializeToString())
        print("parse ->", ok, [str(parser.get_error(i)) for i in range(parser.num_errors)], flush=True)
    else:
        xin = network.add_input("x", trt.DataType.FLOAT, (4, 8))
        p = creator.create_plugin("Dd3gIdentity", trt.PluginFieldCollection([]), trt.TensorRTPhase.BUILD)
        keep.append(p)
        print("add_plugin_v3", flush=True)
        layer = network.add_plugin_v3([xin], [], p)
        network.mark_output(layer.get_output(0))
    config = builder.create_builder_config()
    config.num_compute_capabilities = 1
    config.set_compute_capability(trt.ComputeCapability.SM89, 0)
    print("build", flush=True)
    ser = builder.build_serialized_network(network, config)
    rep = {"built": ser is not None, "engine_bytes": 0 if ser is None else int(ser.nbytes)}
else:
    import torch

    m = P.GaussianRasterize(P.RasterizeAttributes(128, 96))
    N, C = 1000, 2
    args = (torch.randn(N, 3) * 0.3, torch.nn.functional.normalize(torch.randn(N, 4), dim=1),
            torch.rand(N, 3) * 0.05, torch.rand(N), torch.randn(N, 4, 3) * 0.3, torch.eye(4).expand(C, 4, 4).clone(),
            torch.tensor([[100., 0, 64], [0, 100, 48], [0, 0, 1]]).expand(C, 3, 3).clone(), torch.ones(C, 3))
    torch.onnx.export(m, args, "/tmp/dd3g_torch_export.onnx", dynamo=False, opset_version=18,
                      input_names=["means", "quats", "scales", "opacities", "sh", "viewmats", "Ks", "background"],
                      output_names=["rgb", "alpha", "depth"])
    rep = P.build_check("/tmp/dd3g_torch_export.onnx", trt, ("8.9", "12.0"))
print("REPORT " + json.dumps({mode: rep}), flush=True)
