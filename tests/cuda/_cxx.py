"""Build a CPU twin (cuda/tests/*.cpp against the headers in cuda/src) for a test module: g++, C++17, -Werror."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def build_twin(tmp_path_factory, source: str, warnings: tuple[str, ...] = ("-Wall",)) -> Path:
    """Compile cuda/tests/<source>.cpp into a temporary executable; skip the test when there is no C++ compiler."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    exe = tmp_path_factory.mktemp(source) / source
    subprocess.run([cxx, "-std=c++17", "-O2", *warnings, "-Werror", f"-I{ROOT / 'cuda/src'}",
                    str(ROOT / f"cuda/tests/{source}.cpp"), "-o", str(exe)], check=True)
    return exe
