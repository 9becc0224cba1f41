"""Training work as plain functions: the folds (augmented copies, one fold trained or resumed), the operating
threshold chosen on their validation, the best fold, and the inputs checked before anything trains (no Prefect,
no MLflow).

Files go under one folder per training (keyed by snapshot digest and config), so a run that
was killed resumes there: a fold whose result file exists is not trained again.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from osteo.errors import UserError
from osteo.training.results import FoldResult, OperatingPoint
from osteo.training.snapshot import load_manifest, record_augmented_copies
from osteo_common.files import atomic_write_text, write_json
from osteo_model import metrics as M
from osteo_model.config import TrainConfig
from osteo_model.splits import fold_frames
from osteo_model.stats import EpochRecord

EpochCallback = Callable[[int, EpochRecord], None] | None


def training_digest(snapshot_digest: str, config: dict[str, Any]) -> str:
    blob = json.dumps({"snapshot": snapshot_digest, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def augment_training_set(factory, manifest_path: str, out_root: Path, seed: int, copies: int) -> str:
    """The seed's augmentation: `copies` seeded copies per training image, recorded for lineage.

    Returns the copies CSV (beside the manifest) that training_frame adds to the originals.
    """
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


def run_fold(manifest: pd.DataFrame, fold: int, config: TrainConfig, out_dir: Path, *, device=None,
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
    if fit.val_probs is None or fit.val_labels is None:  # fit() validates whenever it has a validation loader
        raise ValueError(f"fold {fold} has no validation images")
    val_metrics = M.compute_metrics(fit.val_labels, fit.val_probs, config.threshold)
    result = FoldResult(
        fold=fold, arch=config.arch, checkpoint=str(checkpoint), best_epoch=fit.best_epoch,
        val_loss=fit.best_metrics.val_loss, val_auc=fit.best_metrics.val_auc,
        val_recall=fit.best_metrics.val_recall, n_train=len(train_df), n_val=len(val_df),
        val_metrics={k: v for k, v in val_metrics.items() if isinstance(v, int | float)},
        seconds=float(sum(h.seconds for h in fit.history)),
        val_probs=[float(p) for p in fit.val_probs], val_labels=[int(y) for y in fit.val_labels],
    )
    # last: its presence means the fold is finished
    write_json(result_file, result.to_dict() | {"history": [h.to_dict() for h in fit.history]})
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


def check_training_inputs(exports: pd.DataFrame, config: TrainConfig, test_year: int) -> None:
    """Refuse, before any fold trains, a training that cannot finish: a UserError with a one-line reason.

    `exports`: the exported images a snapshot would take (osteo.training.snapshot.current_exports: patient_key,
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
