"""dd3g-sdk runtime: one image to 3D Gaussians (DD3G / PEPD).

`from dd3g_sdk import Generator` works without torch; the torch backend imports torch lazily.
"""
from __future__ import annotations

from .cameras import Camera, ViewSetConfig, orbit_camera, turntable
from .errors import InputError
from .gaussians import Gaussians

__version__ = "0.1.0"

__all__ = ["Camera", "Gaussians", "Generator", "InputError", "ViewSetConfig", "orbit_camera", "turntable",
           "__version__"]


def __getattr__(name: str):
    if name == "Generator":
        from .generator import Generator

        return Generator
    raise AttributeError(f"module 'dd3g_sdk' has no attribute {name!r}")
