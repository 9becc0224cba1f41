"""Lineage for auditors: any registered model back to its source files, any patient or image forward.

Plain functions over a session that the caller passes in; the only MLflow call is in
:func:`resolve_model_version`, which takes the client, so everything else is testable on the
database alone. The chain (see db/models.py):

    source file -> DICOM image / DEXA row / annotation -> pair -> export PNG -> augmented copy
    -> snapshot member -> snapshot -> training run (MLflow run) -> registered model version
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, aliased

from osteo_common.chunks import chunks
from osteo_common.files import sha256_file

from db.models import (
    Annotation,
    AugmentedCopy,
    DexaExam,
    DicomImage,
    Export,
    Pair,
    Patient,
    Quarantine,
    Snapshot,
    SnapshotMember,
    SourceFile,
    TrainingRun,
)

CSV_COLUMNS = ["kind", "path", "sha256", "size_bytes", "first_seen", "status", "n_members", "splits"]


class LineageError(LookupError):
    """The thing asked about is not known (no such model version, patient or image)."""


# ---------------------------------------------------------------- model references and MLflow

_REF = re.compile(r"^(?P<name>[^@/]+?)(?:@(?P<alias>[^@/]+)|/(?P<version>\d+))$")


def parse_model_ref(ref: str) -> tuple[str, str | None, str | None]:
    """'NAME@ALIAS' or 'NAME/VERSION' (a 'models:/' prefix is allowed) -> (name, alias, version)."""
    text = ref.strip()
    if text.startswith("models:/"):
        text = text[len("models:/"):]
    m = _REF.match(text)
    if not m:
        raise ValueError(f"{ref!r} is not NAME@ALIAS or NAME/VERSION")
    return m["name"], m["alias"], m["version"]


# ---------------------------------------------------------------- helpers


def _iso(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def _source(sf: SourceFile) -> dict[str, Any]:
    return {"id": sf.id, "kind": sf.kind, "path": sf.path, "sha256": sf.sha256, "size_bytes": sf.size_bytes,
            "first_seen": _iso(sf.first_seen), "status": sf.status}


def _run(tr: TrainingRun) -> dict[str, Any]:
    return {"mlflow_run_id": tr.mlflow_run_id, "model_name": tr.model_name, "model_version": tr.model_version,
            "arch": tr.arch, "preset": tr.preset, "test_auc": tr.test_auc, "created": _iso(tr.created_at)}


def _snapshot(s: Snapshot) -> dict[str, Any]:
    return {"id": s.id, "digest": s.digest, "created": _iso(s.created_at), "params": s.params,
            "n_members": s.n_members, "manifest_path": s.manifest_path}


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
        raise LineageError(f"no training run recorded for MLflow run {run_id} ({name} version {version}): "
                           "was it trained against another database?")
    return row


# ---------------------------------------------------------------- snapshot and model lineage


def snapshot_lineage(session: Session, snapshot_id: int) -> dict[str, Any]:
    """Every member of a snapshot with its whole chain back to source files, and those files once each."""
    snap = session.get(Snapshot, snapshot_id)
    if snap is None:
        raise LineageError(f"no snapshot with id {snapshot_id}")
    dicom_sf, dexa_sf, ann_sf = aliased(SourceFile), aliased(SourceFile), aliased(SourceFile)
    rows = session.execute(
        select(SnapshotMember, Export, DicomImage, Patient.patient_key, Pair, DexaExam, Annotation,
               dicom_sf, dexa_sf, ann_sf)
        .join(Export, Export.id == SnapshotMember.export_id)
        .join(DicomImage, DicomImage.id == Export.image_id)
        .join(Patient, Patient.id == DicomImage.patient_id)
        .join(Pair, Pair.id == SnapshotMember.pair_id)
        .join(DexaExam, DexaExam.id == Pair.dexa_exam_id)
        .join(Annotation, Annotation.id == Export.annotation_id)
        .join(dicom_sf, dicom_sf.id == DicomImage.source_file_id)
        .join(dexa_sf, dexa_sf.id == DexaExam.source_file_id)
        .join(ann_sf, ann_sf.id == Annotation.source_file_id)
        .where(SnapshotMember.snapshot_id == snapshot_id)
        .order_by(SnapshotMember.split, SnapshotMember.fold, SnapshotMember.export_id)
    ).all()
    export_ids = [r[1].id for r in rows]
    copies: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for chunk in chunks(export_ids):
        for c in session.scalars(select(AugmentedCopy).where(AugmentedCopy.export_id.in_(chunk))
                                 .order_by(AugmentedCopy.id)):
            copies[c.export_id].append({"id": c.id, "seed": c.seed, "params": c.params, "path": c.path,
                                        "sha256": c.sha256, "created": _iso(c.created_at)})

    sources: dict[int, dict[str, Any]] = {}
    used_by: dict[int, Counter] = defaultdict(Counter)
    members: list[dict[str, Any]] = []
    for m, ex, img, key, pair, exam, ann, sf_img, sf_dexa, sf_ann in rows:
        for sf in (sf_img, sf_dexa, sf_ann):
            sources.setdefault(sf.id, _source(sf))
            used_by[sf.id][m.split] += 1
        members.append({
            "member_id": m.id, "split": m.split, "fold": m.fold, "label": m.label, "patient_key": key,
            "image": {"sop_instance_uid": img.sop_instance_uid, "study_date": _iso(img.study_date),
                      "laterality": img.laterality, "source_file": sf_img.path, "source_sha256": sf_img.sha256},
            "export": {"id": ex.id, "path": ex.path, "sha256": ex.sha256, "recipe_digest": ex.recipe_digest,
                       "transform": ex.transform},
            "augmented_copies": copies.get(ex.id, []),
            "pair": {"id": pair.id, "rule_version": pair.rule_version, "window_days": pair.window_days,
                     "gap_days": pair.gap_days, "t_score": pair.t_score, "label": pair.label,
                     "label3": pair.label3},
            "dexa_exam": {"id": exam.id, "exam_date": _iso(exam.exam_date), "side": exam.side,
                          "t_score": exam.t_score, "t_score_derived": exam.t_score_derived,
                          "source_file": sf_dexa.path, "source_sha256": sf_dexa.sha256,
                          "source_row": exam.source_row},
            "annotation": {"id": ann.id, "label": ann.label, "source_file": sf_ann.path,
                           "source_sha256": sf_ann.sha256,
                           "box": [ann.box_xmin, ann.box_ymin, ann.box_xmax, ann.box_ymax]},
        })
    for sf_id, src in sources.items():
        src["n_members"] = sum(used_by[sf_id].values())
        src["splits"] = dict(sorted(used_by[sf_id].items()))
    by_split: dict[str, Any] = {}
    for m in members:
        s = by_split.setdefault(m["split"], {"n": 0, "positives": 0, "folds": Counter()})
        s["n"] += 1
        s["positives"] += int(m["label"])
        s["folds"][str(m["fold"])] += 1
    for s in by_split.values():
        s["folds"] = dict(sorted(s["folds"].items()))
    source_list = sorted(sources.values(), key=lambda s: (s["kind"], s["path"], s["sha256"]))
    return {
        "snapshot": _snapshot(snap),
        "splits": by_split,
        "members": members,
        "source_files": source_list,
        "counts": {"members": len(members), "source_files": len(source_list),
                   "augmented_copies": sum(len(v) for v in copies.values()),
                   **{f"{k}_files": v for k, v in Counter(s["kind"] for s in source_list).items()}},
    }


def model_lineage(session: Session, version: dict[str, Any]) -> dict[str, Any]:
    """Lineage of a registered model version (the dict from :func:`resolve_model_version`)."""
    run = training_run_for(session, run_id=version.get("run_id") or version.get("tags", {}).get("run_id"),
                           name=version.get("name"), version=version.get("version"))
    lineage = snapshot_lineage(session, run.snapshot_id)
    notes = []
    tag_digest = version.get("tags", {}).get("snapshot_digest")
    if tag_digest and tag_digest != lineage["snapshot"]["digest"]:
        notes.append(f"model version tag snapshot_digest {tag_digest} differs from the database's "
                     f"{lineage['snapshot']['digest']}")
    return {"model": {k: version.get(k) for k in ("ref", "name", "alias", "version", "run_id", "aliases",
                                                  "source", "created")}
            | {"git_commit": version.get("tags", {}).get("git_commit")},
            "training_run": _run(run), **lineage, "notes": notes}


def lineage_csv(lineage: dict[str, Any]) -> str:
    """One row per source file (what an auditor files away)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for s in lineage["source_files"]:
        w.writerow({**{k: s.get(k) for k in CSV_COLUMNS},
                    "splits": ";".join(f"{k}={v}" for k, v in s.get("splits", {}).items())})
    return buf.getvalue()


