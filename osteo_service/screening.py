"""One screening: a decoded upload, the box (the user's, the localiser's, or the whole image when it
is already a crop), the crop exactly as the export crops, the classifier's probability and heat map.

Plain functions; the web page and the API both call `screen`.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from osteo_service.image_decoding import Decoded
from osteo_service.limits import UploadError
from osteo_service.models import Served

BOX_SOURCES = ("user", "model", "image")
PREVIEW_SIDE = 768  # the whole image is shown at most this large (the box is drawn on it)


class ScreeningError(UploadError):
    """Why an upload was not scored (a bad box, no confident femoral neck): no patient data in it."""


@dataclass(frozen=True)
class SideResult:
    side: str
    box: tuple[int, int, int, int]
    box_confidence: float | None
    probability: float
    label: int


@dataclass(frozen=True)
class Screening:
    probability: float
    label: int
    threshold: float
    band: str  # low | intermediate | high
    box: tuple[int, int, int, int] | None  # in the image's pixels; None when the image was used whole
    box_source: str  # user | model | image
    box_confidence: float | None
    side: str
    crop: np.ndarray  # the classifier's input (uint8, the export's size), right femurs mirrored
    heatmap: np.ndarray  # the classifier's size, [0, 1]
    sides: tuple[SideResult, ...] = field(default_factory=tuple)


def band_of(probability: float, threshold: float) -> str:
    """A plain-language band: at or above the operating threshold "high", above half of it
    "intermediate", else "low"."""
    if probability >= threshold:
        return "high"
    return "intermediate" if probability >= threshold / 2 else "low"


def parse_box(text: str, rows: int, cols: int) -> tuple[int, int, int, int]:
    """`x0,y0,x1,y1` in the image's pixels, inside the image, at least 8 pixels a side."""
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise ScreeningError(422, "bad_box", "box must be four numbers x0,y0,x1,y1") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ScreeningError(422, "bad_box", "box must be four numbers x0,y0,x1,y1")
    x0, y0, x1, y1 = (int(round(v)) for v in values)
    if x0 < 0 or y0 < 0 or x1 > cols or y1 > rows:
        raise ScreeningError(422, "box_outside_image", f"the box must lie inside the {cols} x {rows} image")
    if x1 - x0 < 8 or y1 - y0 < 8:
        raise ScreeningError(422, "bad_box", "the box must be at least 8 pixels wide and high (x0 < x1, y0 < y1)")
    return x0, y0, x1, y1


def side_for_box(decoded: Decoded, box: tuple[int, int, int, int], side: str | None) -> str:
    """The femur a user's box is on: a one-hip DICOM says so; a pelvis is split at its middle."""
    from osteo_model.roi import side_of_box

    if side in ("L", "R"):
        return side
    if decoded.laterality in ("L", "R"):
        return decoded.laterality
    return side_of_box(box, decoded.display.shape[1], decoded.row_direction)


def locate(decoded: Decoded, served: Served) -> list:
    """The localiser's boxes on the whole image (both hips of a pelvis), confident or not."""
    from osteo.localiser.locate import guess_laterality, locate_display

    if served.locator is None:
        return []
    rows, cols = decoded.display.shape
    laterality = decoded.laterality if decoded.laterality in ("L", "R", "B") else guess_laterality(rows, cols)
    return locate_display(decoded.display, laterality, decoded.row_direction, served.locator)


def screen(decoded: Decoded, served: Served, *, box: str = "", side: str = "", cropped: bool = False) -> Screening:
    """Score one upload. A box given by the user wins; else the localiser's confident boxes (the side
    with the higher probability is the answer); an image said to be a crop is scored whole."""
    from osteo.etl.imaging import neck_crop

    size, margin = int(served.crop["size"]), float(served.crop["margin"])
    if cropped:
        crop = np.asarray(Image.fromarray(decoded.display).resize((size, size), Image.Resampling.LANCZOS))
        return _score(served, [(crop, "", None, None)], "image")
    rows, cols = decoded.display.shape
    if box:
        xyxy = parse_box(box, rows, cols)
        chosen = side_for_box(decoded, xyxy, side or None)
        return _score(served, [(neck_crop(decoded.display, xyxy, chosen, size=size, margin=margin), chosen,
                                xyxy, None)], "user")
    if served.locator is None:
        raise ScreeningError(422, "no_localiser", "no femoral-neck localiser is registered: draw the box "
                                                  "(box=x0,y0,x1,y1) or upload a femoral-neck crop (cropped=true)")
    found = locate(decoded, served)
    sure = [f for f in found if f.confidence >= float(served.crop["min_confidence"])]
    if side in ("L", "R"):
        sure = [f for f in sure if f.side == side]
    if not sure:
        best = max((f.confidence for f in found), default=0.0)
        raise ScreeningError(422, "not_located", f"the femoral neck was not located confidently (confidence "
                                                 f"{best:.2f}): draw the box or upload a femoral-neck crop")
    return _score(served, [(neck_crop(decoded.display, f.box, f.side, size=size, margin=margin), f.side,
                            tuple(int(v) for v in f.box), float(f.confidence)) for f in sure], "model")


def _score(served: Served, items: list[tuple[np.ndarray, str, Any, float | None]], source: str) -> Screening:
    results = served.classifier.predict([c for c, *_ in items], heatmaps=True)
    sides = tuple(SideResult(side=s, box=b, box_confidence=conf, probability=float(r["probability"]),
                             label=int(r["label"])) for (_, s, b, conf), r in zip(items, results, strict=True))
    k = max(range(len(items)), key=lambda i: results[i]["probability"])
    crop, side, box, conf = items[k]
    p = float(results[k]["probability"])
    return Screening(probability=p, label=int(p >= served.threshold), threshold=served.threshold,
                     band=band_of(p, served.threshold), box=box, box_source=source, box_confidence=conf,
                     side=side, crop=crop, heatmap=np.asarray(results[k]["heatmap"], dtype=np.float32),
                     sides=tuple(s for s in sides if s.box is not None))  # as the pyfunc: one side of one hip


# --- pictures --------------------------------------------------------------------------------

def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)  # speed over size: sent once
    return buf.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def heat_overlay_png(screening: Screening) -> bytes:
    """The heat map over the crop the classifier saw (the page)."""
    from osteo_model.gradcam import overlay

    return png_bytes(overlay(screening.crop, screening.heatmap))


def preview(display: np.ndarray, boxes: Sequence[tuple[tuple[int, int, int, int], str]] = ()) -> tuple[bytes, float]:
    """The whole image at most PREVIEW_SIDE pixels a side, with boxes drawn; (PNG, scale image->preview)."""
    rows, cols = display.shape
    scale = min(1.0, PREVIEW_SIDE / max(rows, cols))
    img = Image.fromarray(display)
    if scale < 1.0:
        img = img.resize((max(1, round(cols * scale)), max(1, round(rows * scale))), Image.Resampling.BILINEAR)
    if boxes:
        img = img.convert("RGB")
        draw = ImageDraw.Draw(img)
        for box, colour in boxes:
            draw.rectangle([v * scale for v in box], outline=colour, width=3)
    return png_bytes(np.asarray(img)), scale
