"""A comparison's MLflow runs: one parent run, one child run per architecture, the folds nested below each.

MLflow's UI shows the tree parent -> architecture -> fold. Every architecture's run holds the same
metric names (test_roc_auc, test_recall_1, test_precision_1, test_f1_1, test_recall_0, ..., train_seconds,
n_parameters), so the compare view lines them up; the parent holds the table (log_table, shown in the
UI's evaluation view) and the same table as Markdown. Run ids sit in marker files in the comparison's
folder, so a killed comparison resumes in the same runs.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from osteo.settings import Settings
from osteo.training.compare import TEST_COLUMNS, ArchResult, table_markdown
from osteo.training.snapshot import SnapshotInfo
from osteo_common.files import write_json
from osteo_mlflow.client import clean_params, code_tags, experiment_id, log_artifacts, log_metrics
from osteo_mlflow.runs import log_snapshot_input, snapshot_params
from osteo_model.config import TrainConfig

TABLE_FILE = "comparison/comparison_table.json"
MARKDOWN_FILE = "comparison/comparison.md"


def experiment_name(settings: Settings) -> str:
    """The comparison's own experiment (one experiment per training flow), beside the training's."""
    return f"{settings.mlflow_experiment}-compare"


def _params(values: dict[str, Any]) -> list[Param]:
    return [Param(k, v) for k, v in clean_params(values).items()]


def start_compare_run(c: MlflowClient, settings: Settings, snapshot: SnapshotInfo, config: TrainConfig,
                      archs: list[str], out_dir: str, preset: str) -> str:
    """The parent run, the snapshot its dataset input (schema and digest, no patient key)."""
    marker = Path(out_dir) / "compare_run.json"
    if marker.exists():
        return json.loads(marker.read_text())["run_id"]
    exp = experiment_id(c, settings, experiment_name(settings))  # tagged as model training there
    run = c.create_run(exp, run_name=f"compare-{preset}-{snapshot.digest[:8]}",
                       tags={**code_tags(), "snapshot_digest": snapshot.digest, "preset": preset,
                             "comparison": "architectures"})
    base = {k: v for k, v in config.to_dict().items() if k != "arch"}  # the config's one flattening: params
    c.log_batch(run.info.run_id, params=_params({**base, "archs": ",".join(archs), "preset": preset,
                                                 **snapshot_params(snapshot)}))
    log_snapshot_input(run.info.run_id, snapshot)
    write_json(marker, {"run_id": run.info.run_id})
    return run.info.run_id


def start_arch_run(c: MlflowClient, compare_run_id: str, arch: str, config: TrainConfig, run_dir: str,
                   preset: str) -> str:
    """The architecture's child run (the folds' parent), created once and found again on a resume."""
    marker = Path(run_dir) / "arch_run.json"
    if marker.exists():
        return json.loads(marker.read_text())["run_id"]
    parent = c.get_run(compare_run_id)
    run = c.create_run(parent.info.experiment_id, run_name=arch,
                       tags={"mlflow.parentRunId": compare_run_id, "arch": arch, "preset": preset,
                             "snapshot_digest": parent.data.tags.get("snapshot_digest", ""), **code_tags()})
    c.log_batch(run.info.run_id, params=_params({**config.to_dict(), "preset": preset}))
    write_json(marker, {"run_id": run.info.run_id})
    return run.info.run_id


def finish_arch_run(c: MlflowClient, result: ArchResult, extra_dir: Path | None = None) -> None:
    """Training time, size and validation summary on the architecture's run, then the run is finished.

    The test_* metrics are there already (the test-year evaluation) except the undefined ones: those (and
    any of the table's columns) are logged as NaN, so that every architecture's run has the same names (an
    architecture that never predicts osteoporosis has no precision_1, and says so)."""
    log_metrics(c, result.run_id, result.metrics())
    now = int(time.time() * 1000)
    names = dict.fromkeys([*TEST_COLUMNS, *result.evaluation.metrics])
    undefined = [Metric(f"test_{k}", math.nan, now, 0) for k in names if not _finite(result.evaluation.metrics.get(k))]
    if undefined:
        c.log_batch(result.run_id, metrics=undefined)
    if extra_dir is not None:  # subgroups.csv/md, calibration.json
        log_artifacts(c, result.run_id, Path(extra_dir), "test/extra")
    c.set_terminated(result.run_id, "FINISHED")


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(float(v))


def log_comparison(c: MlflowClient, compare_run_id: str, results: list[ArchResult], markdown: str,
                   best_arch: str) -> None:
    """The table on the parent run: as an MLflow table (artifact JSON) and as Markdown; then finished."""
    from osteo.training.compare import comparison_table

    table = comparison_table(results)
    # log_table appends to an existing file: a resumed comparison (its table logged already) leaves it
    if TABLE_FILE not in {a.path for a in c.list_artifacts(compare_run_id, "comparison")}:
        c.log_table(compare_run_id, data=table, artifact_file=TABLE_FILE)
        c.log_text(compare_run_id, markdown or table_markdown(table), MARKDOWN_FILE)
    c.set_tag(compare_run_id, "best_arch", best_arch)
    c.set_terminated(compare_run_id, "FINISHED")


def read_table(c: MlflowClient, compare_run_id: str) -> Any:
    """The comparison table back from the parent run (a DataFrame)."""
    local = Path(mlflow.artifacts.download_artifacts(run_id=compare_run_id, artifact_path=TABLE_FILE,
                                                     tracking_uri=c.tracking_uri))
    import pandas as pd

    blob = json.loads(local.read_text())
    return pd.DataFrame(blob["data"], columns=blob["columns"])
