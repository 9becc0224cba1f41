"""The quarantine as people read it, and the context an input is judged under.

A quarantined input is judged again by the next refresh when what rejected it may have changed:
the context digest covers the stage, the code version, the settings its rules read and the
column map's digest (docs/design.md, Quarantine). `osteo refresh --retry-quarantined` judges
every active one again whatever its context.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Quarantine
from db.values import QuarantineStage
from osteo.settings import Settings
from osteo.version import code_version

STAGES = tuple(QuarantineStage)  # every stage that quarantines


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def mapping_digest(mapping: dict[str, str] | None) -> str | None:
    """The column map as its digest (None: no map); a changed map judges the DEXA files again."""
    return _digest(mapping) if mapping else None


def stage_config(stage: str, settings: Settings | None) -> dict[str, Any]:
    """The settings a stage's rules read when they reject an input."""
    if stage == QuarantineStage.INGEST_DEXA and settings is not None:  # a T-score derived from BMD is range-checked
        return {"bmd_young_mean": settings.bmd_young_mean, "bmd_young_sd": settings.bmd_young_sd}
    return {}


def judging_context(stage: str, settings: Settings | None = None, mapping: dict[str, str] | None = None, *,
                    config: dict[str, Any] | None = None) -> str:
    """Digest of everything that may decide whether an input of this stage is quarantined (`config`:
    the rules a stage was handed instead of the settings, e.g. the DICOM scope rules)."""
    return _digest({"stage": stage, "code_version": code_version(),
                    "config": stage_config(stage, settings) if config is None else config,
                    "column_map": mapping_digest(mapping)})


@dataclass(frozen=True)
class QuarantineEntry:
    path: str
    stage: str
    row: int  # 0: the whole file
    reason: str
    detail: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    resolved_at: dt.datetime | None  # None: still quarantined

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "line": self.row + 1 if self.row else None}

    def where(self) -> str:
        return f"{self.path} {place(self.path, self.row)}"


def place(path: str, row: int) -> str:
    """A DEXA row as a person finds it: the file's line (a spreadsheet's row number), the header being line 1;
    `row` counts the data rows from 1 (quarantine.source_row, dexa_exam.source_row)."""
    if not row:
        return "(whole file)"
    return f"{'sheet row' if path.lower().endswith('.xlsx') else 'line'} {row + 1} (data row {row})"


def list_quarantine(factory: sessionmaker[Session], *, stage: str | None = None, reason: str | None = None,
                    include_resolved: bool = False) -> list[QuarantineEntry]:
    """The active quarantined inputs (with `include_resolved`, the resolved ones too), by path and row."""
    stmt = select(Quarantine).order_by(Quarantine.stage, Quarantine.source_path, Quarantine.source_row,
                                       Quarantine.reason)
    if stage:
        stmt = stmt.where(Quarantine.stage == stage)
    if reason:
        stmt = stmt.where(Quarantine.reason == reason)
    if not include_resolved:
        stmt = stmt.where(Quarantine.resolved_at.is_(None))
    with factory() as session:
        return [QuarantineEntry(path=q.source_path, stage=q.stage, row=q.source_row, reason=q.reason,
                                detail=q.detail or "", first_seen=q.first_seen, last_seen=q.last_seen,
                                resolved_at=q.resolved_at) for q in session.scalars(stmt)]


def quarantined_files(factory: sessionmaker[Session]) -> list[dict[str, str]]:
    """Each file with an active entry, once per stage and reason (no details: the Prefect artifact)."""
    with factory() as session:
        rows = session.execute(select(Quarantine.source_path, Quarantine.stage, Quarantine.reason)
                               .where(Quarantine.resolved_at.is_(None)).distinct()
                               .order_by(Quarantine.stage, Quarantine.source_path, Quarantine.reason)).all()
    return [{"path": path, "stage": stage, "reason": reason} for path, stage, reason in rows]


CSV_COLUMNS: tuple[str, ...] = ("path", "stage", "row", "line", "reason", "detail", "first_seen", "last_seen",
                                 "resolved_at")


def quarantine_csv(entries: list[QuarantineEntry]) -> str:
    """One row per entry (what an auditor files away)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for e in entries:
        w.writerow({k: "" if v is None else v for k, v in e.to_dict().items()})
    return buf.getvalue()
