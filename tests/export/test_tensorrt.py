"""TensorRT engine building and the TensorRT backend, against stand-ins of TensorRT 10 / 11 / TensorRT-RTX
and cuda-python (no machine here can run an engine: see shared/gpu-env/README.md). What is checked is our
logic: which module is picked, which flags/targets each flavour gets, the optimisation profile, the sidecar,
the refusals, and that the backend moves the right bytes to and from the engine."""
from __future__ import annotations

import json

import numpy as np
import pytest
from export_helpers import DUMMY_S, DummyModel, FakeCudart, FakeTensorRT, dummy_reference, make_dummy_onnx, sidecar_with

from dd3g_export.tensorrt import EngineBuildError, EngineConfig, adapter_for, to_engine
from dd3g_sdk.backends.tensorrt_backend import (GpuInfo, TensorRTBackend, classify_tensorrt, detect_tensorrt,
                                                read_engine_sidecar, sidecar_path)
from dd3g_sdk.errors import InputError

H100 = GpuInfo("NVIDIA H100 80GB HBM3", "9.0")
RTX4090 = GpuInfo("NVIDIA GeForce RTX 4090", "8.9")


def _build(onnx_path, out, flavour="10", gpu=H100, **cfg):
    trt = FakeTensorRT(flavour)
    path = to_engine(onnx_path, out, EngineConfig(**cfg), _trt=trt.as_module(), _gpu=lambda: gpu)
    build = next(c for c in trt.calls if c[0] == "build")
    return path, trt, build[1], build[2]  # path, module, network, config


# ---- detection ------------------------------------------------------------------------------------------------
def test_detect_prefers_stock_tensorrt_then_rtx():
    mods = {"tensorrt": FakeTensorRT("10"), "tensorrt_rtx_bindings": FakeTensorRT("rtx")}

    def importer(name):
        if name not in mods:
            raise ImportError(name)
        return mods[name]

    assert detect_tensorrt(importer=importer).flavour == "tensorrt-10"
    assert detect_tensorrt("tensorrt_rtx_bindings", importer=importer).flavour == "tensorrt-rtx"
    del mods["tensorrt"]
    t = detect_tensorrt(importer=importer)
    assert (t.name, t.flavour, t.version, t.strongly_typed_only) == ("tensorrt_rtx_bindings", "tensorrt-rtx",
                                                                     "1.7.1.116", True)
    mods.clear()
    with pytest.raises(ImportError, match="no usable TensorRT"):
        detect_tensorrt(importer=importer)
    with pytest.raises(ValueError, match="unknown TensorRT module"):
        detect_tensorrt("pycuda", importer=importer)


def test_classify_versions():
    assert classify_tensorrt(FakeTensorRT("10", "10.13.3.9"), "tensorrt").flavour == "tensorrt-10"
    assert classify_tensorrt(FakeTensorRT("11", "11.0.0.1"), "tensorrt").flavour == "tensorrt-11"
    assert classify_tensorrt(FakeTensorRT("11", "12.1.0"), "tensorrt").strongly_typed_only
    assert not classify_tensorrt(FakeTensorRT("10"), "tensorrt").strongly_typed_only
    with pytest.raises(ValueError, match="too old"):
        classify_tensorrt(FakeTensorRT("10", "8.6.1"), "tensorrt")

    def stub_fails(name):  # the PyPI `tensorrt` stub raises on import when the real libraries are absent
        raise RuntimeError("TensorRT wheel not found")

    with pytest.raises(ImportError, match="RuntimeError: TensorRT wheel not found"):
        detect_tensorrt(importer=stub_fails)


# ---- the adapter ----------------------------------------------------------------------------------------------
def test_tensorrt10_uses_builder_flags(tmp_path, dummy_onnx):
    _, trt, network, config = _build(dummy_onnx, tmp_path / "m.engine", "10", precision="fp16", workspace_gb=2)
    assert network.flags == 0  # weakly typed: BuilderFlag.FP16 decides
    assert config.flags == {trt.BuilderFlag.FP16}
    assert config.pools == {trt.MemoryPoolType.WORKSPACE: 2 << 30}
    _, trt, network, config = _build(dummy_onnx, tmp_path / "m2.engine", "10")
    assert config.flags == set()  # fp32 ONNX, no precision asked: no FP16


