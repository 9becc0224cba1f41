"""Training work as plain functions: folds, test-year evaluation, reports (no Prefect, no MLflow).

Files go under one folder per training (keyed by snapshot digest and config), so a run that
was killed resumes there: a fold whose result file exists is not trained again.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from osteo.errors import UserError
from osteo.etl.synthetic import DEMO_NOTICE
from osteo.snapshot import SnapshotInfo, load_manifest
from osteo.test_report import extras_summary
from osteo_common.files import atomic_write_text, write_json
from osteo_model import metrics as M
from osteo_model.splits import fold_frames, holdout_frame
from osteo_model.subgroups import bootstrap_auc_ci

EpochCallback = Callable[[int, dict], None] | None


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
    # subgroups, calibration and the optional heads (osteo_mlflow.runs.report_extras_tracked), flat
    extras: dict[str, float] = field(default_factory=dict)

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
            "test_extras": dict(self.extras),
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


def training_digest(snapshot_digest: str, config: dict[str, Any]) -> str:
    blob = json.dumps({"snapshot": snapshot_digest, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def augment_training_set(factory, manifest_path: str, out_root: Path, seed: int, copies: int) -> str:
    """The seed's augmentation: `copies` seeded copies per training image, recorded for lineage.

    Returns the copies CSV (beside the manifest) that training_frame adds to the originals.
    """
    from osteo.snapshot import record_augmented_copies
    from osteo_model.augment import materialize_copies

    train = load_manifest(manifest_path).query("split == 'train'")
    out = materialize_copies(train, Path(out_root) / f"seed-{seed}", seed=seed, copies=copies)
    record_augmented_copies(factory, out)
    path = Path(manifest_path).with_name(Path(manifest_path).stem + f"-copies-seed{seed}.csv")
    atomic_write_text(path, out.assign(params=out["params"].map(json.dumps)).to_csv(index=False))
    return str(path)


def training_frame(manifest_path: str, copies_path: str | None) -> pd.DataFrame:
    """Originals plus their augmented copies (which carry source_member_id)."""
    manifest = load_manifest(manifest_path)
    if copies_path:
        copies = pd.read_csv(copies_path, dtype={"patient_key": str})
        manifest = pd.concat([manifest, copies[[c for c in copies.columns if c in
                                                 set(manifest.columns) | {"source_member_id"}]]],
                             ignore_index=True)
    return manifest


def run_fold(manifest: pd.DataFrame, fold: int, config, out_dir: Path, *, device=None,
             on_epoch: EpochCallback = None) -> FoldResult:
    """Train one fold (or return its finished result) and write checkpoint, history and curves."""
    from osteo_model.predict import save_checkpoint
    from osteo_model.train import train_fold

    result_file = out_dir / f"fold-{fold}.json"
    if result_file.exists():
        done = replace(FoldResult.from_dict(json.loads(result_file.read_text())), resumed=True)
        if done.val_probs:
            return done
        # a fold finished before its validation predictions were kept: score its validation images again
        _train, val_df = fold_frames(manifest, fold)
        return replace(done, val_probs=_probs_of(done.checkpoint, val_df, device),
                       val_labels=val_df["label"].astype(int).tolist())
    train_df, val_df = fold_frames(manifest, fold)
    model, fit = train_fold(train_df, val_df, config.replace(seed=config.seed + fold), device=device,
                            on_epoch=on_epoch)
    checkpoint = save_checkpoint(out_dir / f"fold-{fold}.pth", model, config,
                                 {"fold": fold, "best_epoch": fit.best_epoch, "threshold": config.threshold})
    M.plot_loss_curves(fit.history, out_dir / f"fold-{fold}" / "loss_curves.png", title=f"fold {fold}")
    val_metrics = M.compute_metrics(fit.val_labels, fit.val_probs, config.threshold)
    result = FoldResult(
        fold=fold, arch=config.arch, checkpoint=str(checkpoint), best_epoch=fit.best_epoch,
        val_loss=fit.best_metrics["val_loss"], val_auc=fit.best_metrics["val_auc"],
        val_recall=fit.best_metrics["val_recall"], n_train=len(train_df), n_val=len(val_df),
        val_metrics={k: v for k, v in val_metrics.items() if isinstance(v, int | float)},
        seconds=float(sum(h["seconds"] for h in fit.history)),
        val_probs=[float(p) for p in fit.val_probs], val_labels=[int(y) for y in fit.val_labels],
    )
    # last: its presence means the fold is finished
    write_json(result_file, result.to_dict() | {"history": fit.history})
    return result


def _probs_of(checkpoint: str, frame: pd.DataFrame, device=None) -> list[float]:
    from osteo_model.predict import Predictor
    from osteo_model.train import predict_probs

    predictor = Predictor.from_checkpoint(checkpoint, device=device)
    return [float(p) for p in predict_probs(predictor.model, frame["path"].tolist(), predictor.image_size,
                                            predictor.device)]


def choose_threshold(labels, probs, target_recall: float) -> OperatingPoint:
    """The highest threshold whose osteoporosis recall on (out-of-fold) validation is >= target_recall.

    A probability p is labelled osteoporosis when p >= threshold, so the threshold is the k-th highest
    positive's probability, k = ceil(target x positives). No positives: 0.5 (nothing to aim at).
    """
    y = np.asarray(labels, dtype=int).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    if not 0 < target_recall <= 1:
        raise UserError("bad_target_recall", f"target recall {target_recall} must be in (0, 1]")
    pos = np.sort(p[y == 1])[::-1]
    if len(pos) == 0:
        threshold = 0.5
    else:
        k = max(1, math.ceil(target_recall * len(pos) - 1e-9))
        threshold = float(pos[k - 1])
    m = M.compute_metrics(y, p, threshold)
    return OperatingPoint(threshold=threshold, target_recall=float(target_recall), val_recall=m["recall_1"],
                          val_specificity=m["specificity"], n_val=int(len(y)), val_positives=int(len(pos)))


def operating_point(results: list[FoldResult], target_recall: float) -> OperatingPoint:
    """The threshold chosen on every fold's out-of-fold validation predictions together."""
    labels = [y for r in results for y in r.val_labels]
    probs = [p for r in results for p in r.val_probs]
    return choose_threshold(labels, probs, target_recall)


