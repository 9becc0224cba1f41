"""An image without a usable laterality is decided from its pixels, never from its shape
(osteo/localiser/locate.py locate_unlabelled): two hips when both pelvis halves are confident, else one hip when a
single view is, else none; the sides follow the row direction.

The localiser here is a test double that "sees" a hip exactly when its view shows one whole bright
ramp rising from left to right (a canonical, left-hip-looking view: mirrored, the ramp falls), so
what is tested is the hypotheses and their geometry, not a network (test_roi_localiser.py trains
one).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from osteo.localiser.locate import guess_laterality, locate_dicom, locate_display, locate_unlabelled
from osteo_mlflow.roi_pyfunc import locate_bytes
from tests.dicom_factory import make_dicom

SIZE = 96


class RampLocator:
    """Confident (0.95) on a view with one whole bright ramp rising to the right, its box; else 0.1."""

    name, version, input_size = "ramp", "1", SIZE

    def predict(self, views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes, conf = [], []
        for v in views:
            content = np.flatnonzero((v > 0.02).any(0))
            bright = v > 0.5
            cols, rows = np.flatnonzero(bright.any(0)), np.flatnonzero(bright.any(1))
            if not len(cols):
                boxes.append((0, 0, 1, 1))
                conf.append(0.1)
                continue
            one = len(np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1)) == 1
            inside = cols[0] > content[0] + 1 and cols[-1] < content[-1] - 1 and rows[0] > 1
            gx = np.diff(v, axis=1)[bright[:, 1:] & bright[:, :-1]]
            rising = gx.size > 0 and gx.mean() > 0
            boxes.append((cols[0], rows[0], cols[-1] + 1, rows[-1] + 1))
            conf.append(0.95 if one and inside and rising else 0.1)
        return np.asarray(boxes, np.float32), np.asarray(conf, np.float32)


def _film(rows: int, cols: int) -> np.ndarray:
    return np.random.default_rng(rows * cols).integers(20, 60, (rows, cols)).astype(np.uint8)


def _ramp(img: np.ndarray, top: int, centre: int, rising: bool) -> tuple[int, int, int, int]:
    h, w = img.shape[0] // 8, img.shape[1] // 9
    left = centre - w // 2
    ramp = np.linspace(150, 255, w)
    img[top:top + h, left:left + w] = ramp if rising else ramp[::-1]
    return (left, top, left + w, top + h)


def _iou(a, b) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return iw * ih / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih)


def _pelvis(rows: int, cols: int) -> tuple[np.ndarray, dict[str, tuple]]:
    """An AP pelvis in the radiological convention: the patient's right hip on the image's left
    (mirrored: its ramp falls), near 0.2 and 0.75 of the width, 0.4 of the height."""
    img = _film(rows, cols)
    top = int(0.4 * rows)
    right = _ramp(img, top, int(0.2 * cols), rising=False)
    left = _ramp(img, top, int(0.75 * cols), rising=True)
    return img, {"L": left, "R": right}


@pytest.mark.parametrize("rows,cols", [(400, 400), (500, 380), (300, 560)], ids=["square", "portrait", "landscape"])
def test_a_pelvis_of_any_shape_gives_two_hips_with_their_sides(rows, cols):
    img, truth = _pelvis(rows, cols)
    found, laterality = locate_unlabelled(img, "L", RampLocator())
    assert laterality == "B" and [f.side for f in found] == ["L", "R"]
    for f in found:
        assert f.confidence == pytest.approx(0.95)
        assert _iou(f.box, truth[f.side]) > 0.7, (f, truth)
    # the old rule would have called the square and the portrait film one hip
    assert guess_laterality(rows, cols) == "?"
    assert [f.side for f in locate_display(img, "?", "L", RampLocator())] == ["L", "R"]


def test_a_mirrored_pelvis_dicom_without_laterality_takes_its_sides_from_patient_orientation(tmp_path):
    img, truth = _pelvis(400, 400)
    stored = img[:, ::-1]  # stored mirrored: PatientOrientation R\F, the patient's left on the image's left
    make_dicom(tmp_path / "p.dcm", rows=400, cols=400, pixels=stored.astype(np.uint16) * 16,
               orientation=("R", "F"), drop=("ImageLaterality",))
    found, meta = locate_dicom(tmp_path / "p.dcm", RampLocator())
    assert meta.laterality == "B" and meta.row_direction == "R"
    sides = {f.side: f.box for f in found}
    assert sides["L"][2] <= 200 <= sides["R"][0]  # mirrored: the left hip on the image's left half
    assert _iou(sides["L"], (400 - truth["L"][2], truth["L"][1], 400 - truth["L"][0], truth["L"][3])) > 0.7


@pytest.mark.parametrize("side", ["L", "R"])
def test_one_hip_gives_its_side(side):
    img = _film(300, 260)
    # a left hip in the radiological convention looks canonical (head towards the image's left);
    # a right hip is its mirror image
    box = _ramp(img, 120, 110 if side == "L" else 150, rising=side == "L")
    found, laterality = locate_unlabelled(img, "L", RampLocator())
    assert laterality == side and len(found) == 1 and found[0].side == side
    assert _iou(found[0].box, box) > 0.7


def test_nothing_confident_is_not_located():
    rng = np.random.default_rng(0)
    for img in (rng.integers(0, 255, (300, 300), dtype=np.uint8), _film(200, 300)):
        found, laterality = locate_unlabelled(img, "L", RampLocator())
        assert laterality == "?" and len(found) == 1 and found[0].confidence < 0.8


def test_the_threshold_is_the_locators_unless_given():
    img, _ = _pelvis(400, 400)
    strict = RampLocator()
    strict.min_confidence = 0.99
    assert locate_unlabelled(img, "L", strict)[1] == "?"
    assert locate_unlabelled(img, "L", strict, min_confidence=0.9)[1] == "B"


def test_png_bytes_are_decided_from_the_pixels():
    img, _ = _pelvis(420, 400)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    found, meta = locate_bytes(buf.getvalue(), RampLocator())
    assert meta.laterality == "B" and sorted(f.side for f in found) == ["L", "R"]
