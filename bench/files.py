"""Atomic file writes: a temporary file in the target's folder, then a rename, so a reader (or a concurrent run)
sees the old file or the whole new one, never half of it. A bottom-level module: standard library only."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: str | Path, data: bytes | str | Callable[[BinaryIO], None]) -> None:
    """Write `data` (bytes, text as UTF-8, or a function writing to a binary file) to `path` atomically.

    Creates the parent folder. The file gets the permissions an ordinary `open(path, "w")` would give
    (0o666 less the umask), not mkstemp's private 0o600: reports, caches and committed evidence are shared.
    OSError (no permission, disk full) propagates; the temporary file is removed on any failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
