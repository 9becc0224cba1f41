"""DICOM objects sent to the PACS: STOW-RS (dicomweb-client) or C-STORE (pynetdicom), one object at a time so
that each gets its own answer. A PACS that does not answer is PacsUnavailable (the task retries); an object it
refuses is that object's error, a short text of the PACS's status (never a value of the object)."""

from __future__ import annotations

import logging

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from osteo.pacs.target import PacsTarget, PacsUnavailable

WARNINGS = (0x0001, 0xB000, 0xB006, 0xB007)  # C-STORE statuses that mean stored (with a warning)


def send_objects(target: PacsTarget, datasets: list[Dataset]) -> list[str | None]:
    """Each dataset sent; per dataset None (stored) or why the PACS refused it."""
    return (_stow(target, datasets) if target.transport == "dicomweb" else _c_store(target, datasets))


def _stow(target: PacsTarget, datasets: list[Dataset]) -> list[str | None]:
    """STOW-RS through the pull's client (osteo/pacs/dicomweb.py: its session and timeout, dicomweb-client's own
    retries off: the task retries); a refusal (4xx) is the object's error, a 5xx, 408 or 429 the PACS's fault."""
    import requests

    from osteo.pacs.dicomweb import dicomweb_transport

    out: list[str | None] = []
    with dicomweb_transport(target) as transport:
        for ds in datasets:
            try:
                answer = transport.client.store_instances(datasets=[ds])
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise PacsUnavailable(f"{target.where()} does not answer STOW-RS ({type(exc).__name__})") from None
            except requests.HTTPError as exc:
                code = exc.response.status_code if exc.response is not None else 0
                if code >= 500 or code in (0, 408, 429):
                    raise PacsUnavailable(f"{target.where()} answered STOW-RS with HTTP {code}") from None
                out.append(f"STOW-RS refused: HTTP {code}")
                continue
            failed = answer.get("FailedSOPSequence") if answer is not None else None
            out.append(f"STOW-RS refused: failure reason {failed[0].get('FailureReason')}" if failed else None)
    return out


def _c_store(target: PacsTarget, datasets: list[Dataset]) -> list[str | None]:
    from pynetdicom import AE

    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # its INFO lines name the datasets it sends
    ae = AE(ae_title=target.calling_aet)
    for uid in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = target.timeout_s
    assoc = ae.associate(target.host, target.port, ae_title=target.called_aet)
    if not assoc.is_established:
        raise PacsUnavailable(f"{target.where()} refused or did not answer the association for C-STORE")
    out: list[str | None] = []
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            if not status:
                raise PacsUnavailable(f"{target.where()} did not answer a C-STORE")
            code = int(status.Status)
            out.append(None if code == 0 or code in WARNINGS else f"C-STORE refused: status 0x{code:04X}")
    finally:
        assoc.release()
    return out
