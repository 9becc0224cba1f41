"""The femoral-neck localiser on patients of another seed: trained as `osteo demo` trains it, scored on
every hip of a cohort it never saw (issue 22: "the unseen-seed localiser test stays at mean IoU >= 0.80").

    .venv/bin/osteo synth --out /tmp/c0 --patients 300 --seed 0
    .venv/bin/osteo synth --out /tmp/c1 --patients 80 --seed 1
    .venv/bin/python -m bench.roi_unseen --train-cohort /tmp/c0 --test-cohort /tmp/c1 [--set epochs=20] [--json]

Training is the demo's: the train cohort's annotated films (their boxes are the VOC files the demo
ingests: truth.csv's box columns) become the localiser's dataset through
osteo.localiser.training.build_dataset (the split, the negatives, the other radiographs) and are
trained, calibrated and scored on the test year by train_and_evaluate, as `osteo roi train` does
without the database and MLflow. The test cohort's every in-scope film with a box is cut into its
hip views (training.image_views, the same rendering) and scored against its box (and the
generator's tight box); its away-from-the-neck crops and ``--nonhip`` other radiographs (chest,
knee, abdomen, lumbar; noise) are located without a header (locate_unlabelled: four hypotheses)
and counted when any box is confident. ``--checkpoint`` scores a saved localiser instead of training.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bench.roi_heads import _boxes_of, _true_boxes_of

if TYPE_CHECKING:
    from osteo.localiser.training import BoxedImage, ImageViews

NONHIP_KINDS = ("chest", "knee", "abdomen", "lumbar", "noise")


def cohort_images(cohort: Path, annotated_only: bool) -> list[dict[str, Any]]:
    """The cohort's in-scope films with a box, as training.build_dataset takes them (plus the tight
    boxes); ``annotated_only``: only the films the demo has a person's box for."""
    truth = pd.read_csv(cohort / "truth.csv", dtype={"patient_id": str})
    if "expected_scope" in truth:
        truth = truth[truth["expected_scope"] == "in_scope"]
    if annotated_only and "annotated" in truth:
        truth = truth[truth["annotated"] == 1]
    images = []
    for _, row in truth.iterrows():
        boxes = _boxes_of(row)
        if not boxes:
            continue
        path = cohort / str(row["file"])
        orient = row.get("orientation")
        images.append({
            "path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "patient": str(row["patient_id"]), "year": int(str(row["study_date"])[:4]),
            "laterality": str(row["laterality"]).upper(),
            "row_direction": orient.split("\\")[0] if isinstance(orient, str) and orient else "L",
            "mm": None, "boxes": {k: tuple(v) for k, v in boxes.items()}, "synthetic": True,
            "true_boxes": _true_boxes_of(row), "view": str(row.get("view", ""))})
    return images


def train_demo_localiser(cohort: Path, config, work: Path, workers: int, on_epoch=None) -> tuple[str, Any, dict]:
    """(checkpoint, RoiEvaluation, dataset sizes) of the demo's training on ``cohort``."""
    from osteo.localiser.training import build_dataset, train_and_evaluate
    from osteo.settings import get_settings

    images = [boxed_image(im) for im in cohort_images(cohort, annotated_only=True)]
    data = build_dataset(images, work / "roi", test_year=get_settings().test_year, input_size=config.input_size,
                         seed=config.seed, workers=workers)
    checkpoint, evaluation = train_and_evaluate(data, config, work / "run", on_epoch=on_epoch)
    return checkpoint, evaluation, {"train": data.n_train, "val": data.n_val, "test": data.n_test}


def boxed_image(im: dict[str, Any]) -> BoxedImage:
    """A film of cohort_images as the localiser's training takes it (its truth's extra keys left out)."""
    from osteo.localiser.training import BoxedImage

    return BoxedImage(**{k: v for k, v in im.items() if k not in ("true_boxes", "view")})