@pytest.mark.parametrize("flavour", ["11", "rtx"])
def test_strongly_typed_flavours_take_precision_from_the_onnx(tmp_path, dummy_onnx, flavour):
    gpu = RTX4090 if flavour == "rtx" else H100
    _, trt, network, config = _build(dummy_onnx, tmp_path / "m.engine", flavour, gpu=gpu)
    assert network.flags == 1 << trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED
    assert config.flags == set() and not hasattr(trt.BuilderFlag, "FP16")
    # asking for fp16 from an fp32 ONNX is refused, naming the ONNX, with the fix
    with pytest.raises(InputError, match=r"strongly typed.*--fp16") as e:
        _build(dummy_onnx, tmp_path / "m16.engine", flavour, gpu=gpu, precision="fp16")
    assert str(dummy_onnx) in str(e.value) and not (tmp_path / "m16.engine").exists()
    fp16 = make_dummy_onnx(tmp_path / "fp16.onnx", precision="fp16")
    path, *_ = _build(fp16, tmp_path / "ok16.engine", flavour, gpu=gpu)
    assert read_engine_sidecar(path)["tensorrt"]["precision"] == "fp16"


def test_rtx_compute_capabilities(tmp_path, dummy_onnx):
    path, trt, _, config = _build(dummy_onnx, tmp_path / "m.engine", "rtx", compute_capabilities=("8.9", "12.0"))
    assert config.num_compute_capabilities == 2
    assert config.ccs == {0: trt.ComputeCapability.SM89, 1: trt.ComputeCapability.SM120}
    t = read_engine_sidecar(path)["tensorrt"]
    assert t["target_compute_capabilities"] == ["8.9", "12.0"] and t["build_gpu"]["compute_capability"] == "9.0"
    # no targets: the build GPU, if TensorRT-RTX supports it
    _, trt, _, config = _build(dummy_onnx, tmp_path / "cur.engine", "rtx", gpu=RTX4090)
    assert config.ccs == {0: trt.ComputeCapability.CURRENT}
    with pytest.raises(ValueError, match=r"cannot target the build GPU.*9\.0"):
        _build(dummy_onnx, tmp_path / "h100.engine", "rtx", gpu=H100)
    with pytest.raises(ValueError, match="cannot target compute capability 9.0"):
        _build(dummy_onnx, tmp_path / "bad.engine", "rtx", compute_capabilities=("9.0",))
    with pytest.raises(ValueError, match="TensorRT-RTX option"):
        _build(dummy_onnx, tmp_path / "stock.engine", "10", compute_capabilities=("8.9",))


def test_dynamic_batch_profile(tmp_path, dummy_onnx):
    path, _, _, config = _build(dummy_onnx, tmp_path / "m.engine", "10", opt_batch=2, max_batch=4)
    (p,) = config.profiles
    n = DummyModel.noise_shape
    assert p.shapes == {"image": ((1, 3, DUMMY_S, DUMMY_S), (2, 3, DUMMY_S, DUMMY_S), (4, 3, DUMMY_S, DUMMY_S)),
                        "noise": ((1, *n), (2, *n), (4, *n))}
    assert read_engine_sidecar(path)["tensorrt"]["batch_profile"] == {"min": 1, "opt": 2, "max": 4}
    static = make_dummy_onnx(tmp_path / "static.onnx", dynamic_batch=False)
    path, _, _, config = _build(static, tmp_path / "s.engine", "10")
    assert config.profiles == [] and read_engine_sidecar(path)["tensorrt"]["batch_profile"] is None


def test_sidecar_contents(tmp_path, dummy_onnx):
    path, *_ = _build(dummy_onnx, tmp_path / "m.engine", "10")
    doc = read_engine_sidecar(path)
    assert sidecar_path(path).name == "m.engine.json"
    assert doc["metadata"]["dd3g.num_gaussians"] == str(DummyModel.num_gaussians)
    assert doc["engine"]["bytes"] == path.stat().st_size and len(doc["engine"]["sha256"]) == 64
    t = doc["tensorrt"]
    assert (t["flavour"], t["module"], t["version"]) == ("tensorrt-10", "tensorrt", "10.7.0.23")
    assert t["build_gpu"] == {"name": H100.name, "compute_capability": "9.0"} and t["build_seconds"] >= 0


