"""The comparison's plain parts: rows, table, best architecture on validation, summary and Markdown."""

from __future__ import annotations

import json
import math

from osteo.training.compare import TABLE_COLUMNS, ArchResult, CompareReport, comparison_table, pick_best_arch
from osteo.training.results import Evaluation, FoldResult
from osteo.training.snapshot import SnapshotInfo


def _fold(fold: int, arch: str, val_loss: float, val_auc: float, seconds: float) -> FoldResult:
    return FoldResult(fold=fold, arch=arch, checkpoint=f"/x/{arch}/fold-{fold}.pth", best_epoch=1, val_loss=val_loss,
                      val_auc=val_auc, val_recall=0.5, n_train=10, n_val=5, val_metrics={}, seconds=seconds)


def _result(arch: str, losses: list[float], test: dict) -> ArchResult:
    folds = [_fold(k, arch, loss, 0.7 + 0.1 * k, 10.0 + k) for k, loss in enumerate(losses)]
    best = min(folds, key=lambda f: f.val_loss)
    return ArchResult(arch=arch, run_id=f"run-{arch}", folds=folds, best=best,
                      evaluation=Evaluation(metrics=test, confusion_matrix=None, baseline_auc=0.5, n_test=9,
                                            test_positives=3), n_parameters=1000 * len(arch))


def _report() -> CompareReport:
    good_test = {"roc_auc": 0.6, "recall_1": 0.5, "precision_1": 0.4, "f1_1": 0.44, "recall_0": 0.7,
                 "precision_0": 0.8, "f1_0": 0.75, "accuracy": 0.66, "specificity": 0.7}
    # vgg16's test year is better, but resnet18 wins on validation: the test year does not choose
    results = [_result("resnet18", [0.5, 0.3], good_test),
               _result("vgg16", [0.6, 0.4], {**good_test, "roc_auc": 0.9, "precision_1": math.nan, "f1_1": math.nan})]
    snap = SnapshotInfo(snapshot_id=1, digest="ab" * 32, manifest_path="/x.csv", n_members=30, n_train=21, n_test=9,
                        test_positives=3, params={})
    return CompareReport("parent", snap, "demo", results, pick_best_arch(results, "val_loss").arch, None,
                         {"folds": 2, "epochs": 2, "select_by": "val_loss"})


def test_rows_and_table():
    report = _report()
    table = comparison_table(report.results)
    assert tuple(table.columns) == TABLE_COLUMNS and list(table["arch"]) == ["resnet18", "vgg16"]
    r18 = table.iloc[0]
    assert r18["train_seconds"] == 21.0 and r18["n_parameters"] == 8000 and r18["best_fold"] == 1
    assert r18["val_auc_mean"] == 0.75
    assert report.results[0].metrics()["train_seconds"] == 21.0


def test_best_is_chosen_on_validation_not_the_test_year():
    assert _report().best_arch == "resnet18"


def test_json_summary_and_markdown_show_undefined_values():
    report = _report()
    d = report.to_dict()
    json.dumps(d)  # JSON-safe: NaN became null
    vgg = d["table"][1]
    assert vgg["arch"] == "vgg16" and vgg["precision_1"] is None and vgg["roc_auc"] == 0.9
    assert d["best_arch"] == "resnet18" and d["registered"] is None
    summary = report.summary()
    assert "vgg16" in summary and "n/a" in summary and "best (validation, val_loss): resnet18" in summary
    md = report.markdown()
    assert "| vgg16 | 0.800 |" in md and "n/a" in md and "run_id" not in md
