"""A screening result as DICOM, written with highdicom into the source image's study: a TID 1500 measurement
report (Comprehensive 3D SR) and a secondary capture of the box and heat map (osteo/screening/capture.py).

Per scored side, a planar ROI group: the box as a closed polyline on the source image, the proximal femur of that
side as finding site, the probability and the operating threshold as measurements made by the classifier
(algorithm name and version; its parameters carry the intended-use sentence), and whether it is flagged. The
observer is the classifier as a device. The patient and study modules are copied by highdicom from the source
file, read at write time: osteo never stores them. UIDs are derived from the study, the model version and the
result, so writing the same result again gives the same instance (a push repeated after a kill replaces it).
"""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

NOTICE = "a screening aid that cannot rule osteoporosis out; confirm with DEXA"
MANUFACTURER = "osteo"
SCHEME = "99OSTEO"  # private coding scheme for the concepts no standard names
PROBABILITY = hd.sr.CodedConcept("OSTEO-P", SCHEME, "Osteoporosis probability")
THRESHOLD = hd.sr.CodedConcept("OSTEO-T", SCHEME, "Operating threshold")
FLAGGED = hd.sr.CodedConcept("OSTEO-F", SCHEME, "Flagged for DEXA referral")
OSTEOPOROSIS = hd.sr.CodedConcept("64859006", "SCT", "Osteoporosis")
SITE = codes.SCT.ProximalFemur  # the femoral neck has no concept in pydicom's dictionary; its parent
LATERALITY = {"L": codes.SCT.Left, "R": codes.SCT.Right}
SERIES_NUMBER = {"SR": 9901, "SC": 9902}


@dataclass(frozen=True)
class SideResult:
    side: str  # L | R
    box: tuple[int, int, int, int]  # in the source image's pixels
    source: str  # human | model
    confidence: float | None
    probability: float


@dataclass(frozen=True)
class ReportInput:
    """One screened result as the SR and SC say it (no patient data: that comes from the source file)."""

    result_id: int
    model_name: str
    model_version: str
    localiser: str | None
    threshold: float
    sides: tuple[SideResult, ...]

    def flagged(self, side: SideResult) -> bool:
        return side.probability >= self.threshold


def derived_uid(*parts: str) -> str:
    """A UID that depends only on its parts (pydicom's root, SHA-512 of the parts)."""
    return generate_uid(entropy_srcs=["osteo-screening", *parts])


def object_uids(source: Dataset, result: ReportInput, kind: str) -> tuple[str, str]:
    """(series UID, SOP instance UID) of a result's SR or SC: one series per study, version and kind."""
    study = str(source.StudyInstanceUID)
    series = derived_uid(study, result.model_name, result.model_version, kind)
    return series, derived_uid(series, str(result.result_id), kind)


def algorithm(result: ReportInput) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=result.model_name, version=result.model_version, family=codes.cid7162.ArtificialIntelligence,
        # each string is one Algorithm Parameters text, name and value in it
        parameters=[f"intended use: {NOTICE}", f"operating threshold: {result.threshold:.4f}",
                    f"localiser: {result.localiser or 'none'}"])


def side_group(source: Dataset, result: ReportInput,
               side: SideResult) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    x0, y0, x1, y1 = (float(v) for v in side.box)
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=float),
        source_image=hd.sr.SourceImageForRegion(str(source.SOPClassUID), str(source.SOPInstanceUID)))
    algo = algorithm(result)
    unit = codes.UCUM.NoUnits
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derived_uid(str(source.SOPInstanceUID), result.model_version, side.side),
            identifier=f"femoral neck {side.side}"),
        referenced_region=region, finding_type=OSTEOPOROSIS, algorithm_id=algo,
        finding_sites=[hd.sr.FindingSite(SITE, laterality=LATERALITY[side.side])],
        measurements=[hd.sr.Measurement(PROBABILITY, float(side.probability), unit, algorithm_id=algo),
                      hd.sr.Measurement(THRESHOLD, float(result.threshold), unit, algorithm_id=algo)],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(
            FLAGGED, codes.SCT.Present if result.flagged(side) else codes.SCT.Absent)])


def write_sr(source: Dataset, result: ReportInput) -> hd.sr.Comprehensive3DSR:
    """The measurement report of one result, in the source image's study (a new series)."""
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=derived_uid(result.model_name, result.model_version), name=result.model_name,
            manufacturer_name=MANUFACTURER, model_name=f"{result.model_name} {result.model_version}"))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=hd.sr.CodedConcept("OSTEO-S", SCHEME, "Opportunistic osteoporosis screening"),
        imaging_measurements=[side_group(source, result, s) for s in result.sides])
    series, sop = object_uids(source, result, "SR")
    return hd.sr.Comprehensive3DSR(
        evidence=[source], content=report[0], series_instance_uid=series, series_number=SERIES_NUMBER["SR"],
        sop_instance_uid=sop, instance_number=1, manufacturer=MANUFACTURER, is_complete=True,
        series_description=f"osteo screening {result.model_name} {result.model_version}"[:64])


def texts(group: Dataset, code: str) -> list[str]:
    """The text values of a content item's children with concept code `code` (DCM)."""
    return [str(i.TextValue) for i in group.get("ContentSequence", [])
            if i.ValueType == "TEXT" and i.ConceptNameCodeSequence[0].CodeValue == code]


def read_sr(ds: Dataset) -> dict[str, dict]:
    """side -> {probability, threshold, flagged, model, version, parameters}: the values an SR written here holds
    (the round trip's check, and what a reader of the PACS gets)."""
    sr = ds if isinstance(ds, hd.sr.Comprehensive3DSR) else hd.sr.Comprehensive3DSR.from_dataset(ds)
    if not isinstance(sr.content, hd.sr.MeasurementReport):
        raise ValueError("the SR holds no measurement report")
    out: dict[str, dict] = {}
    for group in sr.content.get_planar_roi_measurement_groups():
        side = next(k for k, v in LATERALITY.items() if group.finding_sites[0].laterality == v)
        values = {m.name.meaning: float(m.value) for m in group.get_measurements()}
        out[side] = {"probability": values[PROBABILITY.meaning], "threshold": values[THRESHOLD.meaning],
                     "flagged": any(q.name.value == FLAGGED.value and isinstance(q.value, hd.sr.CodedConcept)
                                    and q.value.value == codes.SCT.Present.value
                                    for q in group.get_qualitative_evaluations()),
                     "model": texts(group[0], "111001")[0], "version": texts(group[0], "111003")[0],
                     "parameters": texts(group[0], "111002")}
    return out
