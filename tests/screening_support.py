"""Shared by the screening tests (not a test module): a refreshed synthetic cohort, the classifier of the ONNX
tests (an untrained one-channel ResNet18 at 64 px, exported as the registry does) and a localiser double with
fixed boxes, put together as the ScreeningModel `osteo screen` loads from the registry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

PATIENTS, SEED = 10, 0  # hip films and two AP pelvis films (people's boxes on most), in seconds


@dataclass
class FixedLocator:
    """Boxes at a fixed place of each hip view (over the femoral neck of the synthetic films, roughly), one
    confidence for all: the localiser's interface without its weights."""

    confidence: float = 0.95
    input_size: int = 64
    name: str = "osteo-roi"
    version: str = "7"

    def predict(self, views: np.ndarray):
        s = self.input_size
        return (np.tile([s * 0.3, s * 0.35, s * 0.6, s * 0.65], (len(views), 1)).astype(np.float32),
                np.full(len(views), self.confidence, dtype=np.float32))


def onnx_classifier(folder: Path, threshold: float = 0.5):
    """A real OnnxClassifier (ONNX Runtime, the service's path) of an untrained ResNet18 at 64 px."""
    import torch

    from osteo_model.models import build_model
    from osteo_model.onnx import build_classifier, export_onnx
    from osteo_model.predict import save_checkpoint

    torch.manual_seed(0)
    model = build_model("resnet18")
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 1, 64, 64))  # batch-norm statistics that are not the identity
    checkpoint = save_checkpoint(folder / "fold-0.pth", model.eval(), {"arch": "resnet18", "image_size": 64},
                                 {"threshold": threshold})
    onnx = export_onnx(model, 64, folder / "model.onnx")
    classifier, runtime = build_classifier(checkpoint, onnx, threshold, threads=1)
    assert runtime == "onnxruntime"
    return classifier


def screening_model(classifier, *, version: str = "3", locator=None, threshold: float | None = None):
    from osteo.screening.model import ScreeningModel

    return ScreeningModel(name="osteo-classifier", version=version, classifier=classifier,
                          threshold=classifier.threshold if threshold is None else threshold,
                          crop={"size": 64, "margin": 0.15, "min_confidence": 0.8},
                          locator=FixedLocator() if locator is None else locator)


def refreshed_cohort(root: Path, settings):
    """A synthetic cohort refreshed with the plain steps; the session factory of its database."""
    from osteo.settings import session_factory
    from osteo.synth import generate_cohort
    from tests.helpers import plain_refresh

    generate_cohort(root / "cohort", patients=PATIENTS, seed=SEED, workers=1)
    factory = session_factory(settings, create=True)
    plain_refresh(factory, root / "cohort", settings)
    return factory
