"""A real PACS for the tests: Debian's Orthanc with its DICOMweb plug-in, on free 127.0.0.1 ports (the server
itself: bench/orthanc.py, shared with the bench).

    def test_something(orthanc):              # a fresh, empty Orthanc for this test
        orthanc.load(paths)                    # POST /instances, one per file; returns the Orthanc ids
        orthanc.dicomweb_url                   # http://127.0.0.1:PORT/dicom-web (QIDO-RS, WADO-RS, STOW-RS)
        orthanc.host, orthanc.dicom_port       # DIMSE: C-FIND, C-GET, C-MOVE, C-STORE
        orthanc.aet                            # Orthanc's AE title, ORTHANC
        orthanc.client_aet                     # osteo's AE title, a known modality (OSTEO)
        orthanc.client_port                    # where Orthanc sends C-STORE for a C-MOVE to client_aet
        orthanc.env("dicomweb" | "dimse")      # the OSTEO_PACS_* settings that point osteo at it
        orthanc.get("/studies"), orthanc.post(...), orthanc.delete(...)   # its REST API, JSON in and out
        orthanc.instance_count()

`orthanc_module` is one Orthanc for a test module; `start_orthanc(folder)` the same as a context manager.
Orthanc missing is a failure, never a skip: `make system-packages` installs it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.orthanc import CLIENT_AET, ORTHANC_AET, Orthanc, OrthancMissing, check_installed, free_port
from bench.orthanc import start_orthanc as _start

__all__ = ["CLIENT_AET", "ORTHANC_AET", "Orthanc", "free_port", "orthanc", "orthanc_module", "start_orthanc"]


@contextmanager
def start_orthanc(folder: Path) -> Iterator[Orthanc]:
    try:
        check_installed()
    except OrthancMissing as exc:  # a failure, never a skip
        pytest.fail(str(exc))
    with _start(folder) as server:
        yield server


@pytest.fixture
def orthanc(tmp_path) -> Iterator[Orthanc]:
    """A fresh, empty Orthanc for one test (it starts in well under a second)."""
    with start_orthanc(tmp_path / "orthanc") as server:
        yield server
    shutil.rmtree(tmp_path / "orthanc" / "storage", ignore_errors=True)


@pytest.fixture(scope="module")
def orthanc_module(tmp_path_factory) -> Iterator[Orthanc]:
    """One Orthanc shared by a test module's tests (load a cohort once); a test that changes what it
    holds must leave it as it found it."""
    with start_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server
