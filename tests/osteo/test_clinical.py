"""Clinical variables and DEXA targets of snapshot members (osteo/clinical.py)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from osteo.clinical import clinical_matrix, clinical_table, parse_clinical
from osteo.errors import UserError


def _member(session, k: int, *, sex, age, bmd, t, label3, sides=("L",)) -> list[int]:
    from db.models import Annotation, DexaExam, DicomImage, Export, Pair, Patient, SourceFile

    src = SourceFile(kind="dicom", path=f"/in/{k}.dcm", sha256=f"{k:064d}", size_bytes=1)
    patient = Patient(patient_key=f"key{k:04d}", sex=sex)
    session.add_all([src, patient])
    session.flush()
    image = DicomImage(sop_instance_uid=f"1.2.{k}", study_instance_uid=f"1.3.{k}", series_instance_uid=f"1.4.{k}",
                       source_file_id=src.id, patient_id=patient.id, study_date=dt.date(2022, 3, 1),
                       age_at_exam=age, modality="DX", body_part="HIP", laterality="B" if len(sides) > 1 else "L",
                       n_rows=64, n_columns=64, bits_stored=12, photometric="MONOCHROME2",
                       transfer_syntax="1.2.840.10008.1.2.1")
    exam = DexaExam(patient_id=patient.id, exam_date=dt.date(2022, 4, 1), neck_bmd=bmd, t_score=t,
                    source_file_id=src.id, source_row=k)
    session.add_all([image, exam])
    session.flush()
    session.add(Pair(image_id=image.id, dexa_exam_id=exam.id, gap_days=31, t_score=t, label=int(t <= -2.5),
                     label3=label3, rule_version="r1", window_days=183))
    ids = []
    for side in sides:
        box = Annotation(sop_instance_uid=image.sop_instance_uid, side=side, label="neck", box_xmin=1,
                         box_ymin=1, box_xmax=9, box_ymax=9)
        session.add(box)
        session.flush()
        export = Export(image_id=image.id, side=side, annotation_id=box.id, recipe_digest=f"{k}{side}",
                        transform={}, status="exported", metal_fraction=0.0, blur_score=9.0,
                        path=f"/png/{k}{side}.png", sha256="0" * 64)
        session.add(export)
        session.flush()
        ids.append(export.id)
    return ids


@pytest.fixture
def members(engine):
    from db import make_session_factory

    factory = make_session_factory(engine)
    with factory() as session, session.begin():
        a = _member(session, 1, sex="F", age=71, bmd=0.561, t=-2.5, label3="osteoporosis")
        b = _member(session, 2, sex="M", age=64, bmd=None, t=-0.4, label3="normal", sides=("L", "R"))
        c = _member(session, 3, sex=None, age=None, bmd=0.702, t=-1.3, label3="osteopenia")
    return factory, a + b + c


def test_clinical_table_joins_age_sex_and_dexa(members):
    factory, (a, b_left, b_right, c) = members
    df = clinical_table(factory, [c, a, b_right, b_left, a, 999_999])  # order kept, duplicates once, unknown out
    assert list(df["member_id"]) == [c, a, b_right, b_left]
    rows = df.set_index("member_id")
    assert rows.loc[a, "age"] == 71 and rows.loc[a, "sex"] == "F" and rows.loc[a, "male"] == 0.0
    assert rows.loc[a, "neck_bmd"] == pytest.approx(0.561) and rows.loc[a, "t_score"] == -2.5
    assert rows.loc[a, "label3"] == "osteoporosis"
    assert rows.loc[b_left, "male"] == 1.0 and np.isnan(rows.loc[b_left, "neck_bmd"])  # the DEXA row had no BMD
    assert rows.loc[b_right, "t_score"] == rows.loc[b_left, "t_score"] == -0.4  # both crops of one pelvis
    assert np.isnan(rows.loc[c, "age"]) and np.isnan(rows.loc[c, "male"])  # unknown stays unknown
    assert "patient_key" not in df.columns  # nothing that names a patient
    x = clinical_matrix(df, ("age", "sex"))
    assert x.shape == (4, 2) and x[1].tolist() == [71.0, 0.0]


def test_clinical_table_of_nothing_is_empty(members):
    factory, _ids = members
    df = clinical_table(factory, [])
    assert df.empty and "age" in df.columns


def test_parse_clinical_refuses_bmi_and_unknown_names():
    assert parse_clinical("age, sex") == ("age", "sex")
    assert parse_clinical(["sex", "age", "sex"]) == ("sex", "age")
    assert parse_clinical(None) == ()
    with pytest.raises(UserError) as info:
        parse_clinical("age,sex,bmi")
    assert info.value.reason == "no_bmi" and "carry no height/weight" in info.value.detail
    with pytest.raises(UserError) as info:
        parse_clinical("age,weight")
    assert info.value.reason == "unknown_clinical_variable"
