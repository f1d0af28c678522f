"""`dd3g export` arguments and exit codes (add_export_arguments / run_export)."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
from export_helpers import FakeTensorRT, make_dummy_onnx

import dd3g_export.tensorrt as trt_mod
import dd3g_sdk.backends.tensorrt_backend as tb
from dd3g_export.cli import add_export_arguments, run_export
from dd3g_sdk.backends.tensorrt_backend import GpuInfo, read_engine_sidecar


def parse(*argv):
    p = argparse.ArgumentParser()
    add_export_arguments(p)
    return p.parse_args([str(a) for a in argv])


def test_arguments():
    a = parse("ckpt", "-o", "m.engine", "--format", "engine", "--fp16", "--opset", "17", "--dynamic-batch",
              "--workspace", "2.5", "--compute-capability", "8.9", "--compute-capability", "12.0")
    assert (a.format, a.fp16, a.opset, a.dynamic_batch, a.workspace) == ("engine", True, 17, True, 2.5)
    assert a.compute_capability == ["8.9", "12.0"] and a.tensorrt == "auto"
    with pytest.raises(SystemExit):
        parse("ckpt", "--format", "plan", "-o", "x")


def test_onnx_export_from_checkpoint(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    # the export itself is covered by the parity tests; here: the options reach to_onnx, the output is reported
    import dd3g_export.onnx as onnx_mod

    seen = {}

    def fake_to_onnx(src, out, cfg):
        seen.update(src=src, cfg=cfg)
        return make_dummy_onnx(out)

    monkeypatch.setattr(onnx_mod, "to_onnx", fake_to_onnx)
    out = tmp_path / "m.onnx"
    assert run_export(parse(tiny_checkpoint, "-o", out, "--opset", "17", "--fp16", "--dynamic-batch",
                            "--no-simplify")) == 0
    assert "wrote" in capsys.readouterr().out and out.is_file()
    cfg = seen["cfg"]
    assert seen["src"] == tiny_checkpoint
    assert (cfg.opset, cfg.fp16, cfg.dynamic_batch, cfg.simplify) == (17, True, True, False)
    assert run_export(parse(out, "-o", tmp_path / "again.onnx")) == 2  # an .onnx is no checkpoint
    assert "needs a checkpoint folder" in capsys.readouterr().err


def test_bad_input_exit_codes(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    assert run_export(parse(tmp_path / "nope", "-o", tmp_path / "m.onnx")) == 2
    err = capsys.readouterr().err
    assert err.startswith("dd3g: error: ") and "nope" in err and len(err.strip().splitlines()) == 1
    assert run_export(parse(tiny_checkpoint, "-o", tmp_path / "missing" / "m.onnx")) == 2
    assert "does not exist" in capsys.readouterr().err

    def no_trt(prefer=None, importer=None):
        raise ImportError("no usable TensorRT: install TensorRT 10+")

    monkeypatch.setattr(tb, "detect_tensorrt", no_trt)
    monkeypatch.setattr(trt_mod, "detect_tensorrt", no_trt)
    assert run_export(parse(tiny_checkpoint, "--format", "engine", "-o", tmp_path / "m.engine")) == 1
    assert "no usable TensorRT" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_engine_from_onnx_with_a_stand_in_tensorrt(tmp_path, capsys, monkeypatch):
    fake = FakeTensorRT("rtx")
    monkeypatch.setattr(trt_mod, "detect_tensorrt", lambda prefer=None: fake.as_module())
    monkeypatch.setattr(trt_mod, "current_gpu", lambda: GpuInfo("NVIDIA H100 80GB HBM3", "9.0"))
    src = make_dummy_onnx(tmp_path / "m.onnx", precision="fp16")
    out = tmp_path / "m.engine"
    # an H100 is no TensorRT-RTX target: without --compute-capability the build is refused with the fix
    assert run_export(parse(src, "--format", "engine", "-o", out)) == 2
    assert "pass compute capabilities explicitly" in capsys.readouterr().err
    assert run_export(parse(src, "--format", "engine", "--compute-capability", "8.9", "-o", out)) == 0
    line = capsys.readouterr().out
    assert "TensorRT-RTX 1.7.1.116 (tensorrt_rtx_bindings), fp16, for compute capability 8.9" in line
    assert read_engine_sidecar(out)["tensorrt"]["precision"] == "fp16"
    assert np.frombuffer(out.read_bytes()[:11], np.uint8).tobytes() == b"FAKE-ENGINE"
