"""Bench inputs: one small synthetic cohort, and many DICOM files made from it by re-UIDing copies.

Rendering 10k phantoms would take an hour; the header ingest only needs distinct files, so the
valid DICOMs of the cohort are copied with a new SOP Instance UID patched into their bytes (same
length, so no element length changes; both the file meta and the dataset copy are replaced).
Each copy hashes differently and is a new image to the ingest; pixels and patient stay the same.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from osteo.etl.dicom_headers import read_one

KEY = b"osteo-bench-key"


def make_cohort(out: Path, patients: int, seed: int = 11) -> dict:
    from osteo.synth import generate_cohort

    return generate_cohort(out, patients=patients, seed=seed)


def valid_dicoms(dicom_dir: Path) -> list[tuple[str, str]]:
    """(path, SOP Instance UID) of every file of the folder whose header ingests cleanly."""
    found = []
    for p in sorted(x for x in dicom_dir.rglob("*") if x.is_file()):
        r = read_one(str(p), KEY)
        if r.record is not None:
            found.append((str(p), r.record.sop_instance_uid))
    return found


def _new_uid(uid: str, i: int) -> str:
    last = uid.rsplit(".", 1)[-1]
    if len(last) < 12:  # pragma: no cover - synth UIDs are 2.25.<~39 digits>
        raise ValueError(f"UID {uid} has too short a last component to patch")
    new = uid[:-10] + f"{i % 10**10:010d}"
    return new if new != uid else uid[:-10] + f"{(i + 1) % 10**10:010d}"


def make_copies(sources: list[tuple[str, str]], out: Path, n: int, *, start: int = 1) -> list[str]:
    """n files under out/ (100 per folder), round-robin over the sources, each with a new UID."""
    if out.exists():
        shutil.rmtree(out)
    paths = []
    blobs = [(Path(p).read_bytes(), uid) for p, uid in sources]
    for i in range(n):
        data, uid = blobs[i % len(blobs)]
        new = _new_uid(uid, start + i)
        patched = data.replace(uid.encode("ascii"), new.encode("ascii"))
        d = out / f"D{i // 100:04d}"
        if i % 100 == 0:
            d.mkdir(parents=True, exist_ok=True)
        path = d / f"IM{i:06d}.dcm"
        path.write_bytes(patched)
        paths.append(str(path))
    return paths
