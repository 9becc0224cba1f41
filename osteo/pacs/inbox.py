"""Where an instance is filed in the inbox, and its atomic write (a killed pull leaves a hidden temporary file,
never half a DICOM where the refresh looks: the refresh's walk skips hidden entries)."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

from osteo_common.files import atomic_write_bytes

_UID = re.compile(r"^[0-9][0-9.]{0,63}$")
STALE_TEMP_S = 3600  # a temporary file this old is a killed writer's, not one being written


def _part(uid: str) -> str:
    # a UID is digits and dots; anything else a PACS sends is hashed, never used as a path
    return uid if _UID.match(uid or "") else "x" + hashlib.sha256((uid or "").encode()).hexdigest()[:32]


def instance_path(inbox: Path, study_uid: str, series_uid: str, sop_uid: str) -> Path:
    return Path(inbox) / _part(study_uid) / _part(series_uid) / f"{_part(sop_uid)}.dcm"


def file_instance(inbox: Path, study_uid: str, series_uid: str, sop_uid: str, data: bytes) -> Path:
    """Write one DICOM file (Part 10 bytes) into the inbox, atomically; its path."""
    path = instance_path(inbox, study_uid, series_uid, sop_uid)
    atomic_write_bytes(path, data)
    return path


def sweep_stale_temporaries(inbox: Path, now: float | None = None) -> int:
    """Remove the hidden temporary files a killed writer left (older than an hour); how many."""
    inbox, now = Path(inbox), time.time() if now is None else now
    removed = 0
    for tmp in inbox.rglob(".*.tmp") if inbox.is_dir() else ():
        if now - tmp.stat().st_mtime > STALE_TEMP_S:
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed
