"""The seed's architecture comparison as plain functions: one row per network, on one snapshot and its folds.

The seed study (tables 4.1/4.2) set ResNet18, ResNet34, GoogLeNet, DenseNet and VGG16 side by side:
precision, recall and F1 per class on the test year, and training time. Here each row adds the test-year
ROC AUC and the parameter count. Every architecture trains on the SAME snapshot and the SAME folds, and is
scored at its own operating threshold (chosen on its out-of-fold validation for the target osteoporosis
recall, as `osteo train` does; MLflow also holds each at 0.5 as test_at_0.5_*). The
best architecture (for `--register`) is chosen on validation, never on the test year, by the rule that
chose each fold's best epoch (the preset's `select_by`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from osteo.errors import UserError
from osteo.training.evaluation_report import TestReportExtras, extra_test_report
from osteo.training.folds import training_digest
from osteo.training.results import Evaluation, FoldResult, Registration
from osteo.training.snapshot import SnapshotInfo, load_manifest

DEFAULT_ARCHS: tuple[str, ...] = ("resnet18", "resnet34", "googlenet", "densenet121", "vgg16")
# the seed's columns (per class precision/recall/F1, training time) plus AUC, accuracy and size
TEST_COLUMNS: tuple[str, ...] = ("precision_0", "recall_0", "f1_0", "precision_1", "recall_1", "f1_1",
                                 "accuracy", "specificity", "roc_auc")
TABLE_COLUMNS: tuple[str, ...] = ("arch", *TEST_COLUMNS, "threshold", "ece", "ece_calibrated", "train_seconds",
                                  "n_parameters", "best_fold", "val_auc_mean", "run_id")


def parse_archs(text: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """'resnet18,resnet34' -> ('resnet18', 'resnet34'): known names, each once, in the order given."""
    if text is None:
        return DEFAULT_ARCHS
    names = [a.strip().lower() for a in (text.split(",") if isinstance(text, str) else text) if a.strip()]
    unknown = [a for a in names if a not in DEFAULT_ARCHS]
    if unknown or not names:
        raise UserError("bad_option", f"--archs takes a comma-separated list of {', '.join(DEFAULT_ARCHS)}; "
                        f"got {text!r}")
    return tuple(dict.fromkeys(names))


def compare_dir(data_dir: str | Path, snapshot_digest: str, config: dict[str, Any], archs: tuple[str, ...]) -> Path:
    """One folder per comparison (snapshot, base config, architectures): a killed comparison resumes there.

    Its own tree, never a `osteo train` folder, so that no fold result or run marker is shared with a training.
    """
    key = training_digest(snapshot_digest, {**config, "compare_archs": list(archs)})[:16]
    return Path(data_dir) / "compare" / key


def n_parameters(arch: str) -> int:
    """Trainable size of the network as osteo trains it (one input channel, one logit)."""
    from osteo_model.models import build_model, count_parameters

    return int(count_parameters(build_model(arch)))


@dataclass(frozen=True)
class ArchResult:
    """One architecture of a comparison: its MLflow run, folds, best fold and test-year evaluation."""

    arch: str
    run_id: str
    folds: list[FoldResult]
    best: FoldResult
    evaluation: Evaluation
    n_parameters: int
    extras: TestReportExtras | None = None  # subgroups and calibration (osteo.training.evaluation_report)

    @property
    def train_seconds(self) -> float:
        """Training time of the whole k-fold cross-validation (the seed's 'training time')."""
        return float(sum(f.seconds for f in self.folds))

    @property
    def val_auc_mean(self) -> float:
        aucs = [f.val_auc for f in self.folds if f.val_auc is not None and not math.isnan(f.val_auc)]
        return float(sum(aucs) / len(aucs)) if aucs else math.nan

    def metrics(self) -> dict[str, float]:
        """What the architecture's run holds beside the test_* metrics, under one name on every child run."""
        extra = {f"test_{k}": v for k, v in self.extras.metrics().items()} if self.extras else {}
        return {"train_seconds": self.train_seconds, "n_parameters": float(self.n_parameters),
                "val_auc_mean": self.val_auc_mean, "best_fold": float(self.best.fold), **extra}

    def row(self) -> dict[str, Any]:
        m = self.evaluation.metrics
        return {"arch": self.arch, **{k: _num(m.get(k)) for k in TEST_COLUMNS},
                "threshold": _num(getattr(self.evaluation, "threshold", None)),
                "ece": _num(self.extras.ece_before if self.extras else None),
                "ece_calibrated": _num(self.extras.ece_after if self.extras else None),
                "train_seconds": round(self.train_seconds, 2), "n_parameters": self.n_parameters,
                "best_fold": self.best.fold, "val_auc_mean": _num(self.val_auc_mean), "run_id": self.run_id}


def _num(v: Any) -> float | None:
    """JSON-safe number: NaN (undefined, e.g. one class) becomes None."""
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else round(v, 4)


def arch_test_report(factory, manifest_path: str, evaluation: Evaluation, best: FoldResult,
                     out_dir: str | Path) -> TestReportExtras | None:
    """Subgroups and calibration of an architecture's test year (files in out_dir): its test probabilities
    from the evaluation, the temperature fitted on its best fold's validation predictions. None when the
    evaluation carries no per-image probabilities."""
    ids, probs = list(getattr(evaluation, "test_member_ids", []) or []), getattr(evaluation, "test_probs", None)
    if not ids or not probs:
        return None
    labels = load_manifest(manifest_path).set_index("member_id").loc[ids, "label"].astype(int).to_numpy()
    return extra_test_report(factory, pd.DataFrame({"member_id": ids}), labels, probs, evaluation.threshold,
                             out_dir, getattr(best, "val_labels", None) or None, getattr(best, "val_probs", None)
                             or None)


def comparison_table(results: list[ArchResult]) -> pd.DataFrame:
    return pd.DataFrame([r.row() for r in results], columns=list(TABLE_COLUMNS))


def table_markdown(table: pd.DataFrame, title: str = "") -> str:
    """A Markdown table (no extra library): undefined values as 'n/a'."""
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "n/a"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    cols = list(table.columns)
    lines = [f"### {title}", ""] if title else []
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.astype(object).itertuples(index=False)]
    return "\n".join(lines)


