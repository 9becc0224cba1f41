"""Which input files a refresh reads: a streamed, sorted walk of the folders, and the files that a
rerun need not open because their size and mtime match their last source_file row (issue 15).

A night over an unchanged archive costs a directory walk, one stat per file and a few queries per
batch; `osteo refresh --rehash` reads and hashes everything again for whoever distrusts mtimes.

On a network share (NFS, SMB, ...) each listing and each stat is a round trip to the server, so there the
walk lists folders ahead on a thread pool and the stats of a batch run on threads (`io_threads`: 16 on a
network file system, 1 elsewhere, OSTEO_IO_THREADS to choose); the paths come out in the same sorted order
and the same files are skipped whatever the number of threads (issue 28, docs/performance.md).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from sqlalchemy.orm import Session

from db.quarantine import active_contexts, active_paths, judge_again
from db.store import SourceRow, latest_sources
from db.values import QuarantineStage
from osteo.errors import UserError
from osteo_common.chunks import batches  # noqa: F401 - the streamed batches of the walk
from osteo_common.files import sha256_bytes, trusted_mtime_ns

NETWORK_FS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "fuse.glusterfs", "fuse.sshfs",
                        "fuse.cephfs", "lustre", "gpfs", "beegfs", "afs", "9p"})
NETWORK_THREADS = 16  # round trips in flight on a share; a local disk answers a stat faster than a thread starts


def fs_type(path: Path | str) -> str:
    """The file system type of the mount that holds path ('' when unknown: no /proc)."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return ""
    real, best, kind = os.path.realpath(path), "", ""
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, parts[2]
    return kind


def io_threads(path: Path | str, configured: int = 0) -> int:
    """Threads for the walk and the stats under path: `configured` when above 0 (OSTEO_IO_THREADS), else
    NETWORK_THREADS on a network file system and 1 (the plain sequential walk) elsewhere."""
    return configured if configured > 0 else NETWORK_THREADS if fs_type(path) in NETWORK_FS else 1


def walk(root: Path | str | None, suffixes: tuple[str, ...] | None = None, *, threads: int = 0) -> Iterator[str]:
    """Every regular file under root, streamed in sorted path order (os.scandir, one folder's entries
    at a time: a million-file tree is never a list in memory); hidden entries skipped; DICOMs often
    have no suffix. The folder is checked now; the walk runs as it is consumed. With more than one
    thread (io_threads), folders are listed ahead on a pool, a few per level: the same paths, same order."""
    if not root:
        return iter(())
    check_folder(root)
    folder = str(Path(root).resolve())
    wanted = tuple(s.lower() for s in suffixes) if suffixes else None
    n = io_threads(folder, threads)
    return _walk(folder, wanted) if n <= 1 else _walk_ahead(folder, wanted, n)


def _walk(folder: str, suffixes: tuple[str, ...] | None) -> Iterator[str]:
    for e in _entries(folder):
        if e.is_dir(follow_symlinks=False):
            yield from _walk(e.path, suffixes)
        elif e.is_file() and (suffixes is None or os.path.splitext(e.name)[1].lower() in suffixes):
            yield os.path.realpath(e.path) if e.is_symlink() else e.path


def _listing(folder: str, suffixes: tuple[str, ...] | None) -> list[tuple[str, bool]]:
    """One folder as _walk reads it: (path, is a folder) in the walk's order, the files already checked."""
    return [(e.path, True) if e.is_dir(follow_symlinks=False) else
            (os.path.realpath(e.path) if e.is_symlink() else e.path, False)
            for e in _entries(folder) if e.is_dir(follow_symlinks=False) or (
                e.is_file() and (suffixes is None or os.path.splitext(e.name)[1].lower() in suffixes))]


def _entries(folder: str) -> list[os.DirEntry]:
    with os.scandir(folder) as it:
        entries = [e for e in it if not e.name.startswith(".")]
    # a folder sorts as "name/": the walk's order is the sorted order of the full paths
    entries.sort(key=lambda e: e.name + "/" if e.is_dir(follow_symlinks=False) else e.name)
    return entries


def _walk_ahead(root: str, suffixes: tuple[str, ...] | None, threads: int) -> Iterator[str]:
    with ThreadPoolExecutor(threads, thread_name_prefix="osteo-walk") as pool:
        yield from _walk_listed(pool.submit(_listing, root, suffixes), pool, suffixes, 2 * threads)


def _walk_listed(listed: Future, pool: ThreadPoolExecutor, suffixes: tuple[str, ...] | None,
                 ahead: int) -> Iterator[str]:
    """The paths of a listed folder; its subfolders are listed `ahead` at a time, in order, while the
    consumer takes the earlier ones (memory: a few listings per level, never the tree)."""
    entries = listed.result()
    folders = iter([path for path, is_dir in entries if is_dir])
    pending: deque[Future] = deque()
    for path, is_dir in entries:
        if not is_dir:
            yield path
            continue
        while len(pending) < ahead and (nxt := next(folders, None)) is not None:
            pending.append(pool.submit(_listing, nxt, suffixes))
        yield from _walk_listed(pending.popleft(), pool, suffixes, ahead)


def discover(root: Path | str | None, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """walk() as a list, for small folders (DEXA exports, box files) and tests."""
    return list(walk(root, suffixes))


def unchanged_files(session: Session, paths: list[str], stage: QuarantineStage, context: str, *, kind: str,
                    retry_quarantined: bool = False, keep: Callable[[SourceRow], bool] | None = None,
                    threads: int = 0) -> set[str]:
    """The paths whose size and st_mtime_ns match their latest source_file row: a rerun does not open
    them. A quarantined one that is due for a retry (retry_due), one recorded by another stage (`kind`:
    swapped folders) or quarantined with no active entry here is judged again all the same (judge_again);
    `keep` rules out rows that must be read whatever their stamp (a box file waiting for its image).
    On a retry asked for, a path with any active entry here (an older content's) is read too. The stats
    run on `threads` (io_threads: 0 chooses by the file system) when more than one."""
    latest = latest_sources(session, paths)
    flagged = active_paths(session, stage, list(latest)) if retry_quarantined else set()
    candidates = {p: row for p, row in latest.items() if row.mtime_ns is not None and (keep is None or keep(row))}
    stats = _stats(list(candidates), io_threads(next(iter(candidates)), threads) if candidates else 1)
    same = {path: row for (path, row), st in zip(candidates.items(), stats, strict=True)
            if st is not None and st.st_mtime_ns == row.mtime_ns and st.st_size == row.size_bytes
            and path not in flagged}
    active = active_contexts(session, stage, [row.sha256 for row in same.values()])
    return {p for p, row in same.items()
            if not judge_again(active.get(row.sha256), context, kind=kind, row_kind=row.kind, row_status=row.status,
                               always=retry_quarantined)}


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:  # vanished or unreadable: read, and reported as such
        return None


def _stats(paths: list[str], threads: int) -> list[os.stat_result | None]:
    """os.stat of each path (None: failed), in order; in `threads` slices at once when more than one."""
    if threads <= 1 or len(paths) < 2 * threads:
        return [_stat(p) for p in paths]
    step = -(-len(paths) // threads)
    with ThreadPoolExecutor(threads, thread_name_prefix="osteo-stat") as pool:
        parts = pool.map(lambda i: [_stat(p) for p in paths[i:i + step]], range(0, len(paths), step))
        return [st for part in parts for st in part]


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
