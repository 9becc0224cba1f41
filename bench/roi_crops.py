"""The classifier on crops from the localiser's boxes vs from people's boxes, same test-year images.

    python -m bench.roi_crops [--json]        (after `osteo demo`, on its stores; OSTEO_HOME moves them)

Takes the registered champions (the classifier and osteo-roi), the test year's left-femur crops
exported from people's boxes (what the classifier's test AUC is measured on), locates each of
those images afresh with the localiser (the person's box ignored), crops it exactly as the export
does, and scores both crops with the same classifier. Reports both AUCs, their difference (goal:
within 0.02), the IoU of the two boxes, and the same on the images the localiser is confident on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def compare(settings) -> dict[str, Any]:
    from sqlalchemy import select

    from db.models import Annotation, DicomImage, Export, Pair, SourceFile
    from osteo.etl.imaging import load_dicom, neck_crop, prepare_display
    from osteo.localiser.locate import locate_display
    from osteo.settings import session_factory
    from osteo_mlflow.roi import champion_locator, load_python_model
    from osteo_model.metrics import compute_metrics
    from osteo_model.roi_train import box_iou

    classifier = load_python_model(settings, f"models:/{settings.registered_model}@champion")
    locator = champion_locator(settings)
    if locator is None:
        raise SystemExit("no osteo-roi@champion: run `osteo demo` (or `osteo roi train`) first")
    with session_factory(settings)() as session:
        rows = session.execute(
            select(DicomImage, SourceFile.path, Annotation, Export.path, Pair.label)
            .join(SourceFile, SourceFile.id == DicomImage.source_file_id)
            .join(Pair, Pair.image_id == DicomImage.id)
            .join(Export, Export.image_id == DicomImage.id)
            .join(Annotation, Annotation.id == Export.annotation_id)
            .where(Annotation.source == "human", Export.status == "exported", Export.side == "L")
            .order_by(DicomImage.id)).all()
    rows = [r for r in rows if r[0].study_date.year == settings.test_year]
    labels, human_png, model_crops, ious, conf = [], [], [], [], []
    for img, dicom, ann, png, label in rows:
        if png is None:
            raise RuntimeError(f"export of image {img.id} is 'exported' with no file")
        display = prepare_display(load_dicom(dicom)[0]).display_u8()
        found = {f.side: f for f in locate_display(display, img.laterality, img.row_direction, locator)}
        f = found["L"]
        model_crops.append(neck_crop(display, f.box, "L", size=settings.export_size, margin=settings.roi_margin))
        human_png.append(Path(png).read_bytes())
        labels.append(int(label))
        ious.append(float(box_iou(np.asarray(f.box, float), np.asarray(
            [ann.box_xmin, ann.box_ymin, ann.box_xmax, ann.box_ymax], float))))
        conf.append(f.confidence)
    p_human = [r["probability"] for r in classifier.predict_images(human_png, heatmaps=False)]
    p_model = [r["probability"] for r in classifier.predict_images(model_crops, heatmaps=False)]
    sure = [i for i, c in enumerate(conf) if c >= settings.roi_min_confidence]

    def auc(idx: list[int], probs: list[float]) -> float:
        ys = [labels[i] for i in idx]
        if len(set(ys)) < 2:
            return float("nan")
        return float(compute_metrics(ys, [probs[i] for i in idx])["roc_auc"])

    every = list(range(len(labels)))
    return {
        "classifier": settings.registered_model, "localiser": f"{locator.name}/{locator.version}",
        "images": len(labels), "positives": int(sum(labels)),
        "auc_human_boxes": auc(every, p_human), "auc_model_boxes": auc(every, p_model),
        "auc_difference": auc(every, p_model) - auc(every, p_human),
        "mean_iou_model_vs_human": float(np.mean(ious)) if ious else float("nan"),
        "confident": len(sure),
        "auc_human_boxes_confident": auc(sure, p_human), "auc_model_boxes_confident": auc(sure, p_model),
        "mean_abs_probability_change": float(np.mean(np.abs(np.subtract(p_model, p_human)))) if labels else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from osteo.settings import get_settings

    out = compare(get_settings())
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:32} {v:.4f}" if isinstance(v, float) else f"{k:32} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
