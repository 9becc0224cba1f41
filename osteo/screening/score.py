"""One batch of hip images screened: each read once through the export's normalisation, its femoral necks
boxed (a person's box, else the localiser's when confident), quality-checked as the export checks them,
cropped as the export crops and preprocessed as the classifier's predict does, and the crops of the batch scored
in the classifier's batches (ONNX Runtime, as the service) while the next images are read: a reader thread judges
and preprocesses the images in order, and each run of the classifier, which releases the GIL, overlaps the reading
of what comes after it (the screening's ONNX Runtime session does not spin, so its idle threads leave the cores to
the reader). The crops go to the classifier in the same order and the same batches as one call over the whole
list, so the probabilities are the same. One screening_result row per image and classifier version.

An image is `screened` when at least one side was scored, `not_located` when no side has a person's box or a
confident localiser box (the unsure boxes are kept with their confidence), `excluded: <reason>` when every
boxed side failed the quality check (metal, blur) or its pixels cannot be read (unreadable).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Annotation, DicomImage, SourceFile
from db.screening import ScreeningResult
from osteo.etl.imaging import DisplayMap, ExportError, box_quality, exclusion_of, load_dicom, prepare_display
from osteo.etl.imaging.export import neck_crop_of
from osteo.etl.imaging.windows import prepare_windows
from osteo.ingest.boxes import HUMAN, MODEL
from osteo.localiser.locate import locate_display
from osteo.screening.model import ScreeningModel
from osteo.screening.report import ScreenCounts
from osteo_model.onnx import preprocess_numpy

SCREENED, NOT_LOCATED = "screened", "not_located"
MIN_BOX = 3  # pixels: a narrower or lower box has nothing to crop (as the refresh's locate step)


def excluded(reason: str) -> str:
    return f"excluded: {reason}"


@dataclass(frozen=True)
class ImageJob:
    """What screening one image needs from the database: its file, its sides and the boxes people drew."""

    image_id: int
    path: str
    laterality: str  # L | R | B
    row_direction: str
    human: dict[str, tuple[int, int, int, int]]  # side -> a person's box


@dataclass(frozen=True)
class SideScore:
    """One femur of an image: its box, who placed it, the localiser's confidence, and its probability once scored
    (None: not scored, with the quality exclusion when that is why)."""

    side: str
    box: tuple[int, int, int, int]
    source: str  # human | model
    confidence: float | None
    probability: float | None = None
    exclusion: str | None = None


@dataclass(frozen=True)
class Judged:
    """An image read and judged, before scoring: its sides, the crops to score (in the order of `to_score`) and
    each crop as the classifier takes it (1 x H x W, preprocessed)."""

    job: ImageJob
    sides: tuple[SideScore, ...]
    crops: tuple[np.ndarray, ...] = ()
    to_score: tuple[str, ...] = ()
    status: str = SCREENED
    inputs: tuple[np.ndarray, ...] = ()


def sides_of(laterality: str) -> tuple[str, ...]:
    return ("L", "R") if laterality == "B" else (laterality,)


def load_jobs(session: Session, image_ids: Iterable[int]) -> list[ImageJob]:
    """The images (in id order) with their source file's path and the people's boxes of their sides."""
    rows = session.execute(select(DicomImage.id, SourceFile.path, DicomImage.laterality, DicomImage.row_direction,
                                  DicomImage.sop_instance_uid)
                           .join(SourceFile, SourceFile.id == DicomImage.source_file_id)
                           .where(DicomImage.id.in_(list(image_ids))).order_by(DicomImage.id)).all()
    uids = [r.sop_instance_uid for r in rows]
    human: dict[str, dict[str, tuple[int, int, int, int]]] = {}
    drawn = select(Annotation).where(Annotation.source == HUMAN, Annotation.sop_instance_uid.in_(uids))
    for a in session.scalars(drawn):
        human.setdefault(a.sop_instance_uid, {})[a.side] = (a.box_xmin, a.box_ymin, a.box_xmax, a.box_ymax)
    return [ImageJob(r.id, r.path, r.laterality, r.row_direction,
                     {s: b for s, b in human.get(r.sop_instance_uid, {}).items() if s in sides_of(r.laterality)})
            for r in rows]


def place_boxes(dm: DisplayMap, job: ImageJob, model: ScreeningModel) -> list[SideScore]:
    """A person's box for each side that has one, else the localiser's (confident or not) on the whole image; a
    side with neither (no localiser) has no entry."""
    found = {s: SideScore(s, b, HUMAN, None) for s, b in job.human.items()}
    missing = [s for s in sides_of(job.laterality) if s not in found]
    if missing and model.locator is not None:
        display = dm.display_u8()
        for f in locate_display(display, job.laterality, job.row_direction, model.locator, model.min_confidence):
            if f.side in missing:
                found[f.side] = SideScore(f.side, (int(f.box[0]), int(f.box[1]), int(f.box[2]), int(f.box[3])), MODEL,
                                          float(f.confidence))
    return [found[s] for s in sides_of(job.laterality) if s in found]


def usable(side: SideScore, min_confidence: float) -> bool:
    x0, y0, x1, y1 = side.box
    sure = side.source == HUMAN or (side.confidence or 0.0) >= min_confidence
    return sure and x1 - x0 >= MIN_BOX and y1 - y0 >= MIN_BOX


def read_display(job: ImageJob, model: ScreeningModel) -> DisplayMap:
    """The image's grey-level map, decoded no more than needed (osteo.etl.imaging.windows): only the crop windows
    of the people's boxes when the localiser has no side to look at, else the whole frame. The crops and quality
    measures are those of a whole-frame decode either way."""
    ds = load_dicom(job.path)[0]
    looks = model.locator is not None and any(s not in job.human for s in sides_of(job.laterality))
    boxes = [] if looks else [b for s, b in job.human.items()
                              if usable(SideScore(s, b, HUMAN, None), model.min_confidence)]
    dm = prepare_windows(ds, boxes, float(model.crop["margin"]))
    return prepare_display(ds) if dm is None else dm


def judge_image(job: ImageJob, model: ScreeningModel, metal_threshold: float, blur_threshold: float) -> Judged:
    """Read, box, quality-check and crop one image (nothing scored yet). Only the pixels of the crops are mapped
    to grey levels, as the export maps them; the whole image only when the localiser has a side to look at."""
    try:
        dm = read_display(job, model)
    except (ExportError, OSError):  # bad pixels or a file gone since the refresh: not screened, said why
        return Judged(job, (), status=excluded("unreadable"))
    sides = place_boxes(dm, job, model)
    if not any(usable(s, model.min_confidence) for s in sides):
        return Judged(job, tuple(sides), status=NOT_LOCATED)
    size, margin = int(model.crop["size"]), float(model.crop["margin"])
    judged, crops, to_score = [], [], []
    for s in sides:
        if not usable(s, model.min_confidence):
            judged.append(s)
            continue
        reason = exclusion_of(box_quality(dm, s.box), metal_threshold, blur_threshold)
        judged.append(dataclasses.replace(s, exclusion=reason))
        if reason is None:
            crops.append(neck_crop_of(dm, s.box, s.side, size=size, margin=margin))
            to_score.append(s.side)
    status = SCREENED if crops else excluded(next(s.exclusion for s in judged if s.exclusion))
    inputs = tuple(preprocess_numpy(c, int(model.classifier.image_size)) for c in crops)
    return Judged(job, tuple(judged), tuple(crops), tuple(to_score), status, inputs)


def probabilities(model: ScreeningModel, inputs: list[np.ndarray]) -> list[float]:
    """One classifier run over preprocessed crops (as its predict would have made them)."""
    return [float(p) for p in model.classifier.probabilities(np.stack(inputs))] if inputs else []


def with_probabilities(judged: list[Judged], scores: list[float]) -> list[Judged]:
    """Each scored side gets its probability: `scores` holds one per crop, in the images' and crops' order."""
    results = iter(scores)
    out = []
    for j in judged:
        probability = {side: next(results) for side in j.to_score}
        out.append(dataclasses.replace(j, sides=tuple(dataclasses.replace(s, probability=probability.get(s.side))
                                                      for s in j.sides)))
    return out


def judge_and_score(jobs: list[ImageJob], model: ScreeningModel, metal_threshold: float,
                    blur_threshold: float) -> list[Judged]:
    """Every job judged and its crops scored, with the reading overlapped: a thread judges the images in order while
    this one scores each full batch of crops (the classifier's batch size) as soon as it is there. The batches are
    the ones one classifier call over all the crops would make, so the probabilities are the same."""
    batch = int(model.classifier.batch_size)
    judged: list[Judged] = []
    scores: list[float] = []
    waiting: list[np.ndarray] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="osteo-screen-read") as pool:
        ahead = pool.map(lambda job: judge_image(job, model, metal_threshold, blur_threshold), jobs)
        try:
            for j in ahead:
                judged.append(j)
                waiting.extend(j.inputs)
                while len(waiting) >= batch:
                    scores += probabilities(model, waiting[:batch])
                    del waiting[:batch]
        finally:  # a failure stops the reading at the image it is on
            pool.shutdown(cancel_futures=True)
    return with_probabilities(judged, scores + probabilities(model, waiting))


def result_values(j: Judged, model: ScreeningModel) -> dict:
    """The screening_result columns of one judged and scored image."""
    values: dict = {"status": j.status, "threshold": model.threshold, "side": None, "probability": None,
                    "label": None, "localiser_name": model.localiser[0], "localiser_version": model.localiser[1]}
    for suffix in ("l", "r"):
        values.update({f"box_{suffix}": None, f"box_source_{suffix}": None, f"confidence_{suffix}": None,
                       f"probability_{suffix}": None})
    for s in j.sides:
        suffix = s.side.lower()
        values.update({f"box_{suffix}": list(s.box), f"box_source_{suffix}": s.source,
                       f"confidence_{suffix}": s.confidence, f"probability_{suffix}": s.probability})
    scored = [(p, s) for s in j.sides if (p := s.probability) is not None]
    if scored:
        p, best = max(scored, key=lambda ps: ps[0])  # the first side of the highest probability
        values.update(side=best.side, probability=p, label=int(p >= model.threshold))
    return values


def record_results(session: Session, judged: list[Judged], model: ScreeningModel) -> None:
    """One row per image and version: a new one, or the version's row replaced in place (`--rescreen`)."""
    ids = [j.job.image_id for j in judged]
    existing = {r.image_id: r for r in session.scalars(select(ScreeningResult).where(
        ScreeningResult.image_id.in_(ids), ScreeningResult.model_name == model.name,
        ScreeningResult.model_version == model.version))}
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)  # naive UTC, as every time osteo stores
    for j in judged:
        values = {**result_values(j, model), "screened_at": now}
        row = existing.get(j.job.image_id)
        if row is None:
            session.add(ScreeningResult(image_id=j.job.image_id, model_name=model.name, model_version=model.version,
                                        **values))
        else:
            for key, value in values.items():
                setattr(row, key, value)


def screen_images(factory: sessionmaker[Session], model: ScreeningModel, image_ids: list[int], *,
                  metal_threshold: float, blur_threshold: float) -> ScreenCounts:
    """Screen one batch of images (osteo.screening.plan chose them) and record one result each."""
    with factory() as session:
        jobs = load_jobs(session, image_ids)
    judged = judge_and_score(jobs, model, metal_threshold, blur_threshold)
    with factory() as session, session.begin():
        record_results(session, judged, model)
    flagged = sum(1 for j in judged if result_values(j, model)["label"] == 1)
    return ScreenCounts.of([j.status for j in judged], flagged)
