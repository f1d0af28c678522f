"""CPU checks of the dd3g::GaussianRasterize node: ONNX emission from torch, the check graph, field parsing.

The TensorRT side (the Python IPluginV3 building an engine) runs on the GPU host: see cuda/README.md.
Run: OMP_NUM_THREADS=1 python -m pytest tests/cuda/test_plugin_onnx.py -q
"""
from __future__ import annotations

import numpy as np
import pytest

from dd3g_export import plugin as P


def test_torch_module_renders_and_exports_one_node(tmp_path):
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    from _scenes import cameras, random_scene

    W, H, C = 40, 32, 2
    s = {k: torch.from_numpy(v) for k, v in random_scene(60, 4, seed=5).items()}
    vm, Ks = (torch.from_numpy(x) for x in cameras(C, W, H))
    bg = torch.ones(C, 3)
    m = P.GaussianRasterize(P.RasterizeAttributes(W, H, max_intersections=5000))
    args = (s["means"], s["quats"], s["scales"], s["opacities"], s["sh"], vm, Ks, bg)
    rgb, alpha, depth = m(*args)
    from dd3g_sdk.render.reference import rasterize

    ref = rasterize(*args[:7], W, H, background=bg)
    assert torch.equal(rgb, ref[0]) and torch.equal(alpha, ref[1]) and torch.equal(depth, ref[2])
    assert float(alpha.max()) > 0.5

    path = tmp_path / "render.onnx"
    names = ["means", "quats", "scales", "opacities", "sh", "viewmats", "Ks", "background"]
    torch.onnx.export(m, args, str(path), dynamo=False, opset_version=18, input_names=names,
                      output_names=["rgb", "alpha", "depth"])
    model = onnx.load(str(path))
    nodes = [n for n in model.graph.node if n.op_type == P.PLUGIN_NAME]
    assert len(nodes) == 1 and nodes[0].domain == P.PLUGIN_NAMESPACE
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attrs["width"] == W and attrs["height"] == H and attrs["max_intersections"] == 5000
    assert attrs["plugin_namespace"] == b"dd3g" and attrs["plugin_version"] == b"1"
    assert abs(attrs["eps2d"] - 0.3) < 1e-7
    assert list(nodes[0].input) == names
    assert {o.domain: o.version for o in model.opset_import}.get(P.PLUGIN_NAMESPACE) == 1
    dims = [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output]
    assert dims == [[C, H, W, 3], [C, H, W, 1], [C, H, W, 1]]


def test_check_graph_is_valid_onnx(tmp_path):
    onnx = pytest.importorskip("onnx")
    p = P.write_check_onnx(tmp_path / "check.onnx", n=100, c=3, k=9, attributes=P.RasterizeAttributes(20, 10))
    model = onnx.load(str(p))
    onnx.checker.check_model(model)
    (node,) = model.graph.node
    assert node.op_type == "GaussianRasterize" and len(node.input) == 8 and len(node.output) == 3


class _Field:
    def __init__(self, name, data):
        self.name, self.data = name, data


def test_attributes_from_fields_accepts_int64_float64_and_ignores_unknown():
    fc = [_Field("width", np.array([640], np.int64)), _Field("height", np.array([480], np.int32)),
          _Field("near_plane", np.array([0.05], np.float64)), _Field("eps2d", np.array([0.3], np.float32)),
          _Field("tight_tiles", np.array([0], np.int32)), _Field("mystery", np.array([1], np.int32)),
          _Field("plugin_version", np.frombuffer(b"1", np.uint8))]
    a = P.attributes_from_fields(fc)
    assert (a.width, a.height, a.tight_tiles, a.max_intersections) == (640, 480, 0, 0)
    assert abs(a.near_plane - 0.05) < 1e-9 and abs(a.eps2d - 0.3) < 1e-6
    with pytest.raises(ValueError):
        P.RasterizeAttributes(0, 10)


def test_fallback_workspace_bound_covers_the_buffers():
    # the buffers alone (3 float4 + rect + count + 4 depth-sort words + 2 scan words per (camera, Gaussian);
    # 4 words per intersection; one int2 per tile): the bound must be larger
    n, c, w, h, cap = 100_000, 4, 512, 512, 2_000_000
    need = c * n * (48 + 8 + 4 + 16 + 16) + cap * 16 + c * 32 * 32 * 8
    assert P.fallback_workspace_bytes(n, c, w, h, cap) > need
