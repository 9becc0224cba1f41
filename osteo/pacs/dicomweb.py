"""The PACS over DICOMweb (dicomweb-client): studies of a date range and modality (QIDO-RS), their series and
instances, and each instance retrieved as it is stored (WADO-RS, `transfer-syntax=*`: never transcoded).

One instance-level query per modality finds the range's instances with their series' attributes (2 requests,
not one per study and series: the pull's requests are then the retrieves); a PACS that refuses a query without
a study (a 4xx), or answers it with nothing, is asked study, then series, then instance, as every PACS
answers. Every page of an answer is read (`_pages`: dicomweb-client's get_remaining never ends on a server
that answers an offset past the end with the first page, as Orthanc 1.10 does)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import BytesIO
from typing import Any

import requests

from osteo.errors import UserError
from osteo.pacs.found import SeriesFound
from osteo.pacs.target import PacsTarget, PacsUnavailable

ORIGINAL = (("application/dicom", "*"),)  # the stored transfer syntax
PAGE = 1000  # results asked for per QIDO request


def _value(record: dict, tag: str, default: Any = "") -> Any:
    values = record.get(tag, {}).get("Value") or [default]
    return values[0]


def date_range(since: dt.date, until: dt.date) -> str:
    return f"{since:%Y%m%d}-{until:%Y%m%d}"


class DicomwebTransport:
    name = "dicomweb"

    def __init__(self, target: PacsTarget, session: requests.Session | None = None):
        from dicomweb_client import DICOMwebClient

        self.target, self.session = target, session or requests.Session()
        self.client = DICOMwebClient(target.dicomweb_url, session=self.session, timeout=target.timeout_s)
        self.client.set_http_retry_params(retry=False)  # the task's policy retries, with its backoff

    def find_series(self, since: dt.date, until: dt.date, modalities: tuple[str, ...]) -> list[SeriesFound]:
        try:
            found = self._find_by_instances(since, until, modalities)
        except UserError:  # refused without a study UID
            found = []
        # nothing: refused, or a PACS that answers a query without a study with no match
        return found or self._find_by_studies(since, until, modalities)

    def _find_by_instances(self, since: dt.date, until: dt.date, modalities: tuple[str, ...]) -> list[SeriesFound]:
        series: dict[str, list[dict]] = {}
        fields = ["BodyPartExamined", "SeriesDescription", "StudyDescription"]
        for modality in modalities:
            for r in self._pages(self.client.search_for_instances, "00080018", fields=fields,
                                 search_filters={"StudyDate": date_range(since, until), "Modality": modality}):
                series.setdefault(_value(r, "0020000E"), []).append(r)
        return [SeriesFound(_value(rs[0], "0020000D"), uid, str(_value(rs[0], "00080060")),
                            str(_value(rs[0], "00180015")), len(rs),
                            (str(_value(rs[0], "0008103E")), str(_value(rs[0], "00081030"))),
                            tuple(sorted({_value(r, "00080018") for r in rs})))
                for uid, rs in sorted(series.items())]

    def _find_by_studies(self, since: dt.date, until: dt.date, modalities: tuple[str, ...]) -> list[SeriesFound]:
        studies: dict[str, str] = {}  # study UID -> its description (matched for scope only)
        for modality in modalities:
            for s in self._pages(self.client.search_for_studies, "0020000D", fields=["StudyDescription"],
                                 search_filters={"StudyDate": date_range(since, until), "ModalitiesInStudy": modality}):
                studies[_value(s, "0020000D")] = str(_value(s, "00081030"))
        return [series for uid in sorted(studies) for series in self._series_of(uid, studies[uid])]

    def _series_of(self, study_uid: str, study_description: str) -> Iterator[SeriesFound]:
        fields = ["BodyPartExamined", "SeriesDescription", "NumberOfSeriesRelatedInstances"]
        for s in self._pages(self.client.search_for_series, "0020000E", study_uid, fields=fields):
            n = _value(s, "00201209", None)
            yield SeriesFound(study_uid, _value(s, "0020000E"), str(_value(s, "00080060")),
                              str(_value(s, "00180015")), int(n) if n is not None else None,
                              (str(_value(s, "0008103E")), study_description))

    def instance_uids(self, series: SeriesFound) -> list[str]:
        return sorted(self._pages(self.client.search_for_instances, "00080018", series.study_uid,
                                  series.series_uid, key_only=True))

    def retrieve(self, series: SeriesFound, sop_uids: list[str], store: Callable[[str, bytes], None]) -> None:
        """Each instance's Part 10 bytes to store(sop_uid, data), one at a time."""
        for uid in sop_uids:
            ds = self._call(self.client.retrieve_instance, series.study_uid, series.series_uid, uid,
                            media_types=ORIGINAL)
            buf = BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            store(uid, buf.getvalue())

    def _pages(self, method, key: str, *args, key_only: bool = False, **kwargs) -> list:
        """Every result, PAGE at a time, each once (by its UID `key`); stops at a short page or a page of
        nothing new."""
        seen: dict[str, dict] = {}
        while True:
            page = self._call(method, *args, limit=PAGE, offset=len(seen), **kwargs)
            new = {_value(r, key): r for r in page if _value(r, key) not in seen}
            seen.update(new)
            if len(page) < PAGE or not new:
                return list(seen) if key_only else list(seen.values())

    def close(self) -> None:
        self.session.close()

    def _call(self, method, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise PacsUnavailable(f"the PACS at {self.target.where()} did not answer ({type(exc).__name__})") from None
        except requests.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else 0
            if code >= 500 or code in (408, 429):
                raise PacsUnavailable(f"the PACS at {self.target.where()} answered HTTP {code}") from None
            raise UserError("pacs_refused", f"the PACS at {self.target.where()} refused the request with HTTP {code}"
                            " (check OSTEO_PACS_DICOMWEB_URL and its credentials; docs/production.md)") from None


@contextmanager
def dicomweb_transport(target: PacsTarget) -> Iterator[DicomwebTransport]:
    transport = DicomwebTransport(target)
    try:
        yield transport
    finally:
        transport.close()
