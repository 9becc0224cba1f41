"""osteo_common.files: crash-safe writes and streamed hashing."""

from __future__ import annotations

import hashlib
import os

import pytest

from osteo_common.files import atomic_write_bytes, sha256_file


def test_atomic_write_failure_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "t.bin"
    atomic_write_bytes(target, b"old")

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.bin"]


def test_sha256_file_streams(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)
    (tmp_path / "x").write_bytes(data)
    assert sha256_file(tmp_path / "x") == hashlib.sha256(data).hexdigest()
