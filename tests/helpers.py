"""Shared test helpers."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path


@contextmanager
def isolated_settings(home: Path, **extra: str):
    """Point every store (database, data, MLflow, pseudonym key) into `home` for the duration."""
    from osteo.settings import settings_from

    env = {
        "OSTEO_VAR_DIR": str(home / "var"),
        "OSTEO_DATA_DIR": str(home / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "OSTEO_MLFLOW_ARTIFACT_ROOT": str(home / "artifacts"),
        **extra,
    }
    with settings_from(env) as settings:
        yield settings
