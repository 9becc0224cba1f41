"""Idempotent writes of ingest results: a rerun adds nothing, new input adds only itself.

Each function takes the session from the caller and works in batches (one query per
batch for what already exists), so ten thousand files cost tens of queries, not tens
of thousands.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from db.models import Annotation, DexaExam, DicomImage, OutOfScope, Patient, SourceFile
from db.quarantine import quarantine  # recorded in db/quarantine.py; osteo.refresh imports it from here
from osteo_common.chunks import chunks

BOX = ("box_xmin", "box_ymin", "box_xmax", "box_ymax")


def source_files(session: Session, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], SourceFile]:
    """Existing source_file rows for (path, sha256) pairs."""
    found: dict[tuple[str, str], SourceFile] = {}
    for chunk in chunks(list(pairs)):
        stmt = select(SourceFile).where(tuple_(SourceFile.path, SourceFile.sha256).in_(chunk))
        for sf in session.scalars(stmt):
            found[(sf.path, sf.sha256)] = sf
    return found


def get_or_create_source(session: Session, *, kind: str, path: str, sha256: str, size: int,
                         status: str = "ingested") -> tuple[SourceFile, bool]:
    sf = session.scalar(select(SourceFile).where(SourceFile.path == path, SourceFile.sha256 == sha256))
    if sf is not None:
        return sf, False
    sf = SourceFile(kind=kind, path=path, sha256=sha256, size_bytes=size, status=status)
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


def store_dicom_results(session: Session, results: list[dict[str, Any]],
                        retry: Collection[tuple[str, str]] = ()) -> Counter:
    """Write one batch of header results (see osteo.etl.dicom_headers.read_one). The known (path,
    sha256) files in `retry` (quarantined, judged again: osteo.refresh.ingest_dicom) keep their row."""
    counts: Counter = Counter(files=len(results))
    known = source_files(session, [(r["path"], r["sha256"]) for r in results])
    retried = {k: known.pop(k) for k in retry if k in known}

    def source(r: dict[str, Any], status: str) -> SourceFile:
        sf = retried.get((r["path"], r["sha256"]))
        if sf is None:
            sf = SourceFile(kind="dicom", path=r["path"], sha256=r["sha256"], size_bytes=r["size"])
            session.add(sf)
        sf.status = status
        known[(r["path"], r["sha256"])] = sf
        return sf

    uids = [r["record"]["sop_instance_uid"] for r in results if "record" in r]
    sha_of_uid: dict[str, str] = {}  # SOP Instance UID -> sha256 of the file that brought it
    for chunk in chunks(uids):
        for uid, sha in session.execute(
            select(DicomImage.sop_instance_uid, SourceFile.sha256)
            .join(SourceFile, SourceFile.id == DicomImage.source_file_id)
            .where(DicomImage.sop_instance_uid.in_(chunk))
        ):
            sha_of_uid[uid] = sha
    out_shas = _out_of_scope_shas(session, [r["sha256"] for r in results if "out_of_scope" in r])
    good = [r for r in results if "record" in r]
    patients = patients_by_key(session, (r["record"]["patient_key"] for r in good),
                               {r["record"]["patient_key"]: r["record"]["sex"] for r in good})
    for r in results:
        path, sha = r["path"], r["sha256"]
        if (path, sha) in known:
            counts["already_known"] += 1
            continue
        counts["retried"] += (path, sha) in retried
        if "error" in r:
            reason, detail = r["error"]
            source(r, "quarantined")
            counts["quarantined"] += quarantine(session, stage="ingest_dicom", path=path, sha256=sha,
                                                reason=reason, detail=detail)
            continue
        if "out_of_scope" in r:  # not a hip radiograph: recorded with its reason, never an image
            sf = source(r, "out_of_scope")
            if sha in out_shas:
                counts["duplicate_copies"] += 1  # the same file again under another path
                continue
            session.add(OutOfScope(source_file=sf, **r["out_of_scope"]))
            out_shas.add(sha)
            counts["out_of_scope"] += 1
            continue
        rec = dict(r["record"])
        uid = rec["sop_instance_uid"]
        sf = source(r, "ingested")
        if uid in sha_of_uid:
            if sha_of_uid[uid] == sha:
                counts["duplicate_copies"] += 1  # the same file again under another path
                continue
            sf.status = "quarantined"
            counts["quarantined"] += quarantine(
                session, stage="ingest_dicom", path=path, sha256=sha, reason="sop_uid_conflict",
                detail="another file with different content already has this SOP Instance UID")
            continue
        patient = patients[rec.pop("patient_key")]
        rec.pop("sex", None)
        # ids are assigned at the one flush below, through the relationships
        session.add(DicomImage(**rec, source_file=sf, patient=patient))
        sha_of_uid[uid] = sha
        counts["images"] += 1
    session.flush()
    return counts


def _out_of_scope_shas(session: Session, shas: list[str]) -> set[str]:
    """The contents among `shas` already recorded as out of scope (under any path)."""
    found: set[str] = set()
    for chunk in chunks(sorted(set(shas))):
        found.update(session.scalars(select(SourceFile.sha256)
                                     .join(OutOfScope, OutOfScope.source_file_id == SourceFile.id)
                                     .where(SourceFile.sha256.in_(chunk))))
    return found


def store_dexa_rows(session: Session, sf: SourceFile, rows: list[dict[str, Any]],
                    errors: list[tuple[int, str, str]]) -> Counter:
    counts: Counter = Counter(rows=len(rows) + len(errors))
    for row_no, reason, detail in errors:
        counts["quarantined"] += quarantine(session, stage="ingest_dexa", path=sf.path, sha256=sf.sha256,
                                            row=row_no, reason=reason, detail=detail)
    patients = patients_by_key(session, (r["patient_key"] for r in rows))
    for r in rows:
        patient = patients[r["patient_key"]]
        # the same exam exported again (perhaps without its side) is not a new exam
        same_day = session.scalars(select(DexaExam).where(
            DexaExam.patient_id == patient.id, DexaExam.exam_date == r["exam_date"])).all()
        matches = [e for e in same_day if e.side == r["side"] or "-" in (e.side, r["side"])]
        if matches:
            if any(_same_values(e, r) for e in matches):
                counts["duplicate_rows"] += 1
            else:
                counts["quarantined"] += quarantine(
                    session, stage="ingest_dexa", path=sf.path, sha256=sf.sha256, row=r["source_row"],
                    reason="conflicting_exam",
                    detail="an exam of this patient on the same day and side is already recorded with other "
                           "values (the row's source_row locates it)")
            continue
        session.add(DexaExam(
            patient_id=patient.id, exam_date=r["exam_date"], side=r["side"], neck_bmd=r["neck_bmd"],
            t_score=r["t_score"], t_score_derived=r["t_score_derived"], z_score=r["z_score"],
            age_at_exam=r["age_at_exam"], source_file_id=sf.id, source_row=r["source_row"]))
        session.flush()
        counts["exams"] += 1
    return counts


def _same_values(exam: DexaExam, row: dict[str, Any]) -> bool:
    close = lambda a, b: (a is None and b is None) or (a is not None and b is not None and abs(a - b) < 1e-6)  # noqa: E731
    return close(exam.t_score, row["t_score"]) and close(exam.neck_bmd, row["neck_bmd"])


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
    session.flush()
    return counts
