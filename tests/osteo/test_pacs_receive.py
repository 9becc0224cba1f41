"""`osteo pacs receive`: the C-STORE listener files what an allowed AE title pushes (pynetdicom's SCU as the
modality), refuses any other caller, leaves out what is not a hip radiograph, and records what it filed so the
pull does not fetch it again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.helpers import isolated_settings
from tests.orthanc import free_port
from tests.pacs_cohort import make_pacs_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_pacs_cohort(tmp_path_factory.mktemp("receive-cohort"))


def push(port: int, calling_aet: str, files: list[Path]) -> list[int] | None:
    """C-STORE each file as `calling_aet`; the statuses, or None when the association is rejected."""
    from pynetdicom import AE

    ae = AE(ae_title=calling_aet)
    datasets = [dcmread(f) for f in files]
    # one context per class and transfer syntax: each file goes as it is stored
    for sop_class, syntax in sorted({(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets}):
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title="OSTEO")
    if not assoc.is_established:
        return None
    try:
        return [int(assoc.send_c_store(d).Status) for d in datasets]
    finally:
        assoc.release()


def test_the_receiver_files_an_allowed_push_and_refuses_a_stranger(cohort, tmp_path):
    from sqlalchemy import select

    from db.pacs import PacsInstance
    from osteo.pacs.receive import Receiver
    from osteo.settings import session_factory

    in_scope = [cohort.root / r["file"] for r in cohort.rows if r["expected_scope"] == "in_scope"][:3]
    chest = [cohort.root / r["file"] for r in cohort.rows if r["expected_scope"] == "body part CHEST"]
    with isolated_settings(tmp_path) as settings:
        sessions = session_factory(settings, create=True)
        receiver = Receiver(sessions, settings.pacs_inbox, settings.scope_rules(), aet="OSTEO",
                            allowed=("MODALITY",), port=free_port(), host="127.0.0.1")
        with receiver:
            assert push(receiver.port, "STRANGER", in_scope) is None  # association rejected
            assert push(receiver.port, "MODALITY", in_scope + chest) == [0] * 4
            assert push(receiver.port, "MODALITY", in_scope[:1]) == [0]  # again: acknowledged, not refiled
        counts = receiver.counts()
        with sessions() as session:
            rows = session.execute(select(PacsInstance.sop_instance_uid, PacsInstance.transport)).all()
    assert (counts.received, counts.already_held, counts.out_of_scope) == (3, 1, 1)
    filed = sorted((tmp_path / "data" / "inbox").rglob("*.dcm"))
    assert {str(dcmread(f).SOPInstanceUID) for f in filed} == {str(dcmread(f).SOPInstanceUID) for f in in_scope}
    assert sorted(rows) == sorted((str(dcmread(f).SOPInstanceUID), "c-store") for f in in_scope)
    sent = {str(dcmread(f).SOPInstanceUID): dcmread(f) for f in in_scope}
    for f in filed:  # the dataset as it was sent, in its own transfer syntax
        ds = dcmread(f)
        original = sent[str(ds.SOPInstanceUID)]
        assert ds.PixelData == original.PixelData
        assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID


def test_osteo_pacs_receive_runs_until_stopped(cohort, tmp_path):
    """The command: listens, files a push from its allowed AE title, prints one JSON object when stopped."""
    import json

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSTEO_")}
    env.update({"OSTEO_HOME": str(tmp_path), "OSTEO_PACS_ALLOWED_AETS": "MODALITY"})
    proc = subprocess.Popen([str(Path(sys.executable).parent / "osteo"), "pacs", "receive", "--json", "--port",
                             str(port), "--host", "127.0.0.1"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline, statuses = time.monotonic() + 60, None
        files = [cohort.root / r["file"] for r in cohort.rows if r["expected_scope"] == "in_scope"][:2]
        while statuses is None and time.monotonic() < deadline and proc.poll() is None:
            statuses = push(port, "MODALITY", files)  # None until it listens
            if statuses is None:
                time.sleep(0.1)  # a poll's interval, under the deadline
        assert statuses == [0, 0]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    payload = json.loads(out)
    assert payload["received"] == 2 and payload["allowed"] == ["MODALITY"] and payload["port"] == port


def test_receive_without_an_allow_list_is_refused(tmp_path, capsys):
    from osteo.settings import settings_from
    from osteo_cli.main import main

    with isolated_settings(tmp_path), settings_from({"OSTEO_PACS_ALLOWED_AETS": None, "OSTEO_PACS_AET": None}):
        assert main(["pacs", "receive", "--json"]) == 2
    assert '"no_allowed_aets"' in capsys.readouterr().out
