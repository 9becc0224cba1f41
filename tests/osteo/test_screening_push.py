"""Results back into the patient's study (osteo/screening/push.py, sr.py, capture.py, send.py), against a real
Orthanc: the SR and the secondary capture go in by STOW-RS or C-STORE, in the source image's study (new
series), dciodvfy finds 0 errors, QIDO-RS finds them and WADO-RS gives back the values the database holds; a
second push sends nothing; the patient module reaches the SR and never the database or the logs."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from db.models import DicomImage, SourceFile
from db.screening import ScreeningPush, ScreeningResult
from osteo.screening.plan import images_to_screen
from osteo.screening.push import push_results
from osteo.screening.score import screen_images
from osteo.screening.sr import NOTICE, read_sr
from tests.helpers import isolated_settings
from tests.screening_support import onnx_classifier, refreshed_cohort, screening_model

DCIODVFY = Path("/usr/bin/dciodvfy")


@pytest.fixture(scope="module")
def screened(tmp_path_factory):
    """A refreshed cohort screened once by the toy classifier; its threshold the median probability, so that
    about half the screened films are flagged."""
    root = tmp_path_factory.mktemp("push")
    with isolated_settings(root / "home") as settings:
        factory = refreshed_cohort(root, settings)
        classifier = onnx_classifier(root)
        probe = screening_model(classifier)
        todo, _ = images_to_screen(factory, probe.name, probe.version)
        screen_images(factory, probe, todo, metal_threshold=0.005, blur_threshold=6.0)
        with factory() as session:
            probs = sorted(session.scalars(select(ScreeningResult.probability)
                                           .where(ScreeningResult.status == "screened")))
        threshold = probs[len(probs) // 2]
        with factory() as session, session.begin():  # the labels at that threshold, as a version with it scores
            for r in session.scalars(select(ScreeningResult).where(ScreeningResult.status == "screened")):
                r.threshold, r.label = threshold, int(r.probability >= threshold)
        yield {"root": root, "factory": factory, "model": screening_model(classifier, threshold=threshold)}


def target_of(orthanc, transport: str):
    from osteo.pacs.target import pacs_target

    with isolated_settings(Path("/nonexistent-home"), **orthanc.env(transport)) as settings:
        return pacs_target(settings)


def clear_pushes(factory) -> None:
    from sqlalchemy import delete

    with factory() as session, session.begin():
        session.execute(delete(ScreeningPush))


def dciodvfy_errors(ds, path: Path) -> list[str]:
    assert DCIODVFY.exists(), "dciodvfy is missing: make system-packages (Debian dicom3tools)"
    ds.save_as(path, enforce_file_format=True)
    out = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def test_the_sr_round_trip_over_dicomweb(screened, orthanc, tmp_path):
    from dicomweb_client.api import DICOMwebClient

    factory, model = screened["factory"], screened["model"]
    clear_pushes(factory)
    counts = push_results(factory, model, target_of(orthanc, "dicomweb"), "all")
    with factory() as session:
        results = {r.id: (r, image) for r, image in session.execute(
            select(ScreeningResult, DicomImage).join(DicomImage).where(ScreeningResult.status == "screened"))}
        pushes = list(session.scalars(select(ScreeningPush)))
    assert counts.failed == 0 and counts.results == counts.sr == counts.sc == len(results) > 0
    assert {(p.result_id, p.kind) for p in pushes} == {(i, k) for i in results for k in ("SR", "SC")}
    assert {p.transport for p in pushes} == {"stow-rs"} and {p.status for p in pushes} == {"pushed"}

    client = DICOMwebClient(url=orthanc.dicomweb_url)
    for p in pushes:
        r, image = results[p.result_id]
        assert p.study_instance_uid == image.study_instance_uid and p.series_instance_uid != image.series_instance_uid
        found = client.search_for_instances(study_instance_uid=image.study_instance_uid,
                                            search_filters={"SOPInstanceUID": p.sop_instance_uid})
        assert len(found) == 1  # QIDO-RS finds it in the image's study
        ds = client.retrieve_instance(image.study_instance_uid, p.series_instance_uid, p.sop_instance_uid)
        assert dciodvfy_errors(ds, tmp_path / f"{p.kind}-{p.id}.dcm") == []
        if p.kind == "SC":
            assert ds.BurnedInAnnotation == "YES" and ds.Modality == "OT"
            continue
        values = read_sr(ds)  # the values the database holds, read back from the PACS
        expected = {s: getattr(r, f"probability_{s.lower()}") for s in ("L", "R")
                    if getattr(r, f"probability_{s.lower()}") is not None}
        assert {s: v["probability"] for s, v in values.items()} == pytest.approx(expected)
        for v in values.values():
            assert (v["threshold"], v["model"], v["version"]) == (pytest.approx(r.threshold), r.model_name,
                                                                   r.model_version)
            assert v["flagged"] == (v["probability"] >= r.threshold)
            assert f"intended use: {NOTICE}" in v["parameters"]

    again = push_results(factory, model, target_of(orthanc, "dicomweb"), "all")  # the next night: nothing new
    assert (again.results, again.sr, again.sc, again.failed) == (0, 0, 0, 0)


def test_c_store_pushes_only_the_flagged_when_asked(screened, orthanc):
    factory, model = screened["factory"], screened["model"]
    clear_pushes(factory)
    counts = push_results(factory, model, target_of(orthanc, "dimse"), "positive")
    with factory() as session:
        flagged = set(session.scalars(select(ScreeningResult.id).where(ScreeningResult.label == 1)))
        pushes = list(session.scalars(select(ScreeningPush)))
    assert 0 < len(flagged) and counts.sr == counts.sc == len(flagged) and counts.failed == 0
    assert {p.result_id for p in pushes} == flagged and {p.transport for p in pushes} == {"c-store"}
    assert orthanc.instance_count() == 2 * len(flagged)
    assert push_results(factory, model, target_of(orthanc, "dimse"), "none").sr == 0


def test_the_patient_module_reaches_the_sr_and_never_the_database_or_the_logs(screened, orthanc, caplog):
    from dicomweb_client.api import DICOMwebClient

    from tests.privacy_scan import Identifiers

    factory, model = screened["factory"], screened["model"]
    clear_pushes(factory)
    with caplog.at_level(logging.DEBUG):
        push_results(factory, model, target_of(orthanc, "dicomweb"), "positive")
    with factory() as session:
        push, path, study = session.execute(
            select(ScreeningPush, SourceFile.path, DicomImage.study_instance_uid)
            .join(ScreeningResult, ScreeningResult.id == ScreeningPush.result_id)
            .join(DicomImage, DicomImage.id == ScreeningResult.image_id)
            .join(SourceFile, SourceFile.id == DicomImage.source_file_id).where(ScreeningPush.kind == "SR")).first()
    source = pydicom.dcmread(path, stop_before_pixels=True)
    sr = DICOMwebClient(url=orthanc.dicomweb_url).retrieve_instance(study, push.series_instance_uid,
                                                                    push.sop_instance_uid)
    for tag in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyDate"):
        assert str(sr.get(tag)) == str(source.get(tag)) and str(source.get(tag))

    ids = Identifiers(names={str(source.PatientName)}, ids={str(source.PatientID)},
                      birth_dates={str(source.PatientBirthDate)}, accessions={str(source.AccessionNumber)})
    needles = ids.needles()
    db_file = Path(str(factory.kw["bind"].url.database))
    database = b"".join(p.read_bytes() for p in (db_file, db_file.with_name(db_file.name + "-wal")) if p.exists())
    assert needles.search(database) == []  # every table, every column: the SR's patient module was never kept
    assert needles.search(caplog.text.encode()) == []


def test_the_referral_list_reads_the_accession_number_from_the_file_at_list_time(screened):
    from osteo.screening.referrals import list_referrals

    factory = screened["factory"]
    everything = list_referrals(factory)
    flagged = list_referrals(factory, positive=True)
    with factory() as session:
        paths = dict(session.execute(select(DicomImage.study_instance_uid, SourceFile.path)
                                     .join(SourceFile, SourceFile.id == DicomImage.source_file_id)).all())
        screened_n = len(list(session.scalars(select(ScreeningResult.id).where(ScreeningResult.status == "screened"))))
    assert len(everything) == screened_n and 0 < len(flagged) < len(everything)
    assert all(r.flagged and r.probability >= screened["model"].threshold for r in flagged)
    for r in everything:
        assert r.accession_number == str(pydicom.dcmread(paths[r.study_instance_uid]).AccessionNumber)
    newest = max(r.study_date for r in everything)
    assert {r.study_date for r in list_referrals(factory, since=newest)} == {newest}


@pytest.mark.parametrize("transport", ["dicomweb", "dimse"])
def test_a_pacs_that_does_not_answer_is_unavailable_not_a_refusal(transport):
    """A transient fault the task retries (a ConnectionError), never a `failed` row: nothing answers on the port."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    from osteo.pacs.target import PacsTarget, PacsUnavailable
    from osteo.screening.send import send_objects
    from tests.orthanc import free_port

    port = free_port()
    target = PacsTarget("dicomweb", dicomweb_url=f"http://127.0.0.1:{port}/dicom-web", timeout_s=5) \
        if transport == "dicomweb" else PacsTarget("dimse", host="127.0.0.1", port=port, called_aet="NOBODY",
                                                   timeout_s=5)
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, "1.2.3.4"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with pytest.raises(PacsUnavailable) as caught:
        send_objects(target, [ds])
    assert isinstance(caught.value, ConnectionError)
