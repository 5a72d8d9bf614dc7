"""Atomic file writes and checksums: nothing is ever left half-written.

A write goes to a temporary file in the destination's folder and is moved into place with ``os.replace``, which
is atomic on POSIX and Windows; an interrupted write leaves at most a stray ``*.tmp`` file, never a truncated cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Union

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_json", "sha256_file", "sha256_bytes"]

PathLike = Union[str, os.PathLike]


@contextmanager
def atomic_path(dest: PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success move it onto ``dest``, on error delete it."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix + ".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)  # mkstemp makes 0600 files; caches are ordinary readable files
        os.replace(tmp_path, dest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(dest: PathLike, data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(dest: PathLike, obj: Any, *, sort_keys: bool = False) -> None:
    """Write ``obj`` (plain JSON values) as indented JSON to ``dest`` atomically; keys sorted if ``sort_keys``."""
    atomic_write_bytes(dest, (json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n").encode())


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of the file at ``path``, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
