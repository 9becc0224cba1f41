"""`osteo roi train | locate`: the femoral-neck localiser (trained on people's boxes, registered as osteo-roi)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from osteo.errors import UserError
from osteo.runtime import configure_environment
from osteo.settings import get_settings
from osteo_cli.output import emit


def train_roi(epochs: int | None = None, test_year: int | None = None, seed: int = 0):
    """The localiser's training flow (also the demo's step between its two refreshes)."""
    from sqlalchemy import func, select

    from db.models import Annotation
    from osteo.settings import session_factory

    settings = get_settings()
    with session_factory(settings, create=True)() as session:
        boxes = session.scalar(select(func.count(Annotation.id)).where(Annotation.source == "human"))
    if not boxes:
        raise UserError("no_boxes", "no femoral-neck boxes drawn by a person to learn from: run `osteo refresh "
                        "--dicom DIR --dexa DIR --annotations DIR` (or `osteo demo`) first")
    configure_environment(settings)
    from flows.roi import train_roi_flow

    return train_roi_flow(test_year=test_year, epochs=epochs, seed=seed)


def cmd_train(args: argparse.Namespace) -> int:
    report = train_roi(args.epochs, args.test_year, args.seed)
    emit(args, report.to_dict(), report.summary())
    return 0


def cmd_locate(args: argparse.Namespace) -> int:
    from osteo.etl.imaging import ExportError
    from osteo_mlflow.roi import champion_locator, load_locator

    path = Path(args.file)
    if not path.is_file():
        raise UserError("no_such_file", f"{path} does not exist or is not a file")
    settings = get_settings()
    locator = load_locator(settings, args.model) if args.model else champion_locator(settings)
    if locator is None:
        raise UserError("no_localiser", f"no {settings.roi_model}@champion registered yet: run `osteo roi train` "
                        "(or `osteo demo`) first")
    from osteo_mlflow.roi_pyfunc import locate_bytes

    try:
        found, meta = locate_bytes(path.read_bytes(), locator)
    except (ExportError, OSError, ValueError) as exc:
        raise UserError(getattr(exc, "reason", "unreadable_image"), f"cannot read {path}: {exc}") from None
    if args.out:
        draw_overlay(meta.display, found, args.out, settings.roi_min_confidence)
    from osteo.etl.synthetic import DEMO_NOTICE, synthetic_training

    # the registry's tag (osteo_mlflow.roi.load_locator); a localiser that does not say is unknown, never real
    trained_on = getattr(locator, "trained_on", None)
    synthetic = synthetic_training(trained_on)
    payload = {"file": str(path), "model": f"{locator.name}/{locator.version}", "rows": meta.rows,
               "cols": meta.cols, "laterality": meta.laterality, "row_direction": meta.row_direction,
               "min_confidence": settings.roi_min_confidence, "boxes": [f.to_dict() for f in found],
               "overlay": args.out, "trained_on": trained_on, "synthetic_training": synthetic,
               "notice": DEMO_NOTICE if synthetic else None}
    lines = [f"{path.name}: {meta.cols}x{meta.rows} px, laterality {meta.laterality},"
             f" located by {locator.name}/{locator.version}",
             f"trained on      {trained_on or 'not known (the localiser does not say)'}"
             + (f": {DEMO_NOTICE}" if synthetic else "")]
    for f in found:
        sure = "confident" if f.confidence >= settings.roi_min_confidence else "unsure: a person should check it"
        lines.append(f"  side {f.side}   x0, y0, x1, y1 = {', '.join(map(str, f.box))}   confidence {f.confidence:.3f}"
                     f" ({sure})")
    if args.out:
        lines.append(f"overlay         {args.out}")
    emit(args, payload, "\n".join(lines))
    return 0


def draw_overlay(display, found, out: str, min_confidence: float) -> None:
    """The rendered image with each box (green: confident, orange: unsure) and its side."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(display).convert("RGB")
    draw = ImageDraw.Draw(img)
    width = max(2, min(img.size) // 200)
    for f in found:
        colour = (40, 200, 80) if f.confidence >= min_confidence else (255, 150, 0)
        draw.rectangle(f.box, outline=colour, width=width)
        draw.text((f.box[0] + width, max(0, f.box[1] - 14)), f"{f.side} {f.confidence:.2f}", fill=colour)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    img.save(out, format="PNG")


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("roi", None, "the femoral-neck localiser: train it on people's boxes, or run it on one file")
    sub = p.add_subparsers(dest="roi_command", required=True, metavar="{train,locate}")
    t = sub.add_parser("train", help="train the localiser on the boxes people drew; register it as osteo-roi",
                       description="train the localiser on the boxes people drew (test year held out), log it to "
                       "MLflow and register it as osteo-roi (challenger; champion when its test mean IoU is higher)")
    t.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object")
    t.add_argument("--epochs", type=int, help="training epochs (default: the localiser's, 60)")
    t.add_argument("--test-year", type=int, help="held-out year (default: OSTEO_TEST_YEAR, 2022)")
    t.add_argument("--seed", type=int, default=0, help="seed of the split, weights and augmentation (default: 0)")
    t.set_defaults(func=cmd_train)
    c = sub.add_parser("locate", help="the femoral-neck box(es) of one DICOM (or PNG/JPEG) image",
                       description="print the femoral-neck box(es) of one image in its pixel coordinates (the grid "
                       "of a VOC box on the full image), the side and the confidence; --out draws them")
    c.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object")
    c.add_argument("file", help="a DICOM file (or a PNG/JPEG of a whole radiograph)")
    c.add_argument("--out", metavar="PNG", help="write the rendered image with the boxes drawn (default: none)")
    c.add_argument("--model", metavar="URI", help="a registered localiser, models:/osteo-roi/3 or osteo-roi@challenger"
                   " (default: models:/osteo-roi@champion)")
    c.set_defaults(func=cmd_locate)
