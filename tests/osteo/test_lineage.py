"""Lineage: a registered model traced back to every source file; verify catches one changed byte (also in the
registered checkpoint); every registered version keeps its record; raw patient IDs are looked up, never shown."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from pathlib import Path

import pandas
import pytest
from sqlalchemy import select, text

from db.models import Snapshot, TrainingRun
from osteo.lineage import check_checkpoint, lineage_csv, parse_model_ref, pseudonym_of
from osteo.settings import get_settings, session_factory
from osteo_common.files import sha256_file

# ---------------------------------------------------------------- cheap unit tests


def test_parse_model_ref():
    assert parse_model_ref("osteo-classifier@champion") == ("osteo-classifier", "champion", None)
    assert parse_model_ref("osteo-classifier/3") == ("osteo-classifier", None, "3")
    assert parse_model_ref("models:/m@challenger") == ("m", "challenger", None)
    for bad in ("osteo-classifier", "a@b@c", "m/x", "@champion", ""):
        with pytest.raises(ValueError):
            parse_model_ref(bad)


def test_lineage_csv_has_one_row_per_source_file():
    lin = {"source_files": [
        {"kind": "dicom", "path": "/d/a.dcm", "sha256": "a" * 64, "size_bytes": 10, "first_seen": "2024-01-01",
         "status": "ingested", "n_members": 1, "splits": {"train": 1}},
        {"kind": "dexa", "path": "/x/b.csv", "sha256": "b" * 64, "size_bytes": 5, "first_seen": "2024-01-01",
         "status": "ingested", "n_members": 3, "splits": {"test": 1, "train": 2}},
    ]}
    rows = list(csv.DictReader(io.StringIO(lineage_csv(lin))))
    assert [r["path"] for r in rows] == ["/d/a.dcm", "/x/b.csv"]
    assert rows[1]["splits"] == "test=1;train=2"


def test_check_checkpoint_rehashes_the_fetched_file(tmp_path):
    blob = b"weights"
    lin = {"model": {"name": "m", "version": "2", "checkpoint_sha256": None},
           "training_run": {"checkpoint_sha256": hashlib.sha256(blob).hexdigest()}}

    def fetch(content):
        def into(dst):
            (dst / "artifacts").mkdir()
            (dst / "artifacts" / "fold-0.pth").write_bytes(content)
            return dst / "artifacts" / "fold-0.pth"
        return into

    status, entry = check_checkpoint(lin, fetch(blob))
    assert status == "ok" and entry["path"] == "models:/m/2/artifacts/fold-0.pth" and entry["role"] == "checkpoint"
    assert check_checkpoint(lin, fetch(b"weightz"))[0] == "changed"
    assert check_checkpoint(lin, lambda dst: None)[0] == "missing"
    lin["training_run"]["checkpoint_sha256"] = None  # a version registered before hashes were recorded
    assert check_checkpoint(lin, fetch(blob))[0] == "unrecorded"


def test_command_line_refusals_exit_2(tmp_path, capsys):
    from tests.helpers import isolated_settings

    with isolated_settings(tmp_path / "home", OSTEO_PSEUDONYM_KEY=""):
        for argv in (["patient"], ["patient", "P" + "0" * 24, "--patient-id", "X1"], ["refreshes", "--last", "0"],
                     ["model", "no-reference"]):
            code, out = _osteo(capsys, "lineage", *argv, "--json")
            assert code == 2 and json.loads(out)["reason"] in {"bad_option", "bad_reference"}, (argv, out)
        code, out = _osteo(capsys, "lineage", "refreshes", "--json")  # an empty database: no rows, no error
        assert code == 0 and json.loads(out) == {"refreshes": [], "count": 0}
        # no ingest, no key: a lookup by raw ID refuses instead of inventing a key
        code, out = _osteo(capsys, "lineage", "patient", "--patient-id", "X1", "--json")
        assert code == 2 and json.loads(out)["reason"] == "no_pseudonym_key" and "X1" not in out
        assert not (tmp_path / "home" / "var" / "pseudonym.key").exists()


# ---------------------------------------------------------------- one full pipeline for the module


@pytest.fixture(scope="module")
def pipeline(audit_run):
    from tests.helpers import isolated_settings

    with isolated_settings(audit_run["home"]):
        yield audit_run


def _osteo(capsys, *argv: str) -> tuple[int, str]:
    from osteo_cli.main import main

    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().out


def _lineage(capsys, ref: str) -> dict:
    code, out = _osteo(capsys, "lineage", "model", ref, "--json")
    assert code == 0, out
    return json.loads(out)


@pytest.mark.slow
def test_model_lineage_names_snapshot_members_and_sources(pipeline, capsys):
    lin = _lineage(capsys, pipeline["ref"])
    train = pipeline["train"]
    assert lin["model"]["version"] == train["model_version"]
    assert lin["model"]["run_id"] == lin["training_run"]["mlflow_run_id"]
    assert lin["snapshot"]["digest"] == train["snapshot_digest"]
    assert lin["splits"]["train"]["n"] == train["n_train"] and lin["splits"]["test"]["n"] == train["n_test"]
    # folds 0..k-1, and -2 for patients with right femurs only (always train); test members have -1
    assert {"0", "1"} <= set(lin["splits"]["train"]["folds"]) <= {"-2", "0", "1"}
    assert set(lin["splits"]["test"]["folds"]) == {"-1"}
    assert not lin["notes"]
    for m in lin["members"]:
        assert m["export"]["sha256"] and m["export"]["transform"]
        assert m["pair"]["rule_version"] and m["pair"]["window_days"] > 0
        assert m["dexa_exam"]["source_row"] >= 1 and m["dexa_exam"]["source_file"].endswith(".csv")
        assert m["box_source"] != "human" or m["annotation"]["source_file"].endswith(".xml")
        # the offline augmentation: one recorded copy per training image, none for the test year
        if m["split"] == "train":
            assert m["augmented_copies"] and all(c["sha256"] and "seed" in c for c in m["augmented_copies"])
        else:
            assert not m["augmented_copies"]
    kinds = {s["kind"] for s in lin["source_files"]}
    assert kinds == {"dicom", "dexa", "annotation"}
    assert all(len(s["sha256"]) == 64 and s["size_bytes"] > 0 and s["first_seen"] for s in lin["source_files"])

    code, out = _osteo(capsys, "lineage", "model", pipeline["ref"], "--csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert sorted(r["sha256"] for r in rows) == sorted(s["sha256"] for s in lin["source_files"])

    code, out = _osteo(capsys, "lineage", "model", f"{pipeline['model_name']}/{lin['model']['version']}")
    assert code == 0 and lin["snapshot"]["digest"] in out and "source files" in out


@pytest.mark.slow
def test_source_count_equals_distinct_sources_behind_snapshot(pipeline, capsys):
    """Counted independently: members -> exports -> images / pairs -> DEXA rows / annotations -> files."""
    lin = _lineage(capsys, pipeline["ref"])
    sql = text("""
        SELECT COUNT(DISTINCT u.sf) FROM (
            SELECT i.source_file_id AS sf FROM training_run r
              JOIN snapshot_member m ON m.snapshot_id = r.snapshot_id
              JOIN export e ON e.id = m.export_id JOIN dicom_image i ON i.id = e.image_id
             WHERE r.mlflow_run_id = :run
            UNION
            SELECT d.source_file_id FROM training_run r
              JOIN snapshot_member m ON m.snapshot_id = r.snapshot_id
              JOIN pair p ON p.id = m.pair_id JOIN dexa_exam d ON d.id = p.dexa_exam_id
             WHERE r.mlflow_run_id = :run
            UNION
            SELECT a.source_file_id FROM training_run r
              JOIN snapshot_member m ON m.snapshot_id = r.snapshot_id
              JOIN export e ON e.id = m.export_id JOIN annotation a ON a.id = e.annotation_id
             WHERE r.mlflow_run_id = :run
        ) u""")
    with session_factory(get_settings())() as session:
        expected = session.execute(sql, {"run": pipeline["train"]["run_id"]}).scalar_one()  # the version's run
        n_members = session.execute(text(
            "SELECT n_members FROM snapshot WHERE digest = :d"), {"d": lin["snapshot"]["digest"]}).scalar_one()
    assert len(lin["source_files"]) == lin["counts"]["source_files"] == expected
    # one DICOM file per member image (an AP pelvis gives two crops), one VOC file per image with a person's box
    vocs = {m["annotation"]["source_file"] for m in lin["members"] if m["box_source"] == "human"}
    assert lin["counts"]["dicom_files"] == len({m["image"]["sop_instance_uid"] for m in lin["members"]})
    assert lin["counts"]["annotation_files"] == len(vocs) and n_members == len(lin["members"])
    assert 1 <= lin["counts"]["dexa_files"] <= 4


@pytest.mark.slow
def test_verify_passes_then_names_the_one_changed_byte(pipeline, capsys):
    ref = pipeline["ref"]
    code, out = _osteo(capsys, "lineage", "verify", ref, "--json")
    result = json.loads(out)
    assert code == 0 and result["ok"], out
    assert result["by_role"]["manifest"] == 1 and result["by_role"]["dicom"] > 0 and result["by_role"]["augmented"] > 0

    lin = _lineage(capsys, ref)
    victim = next(s["path"] for s in lin["source_files"] if s["kind"] == "dicom")
    original = open(victim, "rb").read()
    changed = bytearray(original)
    changed[-1] ^= 0x01  # one bit of the last pixel
    try:
        with open(victim, "wb") as f:
            f.write(changed)
        code, out = _osteo(capsys, "lineage", "verify", ref, "--json")
        result = json.loads(out)
        assert code == 1 and not result["ok"]
        assert [c["path"] for c in result["changed"]] == [victim] and not result["missing"]
        code, out = _osteo(capsys, "lineage", "verify", ref)
        assert code == 1 and f"CHANGED         dicom      {victim}" in out and "FAILED" in out
    finally:
        with open(victim, "wb") as f:
            f.write(original)

    png = next(m["export"]["path"] for m in lin["members"])
    shutil.move(png, png + ".away")
    try:
        code, out = _osteo(capsys, "lineage", "verify", ref, "--json")
        result = json.loads(out)
        assert code == 1 and [m["path"] for m in result["missing"]] == [png] and not result["changed"]
    finally:
        shutil.move(png + ".away", png)
    code, _ = _osteo(capsys, "lineage", "verify", ref)
    assert code == 0


@pytest.mark.slow
def test_verify_rehashes_the_registered_checkpoint(pipeline, capsys):
    ref = pipeline["ref"]
    code, out = _osteo(capsys, "lineage", "verify", ref, "--json")
    result = json.loads(out)
    assert code == 0 and result["ok"] and result["by_role"]["checkpoint"] == 1 and not result["unchecked"], out
    sha = _lineage(capsys, ref)["training_run"]["checkpoint_sha256"]
    assert sha and len(sha) == 64
    # the registered copies inside the MLflow artifact store of the pipeline's home (restored: shared fixture)
    from osteo.settings import get_settings

    artifacts = Path(get_settings().mlflow_artifact_root)
    stored = [p for p in sorted(artifacts.rglob("*.pth")) if sha256_file(p) == sha]
    originals = {p: p.read_bytes() for p in stored}
    assert originals
    try:
        for p, blob in originals.items():
            p.write_bytes(blob[:-1] + bytes([blob[-1] ^ 0x01]))
        code, out = _osteo(capsys, "lineage", "verify", ref, "--json")
        result = json.loads(out)
        assert code == 1 and not result["ok"] and not result["missing"]
        [changed] = result["changed"]
        assert changed["role"] == "checkpoint" and changed["sha256"] == sha != changed["actual_sha256"]
        assert changed["path"].startswith(f"models:/{pipeline['model_name']}/") and changed["path"].endswith(".pth")
        code, out = _osteo(capsys, "lineage", "verify", ref)
        assert code == 1 and f"CHANGED         checkpoint {changed['path']}" in out and "FAILED" in out
    finally:
        for p, blob in originals.items():
            p.write_bytes(blob)
    assert _osteo(capsys, "lineage", "verify", ref)[0] == 0


@pytest.mark.slow
def test_image_and_patient_lookups_agree_with_the_model_lineage(pipeline, capsys):
    lin = _lineage(capsys, pipeline["ref"])
    version = lin["model"]["version"]
    for split in ("train", "test"):
        member = next(m for m in lin["members"] if m["split"] == split)
        uid, key = member["image"]["sop_instance_uid"], member["patient_key"]

        code, out = _osteo(capsys, "lineage", "image", uid, "--json")
        assert code == 0
        img = json.loads(out)
        assert img["image"]["patient_key"] == key
        assert img["source_file"]["sha256"] == member["image"]["source_sha256"]
        assert img["pair"]["dexa_exam"]["source_row"] == member["dexa_exam"]["source_row"]
        exp = next(e for e in img["exports"] if e["id"] == member["export"]["id"])
        assert exp["sha256"] == member["export"]["sha256"]
        assert [c["sha256"] for c in exp["augmented_copies"]] == [c["sha256"] for c in member["augmented_copies"]]
        snap = next(s for s in img["snapshots"] if s["digest"] == lin["snapshot"]["digest"])
        assert (snap["split"], snap["fold"]) == (member["split"], member["fold"])
        assert any(r["model_version"] == version and r["split"] == split for r in img["model_versions"])
        assert img["quarantine"] == []

        code, out = _osteo(capsys, "lineage", "patient", key, "--json")
        assert code == 0
        pat = json.loads(out)
        assert uid in {i["sop_instance_uid"] for i in pat["images"]}
        assert all(e["source_row"] >= 1 for e in pat["dexa_exams"]) and pat["dexa_exams"]
        snap = next(s for s in pat["snapshots"] if s["digest"] == lin["snapshot"]["digest"])
        assert split in snap["splits"]
        mv = next(m for m in pat["model_versions"] if m["model_version"] == version)
        assert mv["trained_on" if split == "train" else "tested_on"]
        # the patient's members of the snapshot are exactly the model lineage's members for that key
        assert sorted(m["sop_instance_uid"] for m in snap["members"]) == sorted(
            m["image"]["sop_instance_uid"] for m in lin["members"] if m["patient_key"] == key)
        code, out = _osteo(capsys, "lineage", "patient", key)
        assert code == 0 and key in out and uid in out


@pytest.mark.slow
def test_unknown_things_exit_2(pipeline, capsys):
    raw_id = pandas.read_csv(pipeline["cohort"] / "truth.csv", dtype=str)["patient_id"].iloc[0]
    for argv, reason in ((["patient", raw_id], "unknown_patient"),  # a raw ID where the pseudonym belongs
                         (["patient", "P" + "0" * 24], "unknown_patient"),
                         (["patient", "--patient-id", "NO-SUCH-4711"], "unknown_patient"),
                         (["model", f"{pipeline['model_name']}@nosuchalias"], "unknown_model"),
                         (["model", "nosuchmodel/1"], "unknown_model"),
                         (["verify", f"{pipeline['model_name']}/999"], "unknown_model"),
                         (["image", "1.2.3.4.5.6.7.8.9"], "unknown_image")):
        code, out = _osteo(capsys, "lineage", *argv, "--json")
        err = json.loads(out)
        assert code == 2 and err["ok"] is False and err["reason"] == reason, (argv, out)
        assert raw_id not in out and "NO-SUCH-4711" not in out  # a raw ID is never echoed
    assert "nosuchalias" in _osteo(capsys, "lineage", "model", f"{pipeline['model_name']}@nosuchalias", "--json")[1]
    code, out = _osteo(capsys, "lineage", "image", "1.2.3.4.5.6.7.8.9")
    assert code == 2 and out == ""  # one line on stderr


@pytest.mark.slow
def test_patient_id_finds_the_same_patient_as_its_pseudonym(pipeline, capsys):
    keys = {m["patient_key"] for m in _lineage(capsys, pipeline["ref"])["members"]}
    key_bytes = get_settings().resolved_pseudonym_key()
    raw_id = next(r for r in pandas.read_csv(pipeline["cohort"] / "truth.csv", dtype=str)["patient_id"]
                  if pseudonym_of(r, key_bytes) in keys)
    by_key = json.loads(_osteo(capsys, "lineage", "patient", pseudonym_of(raw_id, key_bytes), "--json")[1])
    code, out = _osteo(capsys, "lineage", "patient", "--patient-id", f" {raw_id.lower()} ", "--json")
    assert code == 0 and raw_id not in out and raw_id.lower() not in out
    by_id = json.loads(out)
    assert by_id.pop("looked_up_by") == "patient_id" and by_key.pop("looked_up_by") == "key"
    assert by_id == by_key and by_id["patient"]["patient_key"] in keys and by_id["model_versions"]
    code, out = _osteo(capsys, "lineage", "patient", "--patient-id", raw_id)
    assert code == 0 and raw_id not in out and by_key["patient"]["patient_key"] in out


@pytest.mark.slow
def test_refreshes_lists_the_recorded_runs(pipeline, capsys):
    code, out = _osteo(capsys, "lineage", "refreshes", "--json")
    assert code == 0
    rows = json.loads(out)["refreshes"]
    assert rows and [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)  # newest first
    ours = next(r for r in rows if r["id"] == pipeline["refresh"]["refresh_id"])
    assert ours["status"] == "finished" and ours["finished"] >= ours["started"] and ours["code_version"]
    assert ours["inputs"]["dicom_dir"] == str(pipeline["cohort"] / "dicom")
    assert ours["this_run"] == pipeline["refresh"]["this_run"] and ours["this_run"]["images"] > 0
    assert ours["totals"] == pipeline["refresh"]["totals"]
    code, out = _osteo(capsys, "lineage", "refreshes", "--last", "1")
    assert code == 0 and out.count("refresh #") == 1 and f"{ours['this_run']['images']} images" in out


@pytest.mark.slow
def test_openlineage_run_event_to_a_file(pipeline, capsys, tmp_path):
    import openlineage.client  # noqa: F401 - a required dependency (pyproject): missing, the test fails
    target = tmp_path / "ol" / "events.jsonl"
    code, out = _osteo(capsys, "lineage", "model", pipeline["ref"], "--json", "--openlineage", str(target))
    assert code == 0
    lin = json.loads(out)
    events = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(events) == 1 and events[0]["eventType"] == "COMPLETE"
    ev = events[0]
    assert ev["run"]["runId"].replace("-", "") == lin["model"]["run_id"]
    files = {(i["name"], i["facets"]["version"]["datasetVersion"]) for i in ev["inputs"] if i["namespace"] == "file"}
    assert files == {(s["path"], s["sha256"]) for s in lin["source_files"]}
    assert ev["outputs"][0]["name"] == f"models:/{pipeline['model_name']}/{lin['model']['version']}"


@pytest.mark.slow
def test_a_new_version_of_the_same_run_keeps_every_version(pipeline, capsys):
    """Registered again through register_best (last in the module; the aliases are put back afterwards)."""
    from osteo.runtime import configure_environment
    from osteo.training.results import Evaluation, FoldResult
    from osteo.training.snapshot import SnapshotInfo
    from osteo_mlflow.client import alias_version, client, set_alias
    from osteo_mlflow.registry import register_best

    s, train, name = get_settings(), pipeline["train"], pipeline["model_name"]
    configure_environment(s)
    c, factory = client(s), session_factory(s)
    fold_json = next((Path(s.data_dir) / "training").glob(f"*/fold-{train['best_fold']}.json"))
    best = FoldResult.from_dict(json.loads(fold_json.read_text()))
    tm = json.loads((fold_json.parent / "test" / "test_metrics.json").read_text())
    flat = {k: v for k, v in tm["metrics"].items() if isinstance(v, int | float) and not isinstance(v, bool)}
    evaluation = Evaluation(metrics=flat, confusion_matrix=tm["metrics"].get("confusion_matrix"),
                            baseline_auc=tm["baseline_mean_intensity"]["auc"], n_test=train["n_test"],
                            test_positives=0, auc_ci=tuple(tm["roc_auc_ci"]))
    with factory() as session:
        row = session.scalar(select(Snapshot).where(Snapshot.digest == train["snapshot_digest"]))
        info = SnapshotInfo(snapshot_id=row.id, digest=row.digest, manifest_path=row.manifest_path,
                            n_members=row.n_members, n_train=train["n_train"], n_test=train["n_test"],
                            test_positives=0, params=row.params)
    first, aliases = train["model_version"], {a: alias_version(c, name, a) for a in ("champion", "challenger")}
    try:
        second = register_best(c, s, factory, best, evaluation, info, train["run_id"]).model_version
    finally:
        for alias, version in aliases.items():
            if version:
                set_alias(c, name, alias, version)
            elif alias_version(c, name, alias):  # none before (the tiny model need not clear the gate): none again
                c.delete_registered_model_alias(name, alias)
    assert second != first
    with factory() as session:
        rows = session.scalars(select(TrainingRun).where(TrainingRun.mlflow_run_id == train["run_id"])).all()
    assert sorted(r.model_version for r in rows) == sorted([first, second])
    assert len({r.checkpoint_sha256 for r in rows}) == 1  # the same checkpoint, registered twice

    for version in (first, second):
        lin = _lineage(capsys, f"{name}/{version}")
        assert lin["training_run"]["model_version"] == version and not lin["notes"]
        assert lin["snapshot"]["digest"] == train["snapshot_digest"]
    key = next(m["patient_key"] for m in lin["members"] if m["split"] == "train")
    code, out = _osteo(capsys, "lineage", "patient", key, "--json")
    assert code == 0
    trained = {m["model_version"] for m in json.loads(out)["model_versions"] if m["trained_on"]}
    assert trained == {first, second}
    code, out = _osteo(capsys, "lineage", "model", f"{name}/1")
    assert code == 0 and train["snapshot_digest"] in out
    assert _osteo(capsys, "lineage", "verify", f"{name}/{second}")[0] == 0
