"""A snapshot's lineage: every member with its chain back to source files, and those files once each, with what
used them (osteo.lineage.queries.snapshot_lineage; model_lineage reads it at the model's training time)."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session, aliased

from db.models import (
    Annotation,
    AugmentedCopy,
    DexaExam,
    DicomImage,
    Export,
    Pair,
    Patient,
    Snapshot,
    SnapshotMember,
    SourceFile,
)
from osteo.lineage.records import UnknownSnapshot, box_dict, box_model, iso, snapshot_dict, source_dict
from osteo.lineage.versions import versions_at
from osteo_common.chunks import chunks

# the per-member counts a source file row carries (CSV: 'k=n;...'): split, box source, localiser version, crop side
TALLIES = {"splits": "splits", "box_sources": "box_source", "box_models": "box_model", "sides": "side"}


def snapshot_lineage(session: Session, snapshot_id: int, as_of: dt.datetime | None = None) -> dict[str, Any]:
    """Every member of a snapshot with its whole chain back to source files, and those files once each:
    each file as its path held it at `as_of` (a model's training, osteo/lineage/versions.py), else as now."""
    snap = session.get(Snapshot, snapshot_id)
    if snap is None:
        raise UnknownSnapshot(f"no snapshot with id {snapshot_id}")
    rows = member_rows(session, snapshot_id)
    copies = augmented_copies(session, [r[1].id for r in rows])
    members, sources = members_and_sources(session, rows, copies, as_of)
    source_list = sorted(sources.values(), key=lambda s: (s["kind"], s["path"], s["sha256"]))
    boxes = Counter(m["box_model"] or "human" for m in members)  # crops per box origin
    return {
        "snapshot": snapshot_dict(snap),
        "splits": split_counts(members),
        "box_sources": dict(sorted(boxes.items(), key=lambda kv: (kv[0] != "human", kv[0]))),
        "members": members,
        "source_files": source_list,
        "counts": {"members": len(members), "source_files": len(source_list),
                   "augmented_copies": sum(len(v) for v in copies.values()),
                   "human_boxes": boxes["human"], "model_boxes": len(members) - boxes["human"],
                   **{f"{k}_files": v for k, v in Counter(s["kind"] for s in source_list).items()}},
    }


def member_rows(session: Session, snapshot_id: int) -> Sequence[Row]:
    """(member, export, image, patient key, pair, DEXA exam, box, image's file, exam's file, box's file or None)
    of each member, by split, fold and export."""
    dicom_sf, dexa_sf, ann_sf = aliased(SourceFile), aliased(SourceFile), aliased(SourceFile)
    return session.execute(
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
        .outerjoin(ann_sf, ann_sf.id == Annotation.source_file_id)  # a model box has no VOC file
        .where(SnapshotMember.snapshot_id == snapshot_id)
        .order_by(SnapshotMember.split, SnapshotMember.fold, SnapshotMember.export_id)
    ).all()


def augmented_copies(session: Session, export_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """export id -> its augmented copies, oldest first."""
    copies: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for chunk in chunks(export_ids):
        for c in session.scalars(select(AugmentedCopy).where(AugmentedCopy.export_id.in_(chunk))
                                 .order_by(AugmentedCopy.id)):
            copies[c.export_id].append({"id": c.id, "seed": c.seed, "params": c.params, "path": c.path,
                                        "sha256": c.sha256, "created": iso(c.created_at)})
    return copies


def members_and_sources(session: Session, rows: Sequence[Row], copies: dict[int, list[dict[str, Any]]],
                        as_of: dt.datetime | None) -> tuple[list[dict[str, Any]], dict[int, dict[str, Any]]]:
    """Each member's chain, and each source file (as held at `as_of`) once, with the tallies of its members."""
    sources: dict[int, dict[str, Any]] = {}
    used_by: dict[int, dict[str, Counter]] = defaultdict(lambda: {k: Counter() for k in TALLIES})
    members: list[dict[str, Any]] = []
    held = versions_at(session, (sf for r in rows for sf in r[7:]), as_of)
    for m, ex, img, key, pair, exam, ann, sf_img, sf_dexa, sf_ann in rows:
        files: tuple[SourceFile, SourceFile, SourceFile | None] = (  # each as its path held it at `as_of`
            held.get(sf_img.id) or sf_img, held.get(sf_dexa.id) or sf_dexa,
            None if sf_ann is None else held.get(sf_ann.id) or sf_ann)  # a model box has no VOC file
        origin = box_model(ann)
        for sf in files:
            if sf is None:
                continue
            sources.setdefault(sf.id, source_dict(sf))
            tally = used_by[sf.id]
            tally["splits"][m.split] += 1
            tally["box_sources"][ann.source] += 1
            tally["sides"][ex.side] += 1
            if origin:
                tally["box_models"][origin] += 1
        members.append(member_dict(m, ex, img, key, pair, exam, ann, files, origin,
                                   copies.get(ex.id, [])))
    for sf_id, src in sources.items():
        src["n_members"] = sum(used_by[sf_id]["splits"].values())
        src.update({k: dict(sorted(v.items())) for k, v in used_by[sf_id].items()})
    return members, sources


def member_dict(m: SnapshotMember, ex: Export, img: DicomImage, key: str, pair: Pair, exam: DexaExam,
                ann: Annotation, files: tuple[SourceFile, SourceFile, SourceFile | None], origin: str | None,
                copies: list[dict[str, Any]]) -> dict[str, Any]:
    """One member's chain: image, export (and its augmented copies), pair, DEXA exam and box (`origin`: the
    localiser version of a model's box), each with its source file (the image's, the exam's, the box file's)."""
    sf_img, sf_dexa, sf_ann = files
    return {
        "member_id": m.id, "split": m.split, "fold": m.fold, "label": m.label, "patient_key": key,
        "side": ex.side, "box_source": ann.source, "box_model": origin,
        "image": {"sop_instance_uid": img.sop_instance_uid, "study_date": iso(img.study_date),
                  "laterality": img.laterality, "source_file": sf_img.path, "source_sha256": sf_img.sha256},
        "export": {"id": ex.id, "side": ex.side, "path": ex.path, "sha256": ex.sha256,
                   "recipe_digest": ex.recipe_digest, "transform": ex.transform},
        "augmented_copies": copies,
        "pair": {"id": pair.id, "rule_version": pair.rule_version, "window_days": pair.window_days,
                 "gap_days": pair.gap_days, "t_score": pair.t_score, "label": pair.label,
                 "label3": pair.label3},
        "dexa_exam": {"id": exam.id, "exam_date": iso(exam.exam_date), "side": exam.side,
                      "t_score": exam.t_score, "t_score_derived": exam.t_score_derived,
                      "source_file": sf_dexa.path, "source_sha256": sf_dexa.sha256,
                      "source_row": exam.source_row},
        "annotation": box_dict(ann) | {"source_file": sf_ann.path if sf_ann else None,
                                       "source_sha256": sf_ann.sha256 if sf_ann else None},
    }


def split_counts(members: list[dict[str, Any]]) -> dict[str, Any]:
    """split -> members, positives and members per fold."""
    by_split: dict[str, Any] = {}
    for m in members:
        s = by_split.setdefault(m["split"], {"n": 0, "positives": 0, "folds": Counter()})
        s["n"] += 1
        s["positives"] += int(m["label"])
        s["folds"][str(m["fold"])] += 1
    for s in by_split.values():
        s["folds"] = dict(sorted(s["folds"].items()))
    return by_split