def test_build_failures_write_nothing(tmp_path, dummy_onnx):
    trt = FakeTensorRT("10", fail_build=True)
    with pytest.raises(EngineBuildError, match="could not build"):
        to_engine(dummy_onnx, tmp_path / "m.engine", _trt=trt.as_module(), _gpu=lambda: H100)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(InputError, match="junk.onnx"):
        to_engine(junk, tmp_path / "m.engine", _trt=FakeTensorRT("10").as_module(), _gpu=lambda: H100)
    with pytest.raises(InputError, match="does not exist"):
        to_engine(dummy_onnx, tmp_path / "missing" / "m.engine", _trt=FakeTensorRT("10").as_module())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dummy.onnx", "junk.onnx"]


def test_adapter_table():
    assert type(adapter_for(FakeTensorRT("10").as_module())).__name__ == "_TensorRT10"
    assert type(adapter_for(FakeTensorRT("11").as_module())).__name__ == "_TensorRT11"
    assert type(adapter_for(FakeTensorRT("rtx").as_module())).__name__ == "_TensorRTRTX"


# ---- the backend ----------------------------------------------------------------------------------------------
def _engine(tmp_path, flavour="rtx", **cfg):
    onnx_path = make_dummy_onnx(tmp_path / "m.onnx")
    gpu = RTX4090
    path, trt, *_ = _build(onnx_path, tmp_path / "m.engine", flavour, gpu=gpu, **cfg)
    return path, trt


def test_backend_runs_the_engine(tmp_path):
    path, trt = _engine(tmp_path, "rtx", compute_capabilities=("8.9",))
    cuda = FakeCudart()
    b = TensorRTBackend(path, _trt=trt.as_module(), _cuda=cuda)
    assert b.info.num_gaussians == DummyModel.num_gaussians and b.info.precision == "fp32"
    rng = np.random.default_rng(0)
    for batch in (1, 3, 2):
        image = rng.random((batch, 3, DUMMY_S, DUMMY_S), dtype=np.float32)
        noise = rng.standard_normal((batch, *DummyModel.noise_shape), dtype=np.float32)
        out, ref = b.run(image, noise), dummy_reference(image, noise)
        for k in ref:
            assert out[k].dtype == np.float32 and out[k].shape == ref[k].shape
            np.testing.assert_allclose(out[k], ref[k], rtol=1e-6, atol=1e-6)
    assert [c[0] for c in trt.calls].count("execute") == 3
    with pytest.raises(ValueError, match="image must have shape"):
        b.run(np.zeros((1, 3, 4, 4), np.float32), np.zeros((1, *DummyModel.noise_shape), np.float32))
    b.close()
    assert cuda.mem == {}  # every buffer freed


def test_backend_refuses_other_version_or_gpu(tmp_path):
    path, trt = _engine(tmp_path, "rtx", compute_capabilities=("8.9",))
    cuda = FakeCudart()
    with pytest.raises(InputError, match=r"built with TensorRT-RTX 1\.7\.1\.116 but TensorRT-RTX 1\.8\.0") as e:
        TensorRTBackend(path, _trt=FakeTensorRT("rtx", "1.8.0").as_module(), _cuda=cuda)
    assert str(e.value).startswith(str(path)) and "rebuild" in str(e.value)
    with pytest.raises(InputError, match="but TensorRT 10.7.0.23"):
        TensorRTBackend(path, _trt=FakeTensorRT("10").as_module(), _cuda=cuda)
    with pytest.raises(InputError, match=r"built for compute capability 8\.9; this GPU \(NVIDIA H100"):
        TensorRTBackend(path, _trt=trt.as_module(), _cuda=FakeCudart("NVIDIA H100 80GB HBM3", (9, 0)))
    assert not any(c[0] == "deserialize" for c in trt.calls)  # refused before TensorRT saw the engine


