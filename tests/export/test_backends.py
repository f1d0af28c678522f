"""The onnxruntime backend's provider choice and input checks, and `open_backend` dispatch of exported files."""
from __future__ import annotations

import numpy as np
import pytest
from export_helpers import DUMMY_S, DummyModel, FakeTensorRT, dummy_reference, make_dummy_onnx

from dd3g_sdk.backends import open_backend
from dd3g_sdk.backends.onnxruntime_backend import OnnxRuntimeBackend, check_inputs, choose_providers
from dd3g_sdk.backends.tensorrt_backend import GpuInfo
from dd3g_sdk.errors import InputError

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def test_choose_providers():
    assert choose_providers(None, [CPU]) == [CPU]
    assert choose_providers("auto", [TRT, CUDA, CPU]) == [CUDA, CPU]  # auto: CUDA when present, never TRT EP
    assert choose_providers("cpu", [CUDA, CPU]) == [CPU]
    assert choose_providers("cuda:0", [CUDA, CPU]) == [CUDA, CPU]
    assert choose_providers("tensorrt", [TRT, CUDA, CPU]) == [TRT, CUDA, CPU]
    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        choose_providers("cuda", [CPU])
    with pytest.raises(ValueError, match="unknown onnxruntime device"):
        choose_providers("mps", [CPU])


def test_input_checks(dummy_onnx):
    b = OnnxRuntimeBackend(dummy_onnx)
    n = DummyModel.noise_shape
    with pytest.raises(ValueError, match=r"image must have shape \[B, 3, 8, 8\]"):
        b.run(np.zeros((1, 3, 9, 9), np.float32), np.zeros((1, *n), np.float32))
    with pytest.raises(ValueError, match="noise must have shape"):
        b.run(np.zeros((1, 3, DUMMY_S, DUMMY_S), np.float32), np.zeros((1, 3, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match="batch sizes differ"):
        b.run(np.zeros((2, 3, DUMMY_S, DUMMY_S), np.float32), np.zeros((1, *n), np.float32))
    # float64 input is accepted and converted
    image, noise = check_inputs(b.info, np.ones((1, 3, DUMMY_S, DUMMY_S)), np.zeros((1, *n)))
    assert image.dtype == noise.dtype == np.float32 and image.flags.c_contiguous


def test_open_backend_dispatches_exported_files(tmp_path, dummy_onnx, monkeypatch):
    b = open_backend(dummy_onnx)
    assert isinstance(b, OnnxRuntimeBackend) and b.providers == ["CPUExecutionProvider"]
    x = np.random.default_rng(0).random((2, 3, DUMMY_S, DUMMY_S), dtype=np.float32)
    z = np.random.default_rng(1).standard_normal((2, *DummyModel.noise_shape), dtype=np.float32)
    np.testing.assert_allclose(b.run(x, z)["means"], dummy_reference(x, z)["means"], rtol=1e-6, atol=1e-6)
    with pytest.raises(InputError, match="cannot run on the tensorrt backend"):
        open_backend(dummy_onnx, backend="tensorrt")
    # an engine on a machine without its TensorRT: a clear InputError, not an ImportError deep inside
    import dd3g_export.tensorrt as trt_mod
    import dd3g_sdk.backends.tensorrt_backend as tb

    src = make_dummy_onnx(tmp_path / "m.onnx")
    trt_mod.to_engine(src, tmp_path / "m.engine", trt_mod.EngineConfig(compute_capabilities=("8.9",)),
                      _trt=FakeTensorRT("rtx").as_module(), _gpu=lambda: GpuInfo("NVIDIA H100 80GB HBM3", "9.0"))

    def none(prefer=None, importer=None):
        raise ImportError("no usable TensorRT")

    monkeypatch.setattr(tb, "detect_tensorrt", none)
    with pytest.raises(InputError, match="which is not installed") as e:
        open_backend(tmp_path / "m.engine")
    assert str(e.value).startswith(str(tmp_path / "m.engine"))
