"""One DEXA export row as the ingest hands it over: osteo/etl/dexa.py parses it, db/store.py writes it.
Defined here, below osteo/, so both sides import it; de-identified (patient_key is the pseudonym)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DexaRow:
    patient_key: str
    exam_date: dt.date
    side: str  # L | R | - (the export gives no side)
    neck_bmd: float | None
    t_score: float
    t_score_derived: bool  # from neck_bmd and the young-adult reference (the export gave no T-score)
    z_score: float | None
    age_at_exam: int | None
    source_row: int  # the data row of its file, from 1 (the header not counted)
