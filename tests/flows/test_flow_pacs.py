"""The nightly pulls from the PACS before its refresh: the refresh reads the inbox the pull filed into, and the
next night pulls nothing; with no PACS configured the pull is a no-op and the night goes on."""

from __future__ import annotations

import pytest

from tests.helpers import isolated_settings
from tests.pacs_cohort import make_pacs_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, orthanc_module):
    cohort = make_pacs_cohort(tmp_path_factory.mktemp("nightly-pacs"))
    orthanc_module.load(cohort.files())
    return cohort


def test_the_nightly_pulls_into_the_inbox_and_refreshes_it(cohort, orthanc_module, tmp_path, prefect_harness):
    from flows.nightly import nightly_flow
    from osteo.settings import settings_from

    # a lookback long enough for every synthetic study date
    env = {**orthanc_module.env("dicomweb"), "OSTEO_PACS_LOOKBACK_DAYS": "20000"}
    with isolated_settings(tmp_path), settings_from(env):
        first = nightly_flow(dexa_dir=str(cohort.root / "dexa"), annotations_dir=str(cohort.root / "annotations"),
                             train=False)
        second = nightly_flow(dexa_dir=str(cohort.root / "dexa"), train=False)
    assert first["pull"]["retrieved"] == len(cohort.in_scope()) and first["pull"]["into"] == str(
        tmp_path / "data" / "inbox")
    this_run = first["refresh"]["this_run"]
    assert this_run["images"] == len(cohort.in_scope()) and this_run["out_of_scope"] == 0  # only what was pulled
    assert second["pull"]["retrieved"] == 0 and second["pull"]["already_retrieved"] == len(cohort.in_scope())


def test_without_a_pacs_the_nightly_pull_does_nothing(cohort, tmp_path, prefect_harness):
    from flows.nightly import nightly_flow
    from osteo.settings import settings_from

    unset = dict.fromkeys(("OSTEO_PACS_DICOMWEB_URL", "OSTEO_PACS_HOST", "OSTEO_PACS_PORT", "OSTEO_PACS_AET"))
    with isolated_settings(tmp_path), settings_from(unset):
        result = nightly_flow(dicom_dir=str(cohort.root / "dicom"), dexa_dir=str(cohort.root / "dexa"), train=False)
    assert result["pull"] is None and result["refresh"]["this_run"]["images"] == len(cohort.in_scope())


def test_a_pacs_that_is_down_is_retried_then_the_night_goes_on(tmp_path, prefect_harness, monkeypatch):
    """PacsUnavailable is a transient fault for the one retry policy (a ConnectionError): retried, then a warning
    and the nightly's next step (the real task, its retry delays set to 0 for the test)."""
    from prefect import flow

    import flows.pacs
    from osteo.settings import settings_from
    from tasks.pacs import pull_from_pacs
    from tasks.policy import TRANSIENT
    from tests.orthanc import free_port

    task = pull_from_pacs.with_options(retry_delay_seconds=0)
    monkeypatch.setattr(flows.pacs, "pull_from_pacs", task)

    @flow
    def night() -> dict | None:
        return flows.pacs.pull_before_refresh(str(tmp_path / "inbox"))

    down = {"OSTEO_PACS_DICOMWEB_URL": f"http://127.0.0.1:{free_port()}/dicom-web"}
    with isolated_settings(tmp_path), settings_from(down):
        result = night()
    from osteo.pacs.target import PacsUnavailable

    assert "did not answer" in result["error"] and task.retries == 3 and issubclass(PacsUnavailable, TRANSIENT)
