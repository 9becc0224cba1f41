"""The secondary capture of a screening result: the whole image (the export's normalisation, at most
CAPTURE_SIDE pixels a side), each scored side's box, the heat map of the flagged (higher) side over its crop,
and the notice burned in, written with highdicom into the source image's study (a new series)."""

from __future__ import annotations

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from osteo.etl.imaging.export import crop_rect
from osteo.screening.sr import MANUFACTURER, NOTICE, SERIES_NUMBER, ReportInput, object_uids

CAPTURE_SIDE = 1024
RED, GREEN = (230, 40, 40), (40, 200, 80)


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """[0, 1] -> RGB uint8 (black-red-yellow), no matplotlib."""
    h = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    rgb = np.stack([np.clip(h * 2, 0, 1), np.clip(h * 2 - 1, 0, 1), np.zeros_like(h)], axis=-1)
    return (rgb * 255).astype(np.uint8)


def paste_heat(rgb: np.ndarray, heat: np.ndarray, box: tuple[int, int, int, int], side: str, margin: float) -> None:
    """The classifier's heat map (over its crop: box + margin, a right femur mirrored) blended onto the image."""
    rows, cols = rgb.shape[:2]
    x0, y0, x1, y1 = crop_rect(box, margin, rows, cols)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    h = np.asarray(heat, dtype=np.float32)
    h = h[:, ::-1] if side == "R" else h
    colour = np.asarray(Image.fromarray(heat_colours(h)).resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR))
    alpha = np.asarray(Image.fromarray((np.clip(h, 0, 1) * 255).astype(np.uint8)).resize(
        (x1 - x0, y1 - y0), Image.Resampling.BILINEAR), dtype=np.float32)[..., None] / 255 * 0.5
    region = rgb[y0:y1, x0:x1].astype(np.float32)
    rgb[y0:y1, x0:x1] = np.clip(region * (1 - alpha) + colour * alpha, 0, 255).astype(np.uint8)


def capture_pixels(display: np.ndarray, result: ReportInput, heat: np.ndarray | None, margin: float) -> np.ndarray:
    """The picture: boxes (red: flagged, green: not), the heat map of the higher side, the notice burned in."""
    rgb = np.repeat(display[..., None], 3, axis=-1)
    best = max(result.sides, key=lambda s: s.probability)
    if heat is not None:
        paste_heat(rgb, heat, best.box, best.side, margin)
    img = Image.fromarray(rgb)
    rows, cols = display.shape
    scale = min(1.0, CAPTURE_SIDE / max(rows, cols))
    if scale < 1.0:
        img = img.resize((max(1, round(cols * scale)), max(1, round(rows * scale))), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(img)
    size = max(12, img.size[0] // 60)  # the font's
    font = ImageFont.load_default(size=size)
    for s in result.sides:
        colour = RED if result.flagged(s) else GREEN
        draw.rectangle([v * scale for v in s.box], outline=colour, width=max(2, img.size[0] // 300))
        draw.text((s.box[0] * scale, max(0, s.box[1] * scale - size - 4)), f"{s.side} p={s.probability:.2f}",
                  fill=colour, font=font)
    lines = [f"{result.model_name} {result.model_version}: threshold {result.threshold:.2f}",
             f"NOTICE: {NOTICE}"]
    band = (size + 6) * len(lines) + 6
    draw.rectangle([0, img.size[1] - band, img.size[0], img.size[1]], fill=(0, 0, 0))
    for i, line in enumerate(lines):
        draw.text((6, img.size[1] - band + 4 + i * (size + 6)), line, fill=(255, 255, 255), font=font)
    return np.asarray(img)


def write_sc(source: Dataset, result: ReportInput, display: np.ndarray, heat: np.ndarray | None,
             margin: float) -> hd.sc.SCImage:
    """The secondary capture in the source image's study; patient and study modules from the source file."""
    series, sop = object_uids(source, result, "SC")
    orientation = [str(v) for v in source.get("PatientOrientation") or []]
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source, pixel_array=capture_pixels(display, result, heat, margin), photometric_interpretation="RGB",
        bits_allocated=8, coordinate_system="PATIENT", series_instance_uid=series, series_number=SERIES_NUMBER["SC"],
        sop_instance_uid=sop, instance_number=1, manufacturer=MANUFACTURER,
        # the source's view
        patient_orientation=(orientation[0], orientation[1]) if len(orientation) == 2 else ("L", "F"),
        series_description=f"osteo screening {result.model_name} {result.model_version}"[:64])
    laterality = str(source.get("ImageLaterality") or "")
    sc.add_new("Laterality", "CS", laterality if laterality in ("L", "R") else None)  # 2C: empty for a pelvis
    sc.BurnedInAnnotation = "YES"  # the notice, the model and the probabilities are in the pixels
    return sc
