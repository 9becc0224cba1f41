from __future__ import annotations

import os

import pytest

# the suite's PACS (Debian's Orthanc on 127.0.0.1): fixtures `orthanc` (one per test) and `orthanc_module`
from tests.orthanc import orthanc, orthanc_module  # noqa: F401 - fixtures, registered by being imported here

# Telemetry off and every store inside the test's temporary folders (set before Prefect/MLflow load).
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# a developer's running `osteo ui` (Prefect on 127.0.0.1:4200) must not receive the suite's flow runs
os.environ["OSTEO_PREFECT_REUSE_LOCAL"] = "false"

PG_URL = os.environ.get("OSTEO_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=3):
            return None
    except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
        return f"no PostgreSQL server answers on 127.0.0.1:5432 ({type(exc).__name__})"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request, tmp_path):
    """The same tests on SQLite and on the local PostgreSQL server, each in a clean schema."""
    from sqlalchemy import text

    from db import create_schema, make_engine

    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'osteo.sqlite'}")
        create_schema(eng)
        yield eng
        eng.dispose()
        return
    why = _pg_available()
    if why:  # the machine provides PostgreSQL (README): its absence is a failure, never a skip
        pytest.fail(why)
    schema = f"t_{os.getpid()}_{abs(hash(request.node.nodeid)) % 10**8}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    eng = make_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    create_schema(eng)
    yield eng
    eng.dispose()
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One temporary Prefect server for the session's flow tests."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, prefect_harness):
    """The demo end to end, once per session, as `osteo demo` runs it: synthetic cohort -> refresh ->
    localiser training -> refresh (the pairs nobody boxed, located) -> train (demo preset).

    Yields a dict with home, cohort, both refreshes' counts, the localiser's and the training's
    summaries; the isolated settings stay active for the whole session of tests that use it.
    """
    from tests.helpers import isolated_settings

    home = tmp_path_factory.mktemp("demo")
    with isolated_settings(home) as settings:
        from flows.refresh import refresh_flow
        from flows.roi import train_roi_flow
        from flows.train import train_flow
        from osteo.ingest.options import RefreshOptions
        from osteo.synth import generate_cohort
        from osteo.training.params import TrainParams

        cohort = home / "cohort"
        generate_cohort(cohort, patients=DEMO_PATIENTS, seed=0)
        folders = RefreshOptions(dicom_dir=str(cohort / "dicom"), dexa_dir=str(cohort / "dexa"),
                                 annotations_dir=str(cohort / "annotations"))
        first = refresh_flow(options=folders)
        roi = train_roi_flow(epochs=ROI_EPOCHS)
        report = refresh_flow(options=folders)
        # as `osteo demo` trains
        result = train_flow(params=TrainParams(preset="demo", heads=True, clinical=("age", "sex")))
        # the JSON view, as `osteo demo --json` prints it
        yield {"home": home, "cohort": cohort, "first_refresh": first.to_dict(), "refresh": report.to_dict(),
               "roi": roi.to_dict(), "train": result.to_dict(), "settings": settings}


DEMO_PATIENTS = 300  # the same cohort size as `osteo demo`
ROI_EPOCHS = 60  # the demo's: at 20 the localiser boxed no pelvis on both sides on an AVX2-only machine (0 of 47)
AUDIT_PATIENTS, AUDIT_SEED = 70, 11


@pytest.fixture(scope="session")
def audit_run(tmp_path_factory, prefect_harness):
    """One small full pipeline for the lineage and privacy tests, built once per session: a cohort
    of 70 patients, one refresh, one tiny training (1 epoch, 2 folds, offline copies so that the
    audit follows a model to its augmented copies). Each module re-enters its settings."""
    from tests.helpers import isolated_settings

    root = tmp_path_factory.mktemp("audit")
    cohort, home = root / "cohort", root / "home"
    from osteo.synth import generate_cohort

    before = checkout_stores()

    generate_cohort(cohort, patients=AUDIT_PATIENTS, seed=AUDIT_SEED)
    with isolated_settings(home) as settings:
        from flows.refresh import refresh_flow
        from flows.train import train_flow
        from osteo.ingest.options import RefreshOptions
        from osteo.training.params import TrainParams

        report = refresh_flow(options=RefreshOptions(dicom_dir=str(cohort / "dicom"), dexa_dir=str(cohort / "dexa"),
                                                     annotations_dir=str(cohort / "annotations")))
        result = train_flow(params=TrainParams(preset="demo", epochs=1, folds=2, augment="offline"))
        name = settings.registered_model
    written = sorted(k for k, v in checkout_stores().items() if before.get(k) != v)
    # the version this training registered: a one-epoch model need not clear the champion gate (issue 23)
    ref = f"{name}/{result.registration.model_version}"
    return {"cohort": cohort, "home": home, "refresh": report.to_dict(), "train": result.to_dict(),
            "model_name": name, "ref": ref, "checkout_writes": written}


def checkout_stores() -> dict[str, int]:
    """Files (with their mtimes) in the checkout's default stores: a run under OSTEO_HOME leaves them alone."""
    from osteo.settings import REPO_ROOT

    return {str(p.relative_to(REPO_ROOT)): p.stat().st_mtime_ns
            for folder in ("var", "data", "mlruns") for p in (REPO_ROOT / folder).rglob("*") if p.is_file()}
