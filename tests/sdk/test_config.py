"""dd3g_sdk.config (frozen-dataclass JSON configs) and dd3g_sdk._fileio (atomic writes)."""
from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from typing import Optional

import pytest

from dd3g_sdk import _fileio
from dd3g_sdk._fileio import atomic_write, atomic_write_bytes, atomic_write_text
from dd3g_sdk.cameras import ViewSetConfig
from dd3g_sdk.config import from_dict, load_config, save_config, to_dict
from dd3g_sdk.errors import InputError


# Module level: typing.get_type_hints must resolve the (string) annotations by name.
@dataclass(frozen=True)
class Inner:
    width: int = 8
    ratio: float = 0.5
    name: str = "a"
    flag: bool = False


@dataclass(frozen=True)
class Outer:
    inner: Inner = field(default_factory=Inner)
    views: ViewSetConfig = field(default_factory=ViewSetConfig)
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    sizes: tuple[int, ...] = (1, 2)
    limit: int | None = None
    maybe: Optional[float] = None
    nested_opt: Inner | None = None


def test_round_trip_nested_frozen_dataclass(tmp_path):
    cfg = Outer(inner=Inner(width=3, ratio=0.25, name="x", flag=True), views=ViewSetConfig(num_views=6),
                background=(0.0, 0.5, 1.0), sizes=(4, 5, 6), limit=7, maybe=2.5, nested_opt=Inner(width=9))
    path = save_config(cfg, tmp_path / "config.json")
    data = json.loads(path.read_text())
    assert data["inner"]["width"] == 3 and data["background"] == [0.0, 0.5, 1.0]
    back = load_config(Outer, path)
    assert back == cfg
    assert isinstance(back.background, tuple) and isinstance(back.nested_opt, Inner)
    assert from_dict(Outer, to_dict(Outer())) == Outer()


def test_missing_keys_take_defaults_and_ints_become_floats():
    cfg = from_dict(Outer, {"inner": {"ratio": 2}})
    assert cfg.inner == Inner(ratio=2.0) and isinstance(cfg.inner.ratio, float)
    assert cfg.views == ViewSetConfig()


def test_unknown_key_names_the_key(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"inner": {"width": 1, "colour": 3}}))
    with pytest.raises(InputError) as e:
        load_config(Outer, p)
    msg = str(e.value)
    assert str(p) in msg and "colour" in msg and "Inner" in msg
    with pytest.raises(InputError, match="bogus"):
        from_dict(Outer, {"bogus": 1})


@pytest.mark.parametrize("data,needle", [
    ({"inner": {"width": "8"}}, "Inner.width must be int"),
    ({"inner": {"width": 8.5}}, "Inner.width must be int"),
    ({"inner": {"width": True}}, "Inner.width must be int"),
    ({"inner": {"ratio": "0.5"}}, "Inner.ratio must be float"),
    ({"inner": {"ratio": False}}, "Inner.ratio must be float"),
    ({"inner": {"name": 3}}, "Inner.name must be str"),
    ({"inner": {"flag": 1}}, "Inner.flag must be bool"),
    ({"inner": [1, 2]}, "must be a JSON object"),
    ({"background": [1.0, 1.0]}, "must have 3 items"),
    ({"background": "white"}, "must be a list"),
    ({"sizes": [1, "2"]}, "Outer.sizes must be int"),
    ({"limit": "7"}, "Outer.limit must be int"),  # X | None is type-checked too
    ({"maybe": "x"}, "Outer.maybe must be float"),
    ({"nested_opt": {"nope": 1}}, "nope"),
])
def test_wrong_types_are_input_errors(data, needle, tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps(data))
    with pytest.raises(InputError) as e:
        load_config(Outer, p)
    assert needle in str(e.value) and str(p) in str(e.value)


def test_optional_none_accepted():
    assert from_dict(Outer, {"limit": None, "nested_opt": None}).limit is None


def test_load_config_missing_and_invalid_json(tmp_path):
    with pytest.raises(InputError, match="config file not found"):
        load_config(Outer, tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_config(Outer, bad)
    arr = tmp_path / "arr.json"
    arr.write_text("[1, 2]")
    with pytest.raises(InputError, match="must be a JSON object"):
        load_config(Outer, arr)


# ---- atomic writes ---------------------------------------------------------------------------------
def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_replaces_on_success(tmp_path):
    p = tmp_path / "out.bin"
    p.write_bytes(b"old")
    assert atomic_write_bytes(p, b"new contents") == p
    assert p.read_bytes() == b"new contents"
    atomic_write_text(p, "text ü\n")
    assert p.read_text(encoding="utf-8") == "text ü\n"
    assert _leftovers(tmp_path) == []


def test_failure_inside_with_block_keeps_old_file_and_no_temp(tmp_path):
    p = tmp_path / "out.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(p, "wb") as f:
            f.write(b"partial")
            raise RuntimeError("boom")
    assert p.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []
    # a new file that fails is never created
    q = tmp_path / "new.txt"
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(q, "w") as f:
            f.write("x")
            raise KeyboardInterrupt
    assert not q.exists() and _leftovers(tmp_path) == []


def test_failure_in_rename_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "out.bin"
    p.write_bytes(b"old")

    def fail(*a, **k):
        raise OSError("disk on fire")

    monkeypatch.setattr(_fileio.os, "replace", fail)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"old" and _leftovers(tmp_path) == []


def test_missing_folder_and_folder_target_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        atomic_write_bytes(tmp_path / "no" / "such" / "f.bin", b"x")
    with pytest.raises(InputError, match="it is a folder"):
        atomic_write_bytes(tmp_path, b"x")
    with pytest.raises(ValueError, match="supports"):
        with atomic_write(tmp_path / "f", "a"):
            pass


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_permissions_new_file_like_open_and_existing_kept(tmp_path):
    ref = tmp_path / "ref"
    ref.write_bytes(b"")  # what plain open() gives under the current umask (mkstemp alone gives 0o600)
    p = tmp_path / "new"
    atomic_write_bytes(p, b"x")
    assert stat.S_IMODE(p.stat().st_mode) == stat.S_IMODE(ref.stat().st_mode)
    os.chmod(p, 0o640)
    atomic_write_bytes(p, b"y")
    assert stat.S_IMODE(p.stat().st_mode) == 0o640


def test_unwritable_folder_is_an_input_error(tmp_path, monkeypatch):
    # Simulated (the suite may run as root, which ignores folder permissions).
    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_fileio.tempfile, "mkstemp", denied)
    with pytest.raises(InputError, match="cannot write: Permission denied") as e:
        atomic_write_bytes(tmp_path / "f", b"x")
    assert str(tmp_path / "f") in str(e.value)
