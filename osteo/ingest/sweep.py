"""The refresh's first step under its lock: remove the half-written files a killed run left."""

from __future__ import annotations

from pathlib import Path


def sweep_partial_files(root: Path) -> int:
    """Remove temporary files a killed writer left (`atomic_write_bytes` names them `.NAME.*.tmp`).

    Only called under the refresh lock, when no other writer can be mid-write in this folder.
    """
    removed = 0
    if Path(root).is_dir():
        for tmp in Path(root).rglob("*.tmp"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                removed += 1
    return removed
