"""The walk and the rerun's stats on threads (issue 28, osteo/ingest/discovery.py): with any number of
threads the same paths come out in the same order and the same files are skipped; one thread is the plain
sequential walk; the number is chosen by the file system unless configured."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from db import make_session_factory
from osteo.ingest import discovery, refresh
from tests.dicom_factory import make_dicom

KEY = b"test-key"
DAY_NS = 86_400 * 10**9


def tree(root) -> None:
    """Nested folders (some wide, some empty), hidden entries, a symlinked file, names that sort around '/'."""
    for a in range(7):
        for b in range(a % 3):
            d = root / f"A{a}" / f"B{b}"
            d.mkdir(parents=True)
            for f in range(a + b):
                (d / f"f{f}.dcm").write_bytes(b"x")
        (root / f"A{a}.dcm").write_bytes(b"x")  # sorts before the folder "A1/" ("." < "/")
    (root / "A0" / "empty").mkdir(parents=True, exist_ok=True)
    (root / ".hidden").mkdir()
    (root / ".hidden" / "h.dcm").write_bytes(b"x")
    (root / "A4" / ".dot.dcm").write_bytes(b"x")
    (root / "A4" / "note.txt").write_text("x")
    (root / "z-link.dcm").symlink_to(root / "A1" / "B0" / "f0.dcm")


@pytest.mark.parametrize("suffixes", [None, (".DCM",)])
def test_the_walk_on_threads_gives_the_same_paths_in_the_same_order(tmp_path, suffixes):
    tree(tmp_path)
    plain = list(discovery.walk(tmp_path, suffixes, threads=1))
    assert len(plain) >= 20 and plain[:-1] == sorted(plain[:-1])
    assert plain[-1] == str(tmp_path / "A1" / "B0" / "f0.dcm")  # the symlink, last, as its target
    for threads in (2, 3, 16):
        assert list(discovery.walk(tmp_path, suffixes, threads=threads)) == plain, threads
    assert not any("/." in p for p in plain)


def test_a_walk_on_threads_streams_and_can_be_left_early(tmp_path):
    tree(tmp_path)
    walk = discovery.walk(tmp_path, threads=4)
    first = next(walk)
    walk.close()  # the pool shuts down with the generator
    assert first == next(discovery.walk(tmp_path, threads=1))


def test_the_same_files_are_skipped_whatever_the_threads(engine, tmp_path):
    factory = make_session_factory(engine)
    paths = [str(tmp_path / f"d{i // 10}" / f"im{i}.dcm") for i in range(40)]
    for i, p in enumerate(paths):
        make_dicom(Path(p), patient_id=f"T{i}", rows=8, cols=8)
    when = time.time_ns() - 2 * DAY_NS
    for p in paths:
        os.utime(p, ns=(when, when))
    refresh.ingest_dicom(factory, paths, KEY)
    os.utime(paths[3])  # touched: read again
    (tmp_path / "d2" / "im25.dcm").unlink()  # vanished: read (and reported)
    context = refresh.judging_context("ingest_dicom", config={"scope": {}})
    with factory() as session:
        skip = {t: discovery.unchanged_files(session, paths, "ingest_dicom", context, kind="dicom", threads=t)
                for t in (1, 4, 16)}
    assert skip[1] == skip[4] == skip[16] == set(paths) - {paths[3], paths[25]}
    again = refresh.ingest_dicom(factory, paths, KEY, io_threads=4)
    assert (again.unchanged, again.files) == (38, 40)  # the vanished one is reported unreadable


def test_threads_are_chosen_by_the_file_system(tmp_path, monkeypatch):
    assert discovery.io_threads(tmp_path, 5) == 5  # configured (OSTEO_IO_THREADS)
    assert discovery.fs_type("/") != ""
    monkeypatch.setattr(discovery, "fs_type", lambda path: "nfs4")
    assert discovery.io_threads(tmp_path) == discovery.NETWORK_THREADS
    monkeypatch.setattr(discovery, "fs_type", lambda path: "ext4")
    assert discovery.io_threads(tmp_path) == 1
