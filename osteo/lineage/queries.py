"""The lineage queries: a model version back to its sources, a patient or image forward, the refreshes.

Plain functions over a session that the caller passes in (no MLflow here: a model version comes
in as the registry's dict, see osteo_mlflow.registry.resolve_model_version).
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from db.models import (
    Annotation,
    AugmentedCopy,
    DexaExam,
    DicomImage,
    Export,
    Pair,
    Patient,
    Quarantine,
    RefreshRun,
    Snapshot,
    SnapshotMember,
    SourceFile,
    TrainingRun,
)
from osteo.lineage.records import (
    UnknownImage,
    UnknownModel,
    UnknownPatient,
    box_dict,
    iso,
    quarantine_dict,
    refresh_dict,
    run_dict,
    snapshot_dict,
    source_dict,
)
from osteo.lineage.screening import image_screening, version_screening
from osteo.lineage.snapshot import TALLIES as _TALLIES
from osteo.lineage.snapshot import snapshot_lineage
from osteo_common.chunks import chunks

CSV_COLUMNS = ["kind", "path", "sha256", "size_bytes", "first_seen", "status", "n_members", "splits", "box_source",
               "box_model", "side"]
PSEUDONYM = re.compile(r"^P[0-9a-f]{24}$")  # osteo.etl.pseudonym.pseudonymise


def training_run_for(session: Session, *, run_id: str | None = None, name: str | None = None,
                     version: str | None = None) -> TrainingRun:
    """The database's record of a model version (by registered name and version, else by MLflow run id)."""
    row = None
    if name and version:
        row = session.scalar(select(TrainingRun).where(TrainingRun.model_name == name,
                                                       TrainingRun.model_version == str(version)))
    if row is None and run_id:
        row = session.scalars(select(TrainingRun).where(TrainingRun.mlflow_run_id == run_id)
                              .order_by(TrainingRun.id)).first()
    if row is None:
        raise UnknownModel(f"no training run recorded for MLflow run {run_id} ({name} version {version}): "
                           "was it trained against another database?")
    return row


# ---------------------------------------------------------------- snapshot and model lineage


def model_lineage(session: Session, version: dict[str, Any]) -> dict[str, Any]:
    """Lineage of a registered model version (the registry's dict, osteo_mlflow.registry.resolve_model_version).

    Each version has its own training_run row; `notes` name every disagreement between the registry's
    tags and the database (verify fails on any).
    """
    tags = version.get("tags") or {}
    run = training_run_for(session, run_id=version.get("run_id") or tags.get("run_id"),
                           name=version.get("name"), version=version.get("version"))
    lineage = snapshot_lineage(session, run.snapshot_id, as_of=run.created_at)
    notes = []
    if (run.model_name, run.model_version) != (version.get("name"), str(version.get("version"))):
        notes.append(f"no training run recorded for {version.get('name')} version {version.get('version')}; "
                     f"followed its MLflow run {run.mlflow_run_id}, recorded as version {run.model_version}")
    tag_digest = tags.get("snapshot_digest")
    if tag_digest and tag_digest != lineage["snapshot"]["digest"]:
        notes.append(f"model version tag snapshot_digest {tag_digest} differs from the database's "
                     f"{lineage['snapshot']['digest']}")
    tag_sha = tags.get("checkpoint_sha256")
    if tag_sha and run.checkpoint_sha256 and tag_sha != run.checkpoint_sha256:
        notes.append(f"model version tag checkpoint_sha256 {tag_sha} differs from the database's "
                     f"{run.checkpoint_sha256}")
    return {"model": {k: version.get(k) for k in ("ref", "name", "alias", "version", "run_id", "aliases",
                                                  "source", "created")}
            | {"git_commit": tags.get("git_commit"), "checkpoint_sha256": tag_sha},
            "training_run": run_dict(run), **lineage, "notes": notes,
            "screening": version_screening(session, version.get("name"), version.get("version"))}


