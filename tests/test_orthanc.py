"""The suite's PACS fixture (tests/orthanc.py): Orthanc starts, takes files through its REST API, answers
DICOMweb and DIMSE, and knows osteo's AE title."""

from __future__ import annotations

from pydicom import dcmread


def test_orthanc_takes_files_and_answers_both_transports(orthanc, tmp_path):
    from dicomweb_client import DICOMwebClient
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    from tests.helpers import synthetic_cohort

    synthetic_cohort(tmp_path / "cohort", patients=6, seed=1)
    files = sorted(p for p in (tmp_path / "cohort" / "dicom").rglob("*.dcm") if _is_whole_dicom(p))[:3]
    ids = orthanc.load(files)
    assert len(ids) == 3 and orthanc.instance_count() == 3

    studies = DICOMwebClient(orthanc.dicomweb_url).search_for_studies()
    assert {s["0020000D"]["Value"][0] for s in studies} == {dcmread(f).StudyInstanceUID for f in files}

    ae = AE(ae_title=orthanc.client_aet)
    ae.add_requested_context(Verification)
    assoc = ae.associate(orthanc.host, orthanc.dicom_port, ae_title=orthanc.aet)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()
    assert orthanc.get("/modalities") == ["osteo"]
    assert orthanc.env("dimse")["OSTEO_PACS_PORT"] == str(orthanc.dicom_port)


def _is_whole_dicom(path) -> bool:
    try:
        dcmread(path)
        return True
    except Exception:  # noqa: BLE001 - the cohort's junk files (truncated, not DICOM) are left out
        return False
