"""A database made and filled by the release before migrations (commit 82910aa), with that release's own
code run in a subprocess from `git archive`, and the content of every table as counts and digests."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, inspect, select

OLD_COMMIT = "82910aa"
REPO = Path(__file__).resolve().parents[2]

# Run by 82910aa's code: a refreshed cohort with quarantine entries, a snapshot, a registered model's
# training_run row, augmented copies, the service's prediction audit and a lock row; no table left empty.
FILL = r'''
import datetime as dt, hashlib, sys
from pathlib import Path

from sqlalchemy import select

from db.models import AugmentedCopy, Export, PredictionAudit, RefreshLock
from osteo import refresh, snapshot  # 82910aa's module paths (osteo/refresh.py, osteo/snapshot.py)
from osteo.settings import get_settings, session_factory
from osteo.synth import generate_cohort

home, cohort, patients = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
s = get_settings()
generate_cohort(cohort, patients=patients, seed=4, workers=1)
(cohort / "dicom" / "broken.dcm").write_bytes(b"DICM but not a DICOM file")
(cohort / "dexa" / "broken.csv").write_text("no;such;columns\n1;2;3\n")
factory = session_factory(s, create=True)
refresh.start_refresh_run(factory, {"dicom_dir": str(cohort / "dicom")})
key = s.resolved_pseudonym_key()
refresh.ingest_dicom(factory, refresh.discover(cohort / "dicom"), key, workers=1)
refresh.ingest_dexa(factory, refresh.discover(cohort / "dexa", (".csv", ".txt")), key, s)
refresh.ingest_annotations(factory, refresh.discover(cohort / "annotations", (".xml",)))
refresh.pair_and_label(factory, s)
refresh.export_images(factory, refresh.plan_exports(factory, s), s, workers=1)
info = snapshot.take_snapshot(factory, home / "snapshots", test_year=s.test_year, folds=2, seed=0)
snapshot.record_training_run(factory, snapshot_id=info.snapshot_id, run_id="r" * 32, arch="resnet18",
                             preset="demo", model_name="osteo-classifier", model_version="1", test_auc=0.61,
                             checkpoint_sha256="c" * 64)
with factory() as session, session.begin():
    export_id = session.scalar(select(Export.id).limit(1))
    aug = home / "aug.png"  # a real file: the old model's lineage re-hashes it after the upgrade
    aug.write_bytes(b"an augmented copy")
    session.add(AugmentedCopy(export_id=export_id, seed=1, params={"flip": True}, params_digest="p" * 64,
                              path=str(aug), sha256=hashlib.sha256(aug.read_bytes()).hexdigest()))
    session.add_all([PredictionAudit(channel="api", model_name="osteo-classifier", model_version="1",
                                     input_sha256=f"{i:064d}", input_kind="png", box=[1, 2, 30, 40],
                                     box_source="user", side="L", probability=0.1 * i, label=int(i > 2),
                                     threshold=0.3, created_at=dt.datetime(2026, 12, 1, 8, i))
                     for i in range(4)])
    session.add(RefreshLock(name="refresh"))
'''


def extract_old_release(dest: Path) -> Path:
    """82910aa's code packages (not its tests), unpacked from the repository's history."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", OLD_COMMIT, "db", "osteo", "osteo_common",
                              "osteo_model", "sql"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def fill_with_old_release(tree: Path, home: Path, url: str, patients: int = 10) -> None:
    """Make and fill the database at `url` with the old release's code (its own create_all), as a site had it:
    a cohort of `patients` in home/cohort, its exports and snapshot under `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OSTEO_", "MLFLOW_TRACKING"))}
    env.update(PYTHONPATH=str(tree), OSTEO_HOME=str(home), OSTEO_DATABASE_URL=url)
    subprocess.run([sys.executable, "-c", FILL, str(home), str(home / "cohort"), str(patients)], cwd=tree, env=env,
                   check=True, timeout=600)


def table_contents(engine: Engine, columns: dict[str, list[str]] | None = None) -> dict[str, tuple[int, str]]:
    """Every osteo table's row count and a SHA-256 of its rows (ordered by id), over `columns` (by default
    the columns the table has now): the same content reads the same on SQLite and PostgreSQL."""
    from db.models import Base

    out = {}
    with engine.connect() as conn:
        present = set(inspect(conn).get_table_names())
        for table in Base.metadata.sorted_tables:
            if table.name not in present or (columns is not None and table.name not in columns):
                continue  # a table a later revision added (0004's sign-in tables) holds nothing to compare
            names = columns[table.name] if columns else [c["name"] for c in inspect(conn).get_columns(table.name)]
            cols = [table.c[n] for n in sorted(names)]
            digest = hashlib.sha256()
            for row in conn.execute(select(*cols).order_by(table.c.id)):
                digest.update(json.dumps([canonical(v) for v in row], default=str, sort_keys=True).encode())
            count = conn.scalar(select(func.count()).select_from(table))
            out[table.name] = (count, digest.hexdigest())
    return out


def canonical(value):
    """JSON text read back as a string on one database and a dict on another hashes the same."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def columns_of(engine: Engine) -> dict[str, list[str]]:
    insp = inspect(engine)
    return {t: [c["name"] for c in insp.get_columns(t)] for t in insp.get_table_names()}


def create_with_old_release(tree: Path, url: str) -> None:
    """An empty database made by the old release's own create_all (its db.create_schema)."""
    code = "import sys\nfrom db import create_schema, make_engine\ncreate_schema(make_engine(sys.argv[1]))\n"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run([sys.executable, "-c", code, url], cwd=tree, env=env, check=True, timeout=300)


def schema_dump(engine: Engine) -> dict[str, dict]:
    """Every osteo table as the database reports it: columns (type, nullability, default), keys, indexes."""
    from db.migrate import VERSION_TABLE

    insp = inspect(engine)
    out = {}
    for name in sorted(set(insp.get_table_names()) - {VERSION_TABLE}):
        out[name] = {
            "columns": sorted((c["name"], str(c["type"]), c["nullable"], str(c.get("default"))) for c in
                              insp.get_columns(name)),
            "primary_key": insp.get_pk_constraint(name)["constrained_columns"],
            "foreign_keys": sorted((tuple(f["constrained_columns"]), f["referred_table"],
                                    tuple(f["referred_columns"])) for f in insp.get_foreign_keys(name)),
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in insp.get_indexes(name)),
            "unique": sorted((str(u["name"]), tuple(u["column_names"])) for u in insp.get_unique_constraints(name)),
        }
    return out


@contextmanager
def fresh_pg_schema(tag: str) -> Iterator[str]:
    """The URL of a new, empty schema on the suite's PostgreSQL server (search_path), dropped afterwards."""
    from sqlalchemy import text

    from db import make_engine
    from tests.conftest import PG_URL, _pg_available

    why = _pg_available()
    if why:  # the machine provides PostgreSQL (README): its absence is a failure, never a skip
        pytest.fail(why)
    schema = f"m_{tag}_{os.getpid()}_{time.monotonic_ns() % 10**9}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
