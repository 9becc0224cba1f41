"""A service over fake registries: a classifier that scores brightness, a localiser with fixed boxes.

The fakes stand in for MLflow only; uploads, crops, the page, the API, CSRF and the audit are real.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import pytest
from PIL import Image

from osteo_service.models import ModelCache, Registry


class BrightClassifier:
    """Probability = mean brightness of the crop; heat map = the crop itself (deterministic, no weights)."""

    def __init__(self, threshold: float = 0.5, image_size: int = 32):
        self.threshold, self.image_size = threshold, image_size
        self.seen: list[np.ndarray] = []

    def predict(self, images, *, heatmaps: bool = True) -> list[dict]:
        out = []
        for im in images:
            arr = np.asarray(Image.fromarray(np.asarray(im)).convert("L").resize((self.image_size,) * 2))
            self.seen.append(np.asarray(im))
            p = float(arr.mean() / 255.0)
            out.append({"probability": p, "label": int(p >= self.threshold), "heatmap": arr / 255.0})
        return out


@dataclass
class FixedLocator:
    """Boxes in view pixels at a fixed place of each view, with a fixed confidence."""

    confidence: float = 0.95
    input_size: int = 64
    name: str = "osteo-roi"
    version: str = "7"
    trained_on: str | None = None  # the registry's tag, as osteo_service.models.mlflow_registry sets it

    def predict(self, views: np.ndarray):
        n = len(views)
        s = self.input_size
        return np.tile([s * 0.3, s * 0.4, s * 0.6, s * 0.7], (n, 1)).astype(np.float32), np.full(n, self.confidence)


@dataclass
class FakeRegistry:
    """Aliases to versions that a test can move; counts the loads."""

    versions: dict[str, tuple[str, str] | None] = field(default_factory=dict)
    loads: list[tuple[str, str]] = field(default_factory=list)
    threshold: float = 0.5
    locator: FixedLocator | None = field(default_factory=FixedLocator)
    fail: bool = False
    trained_on: str | None = None  # the classifier version's tag (None: it has none)
    test_year: dict | None = None  # the classifier version's test-year figures (None: the registry has none)

    def registry(self) -> Registry:
        def resolve(uri):
            if self.fail:
                raise ConnectionError("registry down")
            return self.versions.get(uri)

        def load_classifier(name, version):
            self.loads.append((name, version))
            return BrightClassifier(self.threshold), self.threshold, "fake", {"size": 64, "margin": 0.15,
                                                                               "min_confidence": 0.8}, self.trained_on

        return Registry(resolve=resolve, load_classifier=load_classifier, load_localiser=lambda n, v: self.locator,
                        read_test_year=lambda n, v: self.test_year)


MODEL_URI, ROI_URI = "models:/osteo-classifier@champion", "models:/osteo-roi@champion"


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_registry():
    return FakeRegistry(versions={MODEL_URI: ("osteo-classifier", "3"), ROI_URI: ("osteo-roi", "7")})


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def service(tmp_path, fake_registry, clock):
    """(TestClient, settings, audit session factory, fake registry, clock) on a SQLite database in tmp_path."""
    from fastapi.testclient import TestClient

    from osteo.settings import Settings, session_factory
    from osteo_service.app import create_app

    settings = Settings(home=tmp_path, serve_upload_limit_mb=1.0)
    audit = session_factory(settings, create=True)
    cache = ModelCache(fake_registry.registry(), MODEL_URI, ROI_URI, every_s=60, clock=clock)
    app = create_app(settings, models=cache, audit=audit)
    with TestClient(app) as client:
        yield client, settings, audit, fake_registry, clock


def png_of(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def hip_png(value: int = 200, rows: int = 120, cols: int = 100) -> bytes:
    """A one-hip picture with a bright square where the fixed locator puts its box."""
    img = np.full((rows, cols), 40, np.uint8)
    img[int(rows * 0.35):int(rows * 0.75), int(cols * 0.25):int(cols * 0.65)] = value
    return png_of(img)
