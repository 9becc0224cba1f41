"""Has anything changed since? Re-hash every file a model's lineage names, and its registered checkpoint."""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from osteo_common.files import sha256_file

# fetches the registered checkpoint into the folder it is given; None when the registry has none
FetchCheckpoint = Callable[[Path], Path | None]


def named_files(lineage: dict[str, Any]) -> list[dict[str, Any]]:
    """Every file a lineage names with the hash it recorded (each path and hash once)."""
    seen: set[tuple[str, str]] = set()
    out: list[dict[str, Any]] = []

    def add(role: str, path: str | None, sha: str | None) -> None:
        if path and (path, sha or "") not in seen:
            seen.add((path, sha or ""))
            out.append({"role": role, "path": path, "sha256": sha})

    for s in lineage["source_files"]:
        add(s["kind"], s["path"], s["sha256"])
    for m in lineage["members"]:
        add("export", m["export"]["path"], m["export"]["sha256"])
        for c in m["augmented_copies"]:
            add("augmented", c["path"], c["sha256"])
    return out


def check_checkpoint(lineage: dict[str, Any], fetch: FetchCheckpoint) -> tuple[str, dict[str, Any]]:
    """The registered checkpoint fetched into a temporary folder and re-hashed.

    Returns (status, entry): status "ok", "missing", "changed" or "unrecorded" (no hash was recorded at
    registration: the database's training_run.checkpoint_sha256, else the version tag of that name).
    """
    m = lineage["model"]
    expected = lineage["training_run"].get("checkpoint_sha256") or m.get("checkpoint_sha256")
    uri = f"models:/{m['name']}/{m['version']}"
    entry: dict[str, Any] = {"role": "checkpoint", "path": uri, "sha256": expected}
    with tempfile.TemporaryDirectory(prefix="osteo-verify-") as tmp:
        local = fetch(Path(tmp))
        if local is None or not Path(local).is_file():
            return "missing", entry
        try:
            entry["path"] = f"{uri}/{Path(local).relative_to(tmp).as_posix()}"
        except ValueError:
            entry["path"] = f"{uri}/{Path(local).name}"
        actual = sha256_file(Path(local))
    if not expected:
        return "unrecorded", entry | {"actual_sha256": actual}
    if actual != expected:
        return "changed", entry | {"actual_sha256": actual}
    return "ok", entry


def verify_lineage(lineage: dict[str, Any], fetch_checkpoint: FetchCheckpoint | None = None) -> dict[str, Any]:
    """Re-hash every file the lineage names; the manifest is checked against the snapshot digest.

    With `fetch_checkpoint` the registered model's checkpoint is fetched and re-hashed too (role
    "checkpoint"); one whose hash was never recorded is listed under `unchecked` and does not fail.
    """
    from osteo.training.snapshot import load_manifest, manifest_digest

    missing: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    unchecked: list[dict[str, Any]] = []
    files = named_files(lineage)
    for f in files:
        p = Path(f["path"])
        if not p.is_file():
            missing.append(f)
            continue
        actual = sha256_file(p)
        if actual != f["sha256"]:
            changed.append(f | {"actual_sha256": actual})
    snap = lineage["snapshot"]
    manifest = {"role": "manifest", "path": snap["manifest_path"], "sha256": None, "digest": snap["digest"]}
    if not Path(snap["manifest_path"]).is_file():
        missing.append(manifest)
    else:
        try:
            actual = manifest_digest(load_manifest(snap["manifest_path"]))
        except Exception as exc:  # noqa: BLE001 - an unreadable manifest is a changed one
            actual = f"unreadable: {type(exc).__name__}"
        if actual != snap["digest"]:
            changed.append(manifest | {"actual_digest": actual})
    by_role = Counter(f["role"] for f in files) + Counter(manifest=1)
    if fetch_checkpoint is not None:
        status, entry = check_checkpoint(lineage, fetch_checkpoint)
        if status != "ok":
            {"missing": missing, "changed": changed, "unrecorded": unchecked}[status].append(entry)
        by_role["checkpoint"] += 1
    return {"ok": not missing and not changed and not lineage.get("notes"), "checked": sum(by_role.values()),
            "by_role": dict(sorted(by_role.items())), "missing": missing, "changed": changed,
            "unchecked": unchecked, "notes": list(lineage.get("notes", []))}
