"""PEPD, the one-pass student generator of DD3G, and its Phase-1 UNet (torch only).

`dd3g_sdk` itself never imports this subpackage (the runtime works without torch); import it explicitly:
    from dd3g_sdk.model import PEPD, PEPDConfig
"""
from __future__ import annotations

from .pepd import PEPD, PEPDConfig
from .unet import ImageTokenizer, MVUNet, MVUNetConfig, load_matching

__all__ = ["ImageTokenizer", "MVUNet", "MVUNetConfig", "PEPD", "PEPDConfig", "load_matching"]
