"""The registered MLflow pyfunc: image bytes in; probability, label and Grad-CAM heat map out.

Preprocessing is inside: PNG/JPEG bytes of a femoral-neck crop, DICOM bytes (through the
export's normalisation), or arrays (via `unwrap_python_model().predict_images`).

The model is logged as code (MLflow "models from code"): the registry holds the small script in
MODEL_CODE, this package (code_paths) and the weights, and loading it imports code instead of
unpickling an object, so nothing in the registry is a pickle (the checkpoint is a state dict
read with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

LABEL_NAMES = {0: "not osteoporosis", 1: "osteoporosis"}

MODEL_CODE = '''"""osteo-classifier, logged as code: MLflow runs this file to build the model (no pickle)."""
from mlflow.models import set_model

from osteo_mlflow.pyfunc import OsteoClassifier

set_model(OsteoClassifier())
'''


def write_model_code(folder: str | Path) -> Path:
    """The models-from-code script, written where log_model can copy it from."""
    path = Path(folder) / "osteo_classifier.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(MODEL_CODE, encoding="utf-8")
    return path


def is_dicom(data: bytes) -> bool:
    return len(data) > 132 and data[128:132] == b"DICM"


def decode_image(item) -> np.ndarray | bytes:
    """DICOM bytes -> normalised uint8 array; other bytes and arrays pass through."""
    if isinstance(item, str):
        item = base64.b64decode(item)
    if isinstance(item, (bytes, bytearray, memoryview)) and is_dicom(bytes(item)):
        from osteo.etl.imaging import read_dicom, to_display

        display, _unit = to_display(read_dicom(bytes(item)))
        return np.clip(np.rint(display * 255), 0, 255).astype(np.uint8)
    return bytes(item) if isinstance(item, (bytearray, memoryview)) else item


def heatmap_png(heat: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.clip(np.rint(np.asarray(heat) * 255), 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


class OsteoClassifier(PythonModel):
    def load_context(self, context) -> None:
        from osteo_model.predict import Predictor

        self.predictor = Predictor.from_checkpoint(context.artifacts["checkpoint"])

    def predict_images(self, images: list, heatmaps: bool = True) -> list[dict]:
        return self.predictor.predict([decode_image(i) for i in images], heatmaps=heatmaps)

    # the DataFrame hint (what serving and the signature hand in) turns off MLflow's type-hint
    # validation quietly; arrays and lists still work when called directly
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame):
            images = list(model_input["image"])
        elif isinstance(model_input, np.ndarray) and model_input.ndim == 2:
            images = [model_input]
        else:
            images = list(model_input)
        want_heat = bool((params or {}).get("heatmap", True))
        results = self.predict_images(images, heatmaps=want_heat)
        return pd.DataFrame({
            "probability": [r["probability"] for r in results],
            "label": [r["label"] for r in results],
            "label_name": [LABEL_NAMES[r["label"]] for r in results],
            "heatmap_png": [heatmap_png(r["heatmap"]) if r["heatmap"] is not None else "" for r in results],
        })