# ---------------------------------------------------------------- verification


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


def verify_lineage(lineage: dict[str, Any]) -> dict[str, Any]:
    """Re-hash every file the lineage names; the manifest is checked against the snapshot digest."""
    from osteo.snapshot import load_manifest, manifest_digest

    missing: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
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
    checked = len(files) + 1
    by_role = Counter(f["role"] for f in files) + Counter(manifest=1)
    return {"ok": not missing and not changed and not lineage.get("notes"), "checked": checked,
            "by_role": dict(sorted(by_role.items())), "missing": missing, "changed": changed,
            "notes": list(lineage.get("notes", []))}


# ---------------------------------------------------------------- patients and images


def _runs_by_snapshot(session: Session, snapshot_ids: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    ids = sorted(set(snapshot_ids))
    for chunk in chunks(ids):
        for tr in session.scalars(select(TrainingRun).where(TrainingRun.snapshot_id.in_(chunk))
                                  .order_by(TrainingRun.id)):
            out[tr.snapshot_id].append(_run(tr))
    return out


def patient_lineage(session: Session, key: str) -> dict[str, Any]:
    """Every image, DEXA exam and snapshot of a pseudonymised patient, and every model trained or tested on them."""
    patient = session.scalar(select(Patient).where(Patient.patient_key == key.strip()))
    if patient is None:
        raise LineageError(f"no patient with key {key!r} (keys are pseudonyms such as P0123abcd...; "
                           "raw patient IDs are never stored)")
    images = []
    for img, sf, pair, ann in session.execute(
        select(DicomImage, SourceFile, Pair, Annotation)
        .join(SourceFile, SourceFile.id == DicomImage.source_file_id)
        .outerjoin(Pair, Pair.image_id == DicomImage.id)
        .outerjoin(Annotation, Annotation.sop_instance_uid == DicomImage.sop_instance_uid)
        .where(DicomImage.patient_id == patient.id).order_by(DicomImage.study_date, DicomImage.id)
    ):
        exports = session.scalars(select(Export).where(Export.image_id == img.id).order_by(Export.id)).all()
        images.append({
            "sop_instance_uid": img.sop_instance_uid, "study_date": _iso(img.study_date),
            "age_at_exam": img.age_at_exam, "laterality": img.laterality, "modality": img.modality,
            "source_file": _source(sf), "annotated": ann is not None,
            "pair": None if pair is None else {"dexa_exam_id": pair.dexa_exam_id, "gap_days": pair.gap_days,
                                               "label": pair.label, "label3": pair.label3,
                                               "rule_version": pair.rule_version},
            "exports": [{"id": e.id, "status": e.status, "exclusion": e.exclusion, "path": e.path,
                         "sha256": e.sha256} for e in exports],
        })
    exams = [{"id": e.id, "exam_date": _iso(e.exam_date), "side": e.side, "t_score": e.t_score,
              "t_score_derived": e.t_score_derived, "neck_bmd": e.neck_bmd, "age_at_exam": e.age_at_exam,
              "source_file": sf.path, "source_sha256": sf.sha256, "source_row": e.source_row}
             for e, sf in session.execute(select(DexaExam, SourceFile)
                                          .join(SourceFile, SourceFile.id == DexaExam.source_file_id)
                                          .where(DexaExam.patient_id == patient.id)
                                          .order_by(DexaExam.exam_date, DexaExam.id))]
    membership: dict[int, dict[str, Any]] = {}
    for m, snap, img in session.execute(
        select(SnapshotMember, Snapshot, DicomImage)
        .join(Snapshot, Snapshot.id == SnapshotMember.snapshot_id)
        .join(Export, Export.id == SnapshotMember.export_id)
        .join(DicomImage, DicomImage.id == Export.image_id)
        .where(SnapshotMember.patient_id == patient.id).order_by(Snapshot.id, SnapshotMember.id)
    ):
        entry = membership.setdefault(snap.id, _snapshot(snap) | {"members": []})
        entry["members"].append({"sop_instance_uid": img.sop_instance_uid, "split": m.split, "fold": m.fold,
                                 "label": m.label})
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
    return {"patient": {"patient_key": patient.patient_key, "sex": patient.sex, "created": _iso(patient.created_at)},
            "images": images, "dexa_exams": exams, "snapshots": snapshots, "model_versions": models,
            "counts": {"images": len(images), "dexa_exams": len(exams), "snapshots": len(snapshots),
                       "model_versions": len(models)}}


def image_lineage(session: Session, sop_uid: str) -> dict[str, Any]:
    """One image's path: source file -> header -> pair -> exports -> augmented copies -> snapshots -> runs."""
    uid = sop_uid.strip()
    img = session.scalar(select(DicomImage).where(DicomImage.sop_instance_uid == uid))
    quarantined = []
    if img is None:
        # a file that never became an image may still be in quarantine under its UID-named path
        q = session.scalars(select(Quarantine).where(Quarantine.source_path.contains(uid))).all()
        if not q:
            raise LineageError(f"no image with SOP Instance UID {uid!r}")
        return {"image": None, "quarantine": [_quarantine(e) for e in q]}
    sf = session.get(SourceFile, img.source_file_id)
    same_path = session.scalars(select(SourceFile).where(SourceFile.path == sf.path, SourceFile.id != sf.id)
                                .order_by(SourceFile.id)).all()
    quarantined = session.scalars(select(Quarantine).where(or_(
        Quarantine.source_sha256 == sf.sha256, Quarantine.source_path == sf.path)).order_by(Quarantine.id)).all()
    key = session.scalar(select(Patient.patient_key).where(Patient.id == img.patient_id))
    header = {c: _iso(getattr(img, c)) for c in (
        "sop_instance_uid", "study_instance_uid", "series_instance_uid", "study_date", "age_at_exam", "modality",
        "body_part", "laterality", "n_rows", "n_columns", "bits_stored", "photometric", "pixel_spacing_mm",
        "transfer_syntax", "ingested_at")}
    ann = session.scalar(select(Annotation).where(Annotation.sop_instance_uid == uid))
    pair = session.scalar(select(Pair).where(Pair.image_id == img.id))
    pair_out = None
    if pair is not None:
        exam = session.get(DexaExam, pair.dexa_exam_id)
        exam_sf = session.get(SourceFile, exam.source_file_id)
        pair_out = {"id": pair.id, "rule_version": pair.rule_version, "window_days": pair.window_days,
                    "gap_days": pair.gap_days, "t_score": pair.t_score, "label": pair.label, "label3": pair.label3,
                    "dexa_exam": {"id": exam.id, "exam_date": _iso(exam.exam_date), "side": exam.side,
                                  "source_file": _source(exam_sf), "source_row": exam.source_row}}
    exports = []
    export_ids = []
    for e in session.scalars(select(Export).where(Export.image_id == img.id).order_by(Export.id)):
        export_ids.append(e.id)
        copies = session.scalars(select(AugmentedCopy).where(AugmentedCopy.export_id == e.id)
                                 .order_by(AugmentedCopy.id)).all()
        exports.append({"id": e.id, "status": e.status, "exclusion": e.exclusion, "path": e.path,
                        "sha256": e.sha256, "recipe_digest": e.recipe_digest, "transform": e.transform,
                        "metal_fraction": e.metal_fraction, "blur_score": e.blur_score,
                        "created": _iso(e.created_at),
                        "augmented_copies": [{"seed": c.seed, "params": c.params, "path": c.path,
                                              "sha256": c.sha256} for c in copies]})
    snapshots = []
    if export_ids:
        rows = session.execute(select(SnapshotMember, Snapshot)
                               .join(Snapshot, Snapshot.id == SnapshotMember.snapshot_id)
                               .where(SnapshotMember.export_id.in_(export_ids)).order_by(Snapshot.id)).all()
        runs = _runs_by_snapshot(session, (s.id for _, s in rows))
        snapshots = [{"digest": s.digest, "created": _iso(s.created_at), "export_id": m.export_id,
                      "split": m.split, "fold": m.fold, "label": m.label, "training_runs": runs.get(s.id, [])}
                     for m, s in rows]
    return {
        "image": header | {"patient_key": key},
        "source_file": _source(sf),
        "other_versions_of_path": [_source(s) for s in same_path],
        "annotation": None if ann is None else {
            "id": ann.id, "label": ann.label, "box": [ann.box_xmin, ann.box_ymin, ann.box_xmax, ann.box_ymax],
            "source_file": _source(session.get(SourceFile, ann.source_file_id))},
        "pair": pair_out,
        "exports": exports,
        "snapshots": snapshots,
        "model_versions": [r | {"snapshot_digest": s["digest"], "split": s["split"]}
                           for s in snapshots for r in s["training_runs"]],
        "quarantine": [_quarantine(q) for q in quarantined],
    }


def _quarantine(q: Quarantine) -> dict[str, Any]:
    return {"stage": q.stage, "path": q.source_path, "sha256": q.source_sha256, "row": q.source_row,
            "reason": q.reason, "detail": q.detail, "created": _iso(q.created_at)}


# ---------------------------------------------------------------- OpenLineage (optional, off by default)

OPENLINEAGE_NAMESPACE = "osteo"


def openlineage_event(lin: dict[str, Any]) -> Any:
    """A model lineage as one OpenLineage COMPLETE run event (needs openlineage-python).

    Job `osteo/train`; run id = the MLflow run id (a UUID); inputs = every source file
    (namespace `file`, versioned by sha256) and the snapshot manifest; output = the model version.
    """
    import uuid

    import osteo
    from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import dataset_version_dataset, job_type_job

    producer = f"https://pypi.org/project/osteo/{osteo.__version__}"

    def version(sha: str) -> dict[str, Any]:
        return {"version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=sha, producer=producer)}

    m, tr, snap = lin["model"], lin["training_run"], lin["snapshot"]
    inputs = [InputDataset(namespace="file", name=s["path"], facets=version(s["sha256"]))
              for s in lin["source_files"]]
    inputs.append(InputDataset(namespace=OPENLINEAGE_NAMESPACE, name=f"snapshot/{snap['digest']}",
                               facets=version(snap["digest"])))
    outputs = [OutputDataset(namespace="mlflow", name=f"models:/{m['name']}/{m['version']}",
                             facets=version(str(m["version"])))]
    created = tr.get("created") or dt.datetime.now(dt.timezone.utc).isoformat()
    if "+" not in created[10:] and not created.endswith("Z"):
        created += "Z"  # the database keeps UTC without a zone
    return RunEvent(
        eventType=RunState.COMPLETE, eventTime=created, producer=producer,
        run=Run(runId=str(uuid.UUID(hex=tr["mlflow_run_id"]))),
        job=Job(namespace=OPENLINEAGE_NAMESPACE, name="train",
                facets={"jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="OSTEO",
                                                                jobType="TRAINING", producer=producer)}),
        inputs=inputs, outputs=outputs,
    )


def emit_openlineage(lin: dict[str, Any], target: str) -> str:
    """Send the model's run event to a file (appended, one JSON per line) or an http(s) endpoint."""
    from openlineage.client import OpenLineageClient

    if target.startswith(("http://", "https://")):
        from openlineage.client.transport.http import HttpConfig, HttpTransport

        transport: Any = HttpTransport(HttpConfig(url=target))
    else:
        from openlineage.client.transport.file import FileConfig, FileTransport

        Path(target).parent.mkdir(parents=True, exist_ok=True)
        transport = FileTransport(FileConfig(log_file_path=target, append=True))
    event = openlineage_event(lin)
    OpenLineageClient(transport=transport).emit(event)
    return event.run.runId
