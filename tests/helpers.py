"""Shared test helpers."""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

_COHORTS: dict[tuple[int, int], Path] = {}


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


def plain_refresh(factory, cohort: Path, settings) -> None:
    """The refresh's steps as plain functions (no Prefect): a quick way to a database with exports."""
    from db import create_schema
    from osteo.ingest import refresh

    create_schema(factory.kw["bind"])
    key = settings.resolved_pseudonym_key()
    refresh.ingest_dicom(factory, refresh.discover(cohort / "dicom"), key, workers=1)
    refresh.ingest_dexa(factory, refresh.discover(cohort / "dexa", (".csv", ".txt")), key, settings)
    refresh.ingest_annotations(factory, refresh.discover(cohort / "annotations", (".xml",)))
    refresh.pair_and_label(factory, settings)
    refresh.export_images(factory, refresh.plan_exports(factory, settings), settings, workers=1)


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def synthetic_cohort(out: Path, *, patients: int, seed: int) -> Path:
    """``osteo synth``'s cohort of ``patients`` and ``seed`` (one worker) at ``out``: rendered once per
    session and copied for each test that asks again (the generator is deterministic: tests/osteo/
    test_synth.py), so a test may change its copy. The tests of the generator itself call it directly."""
    from osteo.synth import generate_cohort

    key = (int(patients), int(seed))
    if key not in _COHORTS:
        cache = Path(tempfile.mkdtemp(prefix=f"osteo-cohort-{patients}-{seed}-"))
        atexit.register(shutil.rmtree, cache, True)
        generate_cohort(cache, patients=patients, seed=seed, workers=1)
        _COHORTS[key] = cache
    shutil.copytree(_COHORTS[key], out, dirs_exist_ok=True)
    return Path(out)
