"""The femoral-neck localiser in the pipeline: an image's hip views, boxes back on its pixel grid,
and the refresh's locate step. Plain functions; the localiser itself is passed in (a Locator: the
registered champion through osteo_mlflow, or a checkpoint file), so nothing here knows MLflow.

A localiser box is stored beside a person's boxes (annotation.source `model`, with the localiser's
name, version and confidence); osteo/ingest/boxes.py decides which box of an image side exports: a
person's always, else the newest localiser box when it is confident.

An image without a usable laterality (a PNG or JPEG, a DICOM without ImageLaterality) is decided from
its pixels, never from its shape: the localiser scores four views of it, the two halves of an AP
pelvis and the whole image as a left and as a (mirrored) right hip, and the image shows two hips
when both halves are confident, else one hip when any single view is (the most confident), else
none (refused: not located). Its sides follow the row direction (PatientOrientation; a PNG is taken
in the radiological convention, the patient's right on the image's left).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sqlalchemy import and_, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from db.models import Annotation, DicomImage, Pair, SourceFile
from db.store import quarantine
from db.values import QuarantineStage
from osteo.etl.annotations import CLASS_NAME
from osteo.etl.dicom_headers import row_direction
from osteo.etl.pool import shared_pool
from osteo.ingest.boxes import HUMAN, MODEL, image_sides
from osteo.ingest.report import LocateCounts
from osteo.settings import ROI_MIN_CONFIDENCE

UNLABELLED = "?"  # laterality of an image whose hips the pixels decide


class Locator(Protocol):
    """A loaded localiser: views [N, S, S] in, boxes [N, 4] (view pixels) and confidence [N] out."""

    name: str
    version: str
    input_size: int

    def predict(self, views: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class FileLocator:
    """A localiser from a checkpoint file (osteo_model.roi_train.save_localiser)."""

    model: Any
    input_size: int
    name: str = "file"
    version: str = "0"
    min_confidence: float = ROI_MIN_CONFIDENCE  # the one the localiser was trained and calibrated for
    trained_on: str | None = None  # the registered version's tag (synthetic | real | mixed), set where it is loaded

    @classmethod
    def load(cls, path: str | Path, name: str = "file", version: str = "0") -> FileLocator:
        from osteo_model.roi_train import load_localiser

        model, config, _ = load_localiser(path)
        return cls(model=model, input_size=config.input_size, name=name, version=version,
                   min_confidence=config.min_confidence)

    def predict(self, views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from osteo_model.roi_train import predict_boxes

        return predict_boxes(self.model, views)


@dataclass(frozen=True)
class LocatedBox:
    """One femoral-neck box found by the localiser, on the image's pixel grid (x0, y0, x1, y1)."""

    side: str
    box: tuple[int, int, int, int]
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class LocatedImage:
    """What locate_dicom read of an image (and the pyfunc of a PNG or JPEG): its size, the laterality it
    was located under (read, or shown by its pixels: B, L, R, `?`), its row direction and display pixels."""

    rows: int
    cols: int
    laterality: str
    row_direction: str
    display: np.ndarray  # rows x cols, uint8: the export's normalisation


@dataclass(frozen=True, slots=True)
class LocateJob:
    """One paired image of the refresh's locate step (pickled to a worker process)."""

    image_id: int
    path: str  # the DICOM file
    sides: tuple[str, ...]  # the sides to locate
    laterality: str
    row_direction: str
    size: int  # the localiser's input size
    uid: str  # SOP Instance UID: the box's annotation
    sha256: str  # of the DICOM file: its quarantine entry, should it not read


@dataclass(frozen=True, eq=False)
class LocateViews:
    """A worker's answer: the job's view inputs for its sides (small arrays travel back, never the image)."""

    job: LocateJob
    views: list  # osteo_model.roi.HipView of each input
    inputs: np.ndarray  # [len(views), size, size]
    shape: tuple[int, int]  # the image's rows, cols


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A worker's answer for an image whose pixels do not read (quarantined)."""

    job: LocateJob
    error: tuple[str, str]  # reason, detail


