"""`osteo pacs pull` against a real PACS (Orthanc, tests/orthanc.py) over both transports: the query's date and
modality filters, only the series in scope retrieved, nothing twice, a killed pull resumed, a PACS down in one
line."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.helpers import isolated_settings
from tests.pacs_cohort import make_pacs_cohort

TRANSPORTS = ["dicomweb", "dimse"]
EVER = {"since": dt.date(1990, 1, 1), "until": dt.date(2030, 1, 1)}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, orthanc_module):
    """The cohort's valid files in the module's Orthanc."""
    cohort = make_pacs_cohort(tmp_path_factory.mktemp("pacs-cohort"))
    orthanc_module.load(cohort.files())
    return cohort


def _pull(orthanc, transport: str, home: Path, **kwargs):
    from osteo.pacs.pull import pull_from_settings
    from osteo.settings import session_factory, settings_from

    with isolated_settings(home), settings_from(orthanc.env(transport)) as settings:
        return pull_from_settings(settings, session_factory(settings, create=True), **{**EVER, **kwargs})


def _inbox(home: Path) -> dict[str, bytes]:
    return {p.relative_to(home).as_posix(): p.read_bytes() for p in sorted((home / "data" / "inbox").rglob("*"))
            if p.is_file()}


def _sops(home: Path) -> set[str]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            for p in (home / "data" / "inbox").rglob("*.dcm")}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_query_finds_the_radiograph_studies_of_the_dates(cohort, orthanc_module, transport):
    """QIDO-RS and C-FIND: only studies with a CR or DX series, only of the dates asked (both ends included)."""
    from osteo.pacs.pull import open_transport
    from osteo.pacs.target import pacs_target
    from osteo.settings import settings_from

    dates = cohort.dates()
    since, until = dates[len(dates) // 4], dates[3 * len(dates) // 4]
    with settings_from(orthanc_module.env(transport)) as settings, open_transport(pacs_target(settings)) as t:
        found = t.find_series(since, until, ("CR", "DX"))
        everything = t.find_series(EVER["since"], EVER["until"], ("CR", "DX"))
    rows = {r["study_instance_uid"]: r for r in cohort.rows}
    assert {s.study_uid for s in found} == {u for u, r in rows.items() if r["modality"] in ("CR", "DX")
                                            and since.isoformat() <= r["study_date"] <= until.isoformat()}
    assert {s.modality for s in everything} == {"CR", "DX"}  # the hip CT and MR are never asked for
    assert len({s.study_uid for s in everything}) == sum(r["modality"] in ("CR", "DX") for r in rows.values())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_pull_retrieves_the_series_in_scope_once(cohort, orthanc_module, transport, tmp_path):
    first = _pull(orthanc_module, transport, tmp_path)
    assert _sops(tmp_path) == cohort.in_scope()
    assert first.retrieved == len(cohort.in_scope()) and first.already_retrieved == 0
    assert first.out_of_scope == len(cohort.radiographs_out_of_scope())
    assert first.out_of_scope_by_reason == {"body part CHEST": 1, "body part KNEE": 1, "unknown body part": 1}
    assert first.found == first.retrieved + first.out_of_scope
    second = _pull(orthanc_module, transport, tmp_path)
    assert (second.retrieved, second.already_retrieved) == (0, first.retrieved)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_pull_of_some_dates_retrieves_those_only(cohort, orthanc_module, transport, tmp_path):
    dates = cohort.dates()
    since, until = dates[1], dates[len(dates) // 2]
    counts = _pull(orthanc_module, transport, tmp_path, since=since, until=until)
    assert _sops(tmp_path) == cohort.in_scope(since, until) and counts.retrieved == len(cohort.in_scope(since, until))
    assert (counts.since, counts.until) == (since.isoformat(), until.isoformat())


class Killed(Exception):
    pass


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_killed_pull_run_again_equals_one_clean_pull(cohort, orthanc_module, transport, tmp_path):
    """Stopped after its third file (as a kill would stop it, between two writes), the pull run again fetches
    only the rest: the inbox and the records are those of one clean pull, and no temporary file is left."""
    from sqlalchemy import select

    from db.pacs import PacsInstance
    from osteo.settings import session_factory, settings_from

    written = []

    def kill_after_three(path):
        written.append(path)
        if len(written) == 3:
            raise Killed

    with pytest.raises(Killed):
        _pull(orthanc_module, transport, tmp_path / "killed", after_write=kill_after_three)
    again = _pull(orthanc_module, transport, tmp_path / "killed")
    assert (again.retrieved, again.already_retrieved) == (len(cohort.in_scope()) - 3, 3)
    _pull(orthanc_module, transport, tmp_path / "clean")

    def recorded(home):
        with isolated_settings(home), settings_from({}) as s, session_factory(s)() as session:
            return sorted(session.execute(select(PacsInstance.sop_instance_uid, PacsInstance.transport)).all())

    killed, clean = _inbox(tmp_path / "killed"), _inbox(tmp_path / "clean")
    assert sorted(killed) == sorted(clean) and all(not Path(p).name.startswith(".") for p in killed)
    assert killed == clean
    assert recorded(tmp_path / "killed") == recorded(tmp_path / "clean")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_pacs_that_is_down_is_one_line(transport, tmp_path, capsys):
    from osteo_cli.main import main
    from tests.orthanc import free_port

    down = {"dicomweb": {"OSTEO_PACS_DICOMWEB_URL": f"http://127.0.0.1:{free_port()}/dicom-web"},
            "dimse": {"OSTEO_PACS_DICOMWEB_URL": None, "OSTEO_PACS_HOST": "127.0.0.1",
                      "OSTEO_PACS_PORT": str(free_port()), "OSTEO_PACS_AET": "NOBODY"}}[transport]
    with isolated_settings(tmp_path, **{k: v for k, v in down.items() if v}):
        from osteo.settings import settings_from

        with settings_from(down):
            assert main(["pacs", "pull", "--since", "2020-01-01"]) == 2
            err = capsys.readouterr().err
            assert main(["pacs", "pull", "--json"]) == 2
            out = json.loads(capsys.readouterr().out)
    assert err.count("\n") == 1 and err.startswith("osteo: the PACS") and "did not answer" in err
    assert out["reason"] == "pacs_unavailable" and not out["ok"]


def test_no_pacs_configured_is_refused(tmp_path, capsys):
    from osteo.settings import settings_from
    from osteo_cli.main import main

    unset = dict.fromkeys(("OSTEO_PACS_DICOMWEB_URL", "OSTEO_PACS_HOST", "OSTEO_PACS_PORT", "OSTEO_PACS_AET"))
    with isolated_settings(tmp_path), settings_from(unset):
        assert main(["pacs", "pull", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["reason"] == "no_pacs"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_hierarchical_queries_find_the_same_series(cohort, orthanc_module, transport):
    """A PACS that refuses a query without a study UID (or finds nothing by it) is asked study, then series,
    then instance: the same series, and the same instances once listed."""
    from osteo.pacs.pull import open_transport
    from osteo.pacs.target import pacs_target
    from osteo.settings import settings_from

    with settings_from(orthanc_module.env(transport)) as settings, open_transport(pacs_target(settings)) as t:
        flat = t._find_by_instances(EVER["since"], EVER["until"], ("CR", "DX"))
        tree = t._find_by_studies(EVER["since"], EVER["until"], ("CR", "DX"))
        listed = {s.series_uid: tuple(t.instance_uids(s)) for s in tree}
    assert sorted((s.study_uid, s.series_uid, s.modality, s.body_part, s.instances) for s in flat) == \
        sorted((s.study_uid, s.series_uid, s.modality, s.body_part, s.instances) for s in tree)
    assert {s.series_uid: s.sop_uids for s in flat} == listed
