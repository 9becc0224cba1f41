"""Small but valid DICOM files for tests (pydicom writer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

SOP_CLASS = {"DX": DigitalXRayImageStorageForPresentation, "CR": ComputedRadiographyImageStorage,
             "CT": CTImageStorage, "MR": MRImageStorage}


def make_dicom(path: Path, *, patient_id: str = "A1234567", name: str = "CHEN^MEI LING", study_date: str = "20210315",
               laterality: str = "L", rows: int = 64, cols: int = 64, sop_uid: str | None = None,
               pixels: np.ndarray | None = None, drop: tuple[str, ...] = (), modality: str = "DX",
               body_part: str | None = "HIP", study_description: str | None = None,
               series_description: str | None = None, orientation: tuple[str, str] | None = None) -> str:
    """A hip DX by default; `body_part=None` leaves BodyPartExamined out, descriptions are left out unless given."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASS.get(modality, DigitalXRayImageStorageForPresentation)
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = name
    ds.PatientBirthDate = "19500102"
    ds.PatientSex = "F"
    ds.AccessionNumber = "ACC0001"
    ds.StudyDate = study_date
    ds.Modality = modality
    if body_part is not None:
        ds.BodyPartExamined = body_part
    if not f"{study_description or ''}{series_description or ''}".isascii():
        ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8, for descriptions in Chinese
    if study_description is not None:
        ds.StudyDescription = study_description
    if series_description is not None:
        ds.SeriesDescription = series_description
    ds.ImageLaterality = laterality
    if orientation is not None:
        ds.PatientOrientation = list(orientation)
    ds.PixelSpacing = [0.5, 0.5]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if pixels is None:
        rng = np.random.default_rng(0)
        pixels = rng.integers(200, 3000, size=(rows, cols), dtype=np.uint16)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    for tag in drop:
        delattr(ds, tag)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds.SOPInstanceUID
