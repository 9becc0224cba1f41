"""A synthetic hospital's night against a real PACS (Orthanc), for tests/flows/test_pacs_night.py (not a test
module): the nightly's steps as the flows call them, in this process, with the screening tests' model (an
untrained ResNet18 on ONNX Runtime, a localiser double): pull the in-scope studies into the inbox
(osteo.pacs.pull), refresh it (ingest, pair, label, export), screen what the version has not screened, push the
SR and SC of every screened film (OSTEO_SCREEN_PUSH=all); and what a site holds afterwards, to compare two sites.

The hospital's size is OSTEO_TEST_PACS_PATIENTS (default 10; the issue's figures: 300)."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tests.helpers import isolated_settings, tree_digest
from tests.pacs_cohort import PacsCohort

SEED = 7
SINCE, UNTIL = dt.date(1990, 1, 1), dt.date(2030, 1, 1)  # every study the hospital has


def hospital_size() -> int:
    return int(os.environ.get("OSTEO_TEST_PACS_PATIENTS", "10"))


def make_hospital(root: Path, patients: int) -> PacsCohort:
    from osteo.synth import generate_cohort

    generate_cohort(root, patients=patients, seed=SEED, workers=2, screening=True)
    with (root / "truth.csv").open(newline="") as fh:
        return PacsCohort(root, list(csv.DictReader(fh)))


def median_threshold(classifier, cohort: PacsCohort) -> float:
    """The toy classifier's median probability on the annotators' boxes: an operating threshold that flags about
    half the films, so that outcomes have flagged and unflagged films on both sides of the DEXA."""
    from osteo.etl.imaging import load_dicom, neck_crop, prepare_display

    crops = []
    for row in cohort.rows:
        if row["expected_scope"] != "in_scope" or row["annotated"] != "1":
            continue
        display = prepare_display(load_dicom(str(cohort.root / row["file"]))[0]).display_u8()
        crops += [neck_crop(display, tuple(box), side, size=64, margin=0.15)
                  for side, box in json.loads(row["boxes"]).items()]
    probs = sorted(float(r["probability"]) for r in classifier.predict(crops, heatmaps=False))
    return probs[len(probs) // 2]


@dataclass
class Night:
    pull: Any = None  # osteo.pacs.pull.PullCounts
    images: int = 0  # screened this night (every status)
    already: int = 0
    screened: int = 0
    push: Any = None  # osteo.screening.report.PushCounts
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each step (the closing figures)

    def to_dict(self) -> dict:
        return {"pull": self.pull.to_dict(), "images": self.images, "already": self.already,
                "screened": self.screened, "push": self.push.to_dict(), "seconds": self.seconds}


def run_night(home: Path, cohort: PacsCohort, model, orthanc, *, after_write=None) -> Night:
    """One night of the site in `home` against `orthanc`: pull -> refresh -> screen -> push (module doc). An
    exception raised by `after_write` (after a file is written) or by the push stops it, as a kill would."""
    from osteo.ingest import refresh
    from osteo.pacs.pull import pull_from_settings
    from osteo.pacs.target import pacs_target
    from osteo.screening.plan import images_to_screen
    from osteo.screening.push import push_results
    from osteo.screening.score import screen_images
    from osteo.settings import session_factory, settings_from
    from osteo_common.chunks import batched

    night = Night()
    t = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal t
        night.seconds[step] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()

    with isolated_settings(home), settings_from(orthanc.env("dicomweb")) as settings:
        factory = session_factory(settings, create=True)
        night.pull = pull_from_settings(settings, factory, since=SINCE, until=UNTIL, after_write=after_write)
        lap("pull")
        key, inbox = settings.resolved_pseudonym_key(), settings.pacs_inbox
        refresh.ingest_dicom(factory, refresh.discover(inbox), key, workers=1)
        refresh.ingest_dexa(factory, refresh.discover(cohort.root / "dexa", (".csv", ".txt")), key, settings)
        refresh.ingest_annotations(factory, refresh.discover(cohort.root / "annotations", (".xml",)))
        refresh.pair_and_label(factory, settings)
        refresh.export_images(factory, refresh.plan_exports(factory, settings), settings, workers=1)
        lap("refresh")
        todo, night.already = images_to_screen(factory, model.name, model.version)
        night.images = len(todo)
        for batch in batched(todo, settings.screen_batch_size):
            night.screened += screen_images(factory, model, list(batch), metal_threshold=settings.metal_threshold,
                                            blur_threshold=settings.blur_threshold).screened
        lap("screen")
        night.push = push_results(factory, model, pacs_target(settings), "all")
        lap("push")
    return night


def site_factory(home: Path):
    from osteo.settings import session_factory, settings_from

    with isolated_settings(home), settings_from({}) as settings:
        return session_factory(settings)


def site_state(home: Path, orthanc) -> dict:
    """What a site and its PACS hold after its nights, without row ids and times: the inbox's files, the pull's
    records, each image's result, each push, and the screening objects in the PACS."""
    from db.models import DicomImage
    from db.pacs import PacsInstance
    from db.screening import ScreeningPush, ScreeningResult

    with site_factory(home)() as session:
        pulled = sorted(session.execute(select(PacsInstance.sop_instance_uid, PacsInstance.transport)).all())
        results = sorted(session.execute(select(
            DicomImage.sop_instance_uid, ScreeningResult.status, ScreeningResult.label, ScreeningResult.probability,
            ScreeningResult.box_l, ScreeningResult.box_r, ScreeningResult.side)
            .join(DicomImage, DicomImage.id == ScreeningResult.image_id)).all(), key=repr)
        pushes = sorted(session.execute(select(
            DicomImage.sop_instance_uid, ScreeningPush.kind, ScreeningPush.sop_instance_uid,
            ScreeningPush.series_instance_uid, ScreeningPush.study_instance_uid, ScreeningPush.status)
            .join(ScreeningResult, ScreeningResult.id == ScreeningPush.result_id)
            .join(DicomImage, DicomImage.id == ScreeningResult.image_id)).all())
    return {"inbox": tree_digest(home / "data" / "inbox"), "pulled": pulled,
            "results": [tuple(r) for r in results], "pushes": [tuple(p) for p in pushes],
            "pacs": pacs_objects(orthanc), "pacs_instances": orthanc.instance_count()}


def pacs_objects(orthanc, modalities: tuple[str, ...] = ("SR", "OT")) -> list[tuple[str, str, str]]:
    """(study UID, modality, SOP instance UID) of every instance of the screening's series in the PACS."""
    out = []
    for series in orthanc.get("/series?expand"):
        if series["MainDicomTags"].get("Modality") not in modalities:
            continue
        study = orthanc.get(f"/studies/{series['ParentStudy']}")["MainDicomTags"]["StudyInstanceUID"]
        for instance in orthanc.get(f"/series/{series['ID']}/instances"):
            out.append((study, series["MainDicomTags"]["Modality"], instance["MainDicomTags"]["SOPInstanceUID"]))
    return sorted(out)