def _render(images: list[dict[str, Any]], size: int, workers: int) -> list[ImageViews]:
    from osteo.etl.pool import shared_pool
    from osteo.localiser.training import ViewJob, image_views

    jobs = [ViewJob(boxed_image(im), size, 0) for im in images]
    run = shared_pool(workers).map if workers > 1 else map
    return list(run(image_views, jobs))


def score_views(model, size: int, images: list[dict[str, Any]], workers: int, min_confidence: float) -> dict:
    """Every hip view of ``images`` against its box: metrics overall and per kind of film, the
    confidence's use, and one record per view (worst first) for a contact sheet."""
    from osteo_model.roi import to_image_box
    from osteo_model.roi_train import box_iou, box_metrics, predict_boxes

    rendered = _render(images, size, workers)
    x, true, tight, recs = [], [], [], []
    for im, res in zip(images, rendered, strict=True):
        for view_x, _, view, box in res.views:
            x.append(view_x)
            true.append(box)
            tight.append(im["true_boxes"].get(view.side, [np.nan] * 4))
            recs.append({"file": im["path"], "side": view.side, "view": [view.x0, view.x1, view.rows, view.flip],
                         "kind": "pelvis" if im["laterality"] == "B" else "hip", "box": list(box)})
    boxes, conf = predict_boxes(model, np.stack(x))
    views = [_view(r["view"]) for r in recs]
    pred = np.asarray([to_image_box(b, v, size) for b, v in zip(boxes, views, strict=True)])
    true_a, tight_a = np.asarray(true, np.float64), np.asarray(tight, np.float64)
    iou = box_iou(pred, true_a)
    out: dict[str, Any] = {"all": _summary(box_metrics(pred, true_a), iou, conf, min_confidence)}
    has = ~np.isnan(tight_a).any(1)
    if has.any():
        out["all"]["mean_iou_vs_tight_box"] = round(float(box_iou(pred[has], tight_a[has]).mean()), 4)
    for kind in ("pelvis", "hip"):
        sel = np.array([r["kind"] == kind for r in recs])
        if sel.any():
            out[kind] = _summary(box_metrics(pred[sel], true_a[sel]), iou[sel], conf[sel], min_confidence)
    for r, p, i, c in zip(recs, pred, iou, conf, strict=True):
        r.update(pred=[round(float(v), 1) for v in p], iou=round(float(i), 4), confidence=round(float(c), 4))
    out["views"] = sorted(recs, key=lambda r: r["iou"])
    out["film_negatives"] = [n for res in rendered for n in res.negatives]
    return out


def _view(v):
    from osteo_model.roi import HipView

    return HipView("L", int(v[0]), int(v[1]), int(v[2]), bool(v[3]))


def _summary(metrics: dict, iou: np.ndarray, conf: np.ndarray, min_confidence: float) -> dict:
    sure = conf >= min_confidence
    out: dict[str, Any] = {k: round(float(v), 4) for k, v in metrics.items()
                           if k in ("mean_iou", "iou_ge_050", "iou_ge_075")}
    out.update(n=int(len(iou)), confident_share=round(float(sure.mean()), 4),
               confident_mean_iou=round(float(iou[sure].mean()), 4) if sure.any() else None,
               confident_right=round(float((iou[sure] >= 0.5).mean()), 4) if sure.any() else None)
    return out


