"""Atomic file writes: a failure never leaves a partial file at the target path."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from .errors import InputError

# mkstemp creates files with mode 0o600; a written file should get the usual 0o666 & ~umask instead.
# The umask can only be read by setting it, so read it once, at import (single-threaded in practice).
_UMASK = os.umask(0)
os.umask(_UMASK)


def existing_file(path: str | os.PathLike) -> Path:
    """Return `path` as a Path; raise InputError if it does not exist or is not a regular file."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, "file not found")
    if not p.is_file():
        raise InputError(p, "not a file")
    return p


def check_writable_target(path: str | os.PathLike) -> Path:
    """Return `path` as a Path; raise InputError if its folder does not exist or it is a folder."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(p, f"cannot write: folder {parent} does not exist")
    if p.is_dir():
        raise InputError(p, "cannot write: it is a folder")
    return p


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success fsync and rename it over `path`.

    On any exception the temporary file is removed and `path` is left as it was.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write supports 'wb' and 'w', not {mode!r}")
    target = check_writable_target(path)
    try:
        # Keep an existing file's permissions; a new file gets the ones open() would give it.
        file_mode = target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_UMASK
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as e:  # e.g. a read-only folder: the user's problem, reported in one line
        raise InputError(target, f"cannot write: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)
