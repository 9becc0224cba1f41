"""The loop end to end against a real PACS (Orthanc) on a synthetic hospital (tests/pacs_night.py: pull -> refresh ->
screen -> push, as the nightly runs them): night 1 pulls every in-scope study and only those, screens every
in-scope image, and leaves in each screened study one SR and one SC per screened film, found there by QIDO-RS and
accepted by dciodvfy; night 2 pulls, screens and pushes nothing; a night killed (SIGKILL, tests/pacs_kill.py) during
its pull or its push, run again, leaves the site and the PACS as one clean night does; and `osteo screen outcomes`'
figures equal what the hospital's truth gives, exactly.

A small hospital in `make test`; the issue's 300 patients with OSTEO_TEST_PACS_PATIENTS=300 (docs/production.md)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from osteo.settings import REPO_ROOT
from tests.orthanc import start_orthanc
from tests.pacs_night import (
    hospital_size,
    make_hospital,
    median_threshold,
    pacs_objects,
    run_night,
    site_factory,
    site_state,
)
from tests.screening_support import onnx_classifier, screening_model


@pytest.fixture(scope="module")
def hospital(tmp_path_factory):
    root = tmp_path_factory.mktemp("pacs-night")
    cohort = make_hospital(root / "cohort", hospital_size())
    classifier = onnx_classifier(root)
    model = screening_model(classifier, threshold=median_threshold(classifier, cohort))
    return root, cohort, model


@pytest.fixture(scope="module")
def clean(hospital):
    """A site's two clean nights, with what its PACS holds after each."""
    root, cohort, model = hospital
    with start_orthanc(root / "clean-pacs") as orthanc:
        orthanc.load(cohort.files())
        loaded = orthanc.instance_count()
        first = run_night(root / "clean", cohort, model, orthanc)
        state = site_state(root / "clean", orthanc)
        second = run_night(root / "clean", cohort, model, orthanc)
        after_second = site_state(root / "clean", orthanc)
        found = {kind: qido_objects(orthanc, root / "clean", kind) for kind in ("SR", "SC")}
        checked = dciodvfy_sample(orthanc, root / "clean", root / "dciodvfy")
    # the figures of the run (pytest --basetemp DIR: DIR/pacs-night0/nights.json)
    (root / "nights.json").write_text(json.dumps({"patients": hospital_size(), "in_scope": len(cohort.in_scope()),
                                                  "night1": first.to_dict(), "night2": second.to_dict()}, indent=1))
    return {"first": first, "second": second, "state": state, "after_second": after_second, "loaded": loaded,
            "found": found, "dciodvfy": checked}


def screened_by_study(home: Path) -> dict[str, set[str]]:
    from db.models import DicomImage
    from db.screening import ScreeningPush, ScreeningResult

    with site_factory(home)() as session:
        rows = session.execute(select(ScreeningPush.study_instance_uid, ScreeningPush.kind,
                                      ScreeningPush.sop_instance_uid)
                               .join(ScreeningResult, ScreeningResult.id == ScreeningPush.result_id)
                               .join(DicomImage, DicomImage.id == ScreeningResult.image_id)).all()
    out: dict[str, set[str]] = {}
    for study, kind, sop in rows:
        out.setdefault(f"{study}|{kind}", set()).add(sop)
    return out


def qido_objects(orthanc, home: Path, kind: str) -> dict[str, set[str]]:
    """Per study the push rows name, the SOP instance UIDs of that kind QIDO-RS finds in it."""
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=orthanc.dicomweb_url)
    modality = {"SR": "SR", "SC": "OT"}[kind]
    studies = {key.split("|")[0] for key in screened_by_study(home) if key.endswith(f"|{kind}")}
    return {study: {str(d["00080018"]["Value"][0]) for d in client.search_for_instances(
        study_instance_uid=study, search_filters={"Modality": modality})} for study in studies}


