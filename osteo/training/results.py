"""What a training produced, typed: a fold's result, the operating point, the test-year evaluation, the
registration and the whole training's report (its JSON, human summary and Prefect artifact)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from osteo.etl.synthetic import DEMO_NOTICE
from osteo.training.evaluation_report import TestYearExtras, extras_summary
from osteo.training.snapshot import SnapshotInfo


@dataclass(frozen=True)
class FoldResult:
    """One finished fold (what fold-k.json holds, less the epoch history)."""

    fold: int
    arch: str
    checkpoint: str
    best_epoch: int
    val_loss: float
    val_auc: float
    val_recall: float
    n_train: int
    n_val: int
    val_metrics: dict[str, float]
    seconds: float
    resumed: bool = False
    run_id: str | None = None  # the fold's MLflow run, once tracked
    # the best epoch's out-of-fold validation probabilities and labels (the operating point is chosen on them)
    val_probs: list[float] = field(default_factory=list)
    val_labels: list[int] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FoldResult:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OperatingPoint:
    """The threshold chosen on the folds' out-of-fold validation predictions for a target osteoporosis recall."""

    threshold: float
    target_recall: float
    val_recall: float  # reached on validation at this threshold
    val_specificity: float
    n_val: int
    val_positives: int


@dataclass(frozen=True)
class Evaluation:
    """The best fold scored on the test year, at the operating threshold (`metrics`) and at 0.5."""

    metrics: dict[str, float]
    confusion_matrix: Any
    baseline_auc: float
    n_test: int
    test_positives: int
    threshold: float = 0.5
    metrics_at_half: dict[str, float] = field(default_factory=dict)
    confusion_matrix_at_half: Any = None
    # per test image (the champion gate re-scores the images both models may be judged on)
    test_member_ids: list[int] = field(default_factory=list)
    test_probs: list[float] = field(default_factory=list)
    # the test AUC's 95 % percentile-bootstrap interval (osteo_model.subgroups); the champion gate needs its low end
    auc_ci: tuple[float, float] = (math.nan, math.nan)


@dataclass(frozen=True)
class Registration:
    """What the registry did with a training's best fold."""

    model_name: str
    model_version: str | None  # None: not registered (--no-register)
    champion: bool
    champion_version: str | None
    decision: str
    champion_test_auc: float | None = None
    registered: bool = True  # False: --no-register
    already_registered: bool = False  # the same configuration on the same snapshot had a version
    trained_on: str | None = None  # synthetic | real | mixed (osteo/etl/synthetic.py); None: not known

    @classmethod
    def not_registered(cls, model_name: str) -> Registration:
        return cls(model_name, None, False, None, "not registered (--no-register)", registered=False)


@dataclass(frozen=True)
class TrainingReport:
    """A whole training: its JSON, the human summary and the Prefect artifact are built from this."""

    run_id: str
    snapshot: SnapshotInfo
    folds: list[FoldResult]
    best_fold: int
    evaluation: Evaluation
    registration: Registration
    operating_point: OperatingPoint | None = None
    # subgroups, calibration and the optional heads (osteo_mlflow.runs.report_extras_tracked)
    extras: TestYearExtras = field(default_factory=TestYearExtras)

    def to_dict(self) -> dict[str, Any]:
        m = self.evaluation.metrics
        return {
            "run_id": self.run_id, "snapshot_digest": self.snapshot.digest,
            "n_train": self.snapshot.n_train, "n_test": self.snapshot.n_test, "best_fold": self.best_fold,
            "synthetic_images": self.snapshot.synthetic_images,
            "folds": [{k: getattr(f, k) for k in ("fold", "val_loss", "val_auc", "val_recall", "best_epoch",
                                                  "resumed")} for f in self.folds],
            "test_auc": m.get("roc_auc"), "test_auc_ci": list(self.evaluation.auc_ci),
            "test_accuracy": m.get("accuracy"), "test_recall": m.get("recall_1"),
            "test_specificity": m.get("specificity"), "baseline_auc": self.evaluation.baseline_auc,
            "threshold": self.evaluation.threshold,
            "target_recall": self.operating_point.target_recall if self.operating_point else None,
            "test_at_0.5": {k: self.evaluation.metrics_at_half.get(k) for k in ("accuracy", "recall_1", "specificity")},
            **asdict(self.registration),
            "test_extras": self.extras.metrics(),
        }

    def summary(self) -> str:
        r, reg, half = self.to_dict(), self.registration, self.evaluation.metrics_at_half
        folds = ", ".join(f"fold {f.fold} val loss {f.val_loss:.3f} AUC {f.val_auc:.3f}" for f in self.folds)
        return "\n".join([
            f"snapshot        {r['snapshot_digest'][:16]} ({r['n_train']} train, {r['n_test']} test images)",
            *([f"  synthetic     {self.snapshot.synthetic_images} of {self.snapshot.n_members} images: {DEMO_NOTICE}"]
              if self.snapshot.synthetic else []),
            f"folds           {folds}",
            f"best fold       {r['best_fold']}",
            f"test year       AUC {r['test_auc']:.3f} (95% CI {r['test_auc_ci'][0]:.2f}-{r['test_auc_ci'][1]:.2f}), "
            f"accuracy {r['test_accuracy']:.3f}, "
            f"osteoporosis recall {r['test_recall']:.3f}, specificity {r['test_specificity']:.3f} "
            f"at threshold {r['threshold']:.3f}"
            + (f" (target recall {r['target_recall']:.2f} on validation)" if r["target_recall"] else ""),
            f"  at 0.5        accuracy {half.get('accuracy', math.nan):.3f}, osteoporosis recall "
            f"{half.get('recall_1', math.nan):.3f}, specificity {half.get('specificity', math.nan):.3f}",
            f"baseline        mean-intensity logistic regression AUC {r['baseline_auc']:.3f}",
            *extras_summary(self.extras),
            f"registered      {_registered_line(reg)}",
            f"decision        {reg.decision}",
            f"MLflow run      {r['run_id']}",
        ])

    def markdown(self) -> str:
        rows = [f"| {k} | {v} |" for k, v in self.to_dict().items() if not isinstance(v, list | dict)]
        return "\n".join(["| metric | value |", "|---|---|", *rows])


def _registered_line(reg: Registration) -> str:
    if not reg.registered:
        return "nothing (--no-register)"
    if reg.already_registered:
        return f"already registered as {reg.model_name} version {reg.model_version}"
    if reg.champion:
        return f"{reg.model_name} version {reg.model_version} (challenger) -> champion"
    stays = f"champion stays version {reg.champion_version}" if reg.champion_version else "no champion"
    return f"{reg.model_name} version {reg.model_version} (challenger); {stays}"
