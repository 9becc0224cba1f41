"""Shared test helpers."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path


@contextmanager
def isolated_settings(home: Path, **extra: str):
    """Every store (database, data, MLflow store and artifacts, pseudonym key) in `home` for the
    duration, through the one setting a user would set: OSTEO_HOME."""
    from osteo.settings import settings_from

    # the per-store variables unset, so that OSTEO_HOME alone has to move everything
    unset = dict.fromkeys(("OSTEO_VAR_DIR", "OSTEO_DATA_DIR", "OSTEO_DATABASE_URL", "MLFLOW_TRACKING_URI",
                           "OSTEO_MLFLOW_ARTIFACT_ROOT"))
    env = {**unset, "OSTEO_HOME": str(home), **extra}
    with settings_from(env) as settings:
        yield settings
