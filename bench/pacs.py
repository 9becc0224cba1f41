"""The PACS pull (`osteo pacs pull`, osteo/pacs/pull.py) against a plain dicomweb-client retrieve loop of the
same instances, both from an Orthanc on 127.0.0.1 (bench/orthanc.py) holding the cohort.

Ours is the whole pull: the QIDO-RS queries (studies, series, instances), the scope filter, the look-up of what
is held, each instance's WADO-RS retrieve, its atomic write (fsync) and its record. The baseline is what a user
would write who already knew the instances: retrieve_instance and save_as for each, nothing else. Both write
into a fresh folder each repeat (ours: a fresh database too, so it retrieves everything). The DIMSE pull (C-FIND
and C-GET) is timed against the same baseline, for information."""

from __future__ import annotations

import time
import urllib.error
from pathlib import Path

from bench.common import isolated_home, row, target
from bench.orthanc import start_orthanc

GOAL = 0.9  # issue 27: the pull at least 0.9x the plain loop's instances per second


def run(dicom_dir: Path, scratch: Path, repeats: int) -> list[dict]:
    with start_orthanc(scratch / "pacs-orthanc") as orthanc:
        for path in sorted(p for p in dicom_dir.rglob("*") if p.is_file()):
            try:
                orthanc.load([path])
            except urllib.error.HTTPError:  # the cohort's junk (not DICOM, truncated): no PACS holds it
                pass
        instances = _in_scope(orthanc, scratch)
        n, held = len(instances), orthanc.instance_count()
        times: dict[str, list[float]] = {"web": [], "plain": [], "dimse": []}
        for i in range(repeats):  # interleaved: a busy moment of the shared machine hits each alike
            times["web"].append(_timed_pull(orthanc, "dicomweb", scratch / f"pacs-web-{i}"))
            times["plain"].append(_timed_plain(orthanc.dicomweb_url, instances, scratch / f"pacs-plain-{i}"))
            times["dimse"].append(_timed_pull(orthanc, "dimse", scratch / f"pacs-dimse-{i}"))
        t_web, t_plain, t_dimse = (min(times[k]) for k in ("web", "plain", "dimse"))
    work = f"{n} in-scope instances of the {held} in Orthanc, best of {repeats}"
    return [
        row("PACS pull (DICOMweb: QIDO-RS, WADO-RS)", stage="pacs", ours=n / t_web, baseline=n / t_plain,
            unit="instances/s", work=work, goal=target("ratio", ">=", GOAL),
            note="baseline: a dicomweb-client retrieve_instance + save_as loop over the same instances"),
        row("PACS pull (DIMSE: C-FIND, C-GET)", stage="pacs", ours=n / t_dimse, baseline=n / t_plain,
            unit="instances/s", work=work, note="against the same DICOMweb loop, for information"),
    ]


def _timed_pull(orthanc, transport: str, home: Path) -> float:
    """Seconds of one pull into a fresh inbox and database (its schema made before the clock starts)."""
    from osteo.pacs.pull import pull_from_target
    from osteo.pacs.target import pacs_target
    from osteo.settings import session_factory, settings_from

    with isolated_home(home), settings_from({**orthanc.env(transport), "OSTEO_PACS_LOOKBACK_DAYS": "20000"}) as s:
        sessions = session_factory(s, create=True)
        target = pacs_target(s)
        if target is None:
            raise RuntimeError(f"the Orthanc fixture's settings name no PACS ({transport})")
        t0 = time.perf_counter()
        counts = pull_from_target(s, target, sessions, into=str(home / "inbox"))
        seconds = time.perf_counter() - t0
    assert counts.already_retrieved == 0 and counts.retrieved > 0, counts
    return seconds


def _in_scope(orthanc, scratch: Path) -> list[tuple[str, str, str]]:
    """(study, series, SOP) of what the pull retrieves, read back from a first pull's records."""
    from sqlalchemy import select

    from db.pacs import PacsInstance
    from osteo.settings import session_factory

    home = scratch / "pacs-first"
    _timed_pull(orthanc, "dicomweb", home)
    with isolated_home(home) as s, session_factory(s)() as session:
        return sorted(session.execute(select(PacsInstance.study_instance_uid, PacsInstance.series_instance_uid,
                                             PacsInstance.sop_instance_uid)).all())


def _timed_plain(url: str, instances: list[tuple[str, str, str]], out: Path) -> float:
    from dicomweb_client import DICOMwebClient

    client = DICOMwebClient(url)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    for study, series, sop in instances:
        ds = client.retrieve_instance(study, series, sop, media_types=(("application/dicom", "*"),))
        ds.save_as(out / f"{sop}.dcm", enforce_file_format=True)
    return time.perf_counter() - t0
