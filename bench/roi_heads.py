"""The femoral-neck localiser's two heads ("heatmap" and "regress") on a synthetic cohort, side by side.

    .venv/bin/python -m bench.roi_heads --cohort DIR [--json] [--heads heatmap,regress] [--set epochs=40]

Reads DIR/truth.csv (written by `osteo synth`): hip images (laterality L/R, box_xmin..box_ymax) and,
where the cohort has them, AP pelvis images (laterality B, `boxes`: JSON side -> box, `orientation`:
PatientOrientation). Each DICOM is rendered with the export's normalisation, cut into its hip
views (osteo_model.roi.hip_views), and each view's annotation box mapped into the view.
Split as the design's: test = the 2022 images; train = earlier images of patients who have no
2022 image (no patient on both sides); a tenth of the train patients picks the best epoch.
Each head trains with the same config; printed per head: test mean IoU, shares IoU >= 0.5 / 0.75,
centre error (image px and mm), agreement with the generator's tight box where the cohort has
it, the confidence's use (share flagged unsure; IoU of the confident ones), train seconds and
inference ms per view (test-time copies included) at batch 1 and 32 (2 threads unless --threads).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

TEST_YEAR = 2022


def _boxes_of(row: pd.Series) -> dict[str, list[float]]:
    raw = row.get("boxes")
    if isinstance(raw, str) and raw.strip():
        return {k: [float(v) for v in b] for k, b in json.loads(raw).items()}
    if pd.isna(row.get("box_xmin")):
        return {}
    return {str(row["laterality"]): [float(row[f"box_{k}"]) for k in ("xmin", "ymin", "xmax", "ymax")]}


def _true_boxes_of(row: pd.Series) -> dict[str, list[float]]:
    raw = row.get("true_boxes")
    if isinstance(raw, str) and raw.strip():
        return {k: [float(v) for v in b] for k, b in json.loads(raw).items()}
    return {}


def load_views(cohort: Path, size: int, progress=None) -> dict:
    """Every hip view of the cohort's in-scope images with a box: views [N, S, S], view boxes
    [N, 4], image boxes, the generator's tight boxes (NaN where absent), mm per image pixel,
    patient, year, the HipView and the image file."""
    from osteo.etl.imaging import load_dicom, prepare_display
    from osteo_model.roi import hip_views, to_view_box, view_input

    truth = pd.read_csv(cohort / "truth.csv", dtype={"patient_id": str})
    if "expected_scope" in truth:
        truth = truth[truth["expected_scope"] == "in_scope"]
    out = {k: [] for k in ("views", "boxes", "image_boxes", "true_boxes", "mm", "patient", "year", "view", "file",
                                  "pelvis")}
    for i, (_, row) in enumerate(truth.iterrows()):
        boxes = _boxes_of(row)
        if not boxes:
            continue
        ds = load_dicom(cohort / row["file"])[0]
        img = prepare_display(ds).display_u8()
        orient = row.get("orientation")
        if isinstance(orient, str) and orient:
            row_dir = orient.split("\\")[0]
        else:
            row_dir = str((ds.get("PatientOrientation") or ["L"])[0])
        spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing") or [np.nan, np.nan]
        true = _true_boxes_of(row)
        for view in hip_views(img.shape[0], img.shape[1], str(row["laterality"]), row_dir):
            if view.side not in boxes:
                continue
            out["views"].append(view_input(img, view, size))
            out["boxes"].append(to_view_box(boxes[view.side], view, size))
            out["image_boxes"].append(boxes[view.side])
            out["true_boxes"].append(true.get(view.side, [np.nan] * 4))
            out["mm"].append(float(spacing[1]))  # column spacing: the box centres are mostly apart along x and y alike
            out["patient"].append(str(row["patient_id"]))
            out["year"].append(int(str(row["study_date"])[:4]))
            out["view"].append(view)
            out["file"].append(str(row["file"]))
            out["pelvis"].append(str(row["laterality"]).upper() == "B")
        if progress:
            progress(i + 1, len(truth))
    arrays = {k: np.asarray(out[k], dtype=np.float32) for k in ("views", "boxes", "image_boxes", "true_boxes", "mm")}
    return {**out, **arrays, "year": np.asarray(out["year"]), "patient": np.asarray(out["patient"])}


def split(data: dict, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) index arrays: test = the test year; train/val = earlier years of the
    patients with no test-year image, a tenth of those patients for validation."""
    year, patient = data["year"], data["patient"]
    test = np.flatnonzero(year == TEST_YEAR)
    held = set(patient[test])
    pool = np.flatnonzero((year < TEST_YEAR) & ~np.isin(patient, list(held)))
    people = np.unique(patient[pool])
    rng = np.random.default_rng(seed)
    val_people = set(rng.choice(people, size=max(1, len(people) // 10), replace=False))
    is_val = np.isin(patient[pool], list(val_people))
    return pool[~is_val], pool[is_val], test


def inference_ms(model, size: int, batch: int, repeats: int = 5) -> float:
    """Milliseconds per view of predict_boxes (test-time copies included), best of ``repeats``."""
    from osteo_model.roi_train import predict_boxes

    x = np.random.default_rng(0).uniform(0, 1, (batch, size, size)).astype(np.float32)
    predict_boxes(model, x, batch_size=batch)  # warm-up
    best = min(_timed(lambda: predict_boxes(model, x, batch_size=batch)) for _ in range(repeats))
    return 1000.0 * best / batch


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def mean_box_baseline(data: dict, idx: tuple, size: int) -> dict:
    """The plain baseline: every test view gets the training views' mean box (how much the neck moves)."""
    from osteo_model.roi import to_image_box
    from osteo_model.roi_train import box_metrics

    train, _, test = idx
    mean = data["boxes"][train].mean(0)
    image_pred = np.array([to_image_box(mean, data["view"][i], size) for i in test])
    m = box_metrics(image_pred, data["image_boxes"][test], mm_per_px=data["mm"][test])
    return {"head": "mean box", **{k: _round(v) for k, v in m.items()}}


def run_head(data: dict, idx: tuple, config, *, log=None) -> dict:
    from osteo_model.roi import to_image_box
    from osteo_model.roi_train import box_iou, box_metrics, predict_boxes, train_localiser

    train, val, test = idx
    size = config.input_size
    t0, c0 = time.perf_counter(), time.process_time()
    model, history = train_localiser(
        data["views"][train], data["boxes"][train], data["views"][val], data["boxes"][val], config,
        on_epoch=(lambda e, r: log(f"  epoch {e}: loss {r['train_loss']:.3f} val IoU {r['val_mean_iou']:.3f}"))
        if log else None)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    pred, conf = predict_boxes(model, data["views"][test])
    image_pred = np.array([to_image_box(b, data["view"][i], size) for b, i in zip(pred, test)])
    m = box_metrics(image_pred, data["image_boxes"][test], mm_per_px=data["mm"][test])
    true = data["true_boxes"][test]
    has_true = ~np.isnan(true).any(1)
    if has_true.any():
        m["mean_iou_vs_tight_box"] = float(box_iou(image_pred[has_true], true[has_true]).mean())
    iou = box_iou(image_pred, data["image_boxes"][test])
    sure = conf >= config.min_confidence
    best = max(history, key=lambda r: r["val_mean_iou"] if np.isfinite(r["val_mean_iou"]) else -1)
    return {
        "head": config.head, **{k: _round(v) for k, v in m.items()},
        "unsure_share": _round(float((~sure).mean())),
        "confident_mean_iou": _round(float(iou[sure].mean())) if sure.any() else None,
        "confident_iou_ge_050": _round(float((iou[sure] >= 0.5).mean())) if sure.any() else None,
        "unsure_mean_iou": _round(float(iou[~sure].mean())) if (~sure).any() else None,
        "confidence_iou_corr": _round(float(np.corrcoef(conf, iou)[0, 1])) if len(iou) > 2 else None,
        "best_epoch": best["epoch"], "best_val_mean_iou": _round(best["val_mean_iou"]),
        "train_seconds": round(seconds, 1), "train_cpu_seconds": round(cpu_seconds, 1),
        "ms_per_view_batch1": round(inference_ms(model, size, 1), 2),
        "ms_per_view_batch32": round(inference_ms(model, size, 32), 2),
    }


def _round(v):
    return round(v, 4) if isinstance(v, float) else v


def main(argv: list[str] | None = None) -> int:
    import torch

    from osteo_model.roi import RoiConfig

    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--cohort", type=Path, required=True)
    ap.add_argument("--heads", default="heatmap,regress")
    ap.add_argument("--set", action="append", default=[], help="RoiConfig override key=value (JSON value)")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch threads (1 trains faster than 2 while other jobs share the 2 cores)")
    ap.add_argument("--verbose", action="store_true", help="one line per epoch on stderr")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    base = RoiConfig(**overrides)
    t0 = time.perf_counter()
    data = load_views(args.cohort, base.input_size)
    render_s = time.perf_counter() - t0
    idx = split(data, base.seed)
    log = (lambda s: print(s, file=sys.stderr)) if args.verbose else None
    rows = [mean_box_baseline(data, idx, base.input_size)]
    rows += [run_head(data, idx, base.replace(head=h), log=log) for h in args.heads.split(",")]
    result = {
        "cohort": str(args.cohort), "config": base.to_dict(), "threads": args.threads,
        "render_seconds": round(render_s, 1),
        "views": {"train": len(idx[0]), "val": len(idx[1]), "test": len(idx[2]),
                  "pelvis": int(sum(data["pelvis"]))},
        "heads": rows,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    v = result["views"]
    print(f"views: train {v['train']}, val {v['val']}, test {v['test']}, {v['pelvis']} of all from AP pelvis images"
          f" (rendered in {render_s:.0f} s)")
    cols = ["head", "mean_iou", "iou_ge_050", "iou_ge_075", "centre_error_px", "centre_error_mm",
            "unsure_share", "confident_iou_ge_050", "train_seconds", "ms_per_view_batch1", "ms_per_view_batch32"]
    table = pd.DataFrame(rows)
    print(table[[c for c in cols if c in table]].to_string(index=False, na_rep="-"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
