"""MLflow's own tracking database moves with osteo: `osteo db upgrade` runs MLflow's documented upgrade
(`mlflow db upgrade URI`) when a SQL store is behind the installed MLflow, after a copy of a SQLite file.

MLflow keeps its revision in its own Alembic table (alembic_version); its head is read from the
migration scripts it ships, so asking costs no MLflow import. A tracking server (http://) is upgraded by
whoever runs it; an empty store is made by MLflow on first use.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SQL_BACKENDS = ("sqlite", "postgresql", "mysql", "mssql")
UPGRADE_TIMEOUT_S = 3600  # a large store's migrations may take a while; a hang should not last forever


class TrackingStoreUpgradeFailed(RuntimeError):
    """MLflow's `mlflow db upgrade` failed; its first line of error is kept."""


@dataclass(frozen=True)
class TrackingStoreState:
    """`state`: not_sql (a server or file store), empty, current, or behind the installed MLflow."""

    uri: str
    current: str | None
    head: str | None
    state: str

    def to_dict(self) -> dict:
        return {"uri": self.uri, "current": self.current, "head": self.head, "state": self.state}


def mlflow_head() -> str:
    import mlflow
    from alembic.script import ScriptDirectory

    package = Path(mlflow.__file__).parent
    head = ScriptDirectory(str(package / "store" / "db_migrations")).get_current_head()
    if head is None:  # MLflow ships its revisions: none found is a broken install
        raise RuntimeError(f"no MLflow store revisions under {package}")
    return head


def tracking_store_state(uri: str) -> TrackingStoreState:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine, inspect, pool
    from sqlalchemy.engine import make_url

    try:
        url = make_url(uri)
    except Exception:  # noqa: BLE001 - not a database URL at all (http://, file:, a folder): not ours to upgrade
        return TrackingStoreState(uri, None, None, "not_sql")
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() not in SQL_BACKENDS:
        return TrackingStoreState(shown, None, None, "not_sql")
    if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).exists()):
        return TrackingStoreState(shown, None, None, "empty")
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            current = None
            if inspect(conn).has_table("alembic_version"):
                current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    head = mlflow_head()  # its revision files import MLflow (~2 s): only asked of a store that exists
    state = "empty" if current is None else "current" if current == head else "behind"
    return TrackingStoreState(shown, current, head, state)


def upgrade_tracking_store(uri: str) -> dict:
    """Run `mlflow db upgrade` on a SQL store behind the installed MLflow; say what was done."""
    from sqlalchemy import create_engine, pool

    from db.migrate import sqlite_backup

    before = tracking_store_state(uri)
    result = {"before": before.to_dict(), "upgraded": False, "backup": None}
    if before.state != "behind":
        return result
    engine = create_engine(uri, poolclass=pool.NullPool)
    try:
        backup = sqlite_backup(engine, before.current or "empty")
    finally:
        engine.dispose()
    done = subprocess.run([sys.executable, "-m", "mlflow", "db", "upgrade", uri], capture_output=True, text=True,
                          timeout=UPGRADE_TIMEOUT_S)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1][:300]
        where = f"; the copy taken before it: {backup}" if backup else ""
        raise TrackingStoreUpgradeFailed(f"`mlflow db upgrade` failed on {before.uri} ({last}){where}")
    return {**result, "upgraded": True, "backup": str(backup) if backup else None,
            "after": tracking_store_state(uri).current}
