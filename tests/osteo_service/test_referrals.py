"""The referral list (/referrals, /api/v1/referrals; issue 27): the films `osteo screen` flagged, for the
referrals role only (admin passes); the accession number read from the film's file, never a name."""

from __future__ import annotations

import datetime as dt

import pydicom
import pytest

from tests.dicom_factory import make_dicom
from tests.osteo_service.auth_support import make_service, signed_in_client

NAME = "CHEN^MEI LING"


@pytest.fixture
def service(tmp_path, fake_registry, clock):
    from db.models import DicomImage, Patient, SourceFile
    from db.screening import ScreeningResult

    svc = make_service(tmp_path, fake_registry, clock)
    with svc.db() as session, session.begin():
        for n, (accession, p) in enumerate((("ACC-FLAG-1", 0.81), ("ACC-CLEAR-2", 0.12))):
            path = tmp_path / f"film{n}.dcm"
            make_dicom(path, name=NAME, patient_id=f"A12345{n}")
            ds = pydicom.dcmread(path)
            ds.AccessionNumber = accession
            ds.save_as(path)
            sf = SourceFile(kind="dicom", path=str(path), sha256=f"{n:064d}", size_bytes=1)
            patient = Patient(patient_key=f"P{n:031d}")
            session.add_all([sf, patient])
            session.flush()
            image = DicomImage(sop_instance_uid=str(ds.SOPInstanceUID), study_instance_uid=str(ds.StudyInstanceUID),
                               series_instance_uid=str(ds.SeriesInstanceUID), source_file_id=sf.id,
                               patient_id=patient.id, study_date=dt.date(2024, 5, 2 + n), modality="DX",
                               laterality="L", n_rows=64, n_columns=64, bits_stored=12, photometric="MONOCHROME2",
                               transfer_syntax="1.2.840.10008.1.2.1")
            session.add(image)
            session.flush()
            session.add(ScreeningResult(image_id=image.id, model_name="osteo-classifier", model_version="3",
                                        status="screened", threshold=0.5, probability=p, label=int(p >= 0.5),
                                        side="L", box_l=[1, 2, 30, 40], box_source_l="model", probability_l=p))
    return svc


def test_the_referrals_role_sees_the_flagged_films_by_accession_number_and_no_name(service):
    client = signed_in_client(service, "referrals")
    page = client.get("/referrals")
    assert page.status_code == 200 and "ACC-FLAG-1" in page.text and "ACC-CLEAR-2" not in page.text
    assert "CHEN" not in page.text and "A123450" not in page.text
    assert 'id="nav-referrals"' in page.text
    everything = client.get("/referrals?all=1&lang=en")
    assert "ACC-CLEAR-2" in everything.text and "Referrals" in everything.text

    api = service.client().get("/api/v1/referrals", headers={"Authorization": f"Bearer {service.tokens['referrals']}"})
    assert api.status_code == 200
    body = api.json()
    assert body["count"] == 1 and body["referrals"][0]["accession_number"] == "ACC-FLAG-1"
    assert body["referrals"][0]["probability"] == pytest.approx(0.81) and "CHEN" not in api.text


def test_no_other_role_sees_it(service):
    assert service.client().get("/api/v1/referrals").status_code == 401
    screening = signed_in_client(service, "screening")
    assert screening.get("/referrals").status_code == 403
    assert 'id="nav-referrals"' not in screening.get("/").text
    token = {"Authorization": f"Bearer {service.tokens['audit']}"}
    assert service.client().get("/api/v1/referrals", headers=token).status_code == 403
    assert signed_in_client(service, "admin").get("/referrals").status_code == 200  # admin passes every role