def lineage_csv(lineage: dict[str, Any]) -> str:
    """One row per source file (what an auditor files away); splits, box sources, localiser versions and crop
    sides as 'key=members;...' (a DICOM row whose crops came from osteo-roi/7 boxes: box_model osteo-roi/7=1)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for s in lineage["source_files"]:
        w.writerow({**{k: s.get(k) for k in CSV_COLUMNS},
                    **{col: ";".join(f"{k}={v}" for k, v in (s.get(key) or {}).items())
                       for key, col in _TALLIES.items()}})
    return buf.getvalue()


def _runs_by_snapshot(session: Session, snapshot_ids: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    ids = sorted(set(snapshot_ids))
    for chunk in chunks(ids):
        for tr in session.scalars(select(TrainingRun).where(TrainingRun.snapshot_id.in_(chunk))
                                  .order_by(TrainingRun.id)):
            out[tr.snapshot_id].append(run_dict(tr))
    return out


def find_patient(session: Session, key: str, *, from_patient_id: bool = False) -> Patient:
    """The patient of a pseudonym; UnknownPatient that never echoes a raw ID."""
    patient = session.scalar(select(Patient).where(Patient.patient_key == key))
    if patient is None:
        if from_patient_id:
            raise UnknownPatient(f"no patient with pseudonym {key} (computed from the given patient ID with this "
                                 "installation's pseudonym key): never ingested here, or under another key")
        if not PSEUDONYM.match(key):  # perhaps a raw chart number: not echoed
            raise UnknownPatient("no patient with that key: KEY is a pseudonym (P and 24 hex digits); "
                                 "for a raw patient ID use --patient-id")
        raise UnknownPatient(f"no patient with key {key!r} (keys are pseudonyms such as P0123abcd...; "
                             "raw patient IDs are never stored)")
    return patient


def _patient_images(session: Session, patient: Patient) -> list[dict[str, Any]]:
    """The patient's images, oldest first, each with its source file, boxes, pair and exports."""
    images = []
    for img, sf, pair in session.execute(
        select(DicomImage, SourceFile, Pair)
        .join(SourceFile, SourceFile.id == DicomImage.source_file_id)
        .outerjoin(Pair, Pair.image_id == DicomImage.id)
        .where(DicomImage.patient_id == patient.id).order_by(DicomImage.study_date, DicomImage.id)
    ):
        boxes = _boxes_of(session, img.sop_instance_uid)  # every box of the image (per side, source, version)
        by_id = {b["id"]: b for b in boxes}
        exports = session.scalars(select(Export).where(Export.image_id == img.id).order_by(Export.id)).all()
        images.append({
            "sop_instance_uid": img.sop_instance_uid, "study_date": iso(img.study_date),
            "age_at_exam": img.age_at_exam, "laterality": img.laterality, "modality": img.modality,
            "source_file": source_dict(sf), "annotated": any(b["source"] == "human" for b in boxes),
            "boxes": [{k: b[k] for k in ("id", "side", "source", "box_model", "confidence")} for b in boxes],
            "pair": None if pair is None else {"dexa_exam_id": pair.dexa_exam_id, "gap_days": pair.gap_days,
                                               "label": pair.label, "label3": pair.label3,
                                               "rule_version": pair.rule_version},
            "exports": [{"id": e.id, "side": e.side, "status": e.status, "exclusion": e.exclusion, "path": e.path,
                         "sha256": e.sha256} | _used_box(by_id.get(e.annotation_id), e) for e in exports],
        })
    return images


def _patient_exams(session: Session, patient: Patient) -> list[dict[str, Any]]:
    """The patient's DEXA exams, oldest first, each with the file and row it came from."""
    return [{"id": e.id, "exam_date": iso(e.exam_date), "side": e.side, "t_score": e.t_score,
             "t_score_derived": e.t_score_derived, "neck_bmd": e.neck_bmd, "age_at_exam": e.age_at_exam,
             "source_file": sf.path, "source_sha256": sf.sha256, "source_row": e.source_row}
            for e, sf in session.execute(select(DexaExam, SourceFile)
                                         .join(SourceFile, SourceFile.id == DexaExam.source_file_id)
                                         .where(DexaExam.patient_id == patient.id)
                                         .order_by(DexaExam.exam_date, DexaExam.id))]


