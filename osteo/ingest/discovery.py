"""Which input files a refresh reads: a streamed, sorted walk of the folders, and the files that a
rerun need not open because their size and mtime match their last source_file row (issue 15).

A night over an unchanged archive costs a directory walk, one stat per file and a few queries per
batch; `osteo refresh --rehash` reads and hashes everything again for whoever distrusts mtimes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlalchemy.orm import Session

from db.quarantine import active_contexts, active_paths, judge_again
from db.store import SourceRow, latest_sources
from osteo.errors import UserError
from osteo_common.chunks import batches  # noqa: F401 - the streamed batches of the walk
from osteo_common.files import sha256_bytes, trusted_mtime_ns


def walk(root: Path | str | None, suffixes: tuple[str, ...] | None = None) -> Iterator[str]:
    """Every regular file under root, streamed in sorted path order (os.scandir, one folder's entries
    at a time: a million-file tree is never a list in memory); hidden entries skipped; DICOMs often
    have no suffix. The folder is checked now; the walk runs as it is consumed."""
    if not root:
        return iter(())
    check_folder(root)
    return _walk(str(Path(root).resolve()), tuple(s.lower() for s in suffixes) if suffixes else None)


def _walk(folder: str, suffixes: tuple[str, ...] | None) -> Iterator[str]:
    with os.scandir(folder) as it:
        entries = [e for e in it if not e.name.startswith(".")]
    # a folder sorts as "name/": the walk's order is the sorted order of the full paths
    entries.sort(key=lambda e: e.name + "/" if e.is_dir(follow_symlinks=False) else e.name)
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            yield from _walk(e.path, suffixes)
        elif e.is_file() and (suffixes is None or os.path.splitext(e.name)[1].lower() in suffixes):
            yield os.path.realpath(e.path) if e.is_symlink() else e.path


def discover(root: Path | str | None, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """walk() as a list, for small folders (DEXA exports, box files) and tests."""
    return list(walk(root, suffixes))


def unchanged_files(session: Session, paths: list[str], stage: str, context: str, *, kind: str,
                    retry_quarantined: bool = False, keep: Callable[[SourceRow], bool] | None = None) -> set[str]:
    """The paths whose size and st_mtime_ns match their latest source_file row: a rerun does not open
    them. A quarantined one that is due for a retry (retry_due), one recorded by another stage (`kind`:
    swapped folders) or quarantined with no active entry here is judged again all the same (judge_again);
    `keep` rules out rows that must be read whatever their stamp (a box file waiting for its image).
    On a retry asked for, a path with any active entry here (an older content's) is read too."""
    latest = latest_sources(session, paths)
    flagged = active_paths(session, stage, list(latest)) if retry_quarantined else set()
    same: dict[str, SourceRow] = {}
    for path, row in latest.items():
        if row.mtime_ns is None or (keep is not None and not keep(row)):
            continue
        try:
            st = os.stat(path)
        except OSError:  # vanished or unreadable: read, and reported as such
            continue
        if st.st_mtime_ns == row.mtime_ns and st.st_size == row.size_bytes and path not in flagged:
            same[path] = row
    active = active_contexts(session, stage, [row.sha256 for row in same.values()])
    return {p for p, row in same.items()
            if not judge_again(active.get(row.sha256), context, kind=kind, row_kind=row.kind, row_status=row.status,
                               always=retry_quarantined)}


def check_folder(path: Path | str, what: str = "input folder") -> None:
    """A folder that the refresh reads must exist and be a folder (a user's mistake, said plainly)."""
    p = Path(path)
    if not p.exists():
        raise UserError("no_such_folder", f"{what} {p} does not exist; check the path")
    if not p.is_dir():
        raise UserError("not_a_folder", f"{what} {p} is a file, not a folder; pass the folder that holds the files")


def file_bytes(path: str) -> tuple[bytes, str, int | None]:
    """A file's bytes, SHA-256 and trusted mtime (stat before the read; None when not trusted)."""
    st = os.stat(path)
    data = Path(path).read_bytes()
    return data, sha256_bytes(data), trusted_mtime_ns(st) if len(data) == st.st_size else None
