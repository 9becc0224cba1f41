"""The skeleton the three ingests share (osteo/ingest/refresh.py: DICOM, DEXA, box files): the files a rerun need
not open are skipped, each file read is judged (taken in, or quarantined with a plain reason), the entries of a
file gone from the folder or taken by another stage are resolved, and everything is counted. What one kind of
file does (how it is read, validated and stored) comes in as a collaborator, `take_in`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from db.models import SourceFile
from db.quarantine import active_contexts, judge_again, resolve_known_elsewhere, resolve_vanished, settle, tidy
from db.store import get_or_create_source, quarantine
from db.values import QuarantineStage, SourceStatus
from osteo.etl.errors import InputError
from osteo.ingest.boxes import WAITING
from osteo.ingest.discovery import file_bytes, unchanged_files
from osteo.ingest.report import Problem

# one file's content into the database (its source row, whether the row is new, its bytes): what it added, as
# counts; an InputError is bad input, quarantined by the skeleton
TakeIn = Callable[[Session, SourceFile, bool, bytes], Mapping[str, int]]
# a file's sha256 -> the contexts its active entries here were judged under (None: no active entry)
Contexts = Callable[[str], set[str | None] | None]


@dataclass(frozen=True)
class Stage:
    """Which ingest judges, under which context (osteo/ingest/quarantine.py's judging_context)."""

    stage: QuarantineStage
    kind: str  # source_file.kind of the files it takes in
    context: str
    waits: bool = False  # a file may wait (the box files' status `waiting`): read again whatever its stamp


def skipped(session: Session, paths: list[str], stage: Stage, *, retry_quarantined: bool, rehash: bool,
            threads: int = 0) -> set[str]:
    """The paths not to open: unchanged by size and mtime and judged under this context (discovery.py);
    none on a rehash."""
    if rehash:
        return set()
    keep = (lambda row: row.status != WAITING) if stage.waits else None
    return unchanged_files(session, paths, stage.stage, stage.context, kind=stage.kind,
                           retry_quarantined=retry_quarantined, keep=keep, threads=threads)


def resolve_gone(session: Session, stage: Stage, paths: list[str], skip: set[str]) -> int:
    """The entries of a file deleted from the folder, and of a skipped file that is now another stage's."""
    return (resolve_vanished(session, stage=stage.stage, paths=paths)
            + resolve_known_elsewhere(session, stage=stage.stage, kind=stage.kind, paths=skip))


def skip_counts(skip: set[str]) -> Counter:
    return Counter(files=len(skip), already_known=len(skip), unchanged=len(skip))


def _never(_data: bytes) -> bool:
    return False


def ingest_files(factory: sessionmaker[Session], paths: list[str], stage: Stage, take_in: TakeIn, *,
                 retry_quarantined: bool = False, rehash: bool = False, one_transaction: bool = False,
                 looks_foreign: Callable[[bytes], bool] = _never) -> tuple[Counter, list[Problem]]:
    """Every file of a folder judged one by one: the counts, and each file quarantined now (path, reason).
    one_transaction: the whole folder in one (the box files); else one transaction a file and one for the
    files gone (the DEXA exports). looks_foreign: bad input that looks like another stage's (swapped folders)."""
    counts: Counter = Counter()
    problems: list[Problem] = []

    def judge(session: Session, path: str, active: Contexts) -> None:
        _judge_file(session, path, stage, take_in, active, retry_quarantined=retry_quarantined, counts=counts,
                    problems=problems, looks_foreign=looks_foreign)

    if one_transaction:
        with factory() as session, session.begin():
            skip = skipped(session, paths, stage, retry_quarantined=retry_quarantined, rehash=rehash)
            counts.update(skip_counts(skip))
            active = active_contexts(session, stage.stage)
            for path in (p for p in paths if p not in skip):
                judge(session, path, active.get)
            counts["resolved"] += resolve_gone(session, stage, paths, skip)
        return counts, problems
    with factory() as session:
        skip = skipped(session, paths, stage, retry_quarantined=retry_quarantined, rehash=rehash)
    counts.update(skip_counts(skip))
    for path in (p for p in paths if p not in skip):
        with factory() as session, session.begin():
            judge(session, path, lambda sha, s=session: active_contexts(s, stage.stage, [sha]).get(sha))
    with factory() as session, session.begin():
        counts["resolved"] += resolve_gone(session, stage, paths, skip)
    return counts, problems


def _judge_file(session: Session, path: str, stage: Stage, take_in: TakeIn, active: Contexts, *,
                retry_quarantined: bool, counts: Counter, problems: list[Problem],
                looks_foreign: Callable[[bytes], bool]) -> None:
    """One file: already known (nothing to judge), taken in, or quarantined; its entries settled either way."""
    data, sha, mtime = file_bytes(path)
    sf, new = get_or_create_source(session, kind=stage.kind, path=path, sha256=sha, size=len(data), mtime_ns=mtime)
    counts["files"] += 1
    waiting = stage.waits and sf.status == WAITING
    # the active context is looked up only for a known file (a query a file on the per-file path)
    if not new and not waiting and not judge_again(active(sha), stage.context, kind=stage.kind, row_kind=sf.kind,
                                                   row_status=sf.status, always=retry_quarantined):
        counts["already_known"] += 1
        counts["resolved"] += tidy(session, stage=stage.stage, read=[(path, sha)],
                                   ours=[(path, sha)] if sf.kind == stage.kind else [])
        return
    counts["retried"] += not new and not waiting
    theirs = sf.kind != stage.kind and sf.status != SourceStatus.QUARANTINED  # another stage's good file keeps it
    try:
        counts.update(take_in(session, sf, new, data))
    except InputError as exc:
        if not theirs:
            sf.kind, sf.status = stage.kind, SourceStatus.QUARANTINED
        counts["quarantined"] += quarantine(session, stage=stage.stage, path=path, sha256=sha, reason=exc.reason,
                                            detail=exc.detail, context=stage.context)
        counts["wrong_folder"] += looks_foreign(data)
        problems.append(Problem(path=path, stage=stage.stage, reason=exc.reason))
    counts["resolved"] += settle(session, stage=stage.stage, sha256s=[sha], context=stage.context)
    counts["resolved"] += tidy(session, stage=stage.stage, read=[(path, sha)],
                               ours=[(path, sha)] if sf.kind == stage.kind else [])
