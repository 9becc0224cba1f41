"""The extra test-year report: acquisition metadata from the database, subgroup files, calibration file.

A small synthetic cohort goes through the plain refresh into a fresh SQLite database (module scope);
the test year's members come from a real snapshot; the probabilities are made up (no training).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

PATIENTS, SEED = 30, 3


@pytest.fixture(scope="module")
def snapshot_db(tmp_path_factory):
    from db import make_engine
    from osteo.settings import Settings
    from osteo.synth import generate_cohort
    from osteo.training.snapshot import load_manifest, take_snapshot
    from tests.helpers import plain_refresh

    root = tmp_path_factory.mktemp("test_report")
    generate_cohort(root / "cohort", patients=PATIENTS, seed=SEED, workers=1)
    engine = make_engine(f"sqlite:///{root / 'osteo.sqlite'}")
    factory = sessionmaker(engine, expire_on_commit=False)
    settings = Settings(var_dir=root / "var", data_dir=root / "data", pseudonym_key="k" * 32, workers=1)
    plain_refresh(factory, root / "cohort", settings)
    snap = take_snapshot(factory, root / "snapshots", test_year=settings.test_year, folds=2, seed=0)
    yield factory, load_manifest(snap.manifest_path)
    engine.dispose()


def test_acquisition_table_matches_the_database(snapshot_db):
    from db.models import DicomImage, Export, Patient
    from osteo.training.evaluation_report import ACQUISITION_COLUMNS, acquisition_table

    factory, manifest = snapshot_db
    ids = manifest["member_id"].tolist()[::-1] + [10**9]  # any order, and an unknown id
    table = acquisition_table(factory, ids)
    assert list(table.columns) == ACQUISITION_COLUMNS and table["member_id"].tolist() == ids
    assert table.iloc[-1][["modality", "sex", "compressed"]].isna().all() and table.iloc[-1]["age_band"] == "unknown"
    with factory() as s:
        truth = {r[0]: r[1:] for r in s.execute(
            select(Export.id, DicomImage.modality, DicomImage.photometric, DicomImage.transfer_syntax, Patient.sex,
                   DicomImage.age_at_exam)
            .join(DicomImage, DicomImage.id == Export.image_id).join(Patient, Patient.id == DicomImage.patient_id))}
    for r in table.iloc[:-1].itertuples():
        modality, photometric, syntax, sex, age = truth[r.member_id]
        assert (r.modality, r.photometric, r.transfer_syntax, r.sex) == (modality, photometric, syntax, sex)
        assert r.compressed == ("uncompressed" if syntax in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
                                else "compressed")
        assert r.age_band == ("<60" if age < 60 else "80+" if age >= 80 else f"{age // 10 * 10}-{age // 10 * 10 + 9}")
    assert set(table["modality"].dropna()) <= {"CR", "DX"}


def test_extra_report_writes_subgroups_and_calibration(snapshot_db, tmp_path):
    from osteo.training.evaluation_report import extra_test_report

    factory, manifest = snapshot_db
    test = manifest[manifest["split"] == "test"].reset_index(drop=True)
    labels = test["label"].to_numpy().astype(int)
    assert len(set(labels)) == 2, "the cohort must give both classes in the test year"
    rng = np.random.default_rng(0)
    probs = np.clip(0.15 + 0.7 * labels + rng.normal(0, 0.2, len(labels)), 0.001, 0.999)  # overconfident-ish
    val_labels = rng.integers(0, 2, 200)
    val_probs = np.where(val_labels == 1, 0.99, 0.01)
    val_probs[:40] = 1 - val_probs[:40]  # 20 % confidently wrong: the temperature must soften
    extras = extra_test_report(factory, test, labels, probs, 0.5, tmp_path / "test", val_labels, val_probs,
                               n_boot=300)
    assert {p.rsplit("/", 1)[-1] for p in extras.files} == {"subgroups.csv", "subgroups.md", "calibration.json"}
    table = pd.read_csv(tmp_path / "test" / "subgroups.csv")
    assert table.loc[0, "attribute"] == "overall" and table.loc[0, "n"] == len(test)
    assert set(table["attribute"]) >= {"modality", "photometric", "compressed", "sex", "age_band"}
    for attr, rows in table[table["attribute"] != "overall"].groupby("attribute"):
        assert rows["n"].sum() == len(test), attr  # each attribute partitions the test year
    assert extras.n_subgroups == len(table) - 1
    assert extras.n_subgroups_auc_undefined == int(table["auc"].isna().sum())
    cal = json.loads((tmp_path / "test" / "calibration.json").read_text())
    assert cal["fitted_on"] == "validation" and cal["temperature"] == pytest.approx(extras.temperature)
    assert extras.temperature > 1
    assert cal["ece_before"] == pytest.approx(extras.ece_before)
    assert all(math.isfinite(v) for v in extras.metrics().values())
    md = (tmp_path / "test" / "subgroups.md").read_text()
    assert "| overall all |" in md
    # aggregates only: no member id, patient key or raw age in the files
    keys = set(manifest["patient_key"].astype(str))
    for name in ("subgroups.csv", "subgroups.md", "calibration.json"):
        text = (tmp_path / "test" / name).read_text()
        assert not any(k in text for k in keys)
        assert "member_id" not in text
