"""MLflow's tracking database moves with osteo: a SQL store behind the installed MLflow is upgraded by
MLflow's own `mlflow db upgrade`, after a copy of a SQLite file; anything else is left alone."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, pool


def old_mlflow_store(uri: str) -> str:
    """A tracking store one revision behind the installed MLflow, made as MLflow makes one (its first
    tables, then its migrations); returns the revision it is at."""
    import mlflow
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    from osteo_mlflow.store import mlflow_head

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(mlflow.__file__).parent / "store" / "db_migrations"))
    previous = ScriptDirectory.from_config(cfg).get_revision(mlflow_head()).down_revision
    engine = create_engine(uri, poolclass=pool.NullPool)
    InitialBase.metadata.create_all(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, previous)
    engine.dispose()
    return previous


def test_a_server_or_a_store_not_made_yet_is_left_alone(tmp_path):
    from osteo_mlflow.store import tracking_store_state, upgrade_tracking_store

    assert tracking_store_state("http://mlflow.hospital.local:5000").state == "not_sql"
    missing = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert tracking_store_state(missing).state == "empty"
    assert upgrade_tracking_store(missing)["upgraded"] is False
    assert not (tmp_path / "mlflow.db").exists()


def test_a_store_behind_mlflow_is_upgraded_after_a_copy(tmp_path):
    from mlflow.tracking import MlflowClient

    from osteo_mlflow.store import mlflow_head, tracking_store_state, upgrade_tracking_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = old_mlflow_store(uri)
    assert tracking_store_state(uri).state == "behind"
    done = upgrade_tracking_store(uri)
    assert done["upgraded"] and done["after"] == mlflow_head() and tracking_store_state(uri).state == "current"
    copy = Path(done["backup"])
    assert copy.parent == tmp_path and tracking_store_state(f"sqlite:///{copy}").current == previous
    assert [e.name for e in MlflowClient(uri).search_experiments()] == ["Default"]  # MLflow opens it
