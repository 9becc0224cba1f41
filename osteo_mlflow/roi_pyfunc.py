"""The registered localiser (`osteo-roi`) as an MLflow pyfunc: image bytes in, femoral-neck boxes out.

Input: a DataFrame with an `image` column of DICOM or PNG/JPEG bytes (or base64 text). Output per
image: `boxes`, JSON [{side, box: [x0, y0, x1, y1] in the image's pixels, confidence}], and the
`laterality` read (L, R, B for an AP pelvis; an image without one, a PNG or JPEG: what its pixels show,
osteo.localiser.locate.locate_unlabelled, `?` when no hip is confident).
"""

from __future__ import annotations

import base64
import io
import json
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel

if TYPE_CHECKING:
    from osteo.localiser.locate import LocatedImage


def locate_bytes(data: bytes, locator) -> tuple[list, LocatedImage]:
    """Boxes of one image given as DICOM or PNG/JPEG bytes (the service and the classifier use this)."""
    from osteo.localiser.locate import LocatedImage, locate_dicom, locate_unlabelled

    if len(data) > 132 and data[128:132] == b"DICM":
        return locate_dicom(data, locator)
    from PIL import Image

    display = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    rows, cols = display.shape
    found, laterality = locate_unlabelled(display, "L", locator)  # the radiological convention: right on the left
    return found, LocatedImage(rows, cols, laterality, "L", display)


class OsteoLocaliser(PythonModel):
    def load_context(self, context) -> None:
        from osteo.localiser.locate import FileLocator

        self.locator = FileLocator.load(context.artifacts["checkpoint"], name="osteo-roi")

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        boxes, lats = [], []
        for item in model_input["image"]:
            data = base64.b64decode(item) if isinstance(item, str) else bytes(item)
            found, meta = locate_bytes(data, self.locator)
            boxes.append(json.dumps([f.to_dict() for f in found]))
            lats.append(meta.laterality)
        return pd.DataFrame({"boxes": boxes, "laterality": lats})
