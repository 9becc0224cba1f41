"""The API's shapes: the JSON it answers, problem details (RFC 9457) for every error, the multipart
body its OpenAPI schema describes (the handlers parse the body themselves, in memory)."""

from __future__ import annotations

import base64
import dataclasses

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from osteo.etl.synthetic import DEMO_NOTICE
from osteo_service import i18n
from osteo_service.image_decoding import Decoded
from osteo_service.models import Served
from osteo_service.screening import Screening

LABEL_NAMES = {0: "not osteoporosis", 1: "osteoporosis"}
DISCLAIMER = i18n.TEXT["disclaimer"]["en"]
MULTIPART = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image"],
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "DICOM, PNG or JPEG bytes"},
        "box": {"type": "string", "description": "x0,y0,x1,y1 in the image's pixels (default: the localiser's)",
                "example": "100,120,180,200"},
        "side": {"type": "string", "enum": ["L", "R"], "description": "the femur the box is on (default: found)"},
        "cropped": {"type": "string", "enum": ["true", "false"],
                    "description": "true: the image is a femoral-neck crop, scored whole"},
    }}}}}}
PROBLEM = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}


class Problem(BaseModel):
    """An error as RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    code: str


class SideOut(BaseModel):
    side: str
    box: list[int]
    box_confidence: float | None
    probability: float
    label: int


class TestYearOut(BaseModel):
    """How the answering version did on its held-out test year (null where not recorded)."""

    __test__ = False  # not a pytest class, whatever its name

    year: int | None = Field(description="the test year (OSTEO_TEST_YEAR when it was trained)")
    n: int | None = Field(description="test-year images")
    auc: float | None = Field(description="ROC AUC")
    auc_ci_low: float | None = Field(description="the AUC's 95 % interval (percentile bootstrap), low end")
    auc_ci_high: float | None = Field(description="... high end")
    recall: float | None = Field(description="osteoporosis recall (sensitivity) at the operating threshold")
    positives: int | None = Field(description="the n of the recall: test-year images with osteoporosis")
    specificity: float | None = Field(description="specificity at the operating threshold")
    negatives: int | None = Field(description="the n of the specificity: test-year images without osteoporosis")


class ModelOut(BaseModel):
    name: str
    version: str
    threshold: float
    runtime: str
    trained_on: str | None = Field(description="what the classifier learned from: synthetic | real | mixed; null "
                                               "when its registered version does not say")
    test_year: TestYearOut | None = Field(description="the version's test-year figures from its registered training "
                                                      "run; null when the registry holds none")


def synthetic_field():
    return Field(None, description="true when the answer rests on a model (the classifier, or the localiser that "
                                   "found the box) that learned from synthetic images; null when a model does not "
                                   "say what it learned from")


def notice_field():
    return Field(None, description=f'"{DEMO_NOTICE}" when synthetic_training is true, else null')


class PredictOut(BaseModel):
    probability: float = Field(ge=0, le=1)
    label: int = Field(description="1: osteoporosis suspected at the operating threshold")
    label_name: str
    threshold: float
    band: str = Field(description="low | intermediate | high")
    model: ModelOut
    localiser: str | None
    box: list[int] | None = Field(description="x0, y0, x1, y1 in the image's pixels; null when scored whole")
    box_source: str = Field(description="user | model | image")
    box_confidence: float | None
    side: str
    sides: list[SideOut]
    heatmap_png: str = Field(description="base64 PNG: the Grad-CAM map of the crop the model saw, 8-bit grey "
                                         "(0..1 as 0..255) at the model's input size")
    input_sha256: str
    disclaimer: str
    synthetic_training: bool | None = synthetic_field()
    notice: str | None = notice_field()


class LocatedOut(BaseModel):
    side: str
    box: list[int]
    confidence: float
    confident: bool


class LocateOut(BaseModel):
    rows: int
    cols: int
    laterality: str
    scale: float = Field(description="preview pixels per image pixel")
    preview_png: str = Field(description="base64 PNG of the whole image as the pipeline renders it")
    boxes: list[LocatedOut]
    localiser: str | None
    model: ModelOut
    localiser_trained_on: str | None = Field(description="what the localiser learned from (null: not known)")
    synthetic_training: bool | None = synthetic_field()
    notice: str | None = notice_field()


class HealthOut(BaseModel):
    status: str = Field(description="ok | no_model")
    model: ModelOut | None
    localiser: str | None
    model_uri: str
    localiser_uri: str
    reload_seconds: float
    version: str
    synthetic_training: bool | None = synthetic_field()
    notice: str | None = notice_field()


def problem(status: int, code: str, detail: str) -> JSONResponse:
    title = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
             413: "Content too large", 415: "Unsupported media type", 422: "Unprocessable content",
             429: "Too many requests", 503: "Service unavailable"}.get(status, "Error")
    return JSONResponse({"type": f"urn:osteo:problem:{code}", "title": title, "status": status, "detail": detail,
                         "code": code}, status_code=status, media_type="application/problem+json")


def model_out(model: Served) -> ModelOut:
    figures = model.test_year
    return ModelOut(name=model.name, version=model.version, threshold=model.threshold, runtime=model.runtime,
                    trained_on=model.trained_on,
                    test_year=TestYearOut(**dataclasses.asdict(figures)) if figures is not None else None)


def notice(synthetic_training: bool | None) -> str | None:
    """The demonstration notice when an answer rests on synthetic images (osteo/etl/synthetic.py)."""
    return DEMO_NOTICE if synthetic_training else None


def predict_out(model: Served, decoded: Decoded, result: Screening, heat: bytes) -> PredictOut:
    synthetic = model.synthetic_training(localiser=result.box_source == "model")
    return PredictOut(
        probability=result.probability, label=result.label, label_name=LABEL_NAMES[result.label],
        threshold=result.threshold, band=result.band, model=model_out(model),
        localiser=(model.localiser or None) if result.box_source == "model" else None,
        box=list(result.box) if result.box else None, box_source=result.box_source,
        box_confidence=result.box_confidence, side=result.side,
        sides=[SideOut(side=s.side, box=list(s.box), box_confidence=s.box_confidence, probability=s.probability,
                       label=s.label) for s in result.sides],
        heatmap_png=base64.b64encode(heat).decode("ascii"), input_sha256=decoded.sha256, disclaimer=DISCLAIMER,
        synthetic_training=synthetic, notice=notice(synthetic))
