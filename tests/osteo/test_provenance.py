"""A model says what it learned from (osteo/etl/synthetic.py): the header reader tells a synthetic film
by either mark, the refresh keeps it per image (dicom_image.synthetic), the snapshot and the localiser's
dataset count it, and a database made before the column is refused."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian
from sqlalchemy import select, update

from db.headers import HeaderRecord
from db.models import DicomImage
from osteo.etl import synthetic
from osteo.etl.dicom_headers import read_one
from osteo.synth.dicomio import mark_synthetic
from tests.dicom_factory import make_dicom

KEY = b"provenance-key"


def record(path) -> HeaderRecord:
    result = read_one(str(path), KEY)
    assert result.record is not None, result
    return result.record


def marked(tmp_path, name: str = "marked.dcm"):
    """A factory hip film marked as `osteo synth` marks every film it writes."""
    path = tmp_path / name
    make_dicom(path)
    ds = pydicom.dcmread(path)
    mark_synthetic(ds, ("FUJIFILM Corporation", "FCR"))
    ds.save_as(path)
    return path


def test_every_generated_film_is_synthetic_and_a_plain_one_is_not(tmp_path):
    from osteo.synth import generate_cohort

    generate_cohort(tmp_path / "cohort", patients=6, seed=3, workers=1)
    results = [read_one(str(p), KEY) for p in sorted((tmp_path / "cohort" / "dicom").rglob("*")) if p.is_file()]
    records = [r.record for r in results if r.record is not None]
    assert records and all(r.synthetic is True for r in records)
    make_dicom(tmp_path / "plain.dcm")
    assert record(tmp_path / "plain.dcm").synthetic is False


def test_either_mark_alone_says_synthetic(tmp_path):
    assert record(marked(tmp_path)).synthetic is True
    ds = pydicom.dcmread(marked(tmp_path, "stripped.dcm"))
    ds.remove_private_tags()  # what a de-identification tool does: Manufacturer stays
    ds.save_as(tmp_path / "stripped.dcm")
    assert "Manufacturer" in ds and record(tmp_path / "stripped.dcm").synthetic is True
    ds = pydicom.dcmread(marked(tmp_path, "flag.dcm"))
    ds.Manufacturer = "FUJIFILM Corporation"  # a PACS rewrote the vendor: the private flag stays
    ds.save_as(tmp_path / "flag.dcm")
    assert record(tmp_path / "flag.dcm").synthetic is True
    ds.remove_private_tags()  # neither mark left
    ds.save_as(tmp_path / "neither.dcm")
    assert record(tmp_path / "neither.dcm").synthetic is False


def test_the_flag_is_found_through_its_creator(tmp_path):
    # another vendor's block in group 0009 with the same element value says nothing
    path = tmp_path / "vendor.dcm"
    make_dicom(path)
    ds = pydicom.dcmread(path)
    ds.private_block(synthetic.PRIVATE_GROUP, "GEMS_IDEN_01", create=True).add_new(synthetic.ELEMENT_FLAG, "LO",
                                                                                    synthetic.FLAG)
    ds.save_as(path)
    assert ds[0x00091001].value == synthetic.FLAG and record(path).synthetic is False
    # osteo's block in the next slot (0009,0011) -> (0009,1101), after the vendor's: found
    block = ds.private_block(synthetic.PRIVATE_GROUP, synthetic.PRIVATE_CREATOR, create=True)
    block.add_new(synthetic.ELEMENT_FLAG, "LO", synthetic.FLAG)
    ds.save_as(path)
    assert ds[0x00090011].value == synthetic.PRIVATE_CREATOR and record(path).synthetic is True


def test_implicit_vr_and_odd_bytes(tmp_path):
    ds = pydicom.dcmread(marked(tmp_path))
    ds.Manufacturer = "FUJIFILM Corporation"
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian  # the private flag has no VR on disk (UN)
    ds.save_as(tmp_path / "implicit.dcm", enforce_file_format=True)
    assert record(tmp_path / "implicit.dcm").synthetic is True
    # a Manufacturer whose bytes no character set decodes is no reason to refuse a film
    ds = pydicom.dcmread(tmp_path / "implicit.dcm")
    ds.remove_private_tags()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.save_as(tmp_path / "odd.dcm", enforce_file_format=True)
    odd = b"\xff\xfe\xfdFUJIFILM Corpor\xc3\xc3"  # as long as the value it replaces: UTF-8 cannot decode it
    raw = (tmp_path / "odd.dcm").read_bytes().replace(b"FUJIFILM Corporation", odd)
    (tmp_path / "odd.dcm").write_bytes(raw)
    assert record(tmp_path / "odd.dcm").synthetic is False


def test_an_older_database_without_the_column_is_refused(tmp_path):
    from db import make_engine
    from db.engine import SchemaOutdated, create_schema
    from db.migrate import run_upgrade

    eng = make_engine(f"sqlite:///{tmp_path / 'old.sqlite'}")
    run_upgrade(eng, "0001")  # the schema before the column (migration 0002 adds it)
    with pytest.raises(SchemaOutdated, match="revision 0001.*osteo db upgrade"):
        create_schema(eng)


@pytest.fixture(scope="module")
def cohort_db(tmp_path_factory):
    """A small generated cohort through the plain refresh (every image synthetic)."""
    from sqlalchemy.orm import sessionmaker

    from db import make_engine
    from osteo.settings import Settings
    from osteo.synth import generate_cohort
    from tests.helpers import plain_refresh

    root = tmp_path_factory.mktemp("provenance")
    generate_cohort(root / "cohort", patients=30, seed=3, workers=1)
    engine = make_engine(f"sqlite:///{root / 'osteo.sqlite'}")
    factory = sessionmaker(engine, expire_on_commit=False)
    settings = Settings(var_dir=root / "var", data_dir=root / "data", pseudonym_key="k" * 32, workers=1)
    plain_refresh(factory, root / "cohort", settings)
    yield factory, root, settings
    engine.dispose()


def _mark_real(factory, image_ids) -> None:
    """As if these radiographs came from the hospital: the column the refresh wrote, set to False."""
    with factory() as s, s.begin():
        s.execute(update(DicomImage).values(synthetic=True))
        if image_ids:
            s.execute(update(DicomImage).where(DicomImage.id.in_(image_ids)).values(synthetic=False))


def test_the_refresh_keeps_the_mark_and_the_snapshot_counts_it(cohort_db):
    from osteo.training.snapshot import load_manifest, take_snapshot
    from osteo_mlflow.runs import snapshot_params

    factory, root, settings = cohort_db
    with factory() as s:
        marks = s.scalars(select(DicomImage.synthetic)).all()
    assert marks and all(marks)  # every generated film, stored as synthetic

    def snapshot():
        return take_snapshot(factory, root / "snapshots", test_year=settings.test_year, folds=2, seed=0)

    snap = snapshot()
    manifest = load_manifest(snap.manifest_path)
    assert snap.synthetic_images == snap.n_members == len(manifest) and manifest["synthetic"].all()
    assert snap.synthetic and snap.trained_on == "synthetic"
    params = snapshot_params(snap)
    assert (params["synthetic_images"], params["synthetic"], params["trained_on"]) == (snap.n_members, True,
                                                                                      "synthetic")
    real = manifest["image_id"].drop_duplicates().head(3).tolist()  # 3 radiographs (a pelvis gives 2 crops)
    _mark_real(factory, real)
    mixed = snapshot()
    assert mixed.digest == snap.digest  # the same images, split the same: the same snapshot
    n_real = int(manifest["image_id"].isin(real).sum())
    assert mixed.synthetic_images == snap.n_members - n_real and mixed.trained_on == "mixed" and mixed.synthetic
    _mark_real(factory, manifest["image_id"].tolist())
    real_only = snapshot()
    assert real_only.synthetic_images == 0 and not real_only.synthetic and real_only.trained_on == "real"
    _mark_real(factory, [])


def test_the_localisers_dataset_counts_its_synthetic_images(cohort_db):
    from osteo.localiser.training import collect_dataset

    factory, root, settings = cohort_db
    with factory() as s:
        ids = s.scalars(select(DicomImage.id).order_by(DicomImage.id)).all()

    def dataset():
        return collect_dataset(factory, root / "roi", test_year=settings.test_year, input_size=32)

    everything = dataset()
    assert everything.n_images > 0 and everything.synthetic_images == everything.n_images
    assert everything.to_dict()["synthetic_images"] == everything.n_images
    _mark_real(factory, ids[::2])  # every other radiograph from the hospital
    half = dataset()
    assert half.digest == everything.digest and 0 < half.synthetic_images < half.n_images
    assert synthetic.trained_on(half.synthetic_images, half.n_images) == "mixed"
    _mark_real(factory, ids)
    assert dataset().synthetic_images == 0
    _mark_real(factory, [])