def test_backend_refuses_stock_engine_from_another_gpu(tmp_path):
    onnx_path = make_dummy_onnx(tmp_path / "m.onnx")
    path, trt, *_ = _build(onnx_path, tmp_path / "m.engine", "10", gpu=H100)
    with pytest.raises(InputError, match=r"built for another GPU \(NVIDIA H100"):
        TensorRTBackend(path, _trt=trt.as_module(), _cuda=FakeCudart("NVIDIA A100-SXM4-80GB", (8, 0)))
    b = TensorRTBackend(path, _trt=trt.as_module(), _cuda=FakeCudart("NVIDIA H100 80GB HBM3", (9, 0)))
    assert b.run(np.zeros((2, 3, DUMMY_S, DUMMY_S), np.float32),
                 np.zeros((2, *DummyModel.noise_shape), np.float32))["means"].shape == (2, DummyModel.num_gaussians, 3)
    sidecar_with(path, hardware_compatible=True)  # hardware-compatible engines may move between Ampere+ GPUs
    doc = json.loads(sidecar_path(path).read_text())
    assert doc["tensorrt"]["hardware_compatible"] is True
    TensorRTBackend(path, _trt=trt.as_module(), _cuda=FakeCudart("NVIDIA A100-SXM4-80GB", (8, 0)))


def test_backend_refuses_missing_sidecar_and_damaged_engine(tmp_path):
    path, trt = _engine(tmp_path, "rtx", compute_capabilities=("8.9",))
    kw = dict(_trt=trt.as_module(), _cuda=FakeCudart())
    data = path.read_bytes()
    path.write_bytes(data[:-5])
    with pytest.raises(InputError, match="truncated"):
        TensorRTBackend(path, **kw)
    path.write_bytes(data[:-5] + b"XXXXX")
    with pytest.raises(InputError, match="sha256"):
        TensorRTBackend(path, **kw)
    path.write_bytes(data)
    sc = sidecar_path(path)
    sc.write_text("{ not json")
    with pytest.raises(InputError, match="not valid JSON") as e:
        TensorRTBackend(path, **kw)
    assert str(e.value).startswith(str(sc))
    sc.unlink()
    with pytest.raises(InputError, match="no sidecar metadata m.engine.json"):
        TensorRTBackend(path, **kw)
    with pytest.raises(InputError, match="not found"):
        TensorRTBackend(tmp_path / "nope.engine", **kw)


def test_backend_without_tensorrt_installed(tmp_path, monkeypatch):
    path, _ = _engine(tmp_path, "rtx", compute_capabilities=("8.9",))
    import dd3g_sdk.backends.tensorrt_backend as tb

    def none(prefer=None, importer=None):
        raise ImportError("no usable TensorRT")

    monkeypatch.setattr(tb, "detect_tensorrt", none)
    with pytest.raises(InputError, match=r"TensorRT-RTX 1\.7\.1\.116 \(module tensorrt_rtx_bindings\), which is not "
                                         "installed"):
        TensorRTBackend(path, _cuda=FakeCudart())


# ---- TensorRT-RTX's parser and the unversioned core library ------------------------------------------------------

def test_rtx_core_link(tmp_path):
    """ensure_rtx_core_link adds libtensorrt_rtx.so -> libtensorrt_rtx.so.1 beside the parser (without it TensorRT-RTX
    1.7.1 aborts on every plugin node: benchmarks/results/trt_rtx_plugin_build_cpu.json), keeps an existing one, does
    nothing where there is no core library, and names the folder when it cannot write there."""
    import os

    from dd3g_sdk.backends.tensorrt_backend import RTX_CORE_SONAME, RTX_CORE_UNVERSIONED, ensure_rtx_core_link

    assert ensure_rtx_core_link(tmp_path) is None  # no TensorRT-RTX libraries here: nothing to do
    (tmp_path / RTX_CORE_SONAME).write_bytes(b"\x7fELF core")
    link = ensure_rtx_core_link(tmp_path)
    assert link == tmp_path / RTX_CORE_UNVERSIONED and link.is_symlink()
    assert os.readlink(link) == RTX_CORE_SONAME  # relative: the folder can move
    assert link.read_bytes() == b"\x7fELF core"
    assert ensure_rtx_core_link(tmp_path) == link and sorted(p.name for p in tmp_path.iterdir()) == [
        RTX_CORE_UNVERSIONED, RTX_CORE_SONAME]  # idempotent, no temporary left behind

    # a folder where the link cannot be made (here: its temporary name is taken by a folder; the same path as a
    # read-only site-packages, which a root user cannot reproduce): InputError with the command that fixes it
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / RTX_CORE_SONAME).write_bytes(b"core")
    (bad / f".{RTX_CORE_UNVERSIONED}.{os.getpid()}.tmp").mkdir()
    with pytest.raises(InputError, match="ln -s"):
        ensure_rtx_core_link(bad)
    assert not (bad / RTX_CORE_UNVERSIONED).exists()
