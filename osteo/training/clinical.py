"""Clinical variables and DEXA targets of snapshot members, for the optional heads (issue 16).

Per member (an export: one crop of one image): the patient's age at the X-ray (from the DICOM header,
stored at ingest), sex, and the paired DEXA exam's femoral-neck BMD, T-score and 3-class label. No
names, raw IDs or birth dates: only the stored age in years and sex.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import DexaExam, DicomImage, Export, Pair, Patient
from osteo.errors import UserError

CLINICAL_VARIABLES = ("age", "sex", "bmi")
TABLE_COLUMNS = ["member_id", "age", "sex", "male", "neck_bmd", "t_score", "label3"]
CHUNK = 900  # Oracle takes at most 1000 expressions in one IN list


def has_height_weight() -> bool:
    """Whether the database keeps height and weight with the DEXA exam (it does not today)."""
    return hasattr(DexaExam, "height_cm") and hasattr(DexaExam, "weight_kg")


def parse_clinical(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """``--clinical age,sex[,bmi]`` -> ("age", "sex", ...); refused with a plain reason when a variable
    is unknown or cannot be had (BMI: the DEXA exports carry no height/weight)."""
    if spec is None:
        return ()
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = tuple(dict.fromkeys(s.strip().lower() for s in items if s.strip()))
    unknown = [n for n in names if n not in CLINICAL_VARIABLES]
    if unknown:
        raise UserError("unknown_clinical_variable", f"--clinical {','.join(unknown)}: choose from "
                        f"{', '.join(CLINICAL_VARIABLES)}")
    if "bmi" in names and not has_height_weight():
        raise UserError("no_bmi", "--clinical bmi: the DEXA exports carry no height/weight")
    return names


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start:start + CHUNK]


def clinical_table(factory: sessionmaker[Session], member_ids: Iterable[int]) -> pd.DataFrame:
    """One row per member id found (export -> dicom_image -> patient, pair -> dexa_exam), in the order
    asked: age at the X-ray (years, NaN if the header had none), sex (F/M/O or None), male (1.0 / 0.0,
    NaN when not F or M), neck BMD (g/cm2, NaN when the DEXA row had none), T-score and 3-class label
    as paired."""
    ids = [int(i) for i in dict.fromkeys(member_ids)]
    rows = []
    with factory() as session:
        for chunk in _chunks(ids):
            rows += session.execute(
                select(Export.id, DicomImage.age_at_exam, Patient.sex, DexaExam.neck_bmd, Pair.t_score, Pair.label3)
                .join(DicomImage, DicomImage.id == Export.image_id)
                .join(Patient, Patient.id == DicomImage.patient_id)
                .join(Pair, Pair.image_id == DicomImage.id)
                .join(DexaExam, DexaExam.id == Pair.dexa_exam_id)
                .where(Export.id.in_(chunk))
            ).all()
    df = pd.DataFrame(rows, columns=["member_id", "age", "sex", "neck_bmd", "t_score", "label3"])
    df["member_id"] = df["member_id"].astype(int)
    for col in ("age", "neck_bmd", "t_score"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    df["male"] = df["sex"].map({"M": 1.0, "F": 0.0}).astype(float)
    order = {m: k for k, m in enumerate(ids)}
    df = df.sort_values("member_id", key=lambda s: s.map(order)).reset_index(drop=True)
    return df[TABLE_COLUMNS]


def clinical_matrix(table: pd.DataFrame, clinical: Sequence[str]) -> np.ndarray:
    """The clinical columns the fusion takes, NaN where unknown: age in years, sex as male 1 / female 0."""
    cols = {"age": "age", "sex": "male", "bmi": "bmi"}
    missing = [c for c in clinical if cols[c] not in table.columns]
    if missing:
        raise UserError("no_bmi", "--clinical bmi: the DEXA exports carry no height/weight")
    return table[[cols[c] for c in clinical]].to_numpy(dtype=float).reshape(len(table), len(clinical))
