"""Fixtures shared by the runtime tests."""
import pytest


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A randomly initialised PEPD 'tiny' (seed 0) saved as a checkpoint folder."""
    torch = pytest.importorskip("torch")
    from dd3g_sdk.model.pepd import PEPD, PEPDConfig

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    PEPD(PEPDConfig.preset("tiny")).save_pretrained(path)
    return path