def dciodvfy_sample(orthanc, home: Path, folder: Path) -> dict[str, list[str]]:
    """dciodvfy's errors on the first SR and the first SC pushed, retrieved by WADO-RS."""
    from dicomweb_client.api import DICOMwebClient

    from tests.osteo.test_screening_push import dciodvfy_errors

    client = DICOMwebClient(url=orthanc.dicomweb_url)
    folder.mkdir(parents=True, exist_ok=True)
    errors = {}
    for key, sops in sorted(screened_by_study(home).items()):
        study, kind = key.split("|")
        if kind in errors:
            continue
        ds = client.retrieve_study(study)  # every instance; the pushed one picked by its UID
        pushed = [d for d in ds if str(d.SOPInstanceUID) in sops]
        errors[kind] = dciodvfy_errors(pushed[0], folder / f"{kind}.dcm")
    return errors


def test_night_one_pulls_the_studies_in_scope_and_screens_and_pushes_each_film(hospital, clean):
    _, cohort, _ = hospital
    first, state = clean["first"], clean["state"]
    in_scope = cohort.in_scope()
    assert first.pull.retrieved == len(in_scope) and first.pull.already_retrieved == 0
    assert {sop for sop, _ in state["pulled"]} == in_scope  # every in-scope instance, and only those
    assert first.pull.out_of_scope == len(cohort.radiographs_out_of_scope())
    assert first.images == len(in_scope) == len(state["results"]) and first.already == 0
    statuses = Counter(r[1] for r in state["results"])
    assert statuses["screened"] == first.screened > 0
    assert first.push.failed == 0 and first.push.sr == first.push.sc == first.screened
    pushed = {(p[0], p[1]) for p in state["pushes"]}
    assert pushed == {(r[0], k) for r in state["results"] if r[1] == "screened" for k in ("SR", "SC")}
    assert {p[5] for p in state["pushes"]} == {"pushed"}
    # in the PACS: one SR and one SC per screened film, in the film's study, found there by QIDO-RS
    image_study = {r["sop_instance_uid"]: r["study_instance_uid"] for r in cohort.rows}
    assert all(p[4] == image_study[p[0]] for p in state["pushes"])
    assert state["pacs_instances"] == clean["loaded"] + 2 * first.screened
    assert Counter(m for _, m, _ in state["pacs"]) == {"SR": first.screened, "OT": first.screened}
    by_study = screened_by_study_of(state)
    for kind in ("SR", "SC"):
        assert clean["found"][kind] == {s: sops for (s, k), sops in by_study.items() if k == kind}
    assert clean["dciodvfy"] == {"SR": [], "SC": []}


def screened_by_study_of(state: dict) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for _image, kind, sop, _series, study, _status in state["pushes"]:
        out.setdefault((study, kind), set()).add(sop)
    return out


def test_night_two_pulls_screens_and_pushes_nothing(clean):
    second = clean["second"]
    assert (second.pull.retrieved, second.pull.already_retrieved) == (0, clean["first"].pull.retrieved)
    assert (second.images, second.screened, second.already) == (0, 0, len(clean["state"]["results"]))
    assert (second.push.sr, second.push.sc, second.push.failed) == (0, 0, 0)
    assert clean["after_second"] == clean["state"]


