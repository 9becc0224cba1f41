"""The screening flow (flows/screen.py) on a refreshed site with a registered classifier (the audit run's, copied
so that the session's fixture is left as it was): every in-scope hip image screened once by the version
OSTEO_SCREEN_MODEL names, the SR and SC of each screened film pushed to Orthanc; the next night screens 0 and
pushes 0; no champion, nothing done."""

from __future__ import annotations

import shutil

import pytest
from sqlalchemy import func, select

from tests.helpers import isolated_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(audit_run, tmp_path_factory):
    home = tmp_path_factory.mktemp("screen-site") / "home"
    shutil.copytree(audit_run["home"], home)
    return home, audit_run["ref"].split("/")[1]


def test_the_flow_screens_every_image_once_and_pushes_what_it_screened(site, orthanc):
    from db.models import DicomImage
    from db.screening import ScreeningResult
    from flows.screen import screen_flow
    from osteo.settings import session_factory

    home, version = site
    with isolated_settings(home, OSTEO_SCREEN_MODEL=f"models:/osteo-classifier/{version}", OSTEO_SCREEN_PUSH="all",
                           OSTEO_SCREEN_BATCH_SIZE="16", **orthanc.env("dicomweb")) as settings:
        factory = session_factory(settings)
        with factory() as session:
            images = session.scalar(select(func.count(DicomImage.id)))
        first = screen_flow()
        assert first.champion == {"model": f"osteo-classifier/{version}", "localiser": None}
        t = first.this_run
        assert t.images == images > 16 and t.screened > 0 and t.not_located > 0  # no localiser: people's boxes only
        assert t.screened + t.not_located + sum(n for _, n in t.excluded) == images
        assert (first.pushed.sr, first.pushed.sc, first.pushed.failed) == (t.screened, t.screened, 0)
        assert orthanc.instance_count() == 2 * t.screened
        with factory() as session:
            assert session.scalar(select(func.count(ScreeningResult.id))) == images

        second = screen_flow()  # the next night: nothing new to screen or push
        assert (second.this_run.images, second.already_screened, second.pushed.sr) == (0, images, 0)
        assert orthanc.instance_count() == 2 * t.screened


def test_without_a_champion_nothing_is_done(site):
    from flows.screen import screen_flow

    home, _ = site
    with isolated_settings(home, OSTEO_SCREEN_MODEL="models:/osteo-classifier@nobody"):
        report = screen_flow()
    assert report.champion is None and report.this_run.images == 0 and "nothing screened" in report.summary()


def test_outcomes_are_logged_on_the_version_and_the_list_reads_the_files(site, capsys):
    """After the flow: `osteo screen outcomes` links the site's DEXA exams and tags the version with the figures;
    `osteo screen list` gives each screened film with its accession number."""
    import json

    from mlflow.tracking import MlflowClient

    from osteo_cli.main import main

    home, version = site
    with isolated_settings(home, OSTEO_SCREEN_MODEL=f"models:/osteo-classifier/{version}") as settings:
        assert main(["screen", "outcomes", "--json"]) == 0
        o = json.loads(capsys.readouterr().out)
        assert o["model"] == f"osteo-classifier/{version}" and o["screened"] > 0
        assert o["with_dexa"] == o["confirmed"] + o["false_positive"] + o["missed"] + o["true_negative"]
        assert o["reference"] in ("validation", "test year") and o["drift"]
        tags = MlflowClient(settings.resolved_tracking_uri()).get_model_version("osteo-classifier", version).tags
        assert float(tags["screening_screened"]) == o["screened"] and "screening_psi_max" in tags

        assert main(["screen", "list", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert listed["count"] == o["screened"] and all(r["accession_number"] for r in listed["results"])