def pick_best(results: list[FoldResult], select_by: str) -> FoldResult:
    """The best fold by the same rule that picked each fold's best epoch (osteo_model.train)."""
    from osteo_model.train import pick_best as best_of

    return best_of(results, select_by, key=vars)


def evaluate_on_test(checkpoint: str, manifest: pd.DataFrame, out_dir: Path, *, device=None,
                     n_gradcam: int = 4, threshold: float | None = None) -> Evaluation:
    """Score the best fold on the test year at the operating threshold (default: the checkpoint's) and
    at 0.5; write the plots (a confusion matrix for each), report and Grad-CAM examples."""
    from osteo_model.predict import Predictor
    from osteo_model.train import predict_probs

    test = holdout_frame(manifest)
    train = manifest[manifest["split"] == "train"]  # originals only: the snapshot manifest
    predictor = Predictor.from_checkpoint(checkpoint, device=device)
    probs = predict_probs(predictor.model, test["path"].tolist(), predictor.image_size, predictor.device)
    labels = test["label"].to_numpy().astype(int)
    thr = predictor.threshold if threshold is None else float(threshold)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = M.compute_metrics(labels, probs, thr)
    at_half = M.compute_metrics(labels, probs, 0.5)
    M.plot_confusion_matrix(labels, probs, out_dir / "confusion_matrix.png", threshold=thr,
                            title=f"Test year at the operating threshold {thr:.3f}")
    M.plot_confusion_matrix(labels, probs, out_dir / "confusion_matrix_at_0.5.png", threshold=0.5,
                            title="Test year at threshold 0.5")
    M.plot_roc(labels, probs, out_dir / "roc.png", title="Test-year ROC")
    M.plot_pr(labels, probs, out_dir / "pr.png", title="Test-year precision-recall")
    M.plot_reliability(labels, probs, out_dir / "reliability.png")
    (out_dir / "classification_report.txt").write_text(M.classification_report_text(labels, probs, thr))
    pd.DataFrame({"member_id": test["member_id"], "label": labels, "probability": probs}).to_csv(
        out_dir / "test_predictions.csv", index=False)
    baseline = M.mean_intensity_baseline(train["path"].tolist(), train["label"].tolist(),
                                         test["path"].tolist(), labels.tolist())
    auc_ci = bootstrap_auc_ci(labels, probs)
    write_gradcam_examples(predictor, test, probs, out_dir / "gradcam", n_gradcam)
    write_json(out_dir / "test_metrics.json", {"threshold": thr, "metrics": metrics, "metrics_at_0.5": at_half,
                                               "roc_auc_ci": list(auc_ci), "baseline_mean_intensity": baseline})
    return Evaluation(metrics=_flat(metrics), confusion_matrix=metrics.get("confusion_matrix"),
                      baseline_auc=baseline["auc"], n_test=int(len(test)), test_positives=int(labels.sum()),
                      threshold=thr, metrics_at_half=_flat(at_half),
                      confusion_matrix_at_half=at_half.get("confusion_matrix"),
                      test_member_ids=[int(i) for i in test["member_id"]], test_probs=[float(p) for p in probs],
                      auc_ci=auc_ci)


