"""Clinical variables and DEXA targets of snapshot members (osteo/training/clinical.py)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from osteo.errors import UserError
from osteo.training.clinical import clinical_matrix, clinical_table, parse_clinical


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


@pytest.fixture
def small_study(engine, tmp_path):
    """24 members whose crop brightness follows their T-score, a manifest and an untrained checkpoint."""
    import pandas as pd
    import torch

    from db import make_session_factory
    from osteo_model.models import build_model
    from osteo_model.predict import save_checkpoint
    from tests.model_toy import write_png

    factory = make_session_factory(engine)
    rng = np.random.default_rng(2)
    rows = []
    with factory() as session, session.begin():
        for k in range(24):
            t = float(np.round(rng.uniform(-4, 0.5), 1))
            label3 = "osteoporosis" if t <= -2.5 else "osteopenia" if t < -1 else "normal"
            (mid,) = _member(session, k, sex="MF"[k % 2], age=int(rng.integers(50, 90)), bmd=0.858 + 0.12 * t,
                             t=t, label3=label3)
            img = np.clip(150 + 20 * t + rng.normal(0, 8, (40, 40)), 0, 255).astype(np.uint8)
            png = write_png(tmp_path / f"m{mid}.png", img)
            rows.append({"member_id": mid, "path": str(png), "label": int(t <= -2.5),
                         "split": "test" if k % 3 == 0 else "train", "fold": -1 if k % 3 == 0 else k % 2})
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "fold-0.pth", build_model("resnet18"), {"arch": "resnet18", "image_size": 32},
                           {"fold": 1})
    return factory, pd.DataFrame(rows), ckpt


def test_heads_report_writes_metrics_and_figures(small_study, tmp_path):
    import pandas as pd

    from osteo.training.heads import heads_report

    factory, manifest, ckpt = small_study
    rep = heads_report(factory, manifest, ckpt, tmp_path / "heads", device="cpu")
    m = rep.metrics
    assert m["heads_n_fit"] == 16 and m["heads_n_test"] == 8 and rep.clinical == ("age", "sex")
    for key in ("fusion_auc_image", "fusion_auc_with_clinical", "bmd_pearson_r", "tscore_mae", "class3_macro_f1"):
        assert key in m
    assert m["tscore_pearson_r"] > 0.5  # brightness carries T even through untrained weights
    assert np.array(rep.confusion3).sum() == 8
    csv = pd.read_csv(rep.predictions_csv)
    assert len(csv) == 8 and "patient_key" not in csv.columns and csv["neck_bmd_pred"].notna().all()
    for png in (rep.bmd_scatter_png, rep.confusion3_png):
        assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    again = heads_report(factory, manifest, ckpt, tmp_path / "again", device="cpu")
    assert again.metrics == rep.metrics  # deterministic
    val = heads_report(factory, manifest, ckpt, tmp_path / "val", device="cpu", fit_on="validation")
    assert val.metrics["heads_n_fit"] == (manifest["fold"] == 1).sum() == 8 and val.metrics["heads_n_test"] == 8
    plain = heads_report(factory, manifest, ckpt, tmp_path / "plain", clinical=(), device="cpu")
    assert "fusion_auc_with_clinical" not in plain.metrics
    with pytest.raises(UserError) as info:
        heads_report(factory, manifest, ckpt, tmp_path / "bmi", clinical="age,bmi")
    assert info.value.reason == "no_bmi"
    with pytest.raises(UserError) as info:
        heads_report(factory, manifest.assign(split="test"), ckpt, tmp_path / "none")
    assert info.value.reason == "heads_no_data"
