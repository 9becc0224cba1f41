"""The PACS over DIMSE (pynetdicom): C-FIND (Study Root) at image level for the whole date range, or, where that
finds nothing, at study, series and image level as every PACS answers; and C-GET of a series' instances, whose
C-STORE sub-operations come back on the same association (no port of ours to open; the PACS must know osteo's
AE title, OSTEO_AET). The storage classes offered are the radiographs' (CR, DX), each in every transfer syntax
as a context of its own, so the files arrive as the PACS stores them (a PACS that cannot transcode, Orthanc
1.10, refuses a JPEG 2000 file offered only in one context with Explicit VR)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pydicom.dataset import Dataset

from osteo.errors import UserError
from osteo.pacs.dicomweb import date_range
from osteo.pacs.found import SeriesFound
from osteo.pacs.target import PacsTarget, PacsUnavailable

PENDING = (0xFF00, 0xFF01)
GET_CHUNK = 50  # SOP Instance UIDs per C-GET


def storage_classes() -> list[str]:
    from pydicom import uid

    return [uid.ComputedRadiographyImageStorage, uid.DigitalXRayImageStorageForPresentation,
            uid.DigitalXRayImageStorageForProcessing]


def transfer_syntaxes() -> list[list[str]]:
    """The uncompressed syntaxes in one context, each compressed one in a context of its own."""
    from pydicom import uid

    compressed = [uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLossless, uid.JPEGLosslessSV1,
                  uid.JPEGLSLossless, uid.JPEGLSNearLossless, uid.JPEG2000Lossless, uid.JPEG2000, uid.RLELossless]
    return [[uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian,
             uid.ExplicitVRBigEndian], *([c] for c in compressed)]


class DimseTransport:
    name = "dimse"

    def __init__(self, target: PacsTarget):
        from pynetdicom import AE, build_role, evt

        # pynetdicom.sop_class makes these names at import time (globals()), where a type checker cannot see them
        from pynetdicom.sop_class import (
            StudyRootQueryRetrieveInformationModelFind as Find,  # pyright: ignore[reportAttributeAccessIssue]
        )
        from pynetdicom.sop_class import (
            StudyRootQueryRetrieveInformationModelGet as Get,  # pyright: ignore[reportAttributeAccessIssue]
        )

        self.target, self._store, self._error = target, None, None
        ae = AE(ae_title=target.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = target.timeout_s
        ae.add_requested_context(Find)
        ae.add_requested_context(Get)
        for uid in storage_classes():  # a context per compressed syntax: the PACS picks the file's own
            for syntaxes in transfer_syntaxes():
                ae.add_requested_context(uid, syntaxes)
        roles = [build_role(uid, scp_role=True) for uid in storage_classes()]
        self.assoc = ae.associate(target.host, target.port, ae_title=target.called_aet, ext_neg=roles,
                                  evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        if self.assoc.is_rejected:
            raise UserError("pacs_refused", f"the PACS {target.where()} rejected osteo's AE title "
                            f"{target.calling_aet!r} (the PACS must list it; OSTEO_AET, docs/production.md)")
        if not self.assoc.is_established:
            raise PacsUnavailable(f"the PACS {target.where()} did not answer (no DICOM association)")
        self._find_model, self._get_model = Find, Get

    def find_series(self, since: dt.date, until: dt.date, modalities: tuple[str, ...]) -> list[SeriesFound]:
        try:  # one relational C-FIND per modality: the instances of the range with their series' attributes
            found = self._find_by_instances(since, until, modalities)
        except UserError:  # refused: a PACS that answers hierarchical queries only
            found = []
        # nothing: refused, or a hierarchical PACS that answers a query without its keys with no match
        return found or self._find_by_studies(since, until, modalities)

    def _find_by_instances(self, since: dt.date, until: dt.date, modalities: tuple[str, ...]) -> list[SeriesFound]:
        series: dict[str, list[Dataset]] = {}
        for modality in modalities:
            for r in self._find("IMAGE", StudyDate=date_range(since, until), Modality=modality, StudyInstanceUID="",
                                SeriesInstanceUID="", SOPInstanceUID="", BodyPartExamined="",
                                SeriesDescription="", StudyDescription=""):
                series.setdefault(str(r.SeriesInstanceUID), []).append(r)
        return [SeriesFound(str(rs[0].StudyInstanceUID), uid, _text(rs[0], "Modality"),
                            _text(rs[0], "BodyPartExamined"), len(rs),
                            (_text(rs[0], "SeriesDescription"), _text(rs[0], "StudyDescription")),
                            tuple(sorted({str(r.SOPInstanceUID) for r in rs})))
                for uid, rs in sorted(series.items())]

    def _find_by_studies(self, since: dt.date, until: dt.date, modalities: tuple[str, ...]) -> list[SeriesFound]:
        studies: dict[str, str] = {}
        for modality in modalities:
            for r in self._find("STUDY", StudyDate=date_range(since, until), ModalitiesInStudy=modality,
                                StudyInstanceUID="", StudyDescription=""):
                studies[str(r.StudyInstanceUID)] = str(r.get("StudyDescription", "") or "")
        return [s for uid in sorted(studies) for s in self._series_of(uid, studies[uid])]

    def _series_of(self, study_uid: str, study_description: str) -> Iterator[SeriesFound]:
        for r in self._find("SERIES", StudyInstanceUID=study_uid, SeriesInstanceUID="", Modality="",
                            BodyPartExamined="", SeriesDescription="", NumberOfSeriesRelatedInstances=""):
            n = r.get("NumberOfSeriesRelatedInstances", None)
            yield SeriesFound(study_uid, str(r.SeriesInstanceUID), str(r.get("Modality", "") or ""),
                              str(r.get("BodyPartExamined", "") or ""), int(n) if n not in (None, "") else None,
                              (str(r.get("SeriesDescription", "") or ""), study_description))

    def instance_uids(self, series: SeriesFound) -> list[str]:
        return sorted({str(r.SOPInstanceUID) for r in self._find(
            "IMAGE", StudyInstanceUID=series.study_uid, SeriesInstanceUID=series.series_uid, SOPInstanceUID="")})

    def retrieve(self, series: SeriesFound, sop_uids: list[str], store: Callable[[str, bytes], None]) -> None:
        """C-GET the instances, GET_CHUNK UIDs a request (a UID list, as hierarchical retrieve allows); each
        C-STORE sub-operation hands the encoded file to store(sop_uid, data)."""
        self._store = store
        try:
            for start in range(0, len(sop_uids), GET_CHUNK):
                uid = sop_uids[start:start + GET_CHUNK]
                query = _query("IMAGE", StudyInstanceUID=series.study_uid, SeriesInstanceUID=series.series_uid,
                               SOPInstanceUID=uid if len(uid) > 1 else uid[0])
                final = None
                for status, _ in self.assoc.send_c_get(query, self._get_model):
                    if self._error is not None:  # our write failed: its own exception, not the PACS's status
                        raise self._error
                    final = self._checked(status, "C-GET")
                if final not in (0x0000,):
                    raise PacsUnavailable(f"the PACS {self.target.where()} did not send every instance asked "
                                          f"(C-GET status 0x{final or 0:04X})")
        finally:
            self._store, self._error = None, None

    def _on_store(self, event) -> int:
        if self._store is None or self._error is not None:
            return 0xA700  # out of resources: nothing asked for it, or a write already failed
        try:
            self._store(str(event.request.AffectedSOPInstanceUID), event.encoded_dataset())
        except BaseException as exc:  # noqa: BLE001 - pynetdicom would swallow it: raised again in retrieve()
            self._error = exc
            return 0xA700
        return 0x0000

    def _find(self, level: str, **keys) -> Iterator[Dataset]:
        for status, identifier in self.assoc.send_c_find(_query(level, **keys), self._find_model):
            code = self._checked(status, "C-FIND")
            if code in PENDING and identifier is not None:
                yield identifier

    def _checked(self, status: Dataset, what: str) -> int:
        if not status:  # no answer: the association timed out or was aborted
            raise PacsUnavailable(f"the PACS {self.target.where()} stopped answering ({what})")
        code = int(status.Status)
        if code not in PENDING and code not in (0x0000, 0xB000):
            raise UserError("pacs_refused", f"the PACS {self.target.where()} refused the {what} "
                            f"(status 0x{code:04X}); docs/production.md")
        return code

    def close(self) -> None:
        if self.assoc.is_established:
            self.assoc.release()


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "")


def _query(level: str, **keys) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


@contextmanager
def dimse_transport(target: PacsTarget) -> Iterator[DimseTransport]:
    transport = DimseTransport(target)
    try:
        yield transport
    finally:
        transport.close()