def _flat(metrics: dict) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def write_gradcam_examples(predictor, test: pd.DataFrame, probs: np.ndarray, out_dir: Path, n: int) -> None:
    """The most confident positives and negatives, image beside heat-map overlay."""
    from PIL import Image

    from osteo_model.gradcam import overlay

    out_dir.mkdir(parents=True, exist_ok=True)
    order = np.argsort(probs)
    picks = list(order[::-1][: n // 2]) + list(order[: n - n // 2])
    for rank, i in enumerate(picks):
        row = test.iloc[int(i)]
        with Image.open(row["path"]) as im:
            gray = np.asarray(im.convert("L").resize((predictor.image_size,) * 2))
        (res,) = predictor.predict([gray])
        panel = np.concatenate([np.repeat(gray[..., None], 3, axis=-1), overlay(gray, res["heatmap"])], axis=1)
        name = f"{rank:02d}_label{int(row['label'])}_p{res['probability']:.2f}.png"
        Image.fromarray(panel).save(out_dir / name)


def check_training_inputs(exports: pd.DataFrame, config, test_year: int) -> None:
    """Refuse, before any fold trains, a training that cannot finish: a UserError with a one-line reason.

    `exports`: the exported images a snapshot would take (osteo.snapshot.current_exports: patient_key,
    laterality, study_year, label). Checks: the test year's left femurs hold both classes; every class
    has at least `folds` patients among the earlier years' left femurs (stratified group folds); the
    pretrained weights file exists and loads as a state dict for the arch.
    """
    if config.pretrained_weights:
        _check_weights(config.pretrained_weights, config.arch)
    lat = exports["laterality"].astype(str).str.upper()
    year = exports["study_year"].astype(int)
    test = exports[(lat == "L") & (year == int(test_year))]
    classes = {0: "not osteoporosis", 1: "osteoporosis"}
    missing = [name for c, name in classes.items() if not (test["label"].astype(int) == c).any()]
    if missing:
        years = sorted(set(year[lat == "L"]))
        raise UserError("test_year_unusable", f"test year {test_year} has {len(test)} left-femur images and none "
                        f"labelled {' or '.join(missing)}: choose a year with both (left-femur years: "
                        f"{', '.join(map(str, years)) or 'none'})")
    train = exports[(lat == "L") & (year < int(test_year)) & ~exports["patient_key"].isin(set(test["patient_key"]))]
    counts = {name: train.loc[train["label"].astype(int) == c, "patient_key"].nunique() for c, name in classes.items()}
    name, n = min(counts.items(), key=lambda kv: kv[1])
    if n < config.folds:
        hint = f" (--folds {n} would do)" if n >= 2 else ""
        raise UserError("too_few_patients", f"{n} patients with {name} left-femur images before {test_year}: "
                        f"too few for {config.folds} stratified folds grouped by patient{hint}")


def _check_weights(path: str, arch: str) -> None:
    from osteo_model.models import build_model

    if not Path(path).is_file():
        raise UserError("pretrained_weights_missing", f"pretrained weights {path}: no such file")
    try:
        build_model(arch, pretrained_weights=path)
    except Exception as exc:  # noqa: BLE001 - any load failure is the user's file, said in one line
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise UserError("pretrained_weights_unusable", f"pretrained weights {path} do not load as a {arch} "
                        f"state dict: {first}") from None
