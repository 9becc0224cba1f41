"""Idempotent writes of ingest results: a rerun adds nothing, new input adds only itself.

Each function takes the session from the caller and works in batches (one query per
batch for what already exists), so ten thousand files cost tens of queries, not tens
of thousands.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from db.dexa_rows import DexaRow
from db.headers import HeaderRead
from db.models import Annotation, DexaExam, DicomImage, OutOfScope, Patient, SourceFile
from db.quarantine import quarantine  # recorded in db/quarantine.py; osteo.ingest.refresh imports it from here
from db.values import QuarantineStage, SourceStatus
from osteo_common.chunks import chunks

BOX = ("box_xmin", "box_ymin", "box_xmax", "box_ymax")


class SourceRow(NamedTuple):
    """A source_file row as the ingest compares it (no ORM object: a batch is thousands of them)."""

    id: int
    path: str
    sha256: str
    size_bytes: int
    mtime_ns: int | None
    status: str
    kind: str  # the stage that recorded it: dicom | dexa | annotation


# the tables themselves for the batch's inserts: Core executemany, without the ORM's bulk layer per row
_SOURCE_FILE, _DICOM_IMAGE = (cast(Table, m.__table__) for m in (SourceFile, DicomImage))
_ROW = (SourceFile.id, SourceFile.path, SourceFile.sha256, SourceFile.size_bytes, SourceFile.mtime_ns,
        SourceFile.status, SourceFile.kind)


def source_files(session: Session, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], SourceRow]:
    """Existing source_file rows for (path, sha256) pairs: the rows of their paths (_PATHS), those of the pairs
    kept (an IN list of paths costs far less to build than one of pairs; a path has a content or a few)."""
    wanted = set(pairs)
    return {(r.path, r.sha256): r for r in _rows_of_paths(session, sorted({p for p, _ in wanted}))
            if (r.path, r.sha256) in wanted}


# one statement for every chunk (a bound list, expanded when run): nothing to build or coerce per path
_PATHS = select(*_ROW).where(SourceFile.path.in_(bindparam("paths", expanding=True))).order_by(SourceFile.id)


def _rows_of_paths(session: Session, paths: Sequence[str]) -> Iterator[SourceRow]:
    """Every source_file row of these paths, by ascending id within each IN chunk. Core rows on the session's
    connection (flushed first, as the ORM's autoflush would): a rerun asks this for every file of the archive."""
    if session.autoflush:
        session.flush()
    conn, make = session.connection(), SourceRow._make
    for chunk in chunks(list(paths)):
        yield from map(make, conn.execute(_PATHS, {"paths": list(chunk)}).all())


def latest_sources(session: Session, paths: Sequence[str]) -> dict[str, SourceRow]:
    """Each path's latest source_file row (the highest id: a changed file is a new row), one query per
    IN chunk (the (path, sha256) unique index serves it)."""
    return {r.path: r for r in _rows_of_paths(session, paths)}  # ascending ids: the last row of a path stays


def record_stamps(session: Session, rows: Iterable[tuple[int, int, int | None]]) -> int:
    """Store (id, size, mtime_ns) of known files read again with the same bytes (a touched file), so that
    the next rerun skips them unopened; one executemany."""
    params = [{"id": i, "size_bytes": size, "mtime_ns": mtime} for i, size, mtime in rows]
    if params:
        session.execute(update(SourceFile), params)
    return len(params)


def get_or_create_source(session: Session, *, kind: str, path: str, sha256: str, size: int,
                         status: SourceStatus = SourceStatus.INGESTED,
                         mtime_ns: int | None = None) -> tuple[SourceFile, bool]:
    """The (path, sha256) row, created when new; a known one gets the stamp it was read with now."""
    sf = session.scalar(select(SourceFile).where(SourceFile.path == path, SourceFile.sha256 == sha256))
    if sf is not None:
        if mtime_ns is not None and (sf.mtime_ns, sf.size_bytes) != (mtime_ns, size):
            sf.mtime_ns, sf.size_bytes = mtime_ns, size
        return sf, False
    sf = SourceFile(kind=kind, path=path, sha256=sha256, size_bytes=size, status=status, mtime_ns=mtime_ns)
    session.add(sf)
    session.flush()
    return sf, True


def patients_by_key(session: Session, keys: Iterable[str],
                    sexes: dict[str, str | None] | None = None) -> dict[str, Patient]:
    wanted = sorted(set(keys))
    found: dict[str, Patient] = {}
    for chunk in chunks(wanted):
        for p in session.scalars(select(Patient).where(Patient.patient_key.in_(chunk))):
            found[p.patient_key] = p
    for key in wanted:
        if key not in found:
            found[key] = Patient(patient_key=key, sex=(sexes or {}).get(key))
            session.add(found[key])
    session.flush()
    return found


def patient_ids(session: Session, sexes: dict[str, str | None]) -> dict[str, int]:
    """patient_key -> id for these keys; the new ones inserted in one executemany (no ORM objects)."""
    found: dict[str, int] = {}
    for chunk in chunks(sorted(sexes)):
        found.update(session.execute(select(Patient.patient_key, Patient.id)
                                     .where(Patient.patient_key.in_(chunk))).all())
    new = [{"patient_key": k, "sex": sex} for k, sex in sorted(sexes.items()) if k not in found]
    if new:
        found.update(session.execute(insert(Patient).returning(Patient.patient_key, Patient.id), new).all())
    return found


# a SOP Instance UID names one image: other bytes under it are quarantined, the image first read stays
CHANGED_IN_PLACE = ("this file changed since it was ingested (same path, other content, same SOP Instance UID): "
                    "the image read from its earlier content is kept and still used; restore the file to "
                    "resolve this entry, or give the new content its own SOP Instance UID to ingest it")
SAME_UID_ELSEWHERE = ("another file with different content already has this SOP Instance UID: the image read "
                      "from that file is kept and still used")


def store_dicom_results(session: Session, results: list[HeaderRead],
                        retry: Collection[tuple[str, str]] = ()) -> Counter:
    """Write one batch of header reads (osteo.etl.dicom_headers.read_one) with bulk inserts: one
    executemany per table, no ORM object per row. The known (path, sha256) files in `retry`
    (quarantined, judged again: osteo.ingest.refresh.ingest_dicom) keep their row; other known files only get
    the size and mtime they were read with (a touched file: the next rerun skips it unopened)."""
    counts: Counter = Counter(files=len(results))
    session.flush()  # whatever the caller's session holds goes first: the inserts below are Core
    known = source_files(session, [(r.path, r.sha256) for r in results])
    batch = _DicomBatch(retried={k: known.pop(k) for k in retry if k in known})
    _judge_dicom_results(session, results, known, batch, counts)
    _write_dicom_batch(session, batch, {(r.path, r.sha256): r for r in results})
    session.flush()
    return counts


@dataclass
class _DicomBatch:
    """What judging a batch of header results decided, for the bulk writes (store_dicom_results)."""

    retried: dict[tuple[str, str], SourceRow]  # known files judged again: they keep their row
    new_sources: list[dict[str, Any]] = field(default_factory=list)
    status_of: dict[tuple[str, str], str] = field(default_factory=dict)  # every file judged now -> its status
    images: list[tuple[tuple[str, str], dict[str, Any]]] = field(default_factory=list)
    out_rows: list[tuple[tuple[str, str], dict[str, Any]]] = field(default_factory=list)
    stamps: list[tuple[int, int, int | None]] = field(default_factory=list)
    moved: list[tuple[str, tuple[str, str]]] = field(default_factory=list)  # SOP UID -> the (path, sha256) now

    def source(self, r: HeaderRead, status: SourceStatus) -> None:
        k = (r.path, r.sha256)
        if k not in self.retried and k not in self.status_of:
            self.new_sources.append({"kind": "dicom", "path": r.path, "sha256": r.sha256,
                                     "size_bytes": r.size, "mtime_ns": r.mtime_ns, "status": status})
        self.status_of[k] = status


def _images_of_uids(session: Session, uids: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """SOP Instance UID -> sha256 of the file that brought its image, and -> that file's path."""
    sha_of_uid: dict[str, str] = {}
    path_of_uid: dict[str, str] = {}
    for chunk in chunks(uids):
        for uid, sha, path in session.execute(
                select(DicomImage.sop_instance_uid, SourceFile.sha256, SourceFile.path)
                .join(SourceFile, SourceFile.id == DicomImage.source_file_id)
                .where(DicomImage.sop_instance_uid.in_(chunk))):
            sha_of_uid[uid], path_of_uid[uid] = sha, path
    return sha_of_uid, path_of_uid


def _judge_dicom_results(session: Session, results: list[HeaderRead], known: dict[tuple[str, str], SourceRow],
                         batch: _DicomBatch, counts: Counter) -> None:
    """Each result's fate (a stamp, quarantined, out of scope, a duplicate, moved, or a new image) into `batch`;
    the quarantine entries are written here."""
    sha_of_uid, path_of_uid = _images_of_uids(session, [r.record.sop_instance_uid for r in results
                                                        if r.record is not None])
    out_shas = _out_of_scope_shas(session, [r.sha256 for r in results if r.out_of_scope is not None])
    patients = patient_ids(session, {r.record.patient_key: r.record.sex for r in results
                                     if r.record is not None and (r.path, r.sha256) not in known})
    for r in results:
        path, sha = k = r.path, r.sha256
        if k in known:
            counts["already_known"] += 1
            row = known[k]
            if r.mtime_ns is not None and (row.mtime_ns, row.size_bytes) != (r.mtime_ns, r.size):
                batch.stamps.append((row.id, r.size, r.mtime_ns))
            continue
        counts["retried"] += k in batch.retried
        if r.error is not None:
            reason, detail = r.error
            batch.source(r, SourceStatus.QUARANTINED)
            counts["quarantined"] += quarantine(session, stage=QuarantineStage.INGEST_DICOM, path=path, sha256=sha,
                                                reason=reason, detail=detail)
            continue
        if r.out_of_scope is not None:  # not a hip radiograph: recorded with its reason, never an image
            batch.source(r, SourceStatus.OUT_OF_SCOPE)
            if sha in out_shas:
                counts["duplicate_copies"] += 1  # the same file again under another path
                continue
            batch.out_rows.append((k, r.out_of_scope.row()))
            out_shas.add(sha)
            counts["out_of_scope"] += 1
            continue
        rec = r.record
        assert rec is not None  # HeaderRead holds exactly one of error, out_of_scope and record
        uid = rec.sop_instance_uid
        batch.source(r, SourceStatus.INGESTED)
        if uid in sha_of_uid:
            if sha_of_uid[uid] == sha:
                if os.path.lexists(path_of_uid[uid]):
                    counts["duplicate_copies"] += 1  # the same file again under another path
                else:  # the same file moved: the image is traced to where it is now (lineage verify)
                    batch.moved.append((uid, k))
                    path_of_uid[uid] = path
                continue
            batch.status_of[k] = SourceStatus.QUARANTINED
            counts["quarantined"] += quarantine(
                session, stage=QuarantineStage.INGEST_DICOM, path=path, sha256=sha, reason="sop_uid_conflict",
                detail=CHANGED_IN_PLACE if path_of_uid.get(uid) == path else SAME_UID_ELSEWHERE)
            continue
        batch.images.append((k, rec.image_row(patients[rec.patient_key])))
        sha_of_uid[uid], path_of_uid[uid] = sha, path
        counts["images"] += 1


def _write_dicom_batch(session: Session, batch: _DicomBatch, by_key: dict[tuple[str, str], HeaderRead]) -> None:
    """The batch's bulk writes: new source files, files judged again, moved images, images, out-of-scope rows,
    stamps."""
    status_of = batch.status_of
    for row in batch.new_sources:  # a status changed after the row was planned (a conflict) is the final one
        row["status"] = status_of[(row["path"], row["sha256"])]
    ids = {k: row.id for k, row in batch.retried.items()}
    if batch.new_sources:
        ids.update(((p, s), i) for i, p, s in session.execute(
            insert(_SOURCE_FILE).returning(_SOURCE_FILE.c.id, _SOURCE_FILE.c.path, _SOURCE_FILE.c.sha256),
            batch.new_sources))
    # a file recorded by another stage becomes a DICOM's, unless it is that stage's good file (swapped folders)
    judged_again = [{"id": row.id, "kind": "dicom", "status": status_of[k], "size_bytes": by_key[k].size,
                     "mtime_ns": by_key[k].mtime_ns} for k, row in batch.retried.items()
                    if k in status_of and (row.kind == "dicom" or row.status == SourceStatus.QUARANTINED
                                           or status_of[k] != SourceStatus.QUARANTINED)]
    if judged_again:
        session.execute(update(SourceFile), judged_again)
    for uid, k in batch.moved:
        session.execute(update(DicomImage).where(DicomImage.sop_instance_uid == uid).values(source_file_id=ids[k]))
    if batch.images:  # study_day: its column default, from each row's study_date (db/models.py)
        session.execute(insert(_DICOM_IMAGE), [{**rec, "source_file_id": ids[k]} for k, rec in batch.images])
    if batch.out_rows:
        session.execute(insert(OutOfScope), [{**rec, "source_file_id": ids[k]} for k, rec in batch.out_rows])
    record_stamps(session, batch.stamps)


def _out_of_scope_shas(session: Session, shas: list[str]) -> set[str]:
    """The contents among `shas` already recorded as out of scope (under any path)."""
    found: set[str] = set()
    for chunk in chunks(sorted(set(shas))):
        found.update(session.scalars(select(SourceFile.sha256)
                                     .join(OutOfScope, OutOfScope.source_file_id == SourceFile.id)
                                     .where(SourceFile.sha256.in_(chunk))))
    return found


def store_dexa_rows(session: Session, sf: SourceFile, rows: list[DexaRow],
                    errors: list[tuple[int, str, str]]) -> Counter:
    counts: Counter = Counter(rows=len(rows) + len(errors))
    for row_no, reason, detail in errors:
        counts["quarantined"] += quarantine(session, stage=QuarantineStage.INGEST_DEXA, path=sf.path, sha256=sf.sha256,
                                            row=row_no, reason=reason, detail=detail)
    patients = patients_by_key(session, (r.patient_key for r in rows))
    for r in rows:
        patient = patients[r.patient_key]
        # the same exam exported again (perhaps without its side) is not a new exam
        same_day = session.scalars(select(DexaExam).where(
            DexaExam.patient_id == patient.id, DexaExam.exam_date == r.exam_date)).all()
        matches = [e for e in same_day if e.side == r.side or "-" in (e.side, r.side)]
        if matches:
            same = [e for e in matches if _same_values(e, r)]
            if same:
                carried = False
                for e in same:  # read again from a new version of its file: lineage names the version that holds it
                    if _other_version(session, e.source_file_id, sf):
                        e.source_file_id, e.source_row = sf.id, r.source_row
                        carried = True
                # a row carried into its file's new version (or moved file) is no duplicate: only a copy elsewhere is
                counts["carried_rows" if carried else "duplicate_rows"] += 1
            else:
                counts["quarantined"] += quarantine(
                    session, stage=QuarantineStage.INGEST_DEXA, path=sf.path, sha256=sf.sha256, row=r.source_row,
                    reason="conflicting_exam",
                    detail="an exam of this patient on the same day and side is already recorded with other "
                           "values (the row's source_row locates it)")
            continue
        session.add(DexaExam(
            patient_id=patient.id, exam_date=r.exam_date, side=r.side, neck_bmd=r.neck_bmd,
            t_score=r.t_score, t_score_derived=r.t_score_derived, z_score=r.z_score,
            age_at_exam=r.age_at_exam, source_file_id=sf.id, source_row=r.source_row))
        session.flush()
        counts["exams"] += 1
    return counts


def _other_version(session: Session, source_file_id: int | None, sf: SourceFile) -> bool:
    """Is `source_file_id` another version (content) of `sf`'s path, or a file since moved to `sf`'s path?
    A row or box met unchanged in a file fixed or saved again in place, or moved, is then traced to the
    file that holds it now (docs/lineage.md); a copy under another path, the first still there, keeps the first."""
    if source_file_id is None or source_file_id == sf.id:
        return False
    old = session.get_one(SourceFile, source_file_id).path
    return old == sf.path or not os.path.lexists(old)


def _same_values(exam: DexaExam, row: DexaRow) -> bool:
    close = lambda a, b: (a is None and b is None) or (a is not None and b is not None and abs(a - b) < 1e-6)  # noqa: E731
    return close(exam.t_score, row.t_score) and close(exam.neck_bmd, row.neck_bmd)


def store_annotation(session: Session, sf: SourceFile, box: dict[str, Any]) -> Counter:
    """A person's later box for the same image side replaces theirs (re-exported under a new recipe)."""
    counts: Counter = Counter()
    existing = session.scalar(select(Annotation).where(
        Annotation.sop_instance_uid == box["sop_instance_uid"], Annotation.side == box["side"],
        Annotation.source == box["source"]))
    if existing is None:
        session.add(Annotation(**box, source_file_id=sf.id))
        counts["annotations"] += 1
    elif any(getattr(existing, k) != box[k] for k in BOX):
        for k in ("label", *BOX):
            setattr(existing, k, box[k])
        existing.source_file_id = sf.id
        counts["annotations_updated"] += 1
    elif _other_version(session, existing.source_file_id, sf):  # the same box, its file saved again
        existing.source_file_id = sf.id
    session.flush()
    return counts
