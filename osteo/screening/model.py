"""The classifier and localiser a screening scores with, as plain objects (osteo_mlflow.screening loads them
from the registry; tests pass their own)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class Classifier(Protocol):
    """osteo_model.onnx.OnnxClassifier or osteo_model.predict.Predictor: crops in, dicts out."""

    threshold: float
    batch_size: int  # crops per run
    image_size: int

    def predict(self, images, *, heatmaps: bool = True) -> list[dict]: ...

    def probabilities(self, x) -> list[float]: ...  # a batch already preprocessed (osteo_model.onnx.preprocess_numpy)


@dataclass(frozen=True)
class ScreeningModel:
    """One classifier version (its operating threshold, how the export crops for it) and the localiser that
    places the boxes no person drew (None: only people's boxes are scored)."""

    name: str
    version: str
    classifier: Classifier = field(repr=False)
    threshold: float
    crop: dict  # size, margin, min_confidence
    locator: Any = field(default=None, repr=False)  # osteo.localiser.locate.Locator
    runtime: str = "onnxruntime"

    @property
    def localiser(self) -> tuple[str | None, str | None]:
        return (self.locator.name, self.locator.version) if self.locator is not None else (None, None)

    @property
    def min_confidence(self) -> float:
        return float(self.crop["min_confidence"])


@dataclass(frozen=True)
class Champion:
    """Which classifier version screens now (and the localiser the registry names beside it): small enough to
    travel to a Dask worker, which loads the models itself."""

    name: str
    version: str
    localiser: tuple[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"model": f"{self.name}/{self.version}",
                "localiser": "/".join(self.localiser) if self.localiser else None}
