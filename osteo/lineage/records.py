"""What every lineage query shares: the errors, model references, and rows as plain dicts."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from db.models import Annotation, Quarantine, RefreshRun, Snapshot, SourceFile, TrainingRun


class LineageError(LookupError):
    """The thing asked about is not known; `reason` is the command line's code for it."""

    reason = "unknown"


class UnknownModel(LineageError):
    """No such registered model version, or none recorded in this database."""

    reason = "unknown_model"


class UnknownSnapshot(LineageError):
    reason = "unknown_snapshot"


class UnknownPatient(LineageError):
    reason = "unknown_patient"


class UnknownImage(LineageError):
    reason = "unknown_image"


# ---------------------------------------------------------------- model references

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


def pseudonym_of(raw_patient_id: str, key: bytes) -> str:
    """The pseudonym an ingest gives this raw patient ID under `key` (the ID itself is never kept)."""
    from osteo.etl.pseudonym import pseudonymise

    return pseudonymise(raw_patient_id, key)


# ---------------------------------------------------------------- rows as dicts


def iso(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def source_dict(sf: SourceFile) -> dict[str, Any]:
    return {"id": sf.id, "kind": sf.kind, "path": sf.path, "sha256": sf.sha256, "size_bytes": sf.size_bytes,
            "first_seen": iso(sf.first_seen), "status": sf.status}


def box_model(ann: Annotation) -> str | None:
    """The localiser version behind a model box ('osteo-roi/7'); None for a person's box."""
    return None if ann.source == "human" else f"{ann.model_name}/{ann.model_version}"


def box_dict(ann: Annotation) -> dict[str, Any]:
    """One femoral-neck box: its side and source, and the localiser's name, version and confidence
    for a model box (a person's box names its VOC file: the caller adds it, a model box has none)."""
    return {"id": ann.id, "side": ann.side, "source": ann.source, "label": ann.label,
            "box": [ann.box_xmin, ann.box_ymin, ann.box_xmax, ann.box_ymax], "model_name": ann.model_name,
            "model_version": ann.model_version, "box_model": box_model(ann), "confidence": ann.confidence}


def run_dict(tr: TrainingRun) -> dict[str, Any]:
    return {"mlflow_run_id": tr.mlflow_run_id, "model_name": tr.model_name, "model_version": tr.model_version,
            "arch": tr.arch, "preset": tr.preset, "test_auc": tr.test_auc,
            "checkpoint_sha256": tr.checkpoint_sha256, "created": iso(tr.created_at)}


def snapshot_dict(s: Snapshot) -> dict[str, Any]:
    return {"id": s.id, "digest": s.digest, "created": iso(s.created_at), "params": s.params,
            "n_members": s.n_members, "manifest_path": s.manifest_path}


def quarantine_dict(q: Quarantine) -> dict[str, Any]:
    return {"stage": q.stage, "path": q.source_path, "sha256": q.source_sha256, "row": q.source_row,
            "reason": q.reason, "detail": q.detail, "created": iso(q.created_at)}


def refresh_dict(r: RefreshRun) -> dict[str, Any]:
    counts = r.counts or {}
    return {"id": r.id, "started": iso(r.started_at), "finished": iso(r.finished_at), "status": r.status,
            "code_version": r.code_version, "inputs": r.inputs or {}, "this_run": counts.get("this_run"),
            "totals": counts.get("totals")}
