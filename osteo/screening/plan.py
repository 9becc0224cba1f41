"""Which hip images a classifier version screens: every in-scope image (a dicom_image row: the refresh records
nothing else as an image) that this version has no result for, whether or not the patient has DEXA; with
`rescreen`, every image again."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import DicomImage
from db.screening import ScreeningResult


def screened_by(name: str, version: str):
    return select(ScreeningResult.image_id).where(ScreeningResult.model_name == name,
                                                  ScreeningResult.model_version == version)


def images_to_screen(factory: sessionmaker[Session], name: str, version: str, *,
                     rescreen: bool = False) -> tuple[list[int], int]:
    """(image ids to screen in id order, images this version already screened and keeps)."""
    with factory() as session:
        query = select(DicomImage.id).order_by(DicomImage.id)
        if not rescreen:
            query = query.where(DicomImage.id.not_in(screened_by(name, version)))
        todo = list(session.scalars(query))
        done = 0 if rescreen else session.scalar(select(func.count()).select_from(screened_by(name, version)
                                                                                  .subquery()))
    return todo, int(done or 0)
