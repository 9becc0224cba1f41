"""The registered MLflow pyfunc: image bytes in; probability, label, Grad-CAM heat map and the box out.

Preprocessing is inside. A whole radiograph (DICOM bytes, through the export's normalisation, or
PNG/JPEG bytes) is cropped by the femoral-neck localiser the model was registered with (its
weights are in the model's artifacts; the champion `osteo-roi` of the registry when it had none),
exactly as the refresh crops: each side the localiser finds confidently is scored, and the row
reports the side with the higher probability, its box and all sides in `sides`. An image the
localiser cannot locate confidently is refused with a reason (`error`), never scored uncropped.
A femoral-neck crop is scored as is when the caller says so (params {"cropped": true}, or
`unwrap_python_model().predict_images` with arrays or PNG bytes).

Labels use the model's operating threshold (chosen on validation for a target osteoporosis recall,
logged as the model's `model_config` (as `operating_threshold`: the run already has a `threshold`
param), its MLmodel metadata and the signature's `threshold` param default; a model without it uses
its checkpoint's); params {"threshold": t} labels at another one.

Every row says what the answer rests on: `trained_on` (the classifier's training images: synthetic,
real or mixed, from its model_config) and `synthetic_training` (True when the classifier, or the
localiser that found the box, learned from any synthetic image; None when one of them does not say:
osteo/etl/synthetic.py).

The model is logged as code (MLflow "models from code"): the registry holds the small script in
MODEL_CODE, this package (code_paths) and the weights, and loading it imports code instead of
unpickling an object, so nothing in the registry is a pickle (the checkpoint is a state dict
read with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel

LABEL_NAMES = {0: "not osteoporosis", 1: "osteoporosis", -1: "refused"}

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
    from osteo_model.gradcam import heatmap_png as grey_png

    return base64.b64encode(grey_png(heat)).decode("ascii")


class OsteoClassifier(PythonModel):
    def load_context(self, context) -> None:
        import json as _json

        from osteo_model.onnx import OnnxClassifier, onnxruntime_available
        from osteo_model.predict import Predictor

        config = getattr(context, "model_config", None) or {}
        threshold = float(config["operating_threshold"]) if config.get("operating_threshold") is not None else None
        self.trained_on = config.get("trained_on")  # synthetic | real | mixed; None: registered before it was kept
        # the same outputs either way; ONNX Runtime (registered since model.onnx) is about twice as fast
        if "onnx" in context.artifacts and onnxruntime_available():
            self.predictor = OnnxClassifier.load(context.artifacts["onnx"], context.artifacts["checkpoint"],
                                                 threshold=threshold)
        else:
            self.predictor = Predictor.from_checkpoint(context.artifacts["checkpoint"], threshold=threshold)
        self.locator = None
        self.crop = {"size": 256, "margin": 0.15, "min_confidence": 0.8}
        if "localiser" in context.artifacts:
            from osteo.localiser.locate import FileLocator

            info = _json.loads(Path(context.artifacts["localiser_info"]).read_text())
            self.locator = FileLocator.load(context.artifacts["localiser"], info["name"], info["version"])
            self.locator.trained_on = info.get("trained_on")
            self.crop = {k: info[k] for k in self.crop}

    def predict_images(self, images: list, heatmaps: bool = True) -> list[dict]:
        """Femoral-neck crops (arrays, PNG bytes, DICOM of a crop) scored as they are."""
        return self.predictor.predict([decode_image(i) for i in images], heatmaps=heatmaps)

    def _localiser(self):
        if self.locator is None:  # registered before any localiser: the registry's champion
            from osteo.settings import get_settings
            from osteo_mlflow.roi import champion_locator

            self.locator = champion_locator(get_settings())
        return self.locator

    def predict_radiograph(self, data: bytes, heatmaps: bool = True) -> dict:
        """One whole radiograph: located, cropped as the export crops, each confident side scored."""
        from osteo.etl.imaging import neck_crop
        from osteo_mlflow.roi_pyfunc import locate_bytes

        locator = self._localiser()
        if locator is None:
            return _refused("no_localiser", "no femoral-neck localiser is registered (osteo roi train); "
                                            "pass a femoral-neck crop with params {'cropped': true}")
        found, meta = locate_bytes(data, locator)
        sure = [f for f in found if f.confidence >= self.crop["min_confidence"]]
        if not sure:
            best = max((f.confidence for f in found), default=0.0)
            return _refused("not_located", f"the femoral neck was not located confidently (confidence {best:.2f} "
                                           f"< {self.crop['min_confidence']}); crop it and pass params "
                                           "{'cropped': true}", found, locator)
        crops = [neck_crop(meta.display, f.box, f.side, size=self.crop["size"], margin=self.crop["margin"])
                 for f in sure]
        results = self.predictor.predict(crops, heatmaps=heatmaps)
        sides = [{"side": f.side, "box": list(f.box), "box_confidence": f.confidence, "probability": r["probability"],
                  "label": r["label"]} for f, r in zip(sure, results, strict=True)]
        k = max(range(len(sure)), key=lambda i: results[i]["probability"])
        return {**results[k], "side": sure[k].side, "box": list(sure[k].box), "box_confidence": sure[k].confidence,
                "localiser": f"{locator.name}/{locator.version}", "sides": sides, "error": ""}

    # the DataFrame hint (what serving and the signature hand in) turns off MLflow's type-hint
    # validation quietly; arrays and lists still work when called directly
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        import json as _json

        if isinstance(model_input, pd.DataFrame):
            images = list(model_input["image"])
        elif isinstance(model_input, np.ndarray) and model_input.ndim == 2:
            images = [model_input]
        else:
            images = list(model_input)
        params = params or {}
        want_heat = bool(params.get("heatmap", True))
        threshold = float(params["threshold"]) if params.get("threshold") is not None else self.predictor.threshold
        from osteo.etl.synthetic import synthetic_training

        cropped = bool(params.get("cropped", False))
        if cropped:
            results = [{**r, "side": "", "box": None, "box_confidence": None, "localiser": "", "sides": [],
                        "error": ""} for r in self.predict_images(images, heatmaps=want_heat)]
        else:
            results = [self.predict_radiograph(base64.b64decode(i) if isinstance(i, str) else bytes(i), want_heat)
                       for i in images]
        models = [self.trained_on]  # and the localiser's, when it located the image
        models += [] if cropped or self.locator is None else [getattr(self.locator, "trained_on", None)]
        synthetic = synthetic_training(*models)
        return pd.DataFrame({
            "probability": [r["probability"] for r in results],
            "label": [_label(r, threshold) for r in results],
            "label_name": [LABEL_NAMES[_label(r, threshold)] for r in results],
            "heatmap_png": [heatmap_png(r["heatmap"]) if r["heatmap"] is not None else "" for r in results],
            "side": [r["side"] for r in results],
            "box": [_json.dumps(r["box"]) if r["box"] is not None else "" for r in results],
            "box_confidence": [float("nan") if r["box_confidence"] is None else r["box_confidence"] for r in results],
            "localiser": [r["localiser"] for r in results],
            "sides": [_json.dumps(r["sides"]) for r in results],
            "error": [r["error"] for r in results],
            "trained_on": [models[0] or "" for _ in results],
            "synthetic_training": pd.Series([synthetic] * len(results), dtype=object),
        })


def _label(result: dict, threshold: float) -> int:
    """1 at or above the threshold, 0 below; a refused image (label -1) stays refused."""
    return -1 if result["label"] == -1 else int(result["probability"] >= threshold)


def _refused(reason: str, detail: str, found=(), locator=None) -> dict:
    """A radiograph that is not scored: the reason, and what the localiser saw."""
    return {"probability": float("nan"), "label": -1, "heatmap": None, "side": "", "box": None,
            "box_confidence": max((f.confidence for f in found), default=None),
            "localiser": f"{locator.name}/{locator.version}" if locator is not None else "",
            "sides": [{"side": f.side, "box": list(f.box), "box_confidence": f.confidence} for f in found],
            "error": f"{reason}: {detail}"}
