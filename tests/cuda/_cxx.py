"""Build a CPU twin (cuda/tests/*.cpp against the headers in cuda/src) for a test module: g++, C++17, -Werror; run
one and read its summary line."""
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


def run_twin(exe: Path, seed: int, cases: int, timeout: float = 120) -> dict[str, int]:
    """Run a twin as `exe SEED CASES`; it must exit 0. Returns the counters of its one summary line
    ("OK key=value ..." or "ok key=value ...", every value an integer)."""
    r = subprocess.run([str(exe), str(seed), str(cases)], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return {k: int(v) for k, v in (kv.split("=") for kv in r.stdout.split()[1:])}
