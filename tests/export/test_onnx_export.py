"""Real PEPD exports: torch vs onnxruntime parity (fp32 and fp16), graph checks, bad input.

Relative error of an output = ||onnx - torch|| / ||torch|| over the whole tensor (Frobenius norm).
Thresholds (issue #5): fp32 <= 1e-4 on positions (means), <= 1e-3 on the other outputs; fp16 <= 2e-2 on
positions and PSNR >= 35 dB between the reference-rasteriser renders of the two Gaussian sets.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from dd3g_export.fp16 import fp16_fraction
from dd3g_export.onnx import OnnxExportConfig, to_onnx
from dd3g_sdk.backends.base import OUTPUT_NAMES
from dd3g_sdk.backends.onnxruntime_backend import OnnxRuntimeBackend
from dd3g_sdk.errors import InputError

REPO = Path(__file__).resolve().parents[2]


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / max(np.linalg.norm(b.astype(np.float64)), 1e-30))


def inputs(info, batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    s = info.image_size
    return (rng.random((batch, 3, s, s), dtype=np.float32),
            rng.standard_normal((batch, *info.noise_shape), dtype=np.float32))


def torch_outputs(ckpt, image, noise):
    from dd3g_sdk.backends.torch_backend import TorchBackend

    return TorchBackend(ckpt, device="cpu").run(image, noise)


def render_psnr(a: dict, b: dict, size: int = 64, views: int = 2) -> float:
    """PSNR (dB, peak 1) between reference-rasteriser renders of the first object of two outputs."""
    from dd3g_sdk.cameras import turntable
    from dd3g_sdk.gaussians import Gaussians
    from dd3g_sdk.render import render

    cams = turntable(views, width=size, height=size, start_deg=30.0)
    imgs = [render(Gaussians(*(o[k][0] for k in OUTPUT_NAMES)), cams).rgb for o in (a, b)]
    mse = float(np.mean((imgs[0].astype(np.float64) - imgs[1]) ** 2))
    return 10 * np.log10(1.0 / max(mse, 1e-20))


def check_parity(ckpt, fp32_path, fp16_path, batch=2):
    b32 = OnnxRuntimeBackend(fp32_path, device="cpu")
    image, noise = inputs(b32.info, batch)
    ref = torch_outputs(ckpt, image, noise)
    out32 = b32.run(image, noise)
    errs32 = {k: rel_err(out32[k], ref[k]) for k in OUTPUT_NAMES}
    assert errs32["means"] <= 1e-4, errs32
    assert all(errs32[k] <= 1e-3 for k in OUTPUT_NAMES), errs32
    b16 = OnnxRuntimeBackend(fp16_path, device="cpu")
    assert b16.info.precision == "fp16"
    out16 = b16.run(image[:1], noise[:1])
    errs16 = {k: rel_err(out16[k], ref[k][:1]) for k in OUTPUT_NAMES}
    assert errs16["means"] <= 2e-2, errs16
    psnr = render_psnr(out16, {k: v[:1] for k, v in ref.items()})
    assert psnr >= 35.0, psnr
    print(f"\nparity {Path(fp32_path).stem}: fp32 {errs32}\nfp16 {errs16}, PSNR {psnr:.1f} dB")
    return errs32, errs16, psnr


def test_tiny_parity(tiny_checkpoint, tiny_exports):
    check_parity(tiny_checkpoint, tiny_exports["fp32"], tiny_exports["fp16"])


@pytest.mark.slow
def test_small_parity(tmp_path):
    import torch

    from dd3g_sdk.model.pepd import PEPD, PEPDConfig

    with torch.random.fork_rng():
        torch.manual_seed(1)
        ckpt = PEPD(PEPDConfig.preset("small")).save_pretrained(tmp_path / "small")
    # the two ends of the supported opset range
    p32 = to_onnx(ckpt, tmp_path / "small.onnx", OnnxExportConfig(opset=20, dynamic_batch=True))
    p16 = to_onnx(ckpt, tmp_path / "small_fp16.onnx", OnnxExportConfig(opset=17, fp16=True))
    check_parity(ckpt, p32, p16, batch=1)


def test_exported_graph(tiny_exports):
    for precision, path in tiny_exports.items():
        onnx.checker.check_model(str(path), full_check=True)
        m = onnx.load(str(path))
        meta = {p.key: p.value for p in m.metadata_props}
        assert meta["dd3g.precision"] == precision
        assert meta["dd3g.dynamic_batch"] == ("true" if precision == "fp32" else "false")
        assert [i.name for i in m.graph.input] == ["image", "noise"]
        assert [o.name for o in m.graph.output] == list(OUTPUT_NAMES)
        for v in (*m.graph.input, *m.graph.output):  # IO stays float32 in both precisions
            assert v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        batch = m.graph.input[0].type.tensor_type.shape.dim[0]
        assert (batch.dim_param == "batch") if precision == "fp32" else (batch.dim_value == 1)
        assert not any(n.op_type in ("RandomNormal", "RandomNormalLike", "If", "Loop") for n in m.graph.node)


def test_fp16_graph_keeps_sensitive_ops_in_fp32(tiny_exports):
    m = onnx.shape_inference.infer_shapes(onnx.load(str(tiny_exports["fp16"])))
    assert fp16_fraction(m) > 0.95  # the weights moved to fp16
    types = {v.name: v.type.tensor_type.elem_type for v in (*m.graph.value_info, *m.graph.input, *m.graph.output)}
    types.update({t.name: t.data_type for t in m.graph.initializer})
    sensitive = [n for n in m.graph.node if n.op_type in ("LayerNormalization", "Softmax", "InstanceNormalization",
                                                          "GroupNormalization", "Sigmoid", "Exp")]
    assert sensitive
    for n in sensitive:
        assert types.get(n.input[0]) == onnx.TensorProto.FLOAT, f"{n.op_type} {n.name} runs in fp16"
    matmuls = [n for n in m.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")]
    half = [n for n in matmuls if types.get(n.input[1]) == onnx.TensorProto.FLOAT16]
    assert len(half) == len(matmuls)  # the heavy ops do run in fp16


def test_fixed_batch_export_serves_any_batch(tiny_exports):
    b = OnnxRuntimeBackend(tiny_exports["fp16"])  # exported with batch 1
    image, noise = inputs(b.info, 2, seed=5)
    both = b.run(image, noise)
    for i in range(2):
        one = b.run(image[i:i + 1], noise[i:i + 1])
        for k in OUTPUT_NAMES:
            np.testing.assert_array_equal(both[k][i:i + 1], one[k])


def test_generator_same_seed_same_gaussians(tiny_checkpoint, tiny_exports):
    from dd3g_sdk import Generator

    image = REPO / "examples" / "toy_robot.png"
    g_torch = Generator.from_pretrained(tiny_checkpoint, device="cpu")(image, seed=7)
    gen = Generator.from_pretrained(tiny_exports["fp32"])
    assert gen.backend.name == "onnxruntime"
    g_onnx = gen(image, seed=7)
    assert rel_err(g_onnx.means, g_torch.means) <= 1e-4
    for k in ("scales", "quats", "opacities", "sh"):
        assert rel_err(getattr(g_onnx, k), getattr(g_torch, k)) <= 1e-3
    other = gen(image, seed=8)  # and the seed matters
    assert rel_err(other.means, g_onnx.means) > 1e-3


def test_bad_checkpoint_and_output_path(tmp_path, tiny_checkpoint):
    with pytest.raises(InputError, match="does not exist"):
        to_onnx(tiny_checkpoint, tmp_path / "no" / "m.onnx")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((tiny_checkpoint / "config.json").read_text())
    data = (tiny_checkpoint / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="model.safetensors"):
        to_onnx(bad, tmp_path / "m.onnx")
    with pytest.raises(InputError):
        to_onnx(tmp_path / "missing-ckpt", tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_failed_export_leaves_existing_file(tmp_path, tiny_checkpoint, monkeypatch):
    import dd3g_export.onnx as mod

    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous")

    def boom(model, cfg):
        raise RuntimeError("export failed")

    monkeypatch.setattr(mod, "export_model_proto", boom)
    with pytest.raises(RuntimeError, match="export failed"):
        to_onnx(tiny_checkpoint, out)
    assert out.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_truncated_export_is_refused(tmp_path, tiny_exports):
    data = tiny_exports["fp16"].read_bytes()
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[: len(data) - 1000])
    with pytest.raises(InputError, match="cut.onnx"):
        OnnxRuntimeBackend(p)


def test_convert_file_meets_the_fp16_budget(tmp_path, tiny_checkpoint, tiny_exports):
    """fp16 by converting an fp32 export file (what the engine build on the GPU host uses) meets the same
    fp16 thresholds against torch fp32 as the direct fp16 export. (The two fp16 graphs are not identical: the
    fp32 source has a dynamic batch axis, so tracing and onnxslim give a slightly different graph; they differ
    by ~2e-3 relative on `sh`, fp16 rounding through different op orders.)"""
    from dd3g_export.fp16 import convert_file

    p = convert_file(tiny_exports["fp32"], tmp_path / "conv.onnx")
    a = OnnxRuntimeBackend(p)
    assert a.info.precision == "fp16" and a.info.config == OnnxRuntimeBackend(tiny_exports["fp32"]).info.config
    image, noise = inputs(a.info, 1, seed=3)
    out, ref = a.run(image, noise), torch_outputs(tiny_checkpoint, image, noise)
    assert rel_err(out["means"], ref["means"]) <= 2e-2
    assert render_psnr(out, ref) >= 35.0
    with pytest.raises(InputError, match="already fp16"):
        convert_file(p, tmp_path / "twice.onnx")