def _patient_snapshots(session: Session, patient: Patient) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(snapshots, model versions): each snapshot holding the patient's crops, with their splits and the
    training runs on it; each of those runs, with whether it trained or tested on the patient."""
    membership: dict[int, dict[str, Any]] = {}
    for m, snap, img, side in session.execute(
        select(SnapshotMember, Snapshot, DicomImage, Export.side)
        .join(Snapshot, Snapshot.id == SnapshotMember.snapshot_id)
        .join(Export, Export.id == SnapshotMember.export_id)
        .join(DicomImage, DicomImage.id == Export.image_id)
        .where(SnapshotMember.patient_id == patient.id).order_by(Snapshot.id, SnapshotMember.id)
    ):
        entry = membership.setdefault(snap.id, snapshot_dict(snap) | {"members": []})
        entry["members"].append({"sop_instance_uid": img.sop_instance_uid, "side": side, "split": m.split,
                                 "fold": m.fold, "label": m.label})
    runs = _runs_by_snapshot(session, membership)
    snapshots, models = [], []
    for snap_id, entry in membership.items():
        splits = sorted({m["split"] for m in entry["members"]})
        entry["splits"] = splits
        entry["training_runs"] = runs.get(snap_id, [])
        snapshots.append(entry)
        for r in entry["training_runs"]:
            models.append(r | {"snapshot_digest": entry["digest"], "used_as": splits,
                               "trained_on": "train" in splits, "tested_on": "test" in splits})
    return snapshots, models


def patient_lineage(session: Session, key: str, *, from_patient_id: bool = False) -> dict[str, Any]:
    """Every image, DEXA exam and snapshot of a pseudonymised patient, and every model trained or tested on them.

    `from_patient_id`: `key` was computed from a raw ID (the error then says so, and never echoes it).
    """
    patient = find_patient(session, key.strip(), from_patient_id=from_patient_id)
    images = _patient_images(session, patient)
    exams = _patient_exams(session, patient)
    snapshots, models = _patient_snapshots(session, patient)
    return {"patient": {"patient_key": patient.patient_key, "sex": patient.sex, "created": iso(patient.created_at)},
            "images": images, "dexa_exams": exams, "snapshots": snapshots, "model_versions": models,
            "counts": {"images": len(images), "dexa_exams": len(exams), "snapshots": len(snapshots),
                       "model_versions": len(models)}}


def _boxes_of(session: Session, sop_uid: str) -> list[dict[str, Any]]:
    """Every box of an image (box_dict), a person's with its VOC file (source_dict), a model's with none."""
    return [box_dict(ann) | {"source_file": None if sf is None else source_dict(sf)}
            for ann, sf in session.execute(
                select(Annotation, SourceFile).outerjoin(SourceFile, SourceFile.id == Annotation.source_file_id)
                .where(Annotation.sop_instance_uid == sop_uid)
                .order_by(Annotation.side, Annotation.source, Annotation.id))]


def _used_box(box: dict[str, Any] | None, export: Export) -> dict[str, Any]:
    """Which box an export used: its id, source and localiser version."""
    return {"annotation_id": export.annotation_id, "box_source": box and box["source"],
            "box_model": box and box["box_model"]}


def _image_pair(session: Session, img: DicomImage) -> dict[str, Any] | None:
    """The image's pair and its DEXA exam with the file and row it came from; None when unpaired."""
    pair = session.scalar(select(Pair).where(Pair.image_id == img.id))
    if pair is None:
        return None
    exam = session.get_one(DexaExam, pair.dexa_exam_id)
    exam_sf = session.get_one(SourceFile, exam.source_file_id)
    return {"id": pair.id, "rule_version": pair.rule_version, "window_days": pair.window_days,
            "gap_days": pair.gap_days, "t_score": pair.t_score, "label": pair.label, "label3": pair.label3,
            "dexa_exam": {"id": exam.id, "exam_date": iso(exam.exam_date), "side": exam.side,
                          "source_file": source_dict(exam_sf), "source_row": exam.source_row}}


