"""A real PACS for the tests and the bench: Debian's Orthanc with its DICOMweb plug-in, on free 127.0.0.1 ports.

    with start_orthanc(folder) as orthanc:    # stopped when the block ends
        orthanc.load(paths)                    # POST /instances, one per file; returns the Orthanc ids
        orthanc.dicomweb_url                   # http://127.0.0.1:PORT/dicom-web (QIDO-RS, WADO-RS, STOW-RS)
        orthanc.host, orthanc.dicom_port       # DIMSE: C-FIND, C-GET, C-MOVE, C-STORE
        orthanc.aet, orthanc.client_aet        # Orthanc's AE title (ORTHANC); osteo's, a known modality (OSTEO)
        orthanc.env("dicomweb" | "dimse")      # the OSTEO_PACS_* settings that point osteo at it
        orthanc.get("/studies"), orthanc.post(...), orthanc.delete(...)   # its REST API, JSON in and out

The tests' fixtures (tests/orthanc.py) and the bench's PACS row start it so. Orthanc missing raises
OrthancMissing (the tests fail on it, never skip): `make system-packages` installs it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")  # `dpkg -L orthanc-dicomweb`
ORTHANC_AET = "ORTHANC"
CLIENT_AET = "OSTEO"  # osteo's AE title (OSTEO_AET), known to Orthanc as the modality "osteo"
START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Orthanc:
    """A running Orthanc: its addresses and a small client of its REST API."""

    url: str  # the REST API's root, http://127.0.0.1:PORT
    dicom_port: int
    client_port: int
    folder: Path  # configuration, storage and log
    host: str = "127.0.0.1"
    aet: str = ORTHANC_AET
    client_aet: str = CLIENT_AET

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def env(self, transport: str = "dicomweb") -> dict[str, str | None]:
        """The settings that point osteo at this Orthanc through one transport (None unsets the other's),
        for osteo.settings.settings_from or a subprocess's environment (drop the None values there)."""
        dimse = {"OSTEO_PACS_HOST": self.host, "OSTEO_PACS_PORT": str(self.dicom_port),
                 "OSTEO_PACS_AET": self.aet, "OSTEO_AET": self.client_aet}
        if transport == "dicomweb":
            return {"OSTEO_PACS_DICOMWEB_URL": self.dicomweb_url} | dict.fromkeys(dimse)
        if transport == "dimse":
            return {"OSTEO_PACS_DICOMWEB_URL": None} | dimse
        raise ValueError(f"transport is dicomweb or dimse, not {transport!r}")

    def request(self, method: str, path: str, body: bytes | dict | list | None = None, timeout: float = 30):
        """One REST call; a JSON answer is decoded, any other is returned as bytes."""
        data = json.dumps(body).encode() if isinstance(body, dict | list) else body
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            if "json" in r.headers.get("Content-Type", ""):
                return json.loads(raw)
            return raw

    def get(self, path: str):
        return self.request("GET", path)

    def post(self, path: str, body: bytes | dict | list | None = None):
        return self.request("POST", path, body)

    def delete(self, path: str):
        return self.request("DELETE", path)

    def load(self, paths: Iterable[str | os.PathLike[str]]) -> list[str]:
        """POST each DICOM file to /instances; the Orthanc ids of the instances stored. A file Orthanc
        refuses (not DICOM, truncated) raises urllib.error.HTTPError: load only what a PACS would hold."""
        return [self.post("/instances", Path(p).read_bytes())["ID"] for p in paths]

    def instance_count(self) -> int:
        return int(self.get("/statistics")["CountInstances"])

    def answers(self) -> bool:
        try:
            return "Version" in self.get("/system")
        except (OSError, urllib.error.URLError, ValueError):
            return False


def configuration(folder: Path, http_port: int, dicom_port: int, client_port: int) -> dict:
    storage = folder / "storage"
    return {
        "Name": "osteo-test-pacs",
        "StorageDirectory": str(storage), "IndexDirectory": str(storage),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": ORTHANC_AET,
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False,  # loopback only, no accounts
        "DicomCheckCalledAetTitle": False,
        "DicomAlwaysAllowStore": True,  # C-STORE from any caller (the screening push, a modality)
        "DicomModalities": {"osteo": {"AET": CLIENT_AET, "Host": "127.0.0.1", "Port": client_port,
                                      "AllowEcho": True, "AllowFind": True, "AllowGet": True,
                                      "AllowMove": True, "AllowStore": True}},
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Host": "127.0.0.1",
                     "Ssl": False, "StudiesMetadata": "Full", "SeriesMetadata": "Full"},
        "StableAge": 1, "JobsHistorySize": 10, "SaveJobs": False,
    }


class OrthancMissing(RuntimeError):
    pass


def check_installed() -> None:
    missing = [str(p) for p in (ORTHANC, DICOMWEB_PLUGIN) if not p.exists()]
    if missing:  # the suite's PACS is a system package (Makefile SYSTEM_PACKAGES)
        raise OrthancMissing(f"Orthanc is not installed ({', '.join(missing)} missing): run `make system-packages` "
                             "(Debian packages orthanc and orthanc-dicomweb)")


@contextmanager
def start_orthanc(folder: Path, timeout: float = START_TIMEOUT_S) -> Iterator[Orthanc]:
    """Orthanc on free 127.0.0.1 ports with its storage in `folder`; stopped (and its process group
    killed if it hangs) when the block ends."""
    check_installed()
    folder.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port, client_port = free_port(), free_port(), free_port()
    config = folder / "orthanc.json"
    config.write_text(json.dumps(configuration(folder, http_port, dicom_port, client_port), indent=1))
    log = (folder / "orthanc.log").open("w")
    proc = subprocess.Popen([str(ORTHANC), str(config)], cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    server = Orthanc(f"http://127.0.0.1:{http_port}", dicom_port, client_port, folder)
    try:
        _wait_until_it_answers(server, proc, timeout)
        yield server
    finally:
        _stop(proc)
        log.close()


def _wait_until_it_answers(server: Orthanc, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not server.answers():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = (server.folder / "orthanc.log").read_text(errors="replace")[-2000:]
            state = f"exited with {proc.returncode}" if proc.poll() is not None else f"silent after {timeout:.0f} s"
            raise RuntimeError(f"Orthanc {state}; its log ends:\n{tail}")
        time.sleep(0.05)  # a poll's interval, under the deadline above


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
