"""One helper per file job: streamed hashing and crash-safe (fsync + rename) writes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20
# a modification time this close to the moment it was read is not trusted for skipping the file:
# a write in the same clock tick of the file system (coarse clocks, FAT's 2 s, a network share's)
# would keep it (git's "racy clean" case); such a file is read again until its stamp is older
RACY_NS = 2_000_000_000


def trusted_mtime_ns(st: os.stat_result, now_ns: int | None = None) -> int | None:
    """The st_mtime_ns to record for a file read just after this stat; None when too recent to trust."""
    now = time.time_ns() if now_ns is None else now_ns
    return st.st_mtime_ns if st.st_mtime_ns < now - RACY_NS else None


def sha256_bytes(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str], chunk_size: int = _CHUNK) -> str:
    """Hex SHA-256 of a file, read in chunks (constant memory whatever the size)."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(chunk_size)
        view = memoryview(buf)
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one.

    The bytes go to a temporary file in the same folder (same file system, so the rename is
    atomic), are fsync'ed, and the temporary file is renamed over `path`. On any failure the
    temporary file is removed and `path` is left as it was. The parent folder is created.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def fsync_dirs(paths) -> None:
    """Make renames into these files' folders durable (a power loss after a rename can otherwise
    lose the new name): one fsync per folder, so a batch of files costs one call per folder."""
    for folder in sorted({str(Path(p).parent) for p in paths}):
        try:
            fd = os.open(folder, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(value: Any) -> Any:
    # numpy scalars and arrays without importing numpy here
    for method in ("item", "tolist"):
        if hasattr(value, method):
            return getattr(value, method)()
    return str(value)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write `obj` as indented JSON (numpy values become plain numbers)."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=_jsonable))
