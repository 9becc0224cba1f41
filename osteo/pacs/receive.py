"""`osteo pacs receive`: a C-STORE listener (pynetdicom) that files what a modality or the PACS pushes into the
inbox, from the calling AE titles of its allow-list only (any other association is rejected).

What it files is what the refresh would take (osteo/etl/scope.py on the pushed headers); anything else is
acknowledged (a sender retrying it forever helps nobody) and counted, never written. Each filed instance is
recorded like a pulled one (transport c-store), so the next pull does not fetch it again."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from db.pacs import Retrieved, already_held, record_instances
from osteo.pacs.found import SeriesFound, out_of_scope_reason
from osteo.pacs.inbox import file_instance

SUCCESS, CANNOT_UNDERSTAND = 0x0000, 0xC210


@dataclass(frozen=True)
class ReceiveCounts:
    received: int = 0  # filed in the inbox
    already_held: int = 0  # pulled or received before: acknowledged, not written again
    out_of_scope: int = 0
    out_of_scope_by_reason: dict[str, int] = field(default_factory=dict)
    unreadable: int = 0  # headers that could not be read: refused (0xC210)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def summary(self) -> str:
        return (f"received {self.received} instances into the inbox, {self.already_held} already held, "
                f"{self.out_of_scope} out of scope, {self.unreadable} unreadable")


class Receiver:
    """The listener: start(), then stop() (or a `with` block); counts() at any time."""

    def __init__(self, sessions, inbox: Path, rules, *, aet: str, allowed: tuple[str, ...], port: int,
                 host: str = "0.0.0.0", timeout_s: float = 30.0):
        if not allowed:
            raise ValueError("a receiver takes at least one calling AE title")
        self.sessions, self.inbox, self.rules = sessions, Path(inbox), rules
        self.aet, self.allowed, self.address, self.timeout_s = aet, tuple(allowed), (host, port), timeout_s
        self._lock = threading.Lock()  # one write and record at a time, whatever the associations
        self._n: Counter = Counter()
        self._reasons: Counter = Counter()
        self._server = None

    def start(self) -> Receiver:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt

        ae = AE(ae_title=self.aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        ae.require_calling_aet = list(self.allowed)  # any other caller: association rejected
        for syntax in (cx.abstract_syntax for cx in StoragePresentationContexts if cx.abstract_syntax is not None):
            ae.add_supported_context(syntax, ALL_TRANSFER_SYNTAXES)
        self.inbox.mkdir(parents=True, exist_ok=True)
        self._server = ae.start_server(self.address, block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        return self

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self.address[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def counts(self) -> ReceiveCounts:
        with self._lock:
            return ReceiveCounts(self._n["received"], self._n["already_held"], self._n["out_of_scope"],
                                 dict(self._reasons), self._n["unreadable"])

    def _on_store(self, event) -> int:
        try:
            ds = event.dataset
            text = {k: str(ds.get(k, "") or "") for k in ("Modality", "BodyPartExamined", "SeriesDescription",
                                                          "StudyDescription")}
            series = SeriesFound(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), text["Modality"],
                                 text["BodyPartExamined"], 1, (text["SeriesDescription"], text["StudyDescription"]))
            sop = str(ds.SOPInstanceUID)
        except Exception:  # noqa: BLE001 - a sender's bad bytes are its answer (0xC210), not our crash
            with self._lock:
                self._n["unreadable"] += 1
            return CANNOT_UNDERSTAND
        reason = out_of_scope_reason(series, self.rules)
        with self._lock:
            if reason:
                self._n["out_of_scope"] += 1
                self._reasons[reason] += 1
                return SUCCESS
            self._file(series, sop, event.encoded_dataset())
        return SUCCESS

    def _file(self, series: SeriesFound, sop: str, data: bytes) -> None:
        with self.sessions() as session:
            if already_held(session, [sop]):
                self._n["already_held"] += 1
                return
            path = file_instance(self.inbox, series.study_uid, series.series_uid, sop, data)
            record_instances(session, [Retrieved(series.study_uid, series.series_uid, sop, str(path))], "c-store")
            session.commit()
        self._n["received"] += 1
