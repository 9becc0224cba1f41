"""Shared test helpers."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def isolated_settings(home: Path, **extra: str):
    """Point every store (database, data, MLflow, pseudonym key) into `home` for the duration."""
    from osteo.settings import get_settings

    env = {
        "OSTEO_VAR_DIR": str(home / "var"),
        "OSTEO_DATA_DIR": str(home / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "OSTEO_MLFLOW_ARTIFACT_ROOT": str(home / "artifacts"),
        **extra,
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        yield get_settings()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()
