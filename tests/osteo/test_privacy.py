"""De-identification audit: a full small run leaves no name, raw ID, birth date or accession anywhere.

The identifiers come from the cohort itself (DICOM headers read with pydicom, truth.csv, the
DEXA CSVs' name columns); the outputs scanned are the database (every column of every table,
and the file's bytes), PNG text chunks, log files, Prefect's logs and artifacts (through its
API and its database file) and the whole MLflow store (database bytes, params, tags and every
artifact file). A finding names the place and the kind of identifier, never the value.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.privacy_scan import Identifiers, Needles, cohort_identifiers, scan_tree

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(audit_run):
    from tests.helpers import isolated_settings

    with isolated_settings(audit_run["home"]):
        yield audit_run


@pytest.fixture(scope="module")
def identifiers(pipeline) -> Identifiers:
    return cohort_identifiers(pipeline["cohort"])


@pytest.fixture(scope="module")
def needles(identifiers) -> Needles:
    return identifiers.needles()


def _report(found: dict[str, list[tuple[str, str]]]) -> str:
    """Where and what kind, without repeating the identifiers themselves."""
    return "; ".join(f"{where}: {sorted({kind for kind, _ in hits})} x{len(hits)}" for where, hits in found.items())


def test_the_scanner_finds_identifiers_where_they_are(pipeline, identifiers, needles):
    """The cohort's own files carry every kind of identifier, so a clean scan means something."""
    n_patients = len(set(__import__("pandas").read_csv(pipeline["cohort"] / "truth.csv", dtype=str)["patient_id"]))
    assert len(identifiers.ids) >= n_patients
    assert len(identifiers.birth_dates) >= n_patients * 0.9
    assert identifiers.names and identifiers.accessions
    assert any(ord(c) > 0x2E80 for n in identifiers.names for c in n), "Chinese names from the Big5/UTF-8 CSVs"
    found = scan_tree(pipeline["cohort"], needles)
    kinds = {kind for hits in found.values() for kind, _ in hits}
    assert kinds == {"name", "patient_id", "birth_date", "accession"}
    assert any(p.endswith(".csv") and any(k == "name" for k, _ in h) for p, h in found.items())


def test_database_holds_no_identifier(pipeline, needles):
    from sqlalchemy import select

    from db.models import Base
    from osteo.settings import get_settings, session_factory

    found: dict[str, list[tuple[str, str]]] = {}
    n_rows = 0
    with session_factory(get_settings())() as session:
        for table in Base.metadata.sorted_tables:
            for row in session.execute(select(table)).mappings():
                n_rows += 1
                for col, value in row.items():
                    if value is None:
                        continue
                    text = json.dumps(value, default=str, ensure_ascii=False) if isinstance(value, dict | list) \
                        else str(value)
                    hits = needles.search(text.encode("utf-8"))
                    if hits:
                        found.setdefault(f"{table.name}.{col}", []).extend(hits)
    assert n_rows > 500, "the database should hold the whole run"
    assert not found, _report(found)
    db_file = pipeline["home"] / "var" / "osteo.sqlite"
    assert db_file.exists()
    raw = scan_tree(db_file.parent, needles)  # the file itself, with its journal, and free pages
    assert not raw, _report(raw)


def test_png_text_chunks_hold_no_identifier(pipeline, needles):
    from PIL import Image

    pngs = sorted(pipeline["home"].rglob("*.png"))
    exports = [p for p in pngs if "export" in p.parts]
    assert exports and len(pngs) > len(exports), "exports, augmented copies and MLflow figures"
    found: dict[str, list[tuple[str, str]]] = {}
    for path in pngs:
        with Image.open(path) as im:
            im.load()
            chunks = {**im.info, **getattr(im, "text", {})}
        if path in exports:
            assert not chunks, f"{path} carries metadata {sorted(chunks)}"
        blob = json.dumps({str(k): str(v) for k, v in chunks.items()}, ensure_ascii=False).encode()
        hits = needles.search(blob)
        if hits:
            found[str(path)] = hits
    assert not found, _report(found)


