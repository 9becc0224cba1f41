"""Write one synthetic hip or AP pelvis radiograph as a DICOM file (runs in worker processes).

Every random choice of an image comes from its own seed, so the bytes do not
depend on the number of workers or on the order in which images are written.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from osteo.etl import synthetic
from osteo.synth.film import render_film

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"

STUDY_DESCRIPTIONS = ["HIP AP", "X-RAY HIP AP", "PELVIS/HIP AP", "HIP JOINT AP VIEW", "FEMUR PROXIMAL AP"]
# Coded anatomy and view of the DX objects (CID 4009 "DX Anatomy Imaged", CID 4010 "DX View")
ANATOMY_CODES = {"hip": ("24136001", "SCT", "Hip joint"), "pelvis": ("12921003", "SCT", "Pelvis")}
VIEW_AP_CODE = ("399348003", "SCT", "antero-posterior")
MANUFACTURERS = [("FUJIFILM Corporation", "FCR PROFECT CS"), ("Carestream Health", "DRX-Evolution"),
                 ("SIEMENS", "Ysio Max"), ("Philips Medical Systems", "DigitalDiagnost"),
                 ("KONICA MINOLTA", "REGIUS 210")]


def _encoder_available(uid) -> bool:
    try:
        from pydicom.pixels.encoders.base import get_encoder

        return bool(get_encoder(uid).is_available)
    except NotImplementedError:  # pydicom has no encoder for this transfer syntax at all
        return False


def uid_for(seed: int, kind: str, n: int) -> str:
    return generate_uid(entropy_srcs=[f"osteo-synth:{seed}:{kind}:{n}"])


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    """One item of a code sequence (PS3.3 Table 8.8-1, the basic coded entry)."""
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def mark_synthetic(ds: Dataset, imitated: tuple[str, str] | None = None) -> None:
    """Manufacturer and the private block that say the film is synthetic (osteo/etl/synthetic.py); the model
    name keeps the vendor whose detector the acquisition imitates."""
    ds.Manufacturer = synthetic.MANUFACTURER
    ds.ManufacturerModelName = f"SIM {imitated[1]}"[:64] if imitated else "SIM"
    block = ds.private_block(synthetic.PRIVATE_GROUP, synthetic.PRIVATE_CREATOR, create=True)
    block.add_new(synthetic.ELEMENT_FLAG, "LO", synthetic.FLAG)
    block.add_new(synthetic.ELEMENT_SIMULATOR, "LO", synthetic.SIMULATOR)


def _da(d: dt.date) -> str:
    return d.strftime("%Y%m%d")


def image_params(rng: np.random.Generator, view: str = "hip") -> dict[str, Any]:
    """Acquisition parameters of one image (also returned into the truth). An AP hip is a portrait
    field about 24 x 30 cm; an AP pelvis a 35 x 43 cm field used portrait or landscape, or a square
    (35 x 35, 43 x 43) as viewers export them. The long side has 560-720 pixels."""
    modality = "DX" if rng.random() < 0.55 else "CR"
    if view == "pelvis":
        shape = ("portrait", "landscape", "square")[int(rng.integers(3))]
        w_mm, h_mm = {"portrait": (350.0, 430.0), "landscape": (430.0, 350.0)}.get(
            shape, (390.0, 390.0) if rng.random() < 0.5 else (430.0, 430.0))
    else:
        w_mm, h_mm = rng.uniform(230.0, 260.0), rng.uniform(290.0, 320.0)
    long_px = int(rng.integers(560, 721))
    spacing = round(max(w_mm, h_mm) / long_px, 4)
    p: dict[str, Any] = {
        "modality": modality,
        "rows": int(round(h_mm / spacing)),
        "cols": int(round(w_mm / spacing)),
        "photometric": "MONOCHROME1" if rng.random() < 0.45 else "MONOCHROME2",
        "bits": int(rng.choice([10, 12, 16])),
        "spacing": spacing,
    }
    r = rng.random()
    p["compression"] = "rle" if r < 0.15 else ("j2k" if r < 0.25 else "none")
    options = [(1.0, 0.0), (1.0, -1024.0), (0.5, 0.0), (2.0, -100.0)]
    if modality == "DX":
        # A DX For Presentation image has the identity rescale (slope 1, intercept 0, type US: the DX Image
        # Module, PS3.3 C.8.11.3): its stored values are its modality values. Its window is still drawn in
        # the units of one of the rescales and then expressed in stored values (_window): the VOI windows
        # keep their variety, and every image of a seed (pixels, window, displayed image) is what it was
        # when DX files carried that rescale.
        p["window_units"] = options[int(rng.integers(len(options)))]
        p["rescale"] = (1.0, 0.0)
        p["window"] = True  # DX for presentation: VOI window is required
    else:
        p["rescale"] = options[1 + int(rng.integers(3))] if rng.random() < 0.4 else None
        p["window"] = bool(rng.random() < 0.3)
    if modality == "CR":
        # Once: whether a CR also carried the series' Laterality. Not written any more: Laterality (Type 2C)
        # may not be present beside ImageLaterality, which every image has. Drawn still, as above.
        rng.random()
    p["manufacturer"] = MANUFACTURERS[int(rng.integers(len(MANUFACTURERS)))]
    p["time"] = f"{int(rng.integers(7, 20)):02d}{int(rng.integers(0, 60)):02d}{int(rng.integers(0, 60)):02d}"
    p["description"] = STUDY_DESCRIPTIONS[int(rng.integers(len(STUDY_DESCRIPTIONS)))]
    if view == "pelvis":
        p["description"] = "PELVIS AP"
    return p


def _window(frac: np.ndarray, p: dict[str, Any], rng: np.random.Generator) -> tuple[float, float]:
    """VOI window in modality units. MONOCHROME1 windows are centred on the middle of the
    modality range (so they read the same whichever way a reader inverts).

    A DX window (c, w) is drawn in the units x = slope * s + intercept of p["window_units"] and returned
    as the LINEAR window (c', w') on the stored values s, its modality values, that displays the same
    (PS3.3 C.11.2.1.2): (x - (c - 0.5)) / (w - 1) == (s - (c' - 0.5)) / (w' - 1) for
    c' = (c - intercept - 0.5) / slope + 0.5 and w' = (w - 1) / slope + 1."""
    maxv = 2 ** p["bits"] - 1
    slope, intercept = p.get("window_units") or p["rescale"] or (1.0, 0.0)
    lo_f, hi_f = np.percentile(frac[::4, ::4], [1.0, 99.0])
    lo_f -= rng.uniform(0.0, 0.06)
    hi_f += rng.uniform(0.0, 0.06)
    if p["photometric"] == "MONOCHROME1":
        half = max(0.5 - lo_f, hi_f - 0.5) * rng.uniform(1.02, 1.10)
        center_f, width_f = 0.5, 2 * half
    else:
        center_f, width_f = (lo_f + hi_f) / 2, hi_f - lo_f
    center = round(float(intercept + slope * center_f * maxv), 1)
    width = round(float(slope * width_f * maxv), 1)
    if "window_units" in p:
        center, width = round((center - intercept - 0.5) / slope + 0.5, 4), round((width - 1.0) / slope + 1.0, 4)
    return center, width


def file_meta(sop_class: str, spec: dict[str, Any]) -> FileMetaDataset:
    """The file meta information of one film (written explicit VR little endian; compressed later)."""
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = UID(sop_class)
    fm.MediaStorageSOPInstanceUID = spec["sop_uid"]
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    fm.ImplementationVersionName = "OSTEO_SYNTH_1"
    return fm


def write_study_tags(ds: Dataset, spec: dict[str, Any], p: dict[str, Any], sop_class: str, pelvis: bool) -> None:
    """The instance, its dates and times, the acquisition's equipment and the study's descriptions."""
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = spec["sop_uid"]
    day = _da(spec["date"])
    ds.StudyDate = day
    ds.SeriesDate = day
    ds.ContentDate = day
    ds.AcquisitionDate = day
    ds.StudyTime = p["time"]
    ds.SeriesTime = p["time"]
    ds.ContentTime = p["time"]
    ds.AccessionNumber = spec["accession"]
    ds.Modality = p["modality"]
    if p["modality"] == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    mark_synthetic(ds, p["manufacturer"])
    ds.InstitutionName = "Taichung General Hospital"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = p["description"]
    ds.SeriesDescription = "PELVIS AP" if pelvis else f"HIP {'LT' if spec['laterality'] == 'L' else 'RT'} AP"


def write_patient_tags(ds: Dataset, spec: dict[str, Any]) -> None:
    """The patient's name, ID, birth date, sex and age on the study day."""
    ds.PatientName = spec["patient_name"]
    ds.PatientID = spec["patient_id"]
    ds.PatientBirthDate = _da(spec["birth"])
    ds.PatientSex = spec["sex"]
    date, birth = spec["date"], spec["birth"]
    age = date.year - birth.year - ((date.month, date.day) < (birth.month, birth.day))
    ds.PatientAge = f"{age:03d}Y"


def write_view_tags(ds: Dataset, spec: dict[str, Any], p: dict[str, Any], pelvis: bool) -> None:
    """Body part and view, the study's and series' identity, orientation, laterality and pixel spacing."""
    ds.BodyPartExamined = "PELVIS" if pelvis else "HIP"
    ds.ViewPosition = "AP"
    ds.StudyInstanceUID = spec["study_uid"]
    ds.SeriesInstanceUID = spec["series_uid"]
    ds.StudyID = spec["study_id"]
    ds.SeriesNumber = 1
    ds.InstanceNumber = spec["instance"]
    ds.PatientOrientation = ["R", "F"] if spec.get("mirrored") else ["L", "F"]
    ds.ImageLaterality = "B" if pelvis else spec["laterality"]
    ds.BurnedInAnnotation = "YES" if p.get("burned_in_text") else "NO"
    ds.LossyImageCompression = "00"
    ds.PixelSpacing = [p["spacing"], p["spacing"]]


def write_dx_tags(ds: Dataset, p: dict[str, Any], pelvis: bool) -> None:
    """What a DX For Presentation image carries beyond a CR."""
    ds.ImagerPixelSpacing = [p["spacing"], p["spacing"]]
    ds.DetectorType = "SCINTILLATOR"
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1 if p["photometric"] == "MONOCHROME1" else -1
    # DX Image: the presentation LUT undoes MONOCHROME1's inversion; DX Anatomy Imaged and DX
    # Positioning: the coded anatomy and view; Acquisition Context: none recorded (Type 2, empty)
    ds.PresentationLUTShape = "INVERSE" if p["photometric"] == "MONOCHROME1" else "IDENTITY"
    ds.AnatomicRegionSequence = [code_item(*ANATOMY_CODES["pelvis" if pelvis else "hip"])]
    ds.ViewCodeSequence = [code_item(*VIEW_AP_CODE)]
    ds.PositionerType = ""
    ds.AcquisitionContextSequence = []


def write_pixel_tags(ds: Dataset, stored: np.ndarray, spec: dict[str, Any], p: dict[str, Any]) -> None:
    """The image pixel module, the rescale and the VOI window (when drawn), and the pixel data."""
    rows, cols = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = p["photometric"]
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = p["bits"]
    ds.HighBit = p["bits"] - 1
    ds.PixelRepresentation = 0
    if p["rescale"] is not None:
        ds.RescaleIntercept = f"{p['rescale'][1]:g}"
        ds.RescaleSlope = f"{p['rescale'][0]:g}"
        ds.RescaleType = "US"
    if p["window"]:
        c, w = spec["_window"]
        ds.WindowCenter = f"{c:.10g}"  # at most 16 characters (DS)
        ds.WindowWidth = f"{w:.10g}"
        ds.VOILUTFunction = "LINEAR"
    ds.PixelData = stored.astype("<u2").tobytes()


def build_dataset(spec: dict[str, Any], stored: np.ndarray, p: dict[str, Any], rng) -> Dataset:
    """The film's dataset from its spec, stored pixels and acquisition parameters (`rng` is not drawn from)."""
    sop_class = DX_FOR_PRESENTATION if p["modality"] == "DX" else CR_IMAGE
    pelvis = spec.get("view", "hip") == "pelvis"
    ds = Dataset()
    ds.file_meta = file_meta(sop_class, spec)
    write_study_tags(ds, spec, p, sop_class, pelvis)
    write_patient_tags(ds, spec)
    write_view_tags(ds, spec, p, pelvis)
    if p["modality"] == "DX":
        write_dx_tags(ds, p, pelvis)
    write_pixel_tags(ds, stored, spec, p)
    return ds


def render_and_write(spec: dict[str, Any]) -> dict[str, Any]:
    """Render one image, write it to spec['path'], return what the truth/annotations need."""
    rng = np.random.default_rng(np.random.SeedSequence(spec["seed_seq"]))
    view = spec.get("view", "hip")
    p = image_params(rng, view)
    centred = p["window"] and p["photometric"] == "MONOCHROME1"
    blur = float(rng.uniform(4.5, 7.0)) if spec.get("exclusion") == "blur" else 0.0
    r = render_film(rng, view=view, laterality=spec["laterality"], rows=p["rows"], cols=p["cols"],
                    spacing=p["spacing"], bmd=spec["bmd"], sex=spec.get("sex", "F"), modality=p["modality"],
                    rotation_deg=spec["rotation"], implant=spec.get("implant"), blur_sigma=blur, centred=centred,
                    mirrored=bool(spec.get("mirrored")))
    p["burned_in_text"] = r.burned_text
    maxv = 2 ** p["bits"] - 1
    stored = np.rint(r.frac.astype(np.float64) * maxv).astype(np.uint16)
    if p["photometric"] == "MONOCHROME1":
        stored = (maxv - stored).astype(np.uint16)
    spec = dict(spec)
    if p["window"]:
        spec["_window"] = _window(r.frac, p, rng)
    ds = build_dataset(spec, stored, p, rng)
    for tag in spec.get("drop_tags", ()):
        if tag in ds:
            delattr(ds, tag)
    ts = ExplicitVRLittleEndian
    if p["compression"] == "rle" and _encoder_available(RLELossless):
        ds.compress(RLELossless, generate_instance_uid=False)
        ts = RLELossless
    elif p["compression"] == "j2k" and _encoder_available(JPEG2000Lossless):
        ds.compress(JPEG2000Lossless, generate_instance_uid=False)
        ts = JPEG2000Lossless
    path = Path(spec["path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)

    # annotator jitter on each tight neck box (stored pixel coordinates)
    boxes = {}
    for side in sorted(r.boxes):
        x0, y0, x1, y1 = r.boxes[side]
        j = rng.integers(-3, 4, size=4)
        x0 = int(np.clip(x0 + j[0], 0, p["cols"] - 1))
        y0 = int(np.clip(y0 + j[1], 0, p["rows"] - 1))
        x1 = int(np.clip(x1 + j[2], x0 + 1, p["cols"] - 1))
        y1 = int(np.clip(y1 + j[3], y0 + 1, p["rows"] - 1))
        boxes[side] = (x0, y0, x1, y1)
    return {
        "idx": spec.get("idx"),
        "boxes": boxes,
        "true_boxes": {side: tuple(int(v) for v in r.boxes[side]) for side in sorted(r.boxes)},
        "orientation": "R\\F" if spec.get("mirrored") else "L\\F",
        "rows": p["rows"],
        "cols": p["cols"],
        "modality": p["modality"],
        "photometric": p["photometric"],
        "bits": p["bits"],
        "transfer_syntax": str(ts),
    }