def pick_best_arch(results: list[ArchResult], select_by: str) -> ArchResult:
    """The architecture whose best fold wins on validation (the fold rule of osteo.training.folds.pick_best)."""
    from osteo.training.folds import pick_best

    best_fold = pick_best([r.best for r in results], select_by)
    return next(r for r in results if r.best is best_fold)


@dataclass(frozen=True)
class CompareReport:
    """A whole comparison: its JSON, the human summary and the Markdown artifact come from this."""

    run_id: str
    snapshot: SnapshotInfo
    preset: str
    results: list[ArchResult]
    best_arch: str
    registration: Registration | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        return comparison_table(self.results)

    def to_dict(self) -> dict[str, Any]:
        reg = self.registration
        return {"run_id": self.run_id, "snapshot_digest": self.snapshot.digest, "preset": self.preset,
                "n_train": self.snapshot.n_train, "n_test": self.snapshot.n_test,
                "folds": self.config.get("folds"), "epochs": self.config.get("epochs"),
                "best_arch": self.best_arch, "table": json.loads(self.table().to_json(orient="records")),
                "registered": None if reg is None else {"model_name": reg.model_name,
                                                        "model_version": reg.model_version,
                                                        "champion": reg.champion, "decision": reg.decision}}

    def summary(self) -> str:
        t = self.table()
        lines = [f"snapshot   {self.snapshot.digest[:16]} ({self.snapshot.n_train} train, "
                 f"{self.snapshot.n_test} test images), {self.config.get('folds')} folds, "
                 f"{self.config.get('epochs')} epochs, preset {self.preset}",
                 f"{'arch':<12} {'AUC':>6} {'rec1':>6} {'prec1':>6} {'F1_1':>6} {'rec0':>6} {'train s':>8} "
                 f"{'params':>11}"]
        fmt = lambda v: "   n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:6.3f}"  # noqa: E731
        for r in t.astype(object).itertuples(index=False):
            lines.append(f"{r.arch:<12} {fmt(r.roc_auc)} {fmt(r.recall_1)} {fmt(r.precision_1)} {fmt(r.f1_1)} "
                         f"{fmt(r.recall_0)} {r.train_seconds:8.1f} {r.n_parameters:11,d}")
        lines.append(f"best (validation, {self.config.get('select_by')}): {self.best_arch}")
        if self.registration is not None:
            reg = self.registration
            lines.append(f"registered {reg.model_name} version {reg.model_version}"
                         + (" -> champion" if reg.champion else f"; champion stays version {reg.champion_version}")
                         + f" ({reg.decision})")
        lines.append(f"MLflow run {self.run_id} (one child run per architecture)")
        return "\n".join(lines)

    def markdown(self) -> str:
        head = (f"Architecture comparison on snapshot `{self.snapshot.digest[:16]}` "
                f"({self.snapshot.n_test} test-year images, {self.snapshot.test_positives} with osteoporosis); "
                f"class 1 = osteoporosis. Best on validation: **{self.best_arch}**.")
        return head + "\n\n" + table_markdown(self.table().drop(columns=["run_id"]))