def test_logs_and_prefect_hold_no_identifier(pipeline, needles):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_HOME, PREFECT_SERVER_DATABASE_CONNECTION_URL

    found: dict[str, list[tuple[str, str]]] = {}
    for root in {pipeline["home"], Path(str(PREFECT_HOME.value()))}:
        for path in root.rglob("*"):
            if path.is_file() and (path.suffix in (".log", ".out", ".err") or "log" in path.name.lower()):
                hits = needles.search(path.read_bytes())
                if hits:
                    found[str(path)] = hits
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs reach the server in batches
    with get_client(sync_client=True) as client:
        artifacts, logs, flow_runs = [], [], []
        # the REST endpoint itself: this Prefect's sync read_artifacts() sends nulls the server rejects,
        # and empty flow/task-run filters select nothing
        while batch := client.request("POST", "/artifacts/filter", json={
                "limit": 200, "offset": len(artifacts), "sort": "CREATED_DESC"}).json():
            artifacts.extend(batch)
        while batch := client.read_logs(limit=200, offset=len(logs)):
            logs.extend(batch)
        while batch := client.read_flow_runs(limit=200, offset=len(flow_runs)):
            flow_runs.extend(batch)
    assert any(a["key"] == "training-summary" for a in artifacts), "the training flow's artifact is reachable"
    for a in artifacts:
        hits = needles.search(json.dumps(a, default=str, ensure_ascii=False).encode())
        if hits:
            found[f"prefect artifact {a['key']}"] = hits
    for log in logs:
        hits = needles.search(str(log.message).encode("utf-8"))
        if hits:
            found[f"prefect log {log.name}"] = hits
    for fr in flow_runs:
        hits = needles.search(json.dumps([fr.name, fr.parameters, fr.state.message if fr.state else None],
                                         default=str, ensure_ascii=False).encode())
        if hits:
            found[f"prefect flow run {fr.name}"] = hits
    # and the Prefect server's database file itself (task runs, states, logs, artifacts)
    url = str(PREFECT_SERVER_DATABASE_CONNECTION_URL.value() or "")
    if url.startswith("sqlite") and ":///" in url:
        db = Path(url.split(":///", 1)[1])
        if db.exists():
            found.update(scan_tree(db.parent, needles))
    assert not found, _report(found)


def test_mlflow_store_holds_no_identifier(pipeline, needles):
    from mlflow import MlflowClient

    from osteo.settings import get_settings

    s = get_settings()
    client = MlflowClient(s.resolved_tracking_uri())
    exp = client.get_experiment_by_name(s.mlflow_experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) >= 3, "a parent run and one child per fold"
    found: dict[str, list[tuple[str, str]]] = {}
    for r in runs:
        blob = json.dumps([r.data.params, r.data.tags, r.info.run_name], ensure_ascii=False).encode()
        if hits := needles.search(blob):
            found[f"mlflow run {r.info.run_id} params/tags"] = hits
        for inp in (r.inputs.dataset_inputs if r.inputs else []):
            ds = inp.dataset
            if hits := needles.search(json.dumps([ds.name, ds.source, ds.schema, ds.profile]).encode()):
                found[f"mlflow run {r.info.run_id} dataset input"] = hits
    for mv in client.search_model_versions(f"name='{s.registered_model}'"):
        if hits := needles.search(json.dumps([mv.tags, mv.description, mv.source]).encode()):
            found[f"model version {mv.version} tags"] = hits
    store = Path(s.resolved_tracking_uri().removeprefix("sqlite:///"))
    artifacts = Path(s.mlflow_artifact_root)
    assert store.is_relative_to(pipeline["home"]) and artifacts.is_relative_to(pipeline["home"])
    assert store.exists() and artifacts.exists() and any(artifacts.rglob("MLmodel"))
    for db_file in store.parent.glob("mlflow.db*"):  # the store with its journal files
        if hits := needles.search(db_file.read_bytes()):
            found[str(db_file)] = hits
    found.update(scan_tree(artifacts, needles))
    assert not found, _report(found)


def test_the_run_wrote_nothing_into_the_checkout(pipeline):
    """OSTEO_HOME moved every store: the checkout's default var/, data/ and mlruns/ were not touched."""
    assert pipeline["checkout_writes"] == []


def test_no_output_file_anywhere_holds_an_identifier(pipeline, needles):
    """Belt and braces: every file the run wrote (database, data, PNGs, manifests, MLflow), byte for byte."""
    home = pipeline["home"]
    files = [p for p in home.rglob("*") if p.is_file()]
    assert len(files) > 100
    found = scan_tree(home, needles)
    assert not found, _report(found)
