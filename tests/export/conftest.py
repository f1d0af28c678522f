"""Fixtures of the export tests; the helpers themselves live in export_helpers.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from export_helpers import make_dummy_onnx


@pytest.fixture
def dummy_onnx(tmp_path) -> Path:
    return make_dummy_onnx(tmp_path / "dummy.onnx")


# ---- real tiny exports (shared by the parity tests) --------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    import torch

    from dd3g_sdk.model.pepd import PEPD, PEPDConfig

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = PEPD(PEPDConfig.preset("tiny"))
    return model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "pepd-tiny")


@pytest.fixture(scope="session")
def tiny_exports(tiny_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """{"fp32": dynamic-batch fp32 export, "fp16": batch-1 fp16 export} of the tiny checkpoint."""
    from dd3g_export.onnx import OnnxExportConfig, to_onnx

    d = tmp_path_factory.mktemp("onnx")
    return {"fp32": to_onnx(tiny_checkpoint, d / "tiny_fp32.onnx", OnnxExportConfig(dynamic_batch=True)),
            "fp16": to_onnx(tiny_checkpoint, d / "tiny_fp16.onnx", OnnxExportConfig(fp16=True))}