def pixel_box(box: Sequence[float], cols: int, rows: int) -> tuple[int, int, int, int]:
    """A view box back on the image grid as whole pixels, clamped to the image."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return (min(max(math.floor(x0 + 0.5), 0), cols), min(max(math.floor(y0 + 0.5), 0), rows),
            min(max(math.floor(x1 + 0.5), 0), cols), min(max(math.floor(y1 + 0.5), 0), rows))


def guess_laterality(rows: int, cols: int) -> str:
    """For an image without a header: `?`, the pixels decide (locate_display). The image's shape says
    nothing: pelvis films are exported portrait, landscape and square."""
    return UNLABELLED


def labelled(laterality: str | None) -> bool:
    return (laterality or "").strip().upper() in ("L", "R", "B")


def view_inputs(display: np.ndarray, laterality: str, direction: str, size: int) -> tuple[list, np.ndarray]:
    """The hip views of an image and their size x size inputs. Without a usable laterality, the
    four hypotheses: the pelvis halves (L, R), the whole image as a left hip, as a right hip."""
    from osteo_model.roi import hip_views, view_input

    rows, cols = display.shape
    views = (hip_views(rows, cols, laterality, direction) if labelled(laterality) else
             [v for lat in ("B", "L", "R") for v in hip_views(rows, cols, lat, direction)])
    return views, np.stack([view_input(display, v, size) for v in views])


def decide_hips(found: list[LocatedBox], min_confidence: float) -> tuple[list[LocatedBox], str]:
    """The four hypotheses' boxes (pelvis L, pelvis R, hip L, hip R) -> (the boxes kept, laterality):
    B with both halves when both are confident, else the most confident single view when it is
    confident (its side), else that view's unsure box and `?` (not located). Should a whole-image
    view be as confident as the weaker half (a trained localiser never was: docs/design.md), the
    image is taken as one hip, the claim of fewer femora."""
    weaker_half = min(f.confidence for f in found[:2])
    if weaker_half >= min_confidence and weaker_half > max(f.confidence for f in found[2:]):
        return found[:2], "B"
    best = max(found[2:] + found[:2], key=lambda f: f.confidence)  # a tie: the whole image's view
    return [best], best.side if best.confidence >= min_confidence else UNLABELLED


def _on_image(views: list, boxes: np.ndarray, confidence: np.ndarray, size: int, cols: int,
              rows: int) -> list[LocatedBox]:
    from osteo_model.roi import to_image_box

    return [LocatedBox(v.side, pixel_box(to_image_box(b, v, size), cols, rows), float(c))
            for v, b, c in zip(views, boxes, confidence, strict=True)]


def boxes_from_views(views: list, boxes: np.ndarray, confidence: np.ndarray, laterality: str, size: int,
                     cols: int, rows: int, min_confidence: float = ROI_MIN_CONFIDENCE) -> list[LocatedBox]:
    """View predictions back on the image grid, one per side (no laterality: decide_hips)."""
    found = _on_image(views, boxes, confidence, size, cols, rows)
    return found if labelled(laterality) else decide_hips(found, min_confidence)[0]


def _threshold(locator: Locator, min_confidence: float | None) -> float:
    return float(min_confidence if min_confidence is not None else getattr(locator, "min_confidence",
                                                                           ROI_MIN_CONFIDENCE))


def locate_unlabelled(display: np.ndarray, direction: str, locator: Locator,
                      min_confidence: float | None = None) -> tuple[list[LocatedBox], str]:
    """An image without a usable laterality: its boxes and the laterality its pixels show (B, L, R;
    `?` when no hip is confident, with the best unsure box)."""
    rows, cols = display.shape
    views, inputs = view_inputs(display, UNLABELLED, direction, locator.input_size)
    boxes, confidence = locator.predict(inputs)
    found = _on_image(views, boxes, confidence, locator.input_size, cols, rows)
    return decide_hips(found, _threshold(locator, min_confidence))


def locate_display(display: np.ndarray, laterality: str, direction: str, locator: Locator,
                   min_confidence: float | None = None) -> list[LocatedBox]:
    """The femoral-neck box(es) of one display image (rows x cols, uint8): L/R one, B (pelvis) two;
    any other laterality (`?`, empty): decided from the pixels (locate_unlabelled)."""
    if not labelled(laterality):
        return locate_unlabelled(display, direction, locator, min_confidence)[0]
    rows, cols = display.shape
    lat = laterality.strip().upper()
    views, inputs = view_inputs(display, lat, direction, locator.input_size)
    boxes, confidence = locator.predict(inputs)
    return boxes_from_views(views, boxes, confidence, lat, locator.input_size, cols, rows)


def locate_dicom(data: bytes | str | Path, locator: Locator) -> tuple[list[LocatedBox], LocatedImage]:
    """`osteo roi locate`, the classifier's pyfunc: the boxes of one DICOM (sides from its
    ImageLaterality and PatientOrientation) and what was read (rows, cols, laterality, row direction)."""
    from osteo.etl.imaging import load_dicom, prepare_display

    ds, _ = load_dicom(data)
    dm = prepare_display(ds)
    display = dm.display_u8()
    rows, cols = display.shape
    laterality = str(ds.get("ImageLaterality") or ds.get("Laterality") or "").strip().upper()
    direction = row_direction(ds.get("PatientOrientation"))
    if labelled(laterality):
        found = locate_display(display, laterality, direction, locator)
    else:
        found, laterality = locate_unlabelled(display, direction, locator)
    return found, LocatedImage(rows, cols, laterality, direction, display)


# --- the refresh's locate step -------------------------------------------------------------

def sides_to_locate(session: Session, name: str, version: str) -> dict[int, tuple[str, list[str]]]:
    """Paired image sides with neither a person's box nor a box of this localiser version:
    image id -> (DICOM path, sides)."""
    sides = image_sides().subquery()
    human, mine = aliased(Annotation), aliased(Annotation)
    rows = session.execute(
        select(DicomImage.id, SourceFile.path, sides.c.side)
        .join(Pair, Pair.image_id == DicomImage.id)
        .join(SourceFile, SourceFile.id == DicomImage.source_file_id)
        .join(sides, sides.c.image_id == DicomImage.id)
        .outerjoin(human, and_(human.sop_instance_uid == DicomImage.sop_instance_uid, human.side == sides.c.side,
                               human.source == HUMAN))
        .outerjoin(mine, and_(mine.sop_instance_uid == DicomImage.sop_instance_uid, mine.side == sides.c.side,
                              mine.source == MODEL, mine.model_name == name, mine.model_version == version))
        .where(human.id.is_(None), mine.id.is_(None))
        .order_by(DicomImage.id, sides.c.side)).all()
    out: dict[int, tuple[str, list[str]]] = {}
    for image_id, path, side in rows:
        out.setdefault(image_id, (path, []))[1].append(side)
    return out


def _views_of(job: LocateJob) -> LocateViews | Unreadable:
    """Worker: one DICOM's view inputs (small arrays travel back, never the image)."""
    from osteo.etl.imaging import ExportError, load_dicom, prepare_display

    try:
        display = prepare_display(load_dicom(job.path)[0]).display_u8()
    except ExportError as exc:  # bad pixels: quarantined by the caller; anything else is our bug
        return Unreadable(job, (exc.reason, (exc.detail or str(exc))[:500]))
    views, inputs = view_inputs(display, job.laterality, job.row_direction, job.size)
    keep = [i for i, v in enumerate(views) if v.side in job.sides]
    rows, cols = display.shape
    return LocateViews(job, [views[i] for i in keep], inputs[keep], (rows, cols))


