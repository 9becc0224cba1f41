"""Femoral-neck boxes at ingest: each VOC file matched to its image, scaled to its pixel grid, stored.

Boxes are stored in the image's original pixel space (the export, lineage and bench read them
as they are). Scaling a box drawn on a resized render needs the image's Columns/Rows, so it is
done here, at ingest, with the dicom_image row looked up by SOP UID (or by DICOM path through
an annotation map). Why not store the drawn box and its <size> and scale at export time: every
reader of annotation.box_* would then need the image too, and a box outside its image would only
be found at export. So a file that needs its image before that image is ingested (a <size> to
scale by, or a map entry naming a DICOM path), or that names no image at all yet (`hip_0012.xml`
without a map entry), is not stored: its source_file row is marked `waiting` and every refresh
that meets the file again reads it again, until its image (or map entry) arrives. A box without
<size> whose image is not ingested yet is taken as is (its grid is the image's by definition).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import PurePath

from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session

from db.models import Annotation, DicomImage, OutOfScope, Pair, SourceFile
from db.store import BOX, store_annotation
from osteo.etl.annotations import VocBox, parse_voc, to_pixel_box

WAITING = "waiting"  # source_file.status of a VOC file whose image is not known yet
OUT_OF_SCOPE = "out_of_scope"  # ... of a VOC file drawn for an image recorded as out of scope


def judge_box_file(session: Session, sf: SourceFile, new: bool, data: bytes,
                   mapping: Mapping[str, str] | None = None) -> Counter:
    """One VOC file (osteo.refresh.ingest_annotations): parsed, matched to its image, its box scaled
    to the image's grid and stored (a corrected box replaces the old one), or left waiting (status
    `waiting`) while its image is unknown. InputError: bad input, for the caller to quarantine."""
    if new:  # the file's older content, still waiting, is replaced by this one
        session.execute(update(SourceFile).where(
            SourceFile.kind == "annotation", SourceFile.path == sf.path, SourceFile.id != sf.id,
            SourceFile.status == WAITING).values(status="superseded"))
    voc = parse_voc(data, PurePath(sf.path).name, mapping)
    box = match_box(session, voc)
    if box is None and voc.sop_instance_uid and session.scalar(
            select(OutOfScope.id).where(OutOfScope.sop_instance_uid == voc.sop_instance_uid)):
        sf.status = OUT_OF_SCOPE  # drawn for an image that is not a hip radiograph: never needed, never re-read
        return Counter(out_of_scope=1)
    if box is None:
        sf.status = WAITING
        return Counter(waiting=1)
    sf.status = "ingested"
    return store_annotation(session, sf, box)


def match_box(session: Session, voc: VocBox) -> dict | None:
    """The annotation row's values, the box on the image's pixel grid; None while its image is unknown."""
    if not voc.matched:
        return None
    if voc.image_path is not None:
        image = image_at_path(session, voc.image_path)
    else:
        image = session.scalar(select(DicomImage).where(DicomImage.sop_instance_uid == voc.sop_instance_uid))
    if image is None and (voc.image_path is not None or voc.size is not None):
        return None
    uid = image.sop_instance_uid if image is not None else voc.sop_instance_uid
    grid = (image.n_columns, image.n_rows) if image is not None else (None, None)
    box = to_pixel_box(voc.box, voc.size, *grid)
    return {"sop_instance_uid": uid, "label": voc.label, **dict(zip(BOX, box, strict=True))}


def image_at_path(session: Session, path: str) -> DicomImage | None:
    """The image of the DICOM file at `path` (through its content hash: a copy of an ingested file counts)."""
    shas = select(SourceFile.sha256).where(SourceFile.path == path, SourceFile.kind == "dicom")
    return session.scalars(select(DicomImage).join(SourceFile, SourceFile.id == DicomImage.source_file_id)
                           .where(SourceFile.sha256.in_(shas)).order_by(DicomImage.id.desc())).first()


def awaiting_box() -> Select:
    """Paired images without a box (the refresh summary's waiting.no_annotation, the worklist):
    (DicomImage, DICOM path), by SOP UID."""
    return (select(DicomImage, SourceFile.path)
            .join(Pair, Pair.image_id == DicomImage.id)
            .join(SourceFile, SourceFile.id == DicomImage.source_file_id)
            .where(DicomImage.sop_instance_uid.not_in(select(Annotation.sop_instance_uid)))
            .order_by(DicomImage.sop_instance_uid))


def waiting_files() -> Select:
    """VOC files that name no ingested image yet (the refresh summary's waiting.unmatched_box_files)."""
    return select(SourceFile.id).where(SourceFile.kind == "annotation", SourceFile.status == WAITING)
