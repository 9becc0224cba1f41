"""`osteo refresh` refuses before Prefect starts, in one line and one JSON object: a database behind the
schema, and a refresh already holding the lock (two refreshes started together)."""

from __future__ import annotations

from tests.helpers import isolated_settings
from tests.osteo_cli.test_cli_errors import assert_refused, osteo_env


def test_a_refresh_of_a_database_behind_head_is_refused_in_one_line(tmp_path):
    """The real command: one line (no Prefect traceback), before any flow starts, naming the upgrade."""
    from db import make_engine
    from db.migrate import run_upgrade

    folder = tmp_path / "in"
    folder.mkdir()
    env = osteo_env(tmp_path)
    run_upgrade(make_engine(f"sqlite:///{tmp_path / 'home' / 'var' / 'osteo.sqlite'}"), "0001")
    payload = assert_refused(tmp_path, ["refresh", "--dicom", str(folder), "--dexa", str(folder)],
                             "database_outdated", env=env)
    assert "osteo db upgrade" in payload["detail"] and "0001" in payload["detail"]
    assert not (tmp_path / "prefect").exists()  # refused before Prefect started


def test_a_refresh_while_another_holds_the_lock_is_refused_in_one_line(tmp_path):
    """The lock is taken before the flow starts (a refusal used to print Prefect's 25-line traceback first)."""
    from osteo.ingest.lock import refresh_lock

    folder = tmp_path / "in"
    folder.mkdir()
    with isolated_settings(tmp_path / "home") as settings, refresh_lock(settings):
        payload = assert_refused(tmp_path, ["refresh", "--dicom", str(folder), "--dexa", str(folder)],
                                 "refresh_already_running", env=osteo_env(tmp_path))
    assert "another refresh is running" in payload["detail"]
    assert not (tmp_path / "prefect").exists()  # refused before Prefect started
