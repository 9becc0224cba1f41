"""What else a hospital export holds: files that are not hip radiographs (docs/design.md, "Scope").

A chest CR, a knee DX, a hip CT and a hip MR (out of scope), and a radiograph with an empty
BodyPartExamined and no usable description (quarantined `unknown_body_part`). Each belongs to a
patient of the cohort, on the day of one of that patient's paired hip images, with laterality and
a femoral-neck box: without the scope rule it would be paired and exported. They are drawn from
their own generator after the hip cohort, which they leave exactly as it was. Small images: they
are never exported. Each passes dicom3tools' dciodvfy with no error (tests/osteo/test_synth_conformance.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from osteo.synth.dicomio import CR_IMAGE, DX_FOR_PRESENTATION, VIEW_AP_CODE, code_item, mark_synthetic, uid_for
from osteo.synth.tables import write_voc

SIZE = 128  # rows and columns
BITS = 12
SOP_CLASS = {"CR": CR_IMAGE, "DX": DX_FOR_PRESENTATION, "CT": str(CTImageStorage), "MR": str(MRImageStorage)}
# kind, modality, BodyPartExamined (DICOM CID 4031; None: empty), StudyDescription, SeriesDescription,
# and the truth's expected_scope under the default rules
KINDS: tuple[tuple[str, str, str | None, str, str | None, str], ...] = (
    ("chest", "CR", "CHEST", "CHEST PA", "PA", "body part CHEST"),
    ("knee", "DX", "KNEE", "KNEE AP/LAT", "膝關節 正面", "body part KNEE"),
    ("hip_ct", "CT", "HIP", "CT HIP W/O CONTRAST", "AXIAL 2.0", "modality CT"),
    ("hip_mr", "MR", "HIP", "MRI 髖關節", "COR T1 SE", "modality MR"),
    ("unknown", "CR", None, "外院影像", None, "unknown_body_part"),  # "outside images": no body part to tell
)


def write_others(out: Path, specs: list[dict[str, Any]], truth: list[dict[str, Any]], seed: int,
                 first_study: int) -> list[dict[str, Any]]:
    """Write the non-hip files and their boxes; return their truth rows (hip `specs` and `truth` only read)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 13]))
    paired = [i for i, row in enumerate(truth) if row["expected_pair"]]
    hosts = rng.choice(paired, size=len(KINDS), replace=len(paired) < len(KINDS))
    rows = []
    for k, (kind, host) in enumerate(zip(KINDS, hosts, strict=True)):
        spec, row = specs[int(host)], truth[int(host)]
        study = first_study + k
        path = out / "dicom" / f"S{study:05d}" / "IM0001.dcm"
        sop = uid_for(seed, "other-sop", k)
        box = _write(path, kind, spec, sop, uid_for(seed, "other-study", k), uid_for(seed, "other-series", k),
                     study, np.random.default_rng(np.random.SeedSequence([int(seed), 13, k])),
                     uid_for(seed, "other-frame", k))
        write_voc(out / "annotations" / f"{sop}.xml", sop, SIZE, SIZE, box)
        rows.append({
            "sop_instance_uid": sop, "patient_id": row["patient_id"], "laterality": row["laterality"],
            "study_date": row["study_date"], "bmd": row["bmd"], "t_score": "", "expected_pair": 0,
            "expected_label": "", "expected_exclusion": "none", "annotated": 1, "expected_export": 0,
            "expected_scope": kind[5], "file": path.relative_to(out).as_posix(),
            "study_instance_uid": uid_for(seed, "other-study", k), "modality": kind[1], "photometric": "MONOCHROME2",
            "bits_stored": BITS, "transfer_syntax": str(ExplicitVRLittleEndian), "rotation_deg": "0.00",
            "box_xmin": box[0], "box_ymin": box[1], "box_xmax": box[2], "box_ymax": box[3],
        })
    return rows


def _pixels(rng: np.random.Generator) -> np.ndarray:
    """A smooth gradient under fine noise: textured enough to pass the export's quality check."""
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    frac = 0.25 + 0.2 * (0.6 * x + 0.4 * y) + rng.normal(0.0, 0.04, (SIZE, SIZE))
    return np.rint(np.clip(frac, 0.05, 0.80) * (2**BITS - 1)).astype(np.uint16)