def locate_missing(factory: sessionmaker[Session], locator: Locator, *, workers: int = 1,
                   min_confidence: float = ROI_MIN_CONFIDENCE) -> LocateCounts:
    """Locate every paired image side that has no person's box and no box of this localiser version,
    and store the boxes (source `model`, the localiser's name and version, the confidence)."""
    with factory() as session:
        todo = sides_to_locate(session, locator.name, locator.version)
        images = {i.id: i for i in session.scalars(select(DicomImage).where(DicomImage.id.in_(list(todo))))} \
            if todo else {}
        jobs = [LocateJob(image_id=i, path=path, sides=tuple(sides), laterality=images[i].laterality,
                          row_direction=images[i].row_direction, size=locator.input_size,
                          uid=images[i].sop_instance_uid, sha256=images[i].source_file.sha256)
                for i, (path, sides) in todo.items()]
    if workers > 1 and len(jobs) >= 8:
        rendered = list(shared_pool(workers).map(_views_of, jobs, chunksize=max(1, len(jobs) // (workers * 4))))
    else:
        rendered = [_views_of(j) for j in jobs]
    good = [r for r in rendered if isinstance(r, LocateViews)]
    counts: Counter = Counter()
    with factory() as session, session.begin():
        for r in rendered:
            if isinstance(r, Unreadable):
                counts["quarantined"] += quarantine(session, stage=QuarantineStage.LOCATE, path=r.job.path,
                                                    sha256=r.job.sha256, reason=r.error[0], detail=r.error[1])
        if good:
            boxes, confidence = locator.predict(np.concatenate([r.inputs for r in good]))
            at = 0
            for r in good:
                n = len(r.views)
                rows, cols = r.shape
                for found in boxes_from_views(r.views, boxes[at:at + n], confidence[at:at + n],
                                              r.job.laterality, locator.input_size, cols, rows):
                    if found.box[2] - found.box[0] < 3 or found.box[3] - found.box[1] < 3:
                        counts["empty"] += 1  # nothing there to export: a person draws it
                        continue
                    session.add(Annotation(
                        sop_instance_uid=r.job.uid, side=found.side, source=MODEL, label=CLASS_NAME,
                        box_xmin=found.box[0], box_ymin=found.box[1], box_xmax=found.box[2], box_ymax=found.box[3],
                        model_name=locator.name, model_version=locator.version, confidence=found.confidence))
                    counts["confident" if found.confidence >= min_confidence else "unsure"] += 1
                at += n
    return LocateCounts(model=f"{locator.name}/{locator.version}", images=len(jobs),
                        confident=counts["confident"], unsure=counts["unsure"] + counts["empty"],
                        quarantined=counts["quarantined"])