def _image_exports(session: Session, img: DicomImage,
                   by_id: dict[int, dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """(exports, export id -> the crop's side): each export of the image with the box it used and its
    augmented copies."""
    exports = []
    export_ids: dict[int, str] = {}
    for e in session.scalars(select(Export).where(Export.image_id == img.id).order_by(Export.id)):
        export_ids[e.id] = e.side
        copies = session.scalars(select(AugmentedCopy).where(AugmentedCopy.export_id == e.id)
                                 .order_by(AugmentedCopy.id)).all()
        exports.append({"id": e.id, "side": e.side, **_used_box(by_id.get(e.annotation_id), e),
                        "status": e.status, "exclusion": e.exclusion, "path": e.path,
                        "sha256": e.sha256, "recipe_digest": e.recipe_digest, "transform": e.transform,
                        "metal_fraction": e.metal_fraction, "blur_score": e.blur_score,
                        "created": iso(e.created_at),
                        "augmented_copies": [{"seed": c.seed, "params": c.params, "path": c.path,
                                              "sha256": c.sha256} for c in copies]})
    return exports, export_ids


def _export_snapshots(session: Session, export_ids: dict[int, str]) -> list[dict[str, Any]]:
    """Each snapshot membership of the exports, with the training runs on that snapshot."""
    if not export_ids:
        return []
    rows = session.execute(select(SnapshotMember, Snapshot)
                           .join(Snapshot, Snapshot.id == SnapshotMember.snapshot_id)
                           .where(SnapshotMember.export_id.in_(list(export_ids)))
                           .order_by(Snapshot.id, SnapshotMember.export_id)).all()
    runs = _runs_by_snapshot(session, (s.id for _, s in rows))
    return [{"digest": s.digest, "created": iso(s.created_at), "export_id": m.export_id,
             "side": export_ids[m.export_id], "split": m.split, "fold": m.fold, "label": m.label,
             "training_runs": runs.get(s.id, [])}
            for m, s in rows]


def image_lineage(session: Session, sop_uid: str) -> dict[str, Any]:
    """One image's path: source file -> header -> pair -> exports -> augmented copies -> snapshots -> runs."""
    uid = sop_uid.strip()
    if not uid:
        raise UnknownImage("an empty SOP Instance UID names no image")
    img = session.scalar(select(DicomImage).where(DicomImage.sop_instance_uid == uid))
    if img is None:
        # a file that never became an image may still be in quarantine under its UID-named path
        q = session.scalars(select(Quarantine).where(Quarantine.source_path.contains(uid))).all()
        if not q:
            raise UnknownImage(f"no image with SOP Instance UID {uid!r}")
        return {"image": None, "quarantine": [quarantine_dict(e) for e in q]}
    sf = session.get_one(SourceFile, img.source_file_id)
    same_path = session.scalars(select(SourceFile).where(SourceFile.path == sf.path, SourceFile.id != sf.id)
                                .order_by(SourceFile.id)).all()
    quarantined = session.scalars(select(Quarantine).where(or_(
        Quarantine.source_sha256 == sf.sha256, Quarantine.source_path == sf.path)).order_by(Quarantine.id)).all()
    key = session.scalar(select(Patient.patient_key).where(Patient.id == img.patient_id))
    header = {c: iso(getattr(img, c)) for c in (
        "sop_instance_uid", "study_instance_uid", "series_instance_uid", "study_date", "age_at_exam", "modality",
        "body_part", "laterality", "n_rows", "n_columns", "bits_stored", "photometric", "pixel_spacing_mm",
        "transfer_syntax", "synthetic", "ingested_at")}
    boxes = _boxes_of(session, uid)
    pair = _image_pair(session, img)
    exports, export_ids = _image_exports(session, img, {b["id"]: b for b in boxes})
    snapshots = _export_snapshots(session, export_ids)
    return {
        "image": header | {"patient_key": key},
        "source_file": source_dict(sf),
        "other_versions_of_path": [source_dict(s) for s in same_path],
        "boxes": boxes,
        "pair": pair,
        "exports": exports,
        "snapshots": snapshots,
        "model_versions": [r | {"snapshot_digest": s["digest"], "split": s["split"]}
                           for s in snapshots for r in s["training_runs"]],
        "quarantine": [quarantine_dict(q) for q in quarantined],
        "screening": image_screening(session, img.id),  # osteo screen's results and what went to the PACS
    }


def refresh_runs(session: Session, last: int | None = None) -> list[dict[str, Any]]:
    """The refresh_run rows, newest first: when, status, code version, inputs, this run's counts and totals."""
    q = select(RefreshRun).order_by(RefreshRun.started_at.desc(), RefreshRun.id.desc())
    if last is not None:
        q = q.limit(last)
    return [refresh_dict(r) for r in session.scalars(q)]