def _write(path: Path, kind: tuple, spec: dict[str, Any], sop: str, study_uid: str, series_uid: str, study: int,
           rng: np.random.Generator, frame_uid: str) -> tuple[int, int, int, int]:
    name, modality, body_part, study_desc, series_desc, _ = kind
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(SOP_CLASS[modality])
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = "OSTEO_SYNTH_1"
    text = f"{study_desc}{series_desc or ''}"
    ds.SpecificCharacterSet = "ISO_IR 100" if text.isascii() else "ISO_IR 192"  # UTF-8 for Chinese text
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] if modality == "CT" else ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID, ds.SOPInstanceUID = SOP_CLASS[modality], sop
    day = spec["date"].strftime("%Y%m%d")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = day
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = f"{int(rng.integers(7, 20)):02d}{int(rng.integers(0, 60)):02d}00"
    ds.AccessionNumber = f"{modality}{spec['date']:%y%m%d}{(study * 7919) % 10000:04d}"
    ds.Modality = modality
    mark_synthetic(ds, ({"CT": "SIEMENS", "MR": "GE MEDICAL SYSTEMS"}.get(modality, "FUJIFILM Corporation"), modality))
    ds.InstitutionName = "Taichung General Hospital"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study_desc
    if series_desc is not None:
        ds.SeriesDescription = series_desc
    ds.PatientName, ds.PatientID = spec["patient_name"], spec["patient_id"]
    ds.PatientBirthDate, ds.PatientSex = spec["birth"].strftime("%Y%m%d"), spec["sex"]
    date, birth = spec["date"], spec["birth"]
    ds.PatientAge = f"{date.year - birth.year - ((date.month, date.day) < (birth.month, birth.day)):03d}Y"
    ds.BodyPartExamined = body_part or ""  # Type 2 in CR Series: present, empty when the body part is unknown
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = str(study), 1, 1
    ds.ImageLaterality = spec["laterality"]
    _modality_module(ds, modality, name, frame_uid)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = SIZE
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, BITS, BITS - 1, 0
    ds.PixelData = _pixels(rng).astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    x0, y0 = int(rng.integers(24, 40)), int(rng.integers(24, 40))
    return x0, y0, x0 + int(rng.integers(48, 64)), y0 + int(rng.integers(48, 64))


def _modality_module(ds: Dataset, modality: str, kind: str, frame_uid: str) -> None:
    """The attributes each modality's image module asks for (PS3.3), with plausible values."""
    ds.BurnedInAnnotation, ds.LossyImageCompression = "NO", "00"
    if modality in ("CR", "DX"):
        ds.ViewPosition = "PA" if kind == "chest" else "AP"
        ds.PatientOrientation = ["L", "F"]
        ds.PixelSpacing = [0.4, 0.4]
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImagerPixelSpacing = [0.4, 0.4]
        ds.DetectorType = "SCINTILLATOR"
        ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LOG", -1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
        ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = "1700", "2400", "LINEAR"
        ds.PresentationLUTShape = "IDENTITY"  # MONOCHROME2
        ds.AnatomicRegionSequence = [code_item("72696002", "SCT", "Knee")]
        ds.ViewCodeSequence = [code_item(*VIEW_AP_CODE)]
        ds.PositionerType, ds.AcquisitionContextSequence = "", []
    if modality in ("CT", "MR"):
        ds.PatientPosition = "FFS"  # feet first, supine
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
        ds.SliceThickness = "2.0" if modality == "CT" else "4.0"
        ds.ImagePositionPatient = [-90.0, -120.0, 35.0]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0] if modality == "CT" else [1, 0, 0, 0, 0, -1]
        ds.PixelSpacing = [0.8, 0.8]
    if modality == "CT":
        ds.KVP, ds.AcquisitionNumber = "120", 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        ds.WindowCenter, ds.WindowWidth = "400", "1800"  # bone window
    if modality == "MR":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "SK", ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "520", "12", 3
        ds.MagneticFieldStrength = "1.5"
