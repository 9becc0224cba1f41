"""Which PACS osteo talks to, over which transport, from the settings; the PACS's faults.

DICOMweb when OSTEO_PACS_DICOMWEB_URL is set, else DIMSE when OSTEO_PACS_HOST, OSTEO_PACS_PORT and
OSTEO_PACS_AET are; else none (the nightly pull does nothing, `osteo pacs pull` refuses)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from osteo.errors import UserError


class PacsUnavailable(ConnectionError):
    """The PACS did not answer (refused, timed out, dropped, a 5xx): transient, so a task retries it
    (tasks/policy.py retries ConnectionError); the command prints it as one line."""


@dataclass(frozen=True)
class PacsTarget:
    transport: str  # dicomweb | dimse
    dicomweb_url: str = ""
    host: str = ""
    port: int = 0
    called_aet: str = ""  # the PACS's AE title
    calling_aet: str = "OSTEO"  # osteo's
    timeout_s: float = 30.0

    def where(self) -> str:
        """The PACS named for a message: no credentials a URL may carry."""
        if self.transport == "dicomweb":
            parts = urlsplit(self.dicomweb_url)
            return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"
        return f"{self.called_aet}@{self.host}:{self.port}"


def pacs_target(settings) -> PacsTarget | None:
    """The configured PACS, or None when none is."""
    if settings.pacs_dicomweb_url:
        return PacsTarget("dicomweb", dicomweb_url=settings.pacs_dicomweb_url.rstrip("/"),
                          calling_aet=settings.aet, timeout_s=settings.pacs_timeout_s)
    dimse = (settings.pacs_host, settings.pacs_port, settings.pacs_aet)
    if all(dimse):
        return PacsTarget("dimse", host=settings.pacs_host, port=settings.pacs_port, called_aet=settings.pacs_aet,
                          calling_aet=settings.aet, timeout_s=settings.pacs_timeout_s)
    if any(dimse):
        raise UserError("pacs_incomplete", "OSTEO_PACS_HOST, OSTEO_PACS_PORT and OSTEO_PACS_AET name the PACS over "
                        "DIMSE together: set all three (or OSTEO_PACS_DICOMWEB_URL for DICOMweb); docs/production.md")
    return None
