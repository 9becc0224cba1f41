"""Dataset snapshots: the exported, labelled, not-excluded images, split and recorded with a digest."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Annotation, AugmentedCopy, DicomImage, Export, Pair, Patient, Snapshot, SnapshotMember
from db.values import ExportStatus
from osteo.etl.synthetic import trained_on
from osteo_common.files import atomic_write_text
from osteo_model.frames import named_rows
from osteo_model.splits import assign_splits, check_splits


@dataclass(frozen=True)
class SnapshotInfo:
    """A recorded snapshot: its digest, manifest file, split sizes and how many of its images (crops, train
    and test) come from radiographs marked synthetic (osteo/etl/synthetic.py)."""

    snapshot_id: int
    digest: str
    manifest_path: str
    n_members: int
    n_train: int
    n_test: int
    test_positives: int
    params: dict[str, int | str]
    synthetic_images: int = 0

    @property
    def synthetic(self) -> bool:
        return self.synthetic_images > 0

    @property
    def trained_on(self) -> str:
        """synthetic | real | mixed: what a model trained on this snapshot learned from."""
        return trained_on(self.synthetic_images, self.n_members)


MANIFEST_COLUMNS = ["member_id", "image_id", "pair_id", "patient_id", "patient_key", "path", "sha256", "label",
                    "laterality", "study_year", "split", "fold", "box_source", "synthetic"]
BOX_SOURCES = ("human", "any")  # which boxes' crops a training may use: a person's only, or the localiser's too


def current_exports(session: Session, box_source: str = "human") -> pd.DataFrame:
    """The newest successful export of every paired image side (an AP pelvis has two), with its label
    and the source of its box (`laterality` is the crop's side) and whether its radiograph is synthetic.
    `box_source` "human": crops from a person's boxes only; "any": the localiser's confident boxes too."""
    if box_source not in BOX_SOURCES:
        raise ValueError(f"box_source must be one of {BOX_SOURCES}, got {box_source!r}")
    allowed = select(Export.image_id, Export.side, func.max(Export.id).label("export_id")).where(
        Export.status == ExportStatus.EXPORTED)
    if box_source == "human":
        allowed = allowed.join(Annotation, Annotation.id == Export.annotation_id).where(Annotation.source == "human")
    newest = allowed.group_by(Export.image_id, Export.side).subquery()
    rows = session.execute(
        select(Export.id, DicomImage.id, Pair.id, Patient.id, Patient.patient_key, Export.path, Export.sha256,
               Pair.label, Export.side, DicomImage.study_date, Annotation.source, DicomImage.synthetic)
        .join(newest, newest.c.export_id == Export.id)
        .join(DicomImage, DicomImage.id == Export.image_id)
        .join(Annotation, Annotation.id == Export.annotation_id)
        .join(Pair, Pair.image_id == DicomImage.id)
        .join(Patient, Patient.id == DicomImage.patient_id)
        .order_by(Export.id)
    ).all()
    df = pd.DataFrame(rows, columns=["member_id", "image_id", "pair_id", "patient_id", "patient_key", "path",
                                     "sha256", "label", "laterality", "study_date", "box_source", "synthetic"])
    df["study_year"] = pd.to_datetime(df["study_date"]).dt.year.astype(int) if len(df) else pd.Series(dtype=int)
    return df.drop(columns=["study_date"])


def manifest_digest(manifest: pd.DataFrame) -> str:
    """Content digest of the whole manifest: members, their PNG hashes, labels and splits."""
    cols = ["member_id", "sha256", "label", "patient_key", "split", "fold"]
    canon = manifest[cols].sort_values("member_id").to_csv(index=False, lineterminator="\n")
    return hashlib.sha256(canon.encode()).hexdigest()


def take_snapshot(factory: sessionmaker[Session], out_dir: Path, *, test_year: int, folds: int,
                  seed: int, box_source: str = "human") -> SnapshotInfo:
    """Split the current exports, check no patient crosses, and record the snapshot (idempotent)."""
    with factory() as session:
        exports = current_exports(session, box_source)
    if exports.empty:
        raise RuntimeError("no exported images: run `osteo refresh` first")
    manifest = assign_splits(exports, test_year=test_year, folds=folds, seed=seed)
    manifest = manifest[manifest["split"] != "unused"].reset_index(drop=True)[MANIFEST_COLUMNS]
    check_splits(manifest)  # fails the run loudly if any patient crosses
    digest = manifest_digest(manifest)
    params = {"test_year": test_year, "folds": folds, "seed": seed, "box_source": box_source}
    path = Path(out_dir) / f"{digest}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        atomic_write_text(path, manifest.to_csv(index=False))
    with factory() as session, session.begin():
        snap = session.scalar(select(Snapshot).where(Snapshot.digest == digest))
        if snap is None:
            snap = Snapshot(digest=digest, n_members=len(manifest), params=params, manifest_path=str(path))
            session.add(snap)
            session.flush()
            session.add_all(
                SnapshotMember(snapshot_id=snap.id, export_id=int(r.member_id), pair_id=int(r.pair_id),
                               patient_id=int(r.patient_id), split=r.split, fold=int(r.fold), label=int(r.label))
                for r in named_rows(manifest)
            )
        snapshot_id = snap.id
    counts = manifest.groupby("split")["label"].agg(["count", "sum"])
    def count(split: str, what: str) -> int:
        return int(counts[what].get(split, 0))

    return SnapshotInfo(snapshot_id=snapshot_id, digest=digest, manifest_path=str(path), n_members=len(manifest),
                        n_train=count("train", "count"), n_test=count("test", "count"),
                        test_positives=count("test", "sum"), params=params,
                        synthetic_images=int(manifest["synthetic"].astype(bool).sum()))


def load_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"patient_key": str})


def record_augmented_copies(factory: sessionmaker[Session], copies: pd.DataFrame) -> int:
    """Record each materialised copy once (lineage names its seed, parameters and hash)."""
    added = 0
    with factory() as session, session.begin():
        for r in named_rows(copies):
            params = dict(r.params)
            pdigest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
            exists = session.scalar(select(AugmentedCopy.id).where(
                AugmentedCopy.export_id == int(r.source_member_id), AugmentedCopy.seed == int(r.seed),
                AugmentedCopy.params_digest == pdigest))
            if exists is None:
                session.add(AugmentedCopy(export_id=int(r.source_member_id), seed=int(r.seed),
                                          params=params | {"augment_version": r.augment_version},
                                          params_digest=pdigest, path=str(r.path), sha256=r.sha256))
                added += 1
    return added


def record_training_run(factory: sessionmaker[Session], *, snapshot_id: int, run_id: str, arch: str, preset: str,
                        model_name: str, model_version: str, test_auc: float | None,
                        checkpoint_sha256: str | None = None) -> None:
    """The database side of lineage: one row per registered model version, never overwritten by another."""
    from db.models import TrainingRun

    with factory() as session, session.begin():
        row = session.scalar(select(TrainingRun).where(TrainingRun.model_name == model_name,
                                                       TrainingRun.model_version == model_version))
        if row is None:
            session.add(TrainingRun(snapshot_id=snapshot_id, mlflow_run_id=run_id, arch=arch, preset=preset,
                                    model_name=model_name, model_version=model_version, test_auc=test_auc,
                                    checkpoint_sha256=checkpoint_sha256))