def nonhip_films(n: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """``n`` films that are not hips (chest, knee, abdomen, lumbar spine from the simulator; noise), as
    uint8 displays of 300-560 px, portrait, landscape or square."""
    from osteo.localiser.negatives import nonhip_renderer

    render = nonhip_renderer()
    rng = np.random.default_rng([seed, 22])
    films = []
    for i in range(n):
        kind = NONHIP_KINDS[i % len(NONHIP_KINDS)]
        long = int(rng.integers(300, 560))
        short = int(long * rng.choice([0.75, 0.85, 1.0]))
        rows, cols = (long, short) if rng.random() < 0.5 else (short, long)
        if kind == "noise" or render is None:
            img = rng.random((rows, cols))
        else:
            img = np.asarray(render(kind, rng, rows, cols), dtype=np.float64)
        films.append((kind, (np.clip(img, 0, 1) * 255).astype(np.uint8)))
    return films


def confident_on(locator, displays: list[np.ndarray], min_confidence: float) -> list[float]:
    """The best confidence the headerless locate gives each display (four hypotheses)."""
    from osteo.localiser.locate import locate_unlabelled

    return [max(b.confidence for b in locate_unlabelled(d, "L", locator, min_confidence)[0]) for d in displays]


def run(args: argparse.Namespace) -> dict:
    from osteo.localiser.locate import FileLocator
    from osteo_model.roi import RoiConfig

    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    config = RoiConfig(**overrides)
    result: dict[str, Any] = {"config": config.to_dict(), "threads": args.threads}
    if args.checkpoint:
        checkpoint = str(args.checkpoint)
    else:
        t0 = time.perf_counter()
        log = (lambda e, r: print(f"epoch {e}: loss {r['train_loss']:.3f} val IoU {r['val_mean_iou']:.3f}"
                                  f" {r['seconds']:.0f} s", file=sys.stderr, flush=True)) if args.verbose else None
        checkpoint, ev, sizes = train_demo_localiser(args.train_cohort, config, args.work, args.workers, log)
        result.update(train_seconds=round(ev.seconds, 1), build_and_train_seconds=round(time.perf_counter() - t0, 1),
                      views=sizes, in_cohort_test={k: round(v, 4) for k, v in ev.metrics.items()})
    locator = FileLocator.load(checkpoint)
    if args.refine is not None:  # the second look of a saved localiser, tried without training again
        locator.model.refine = args.refine
    result["checkpoint"] = checkpoint
    unseen = score_views(locator.model, locator.input_size, cohort_images(args.test_cohort, annotated_only=False),
                         args.workers, locator.min_confidence)
    crops = [_as_u8(v) for v in unseen.pop("film_negatives")[:args.nonhip]]
    others = nonhip_films(args.nonhip, 1)
    conf_crops = confident_on(locator, crops, locator.min_confidence)
    conf_others = confident_on(locator, [d for _, d in others], locator.min_confidence)
    views = unseen.pop("views")
    result["unseen"] = unseen
    result["nonhip"] = {"films": len(others), "confident": sum(c >= locator.min_confidence for c in conf_others),
                        "max_confidence": round(max(conf_others), 4) if conf_others else None,
                        "crops": len(crops), "crops_confident": sum(c >= locator.min_confidence for c in conf_crops)}
    if args.dump:
        Path(args.dump).write_text(json.dumps({"views": views, "checkpoint": checkpoint}))
    return result


def _as_u8(view: np.ndarray) -> np.ndarray:
    return (np.clip(np.asarray(view, np.float32), 0, 1) * 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--train-cohort", type=Path)
    ap.add_argument("--test-cohort", type=Path, required=True)
    ap.add_argument("--checkpoint", type=Path, help="score this localiser instead of training one")
    ap.add_argument("--refine", type=float, help="score with this second-look share (RoiConfig.refine)")
    ap.add_argument("--set", action="append", default=[], help="RoiConfig override key=value (JSON value)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/roi-unseen"), help="the dataset and checkpoint")
    ap.add_argument("--nonhip", type=int, default=20, help="other films (and film crops) located without a header")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="processes rendering the films")
    ap.add_argument("--dump", help="write every unseen view's box, prediction and IoU (worst first) here")
    ap.add_argument("--verbose", action="store_true", help="one line per epoch on stderr")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not args.checkpoint and not args.train_cohort:
        ap.error("--train-cohort or --checkpoint")
    torch.set_num_threads(args.threads)
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return 0
    for name, part in [("in-cohort test year", result.get("in_cohort_test"))] + list(result["unseen"].items()):
        if part:
            print(f"{name:20s} " + ", ".join(f"{k} {v}" for k, v in part.items() if not isinstance(v, dict)))
    print(f"nonhip               {result['nonhip']}")
    if "train_seconds" in result:
        print(f"train seconds        {result['train_seconds']} (views {result['views']})", file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
