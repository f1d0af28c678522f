"""dd3g metadata in ONNX files: what the exporter writes reads back; bad files fail with one clear InputError."""
from __future__ import annotations

import builtins
import json
import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from export_helpers import DUMMY_S, DUMMY_V, DummyModel, make_dummy_onnx

from dd3g_export.metadata import build_metadata, gaussian_layout
from dd3g_sdk.backends.onnxruntime_backend import OnnxRuntimeBackend
from dd3g_sdk.errors import InputError
from dd3g_sdk.onnx_meta import PREFIX, REQUIRED_KEYS, parse_metadata, read_model_info, read_onnx_metadata


def test_metadata_round_trip(dummy_onnx):
    meta = read_onnx_metadata(dummy_onnx)
    assert {PREFIX + k for k in REQUIRED_KEYS} <= set(meta)
    info = read_model_info(dummy_onnx)
    assert info.image_size == DUMMY_S and info.noise_shape == DummyModel.noise_shape
    assert info.num_gaussians == DummyModel.num_gaussians and info.sh_degree == 0
    assert info.views.num_views == DUMMY_V and info.precision == "fp32"
    assert info.config == {"image_size": DUMMY_S, "sh_degree": 0,
                           "views": {"num_views": DUMMY_V, "elevation_deg": 20.0, "radius": 2.0, "fov_deg": 40.0}}
    layout = json.loads(meta["dd3g.gaussian_layout"])
    assert layout == gaussian_layout(DummyModel.num_gaussians, 0)
    assert layout["quats"]["shape"] == ["B", DummyModel.num_gaussians, 4] and "(w, x, y, z)" in layout["quats"]["units"]
    assert "OpenCV" in meta["dd3g.camera_convention"]
    from dd3g_sdk import __version__

    assert meta["dd3g.sdk_version"] == __version__


def test_metadata_is_deterministic():
    a = build_metadata(DummyModel(), precision="fp16", opset=18, dynamic_batch=False)
    b = build_metadata(DummyModel(), precision="fp16", opset=18, dynamic_batch=False)
    assert a == b and a["dd3g.precision"] == "fp16" and a["dd3g.dynamic_batch"] == "false"
    with pytest.raises(ValueError, match="precision"):
        build_metadata(DummyModel(), precision="int8", opset=18, dynamic_batch=False)


def _meta():
    return build_metadata(DummyModel(), precision="fp32", opset=18, dynamic_batch=True)


@pytest.mark.parametrize("change, message", [
    (lambda m: m.clear(), "no dd3g metadata"),
    (lambda m: m.pop("dd3g.config"), "missing dd3g.config"),
    (lambda m: m.update({"dd3g.format": "99"}), "format '99' is not supported"),
    (lambda m: m.update({"dd3g.model": "LGM"}), "wrong model type"),
    (lambda m: m.update({"dd3g.precision": "int4"}), "dd3g.precision"),
    (lambda m: m.update({"dd3g.views": "{not json"}), "malformed"),
    (lambda m: m.update({"dd3g.views": json.dumps({"num_views": 2, "colour": 1})}), "unknown key"),
    (lambda m: m.update({"dd3g.noise_shape": "[3, 3, 4, 4]"}), "noise_shape"),
    (lambda m: m.update({"dd3g.num_gaussians": "-5"}), "non-positive"),
])
def test_bad_metadata_is_refused(change, message):
    meta = _meta()
    change(meta)
    with pytest.raises(InputError, match=message) as e:
        parse_metadata(meta, "model.onnx")
    assert str(e.value).startswith("model.onnx: ")


def test_missing_empty_truncated_and_garbage_files(tmp_path, dummy_onnx):
    with pytest.raises(InputError, match="not found"):
        read_onnx_metadata(tmp_path / "nope.onnx")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_onnx_metadata(empty)
    data = dummy_onnx.read_bytes()
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a valid ONNX") as e:
        read_onnx_metadata(trunc)
    assert str(trunc) in str(e.value)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(InputError, match=str(junk.name)):
        OnnxRuntimeBackend(junk)


def test_foreign_onnx_without_metadata(tmp_path):
    p = make_dummy_onnx(tmp_path / "foreign.onnx", metadata=False)
    with pytest.raises(InputError, match="no dd3g metadata"):
        OnnxRuntimeBackend(p)


def test_metadata_that_does_not_match_the_graph(tmp_path):
    # the metadata claims a 16-pixel input, the graph takes 8: a wrong model/metadata pair
    meta = dict(_meta())
    meta["dd3g.image_size"] = "16"
    p = make_dummy_onnx(tmp_path / "wrong.onnx", extra_meta=meta)
    with pytest.raises(InputError, match="graph input 'image'"):
        OnnxRuntimeBackend(p)


def _external(tmp_path, location: str):
    """A dummy model whose initializers live in external data at `location` (relative to the model)."""
    src = make_dummy_onnx(tmp_path / "src.onnx")
    m = onnx.load(str(src))
    for t in m.graph.initializer:  # only raw_data tensors go external: the float weights, not the shape/axes ones
        if t.data_type == onnx.TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t), t.name))
    sub = tmp_path / "model"
    sub.mkdir()
    onnx.save(m, str(sub / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    m2 = onnx.load(str(sub / "m.onnx"), load_external_data=False)
    (sub / "weights.bin").rename((sub / location).resolve() if not os.path.isabs(location) else location)
    for t in m2.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save(m2, str(sub / "m.onnx"))
    return sub / "m.onnx"


def test_external_data_inside_the_folder_loads(tmp_path):
    p = _external(tmp_path, "weights.bin")
    b = OnnxRuntimeBackend(p)
    out = b.run(np.zeros((1, 3, DUMMY_S, DUMMY_S), np.float32) + 0.5, np.ones((1, *DummyModel.noise_shape), np.float32))
    assert np.allclose(out["means"], 1.5) and np.allclose(out["quats"][..., 0], 1.0)


@pytest.mark.parametrize("use_onnx", [True, False], ids=["onnx", "onnxruntime-only"])
def test_external_data_outside_the_folder_is_refused(tmp_path, monkeypatch, use_onnx):
    p = _external(tmp_path, "../outside.bin")
    if not use_onnx:  # the runtime path of an install without the onnx package
        real_import = builtins.__import__

        def no_onnx(name, *a, **k):
            if name == "onnx" or name.startswith("onnx."):
                raise ImportError("no onnx")
            return real_import(name, *a, **k)

        monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(InputError, match="outside the model's folder") as e:
        OnnxRuntimeBackend(p)
    assert str(p) in str(e.value)


def test_external_data_absolute_path_is_refused(tmp_path):
    p = _external(tmp_path, str(tmp_path / "abs.bin"))
    with pytest.raises(InputError, match="absolute"):
        read_onnx_metadata(p)


def test_reader_without_onnx_package_matches(dummy_onnx, monkeypatch):
    with_onnx = read_onnx_metadata(dummy_onnx)
    real_import = builtins.__import__

    def no_onnx(name, *a, **k):
        if name == "onnx":
            raise ImportError("no onnx")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    assert read_onnx_metadata(dummy_onnx) == with_onnx
