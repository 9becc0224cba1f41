"""Femoral-neck boxes at ingest: each VOC file matched to its image, scaled to its pixel grid, stored.

Boxes are stored in the image's original pixel space (the export, lineage and bench read them
as they are). Scaling a box drawn on a resized render needs the image's Columns/Rows, so it is
done here, at ingest, with the dicom_image row looked up by SOP UID (or by DICOM path through
an annotation map). Why not store the drawn box and its <size> and scale at export time: every
reader of annotation.box_* would then need the image too, and a box outside its image would only
be found at export. So a file that needs its image before that image is ingested (a <size> to
scale by, or a map entry naming a DICOM path), or that names no image at all yet (`hip_0012.xml`
without a map entry), is not stored: its source_file row is marked `waiting` and every refresh
that meets the file again reads it again, until its image (or map entry) arrives. Every box
waits for its image: the image says which patient side a box shows (its laterality, or for an
AP pelvis the half that holds the box, read with the DICOM's PatientOrientation).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import PurePath

from sqlalchemy import CompoundSelect, Select, String, and_, func, literal, or_, select, union_all, update
from sqlalchemy.orm import Session, aliased

from db.models import Annotation, DicomImage, OutOfScope, Pair, SourceFile
from db.store import BOX, store_annotation
from db.values import BoxSource, SourceStatus
from osteo.etl.annotations import VocBox, parse_voc, to_pixel_box
from osteo.etl.errors import InputError
from osteo_common.chunks import chunks
from osteo_model.roi import side_of_box

HUMAN, MODEL = BoxSource.HUMAN, BoxSource.MODEL  # annotation.source

WAITING = SourceStatus.WAITING  # source_file.status of a VOC file whose image is not known yet
OUT_OF_SCOPE = SourceStatus.OUT_OF_SCOPE  # ... of a VOC file drawn for an image recorded as out of scope


def judge_box_file(session: Session, sf: SourceFile, new: bool, data: bytes,
                   mapping: Mapping[str, str] | None = None) -> Counter:
    """One VOC file (osteo.ingest.refresh.ingest_annotations): parsed, matched to its image, its box scaled
    to the image's grid and stored (a corrected box replaces the old one), or left waiting (status
    `waiting`) while its image is unknown. InputError: bad input, for the caller to quarantine."""
    if new:  # the file's older content, still waiting, is replaced by this one
        session.execute(update(SourceFile).where(
            SourceFile.kind == "annotation", SourceFile.path == sf.path, SourceFile.id != sf.id,
            SourceFile.status == WAITING).values(status=SourceStatus.SUPERSEDED))
    voc = parse_voc(data, PurePath(sf.path).name, mapping)
    rows = match_box(session, voc)
    if rows is None and voc.sop_instance_uid and session.scalar(
            select(OutOfScope.id).where(OutOfScope.sop_instance_uid == voc.sop_instance_uid)):
        sf.status = OUT_OF_SCOPE  # drawn for an image that is not a hip radiograph: never needed, never re-read
        return Counter(out_of_scope=1)
    if rows is None:
        sf.status = WAITING
        return Counter(waiting=1)
    sf.status = SourceStatus.INGESTED
    counts: Counter = Counter()
    for row in rows:
        counts.update(store_annotation(session, sf, row))
    return counts


def match_box(session: Session, voc: VocBox) -> list[dict] | None:
    """The annotation rows' values, one per box and side on the image's pixel grid; None while its
    image is unknown. InputError when the boxes cannot be told apart by side."""
    if not voc.matched:
        return None
    if voc.image_path is not None:
        image = image_at_path(session, voc.image_path)
    else:
        image = session.scalar(select(DicomImage).where(DicomImage.sop_instance_uid == voc.sop_instance_uid))
    if image is None:
        return None
    boxes = [to_pixel_box(b, voc.size, image.n_columns, image.n_rows) for b in voc.boxes]
    if image.laterality in ("L", "R"):  # one hip: the first neck box (a second one is not this image's)
        sided = [(image.laterality, boxes[0])]
    else:
        sided = [(side_of_box(b, image.n_columns, image.row_direction), b) for b in boxes]
        if len({side for side, _ in sided}) < len(sided):
            raise InputError("bad_box", "two boxes on the same side of a pelvis image; one femoral neck per side")
    return [{"sop_instance_uid": image.sop_instance_uid, "side": side, "source": HUMAN, "label": voc.label,
             **dict(zip(BOX, box, strict=True))} for side, box in sided]


def image_at_path(session: Session, path: str) -> DicomImage | None:
    """The image of the DICOM file at `path` (through its content hash: a copy of an ingested file counts)."""
    shas = select(SourceFile.sha256).where(SourceFile.path == path, SourceFile.kind == "dicom")
    return session.scalars(select(DicomImage).join(SourceFile, SourceFile.id == DicomImage.source_file_id)
                           .where(SourceFile.sha256.in_(shas)).order_by(DicomImage.id.desc())).first()


def image_sides() -> CompoundSelect:
    """(image_id, side) of every femur an image shows: its laterality, or both sides of an AP pelvis."""
    def side(s: str) -> Select:
        return select(DicomImage.id.label("image_id"), literal(s, String(1)).label("side")).where(
            DicomImage.laterality.in_((s, "B")))
    return union_all(side("L"), side("R"))


def winning_boxes(min_confidence: float) -> Select:
    """(Annotation) the box each paired image side exports with: a person's box, else the newest
    localiser box of that side when it is confident (at least `min_confidence`). A person's box
    always wins; an unsure model box wins nothing (it is a proposal on the worklist)."""
    human = aliased(Annotation)
    newest_model = (select(func.max(Annotation.id)).where(Annotation.source == MODEL)
                    .group_by(Annotation.sop_instance_uid, Annotation.side))
    sides = image_sides().subquery()
    return (select(Annotation, DicomImage)
            .join(DicomImage, DicomImage.sop_instance_uid == Annotation.sop_instance_uid)
            .join(Pair, Pair.image_id == DicomImage.id)
            .join(sides, and_(sides.c.image_id == DicomImage.id, sides.c.side == Annotation.side))
            .where(or_(Annotation.source == HUMAN,
                       and_(Annotation.id.in_(newest_model), Annotation.confidence >= min_confidence,
                            ~select(human.id).where(human.sop_instance_uid == Annotation.sop_instance_uid,
                                                    human.side == Annotation.side, human.source == HUMAN).exists())))
            .order_by(DicomImage.id, Annotation.side))


def awaiting_box(min_confidence: float) -> Select:
    """Paired images with a side that has no winning box (the refresh summary's waiting.no_annotation,
    the worklist): (DicomImage, DICOM path), by SOP UID."""
    sides = image_sides().subquery()
    won = winning_boxes(min_confidence).with_only_columns(DicomImage.id.label("image_id"),
                                                          Annotation.side.label("side")).order_by(None).subquery()
    return (select(DicomImage, SourceFile.path)
            .join(Pair, Pair.image_id == DicomImage.id)
            .join(SourceFile, SourceFile.id == DicomImage.source_file_id)
            .where(select(sides.c.image_id).outerjoin(won, and_(won.c.image_id == sides.c.image_id,
                                                               won.c.side == sides.c.side))
                   .where(sides.c.image_id == DicomImage.id, won.c.image_id.is_(None)).exists())
            .order_by(DicomImage.sop_instance_uid))


def latest_boxes(session: Session, uids: list[str]) -> dict[str, dict[str, Annotation]]:
    """SOP UID -> side -> the box a person would start from: theirs, else the newest localiser box."""
    out: dict[str, dict[str, Annotation]] = {}
    for chunk in chunks(uids):
        rows = session.scalars(select(Annotation).where(Annotation.sop_instance_uid.in_(chunk))
                               .order_by(Annotation.id)).all()
        for a in rows:  # in id order: the newest model box last, and a person's box always kept
            sides = out.setdefault(a.sop_instance_uid, {})
            if a.source == HUMAN or sides.get(a.side) is None or sides[a.side].source != HUMAN:
                sides[a.side] = a
    return out


def waiting_files() -> Select:
    """VOC files that name no ingested image yet (the refresh summary's waiting.unmatched_box_files)."""
    return select(SourceFile.id).where(SourceFile.kind == "annotation", SourceFile.status == WAITING)
