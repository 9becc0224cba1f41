"""osteo.ingest.refresh's export stage: bad input is quarantined, a bug fails the batch, a new pixel version re-exports.

A tiny synthetic cohort (8 patients: 6 paired, annotated images) is ingested with the plain refresh
functions into a fresh SQLite database per test; every export runs in this process (workers=1), so a
monkeypatched osteo.etl.imaging.export_roi is the one the export worker calls.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from db.models import Annotation, DicomImage, Export, Quarantine, SourceFile
from osteo.etl import imaging
from osteo.etl.errors import InputError
from osteo.ingest import refresh
from osteo.settings import Settings

COHORT_PATIENTS, COHORT_SEED = 8, 5


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from osteo.synth import generate_cohort

    out = tmp_path_factory.mktemp("export_cohort")
    generate_cohort(out, patients=COHORT_PATIENTS, seed=COHORT_SEED, workers=1)
    return out


@pytest.fixture
def ingested(tmp_path, cohort):
    """(factory, settings, box ids planned for export): a database ingested and paired, nothing exported."""
    from db import create_schema, make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'osteo.sqlite'}")
    create_schema(engine)
    factory = sessionmaker(engine, expire_on_commit=False)
    settings = Settings(var_dir=tmp_path / "var", data_dir=tmp_path / "data", pseudonym_key="k" * 32, workers=1)
    key = settings.resolved_pseudonym_key()
    refresh.ingest_dicom(factory, refresh.discover(cohort / "dicom"), key, workers=1)
    refresh.ingest_dexa(factory, refresh.discover(cohort / "dexa", (".csv", ".txt")), key, settings)
    refresh.ingest_annotations(factory, refresh.discover(cohort / "annotations", (".xml",)))
    refresh.pair_and_label(factory, settings)
    ids = refresh.plan_exports(factory, settings)
    assert len(ids) >= 3, "the cohort must give several paired, annotated images"
    yield factory, settings, ids
    engine.dispose()


def _export_quarantine(factory) -> list[tuple[str, str]]:
    with factory() as session:
        return sorted(session.execute(select(Quarantine.source_path, Quarantine.reason)
                                      .where(Quarantine.stage == "export")).all())


def _exports(factory) -> list[tuple[int, str]]:
    """(box id, status) of every export: one per box, so an AP pelvis exports two."""
    with factory() as session:
        return sorted(session.execute(select(Export.annotation_id, Export.status)).all())


def _path_of(factory, box_id: int) -> str:
    with factory() as session:
        return session.scalar(select(SourceFile.path).join(DicomImage, DicomImage.source_file_id == SourceFile.id)
                              .join(Annotation, Annotation.sop_instance_uid == DicomImage.sop_instance_uid)
                              .where(Annotation.id == box_id))


def test_a_bug_in_the_export_fails_the_batch_and_quarantines_nothing(ingested, monkeypatch):
    factory, settings, ids = ingested
    calls = []

    def buggy_export_roi(*args, **kwargs):
        calls.append(args[0])
        return 1 / 0  # our own bug, not bad input

    monkeypatch.setattr(imaging, "export_roi", buggy_export_roi)
    with pytest.raises(ZeroDivisionError):
        refresh.export_images(factory, ids, settings, workers=1)
    assert calls, "the export worker must call osteo.etl.imaging.export_roi"
    assert _export_quarantine(factory) == []  # no image blamed for our bug
    assert _exports(factory) == []
    assert refresh.plan_exports(factory, settings) == ids  # the next run tries every image again


@pytest.mark.parametrize("error", [imaging.ExportError("undecodable_pixels", "bad JPEG 2000 stream"),
                                   InputError("unreadable_file", "permission denied")],
                         ids=["ExportError", "InputError"])
def test_bad_input_is_quarantined_with_its_reason_and_the_run_goes_on(ingested, monkeypatch, error):
    factory, settings, ids = ingested
    bad_path = _path_of(factory, ids[0])
    real_export_roi = imaging.export_roi

    def export_roi(dicom_path, *args, **kwargs):
        if str(dicom_path) == bad_path:
            raise error
        return real_export_roi(dicom_path, *args, **kwargs)

    monkeypatch.setattr(imaging, "export_roi", export_roi)
    counts = refresh.export_images(factory, ids, settings, workers=1)
    assert counts.quarantined == 1
    assert counts.exported + counts.excluded == len(ids) - len({i for i in ids if _path_of(factory, i) == bad_path})
    assert _export_quarantine(factory) == [(bad_path, error.reason)]
    bad = {i for i in ids if _path_of(factory, i) == bad_path}  # both sides of a pelvis, if it is one
    assert sorted(box_id for box_id, _ in _exports(factory)) == sorted(set(ids) - bad)
    # the next run tries it again; once it reads, its entry leaves the active quarantine and stays for auditors
    monkeypatch.setattr(imaging, "export_roi", real_export_roi)
    again = refresh.export_images(factory, refresh.plan_exports(factory, settings), settings, workers=1)
    assert (again.exported + again.excluded, again.quarantined, again.resolved) == (1, 0, 1)
    with factory() as session:
        entry = session.scalar(select(Quarantine).where(Quarantine.stage == "export"))
    assert entry.source_path == bad_path and entry.resolved_at is not None
    assert refresh.summarise(factory).quarantined_by_reason.get(error.reason) is None


def test_a_new_algorithm_version_exports_every_image_again(ingested, monkeypatch):
    factory, settings, ids = ingested
    counts = refresh.export_images(factory, ids, settings, workers=1)
    assert counts.quarantined == 0 and counts.exported >= 1
    assert counts.exported + counts.excluded == len(ids)
    assert refresh.plan_exports(factory, settings) == []  # the same recipe: nothing to do
    with factory() as session:  # each export row keeps the digest of the transform it applied
        rows = session.scalars(select(Export)).all()
    assert rows and all(r.transform_digest == imaging.canonical_digest(r.transform) for r in rows)

    with factory() as session:
        image, ann = session.execute(
            select(DicomImage, Annotation)
            .join(Annotation, Annotation.sop_instance_uid == DicomImage.sop_instance_uid)
            .where(Annotation.id == ids[0])).one()
        recipe, digest = refresh.export_recipe(image, ann, settings)
    assert recipe["version"] == imaging.ALGORITHM_VERSION

    bumped = imaging.ALGORITHM_VERSION + "-bumped"
    # the name export_recipe reads, and the package's own (for a refresh that looks it up there)
    monkeypatch.setattr(refresh, "ALGORITHM_VERSION", bumped)
    monkeypatch.setattr(imaging, "ALGORITHM_VERSION", bumped)
    new_recipe, new_digest = refresh.export_recipe(image, ann, settings)
    assert new_recipe["version"] == bumped and new_digest != digest
    assert refresh.plan_exports(factory, settings) == ids  # a pixel change: every image exports again
