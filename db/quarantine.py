"""Quarantine entries: recorded once, judged again when what rejected them may have changed.

An input is judged (its file read, its rows checked) and every fault becomes an entry through
`quarantine()`. A retry judges the input again inside one transaction; `settle()` then resolves
the input's active entries that the new judgment did not meet again (`resolved_at` set, the row
kept for the auditors) and stamps the judging context (osteo.ingest.quarantine.judging_context) on the
others. An entry met again is the same row (`last_seen` moves), never a second one.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Sequence
from typing import cast

from sqlalchemy import CursorResult, Row, Select, select, update
from sqlalchemy.orm import Session

from db.models import Quarantine, SourceFile
from db.values import QuarantineStage, SourceStatus
from osteo_common.chunks import chunks

# Session.info key: the (stage, sha256, row, reason) entries met since the last settle()
SEEN = "osteo.quarantine_seen"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def quarantine(session: Session, *, stage: QuarantineStage, path: str, sha256: str, reason: str,
               detail: str = "", row: int = 0, context: str | None = None) -> bool:
    """Record bad input once; True when the entry is new or had been resolved (active again)."""
    reason = reason[:64]
    session.info.setdefault(SEEN, set()).add((stage, sha256, row, reason))
    entry = session.scalar(select(Quarantine).where(
        Quarantine.stage == stage, Quarantine.source_sha256 == sha256, Quarantine.source_row == row,
        Quarantine.reason == reason))
    now = _now()
    if entry is not None:
        was_active = entry.resolved_at is None
        entry.last_seen, entry.resolved_at, entry.detail = now, None, (detail or "")[:1000]
        entry.source_path = path[:1024]  # where it was last met (a copy under another path, a moved file)
        entry.context_digest = context or entry.context_digest
        return not was_active
    session.add(Quarantine(stage=stage, source_path=path[:1024], source_sha256=sha256, source_row=row,
                           reason=reason, detail=(detail or "")[:1000], context_digest=context,
                           first_seen=now, last_seen=now))
    return True


def active_contexts(session: Session, stage: QuarantineStage,
                    sha256s: Iterable[str] | None = None) -> dict[str, set[str | None]]:
    """sha256 -> the contexts its active entries of this stage were judged under (absent: none active);
    every input of the stage when `sha256s` is None (the active entries are few)."""
    found: dict[str, set[str | None]] = {}
    active = select(Quarantine.source_sha256, Quarantine.context_digest).where(
        Quarantine.stage == stage, Quarantine.resolved_at.is_(None))
    wanted = None if sha256s is None else set(sha256s)
    rows = None if wanted is None else few_active(session, active, len(wanted))
    if rows is not None:  # the stage's active entries, fewer than the inputs: one short query, no IN lists
        rows = [r for r in rows if r[0] in wanted]
    elif wanted is None:
        rows = session.execute(active)
    else:
        rows = (r for chunk in chunks(sorted(wanted)) for r in session.execute(
            active.where(Quarantine.source_sha256.in_(chunk))))
    for sha, context in rows:
        found.setdefault(sha, set()).add(context)
    return found


FEW_FROM = 100  # inputs asked about at once from which the active entries are loaded whole when fewer


def few_active(session: Session, stmt: Select, wanted: int) -> Sequence[Row] | None:
    """All the rows of `stmt` (active entries) when there are no more than `wanted`, else None: a batch of a
    thousand known files asks once for the few active entries instead of a thousand values in IN lists (a
    rerun's cost a file); the caller keeps the rows of its inputs, as the IN lists would have. Under FEW_FROM
    inputs (a file at a time), None: the IN list is the cheaper query."""
    if wanted < FEW_FROM:
        return None
    rows = session.execute(stmt.limit(wanted + 1)).all()
    return rows if len(rows) <= wanted else None


def active_paths(session: Session, stage: QuarantineStage, paths: list[str]) -> set[str]:
    """The paths among these with an active entry of this stage (under any content)."""
    found: set[str] = set()
    for chunk in chunks(sorted(set(paths))):
        found.update(session.scalars(select(Quarantine.source_path).where(
            Quarantine.stage == stage, Quarantine.resolved_at.is_(None), Quarantine.source_path.in_(chunk))))
    return found


def retry_due(contexts: set[str | None] | None, context: str, *, always: bool = False) -> bool:
    """A known input is judged again when it has an active entry judged under another context
    (column map, configuration, code version), or on every retry asked for (`always`)."""
    return bool(contexts) and (always or contexts != {context})


def judge_again(contexts: set[str | None] | None, context: str, *, kind: str, row_kind: str, row_status: str,
                always: bool = False) -> bool:
    """Whether a known file is judged again by the stage of `kind`: a file recorded by another stage
    (a DICOM read as a bad CSV from swapped folders) or quarantined with no active entry at this stage
    is never "already known" here; else retry_due."""
    if not contexts and (row_kind != kind or row_status == SourceStatus.QUARANTINED):
        return True
    return retry_due(contexts, context, always=always)


INGEST_STAGES = (QuarantineStage.INGEST_DICOM, QuarantineStage.INGEST_DEXA, QuarantineStage.INGEST_ANNOTATION)


def _resolve_active(session: Session, stages: tuple[str, ...], files: Iterable[tuple[str, str]], *,
                    same_content: bool | None) -> int:
    """Resolve the active entries of these stages at these files' paths: of the same content, of
    another (`same_content` False), or of any (None); one IN query per chunk of paths (the active
    entries are few)."""
    sha_of = {path[:1024]: sha for path, sha in files}
    resolved, now = 0, _now()
    for chunk in chunks(sorted(sha_of)):
        for entry in session.scalars(select(Quarantine).where(
                Quarantine.stage.in_(stages), Quarantine.resolved_at.is_(None), Quarantine.source_path.in_(chunk))):
            if same_content is None or (entry.source_sha256 == sha_of[entry.source_path]) == same_content:
                entry.resolved_at = now
                resolved += 1
    session.flush()
    return resolved


def supersede(session: Session, *, stage: QuarantineStage, files: Iterable[tuple[str, str]]) -> int:
    """The (path, sha256) files read now at this stage: the active entries of their paths' other contents
    (a fixed, replaced or restored file) are resolved; returns how many."""
    return _resolve_active(session, (stage,), files, same_content=False)


def resolve_elsewhere(session: Session, *, stage: QuarantineStage, files: Iterable[tuple[str, str]]) -> int:
    """Files this stage now owns (taken in, or its own bad input): their paths' entries at the other
    ingest stages, of any content (a DICOM once read as a bad CSV, a CSV read as a DICOM then fixed in
    place), are resolved, so a file still bad is listed once, by the stage that reads it."""
    return _resolve_active(session, tuple(s for s in INGEST_STAGES if s != stage), files, same_content=None)


def resolve_known_elsewhere(session: Session, *, stage: QuarantineStage, kind: str, paths: Iterable[str]) -> int:
    """The files a stage skipped as known: those it owns (recorded as its `kind`) lose their entries
    at the other ingest stages (met there when the folders were swapped)."""
    others = tuple(s for s in INGEST_STAGES if s != stage)
    active = select(Quarantine.source_path, Quarantine.source_sha256).where(
        Quarantine.stage.in_(others), Quarantine.resolved_at.is_(None))
    wanted = {p[:1024] for p in paths}
    rows = few_active(session, active, len(wanted))
    if rows is not None:
        found = [(p, sha) for p, sha in rows if p in wanted]
    else:
        found = [(p, sha) for chunk in chunks(sorted(wanted))
                 for p, sha in session.execute(active.where(Quarantine.source_path.in_(chunk)))]
    if not found:
        return 0
    ours = [(p, sha) for p, sha in set(found) if session.scalar(select(SourceFile.id).where(
        SourceFile.path == p, SourceFile.sha256 == sha, SourceFile.kind == kind))]
    return resolve_elsewhere(session, stage=stage, files=ours)


def resolve_vanished(session: Session, *, stage: QuarantineStage, paths: Iterable[str]) -> int:
    """Active ingest entries for files deleted from the folders these paths are in, whichever stage
    made them (a file met in swapped folders, then moved, is gone all the same); a folder that is gone
    or empty says nothing: an unmounted share is not a deletion."""
    paths = paths if isinstance(paths, list) else list(paths)
    if not paths:
        return 0
    stages = tuple({stage, *INGEST_STAGES})
    entries = session.scalars(select(Quarantine).where(Quarantine.stage.in_(stages),
                                                       Quarantine.resolved_at.is_(None))).all()
    folders = {os.path.dirname(p) for p in paths} if entries else set()  # only when some entry is active
    gone = [q for q in entries if os.path.dirname(q.source_path) in folders and not os.path.lexists(q.source_path)]
    now = _now()
    for q in gone:
        q.resolved_at = now
    session.flush()
    return len(gone)


def tidy(session: Session, *, stage: QuarantineStage, read: list[tuple[str, str]], ours: list[tuple[str, str]]) -> int:
    """After a stage read these files (`ours`: those now recorded as its own, good or bad; a stage never
    takes another stage's good file): supersede and resolve_elsewhere; returns how many entries were
    resolved (resolve_vanished is called once with every path met)."""
    return supersede(session, stage=stage, files=read) + resolve_elsewhere(session, stage=stage, files=ours)


def settle(session: Session, *, stage: QuarantineStage, sha256s: Iterable[str], context: str) -> int:
    """After judging these inputs: resolve their active entries not met again, stamp the context on
    the others; returns how many were resolved."""
    seen = session.info.pop(SEEN, set())
    session.flush()
    resolved = 0
    for chunk in chunks(sorted(set(sha256s))):
        active = session.scalars(select(Quarantine).where(
            Quarantine.stage == stage, Quarantine.resolved_at.is_(None), Quarantine.source_sha256.in_(chunk)))
        for entry in active:
            if (entry.stage, entry.source_sha256, entry.source_row, entry.reason) in seen:
                entry.context_digest = context
            else:
                entry.resolved_at = _now()
                resolved += 1
    session.flush()
    return resolved


def resolve(session: Session, *, stage: QuarantineStage, sha256s: Iterable[str]) -> int:
    """These inputs passed the stage (images exported at last): their active entries there are resolved."""
    resolved = 0
    for chunk in chunks(sorted(set(sha256s))):
        result = session.execute(
            update(Quarantine)
            .where(Quarantine.stage == stage, Quarantine.resolved_at.is_(None), Quarantine.source_sha256.in_(chunk))
            .values(resolved_at=_now()))
        resolved += int(cast(CursorResult, result).rowcount or 0)  # an UPDATE's result has a row count
    return resolved
