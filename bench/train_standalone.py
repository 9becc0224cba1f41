"""k-fold training of a preset on an exported snapshot, with osteo_model alone (no DB, Prefect or MLflow).

For machines that only have PyTorch (the lent GPU machine): copy the snapshot manifest, its
augmented-copies CSV and the PNGs, then

    python -m bench.train_standalone --manifest M.csv --copies C.csv --root DIR --preset paper --json

Paths in the CSVs are re-rooted under --root by their last three components.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import pandas as pd


def reroot(df: pd.DataFrame, root: Path | None) -> pd.DataFrame:
    if root is None:
        return df
    return df.assign(path=[str(root.joinpath(*Path(p).parts[-3:])) for p in df["path"]])


def main(argv: list[str] | None = None) -> int:
    from osteo_model.config import get_preset
    from osteo_model.metrics import compute_metrics
    from osteo_model.splits import fold_frames, holdout_frame
    from osteo_model.train import predict_probs, select_device, train_fold

    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--copies")
    ap.add_argument("--root", type=Path)
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (JSON value)")
    ap.add_argument("--folds-to-run", type=int, default=None, help="train only the first N folds")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    config = get_preset(args.preset, **overrides)
    manifest = reroot(pd.read_csv(args.manifest, dtype={"patient_key": str}), args.root)
    frame = manifest
    if args.copies and config.augment == "offline":
        copies = reroot(pd.read_csv(args.copies, dtype={"patient_key": str}), args.root)
        frame = pd.concat([manifest, copies[[c for c in copies.columns if c in set(manifest.columns) |
                                             {"source_member_id"}]]], ignore_index=True)
    device = select_device()
    t0 = time.perf_counter()
    test = holdout_frame(manifest)
    labels = test["label"].astype(int).to_numpy()
    folds = []
    for k in range(args.folds_to_run or config.folds):
        train_df, val_df = fold_frames(frame, k)
        model, fit = train_fold(train_df, val_df, config.replace(seed=config.seed + k), device=device)
        # every fold scored on the test year too: one fold's AUC on ~50 images is a noisy figure
        probs = predict_probs(model, test["path"].tolist(), config.image_size, device)
        folds.append({"fold": k, "probs": probs, "val_loss": fit.best_metrics.val_loss,
                      "val_auc": fit.best_metrics.val_auc, "best_epoch": fit.best_epoch,
                      "test_auc": compute_metrics(labels, probs, config.threshold)["roc_auc"],
                      "epoch_seconds": sum(h.seconds for h in fit.history) / len(fit.history)})
    best = min(folds, key=lambda f: f["val_loss"] if math.isfinite(f["val_loss"]) else math.inf)
    m = compute_metrics(labels, best["probs"], config.threshold)
    out = {
        "device": str(device), "preset": args.preset, "overrides": overrides, "wall_s": time.perf_counter() - t0,
        "folds": [{k: v for k, v in f.items() if k != "probs"} for f in folds], "best_fold": best["fold"],
        "test": {k: m[k] for k in ("n", "n_pos", "accuracy", "roc_auc", "recall_1", "specificity", "brier")},
        "mean_fold_test_auc": sum(f["test_auc"] for f in folds) / len(folds),
    }
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