def killed_night(step: str, home: Path, hospital, orthanc, at: int) -> subprocess.CompletedProcess:
    """A night in a process of its own that SIGKILLs itself at the `at`-th pulled file or push (tests/pacs_kill.py)."""
    root, cohort, model = hospital
    spec = {"home": str(home), "cohort": str(cohort.root), "model_dir": str(root), "threshold": model.threshold,
            "env": orthanc.env("dicomweb"), "at": at}
    return subprocess.run([sys.executable, "-m", "tests.pacs_kill", step, json.dumps(spec)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)


def temporaries(inbox: Path) -> list[Path]:
    return sorted(inbox.rglob(".*.tmp"))


def test_a_night_killed_during_its_pull_then_run_again_equals_one_clean_night(hospital, clean):
    """kill -9 while the fourth file is half written (three whole before it, none recorded yet): the next night
    fetches again what was not recorded, the half-written temporary is never ingested, and once it is stale (an
    hour: a writer may still be at work on a younger one) the pull's sweep removes it; the site and the PACS are
    then as after one clean night."""
    from osteo.pacs.inbox import sweep_stale_temporaries

    root, cohort, model = hospital
    home = root / "pull-killed"
    with start_orthanc(root / "pull-killed-pacs") as orthanc:
        orthanc.load(cohort.files())
        died = killed_night("pull", home, hospital, orthanc, at=4)
        assert died.returncode == -signal.SIGKILL, died.stderr[-3000:]
        inbox = home / "data" / "inbox"
        left = temporaries(inbox)
        assert len(left) == 1 and len([p for p in inbox.rglob("*.dcm") if not p.name.startswith(".")]) == 3
        assert site_state(home, orthanc)["pulled"] == []  # killed before its first record: nothing is known
        again = run_night(home, cohort, model, orthanc)
        assert temporaries(inbox) == left  # young: left for its writer, and the refresh skipped it
        assert sweep_stale_temporaries(inbox, now=time.time() + 3601) == 1
        state = site_state(home, orthanc)
    assert (again.pull.retrieved, again.pull.already_retrieved) == (len(cohort.in_scope()), 0)
    assert state == clean["state"]


def test_a_night_killed_during_its_push_then_run_again_equals_one_clean_night(hospital, clean):
    """kill -9 after the PACS took the second film's SR and SC and before the site recorded them (the worst
    place): the next run sends them again under the same UIDs, and the PACS holds each once."""
    root, cohort, model = hospital
    home = root / "push-killed"
    with start_orthanc(root / "push-killed-pacs") as orthanc:
        orthanc.load(cohort.files())
        died = killed_night("push", home, hospital, orthanc, at=2)
        assert died.returncode == -signal.SIGKILL, died.stderr[-3000:]
        assert len(pacs_objects(orthanc)) == 4  # two films' SR and SC in the PACS, one of them unrecorded
        again = run_night(home, cohort, model, orthanc)
        state = site_state(home, orthanc)
    assert again.images == 0 and again.push.sr == clean["first"].screened - 1
    assert state == clean["state"]


def test_outcomes_equal_what_the_truth_gives_exactly(hospital, clean):
    """`osteo screen outcomes`' figures (osteo.screening.outcomes, what the command prints) against the truth's
    follow-up DEXA of each screened film and the label osteo stored for it."""
    from osteo.screening.outcomes import screening_outcomes

    root, cohort, model = hospital
    truth = {r["sop_instance_uid"]: r for r in cohort.rows}
    screened = [r for r in clean["state"]["results"] if r[1] == "screened"]
    followed = [(truth[sop]["followup_confirmed"], label) for sop, _, label, *_ in screened
                if truth[sop]["followup_confirmed"] != ""]
    tp = sum(c == "1" and label == 1 for c, label in followed)
    fp = sum(c == "0" and label == 1 for c, label in followed)
    fn = sum(c == "1" and label == 0 for c, label in followed)
    tn = sum(c == "0" and label == 0 for c, label in followed)
    assert tp and fp + fn + tn  # the figures are not vacuous: flagged films confirmed, and films that are not

    o = screening_outcomes(site_factory(root / "clean"), model.name, model.version, window_days=183,
                           osteoporosis_t=-2.5)
    assert (o.screened, o.flagged, o.with_dexa) == (len(screened), sum(r[2] == 1 for r in screened), len(followed))
    assert (o.confirmed, o.false_positive, o.missed, o.true_negative) == (tp, fp, fn, tn)
    assert o.ppv == tp / (tp + fp) and o.sensitivity == (tp / (tp + fn) if tp + fn else None)
    assert o.specificity == (tn / (tn + fp) if tn + fp else None)
    # the screening population is among them: films with no DEXA before, confirmed or not after
    groups = Counter(truth[sop]["screening"] for sop, *_ in screened)
    assert groups["dexa_in_window"] and groups["dexa_after_window"] + groups["no_dexa"]
