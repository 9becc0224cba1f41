"""The models the service answers with, and their reload when a registry alias moves.

`ModelCache.current()` is called on every request; it asks the registry which version each alias
names at most once every `every_s` seconds (a minute by default), loads a new version in the
background of that one request, and swaps it in whole, so that every answer names the version
that made it. A registry that cannot be reached keeps the models already loaded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("osteo.service")


class Classifier(Protocol):
    """osteo_model.predict.Predictor or osteo_model.onnx.OnnxClassifier."""

    image_size: int
    threshold: float

    def predict(self, images, *, heatmaps: bool = True) -> list[dict]: ...


@dataclass(frozen=True)
class TestYear:
    """How the answering version did on its held-out test year (its training run's figures, at its operating
    threshold): the AUC with its 95 % interval, osteoporosis recall over the `positives`, specificity over the
    `negatives`; a figure not recorded is None."""

    __test__ = False  # not a pytest class, whatever its name

    year: int | None = None
    n: int | None = None
    auc: float | None = None
    auc_ci_low: float | None = None
    auc_ci_high: float | None = None
    recall: float | None = None
    positives: int | None = None
    specificity: float | None = None
    negatives: int | None = None


@dataclass(frozen=True)
class Served:
    """What answers a request: the classifier's version and files, the localiser when one is registered."""

    name: str
    version: str
    classifier: Classifier
    threshold: float
    runtime: str  # onnxruntime | pytorch
    crop: dict  # size, margin, min_confidence: how the export crops
    locator: Any = None  # osteo.localiser.locate.FileLocator
    localiser: str = ""  # name/version of the locator
    trained_on: str | None = None  # the classifier's tag: synthetic | real | mixed; None: it does not say
    test_year: TestYear | None = None  # None: the registry holds no test-year figures for this version

    @property
    def localiser_trained_on(self) -> str | None:
        """The localiser's `trained_on` (set by the registry when it loads it); None without one or a tag."""
        return getattr(self.locator, "trained_on", None) if self.locator is not None else None

    def synthetic_training(self, localiser: bool = True) -> bool | None:
        """Whether an answer rests on synthetic images: the classifier's, and the localiser's when it found
        the box (osteo.etl.synthetic.synthetic_training: None when one of them does not say)."""
        from osteo.etl.synthetic import synthetic_training

        used = [self.localiser_trained_on] if localiser and self.locator is not None else []
        return synthetic_training(self.trained_on, *used)

    def describe(self) -> dict[str, Any]:
        return {"model": {"name": self.name, "version": self.version, "threshold": self.threshold,
                          "runtime": self.runtime, "trained_on": self.trained_on},
                "localiser": self.localiser or None, "synthetic_training": self.synthetic_training()}


Resolve = Callable[[str], "tuple[str, str] | None"]


@dataclass
class Registry:
    """How the cache reaches the registry (osteo_mlflow.serving in the service; fakes in tests)."""

    resolve: Resolve  # uri -> (name, version) or None
    # -> (model, threshold, runtime, crop, trained_on: the version's tag or None)
    load_classifier: Callable[[str, str], tuple[Classifier, float, str, dict, str | None]]
    load_localiser: Callable[[str, str], Any]  # -> a Locator
    # (name, version) -> the version's test-year figures (TestYear's fields) or None
    read_test_year: Callable[[str, str], dict | None] = lambda name, version: None


@dataclass
class ModelCache:
    registry: Registry
    classifier_uri: str
    localiser_uri: str
    every_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _served: Served | None = None
    _checked: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _versions: tuple = ()

    def current(self) -> Served | None:
        """The models to answer with now (None: nothing registered under the alias)."""
        now = self.clock()
        if self._checked is not None and now - self._checked < self.every_s:
            return self._served
        with self._lock:
            if self._checked is not None and now - self._checked < self.every_s:  # another thread checked
                return self._served
            self._refresh()
            self._checked = now
        return self._served

    def _refresh(self) -> None:
        try:
            classifier = self.registry.resolve(self.classifier_uri)
            localiser = self.registry.resolve(self.localiser_uri) if self.localiser_uri else None
        except Exception:  # a registry outage keeps the loaded models; logged, retried next check
            log.exception("the registry could not be reached; answering with the models already loaded")
            return
        if (classifier, localiser) == self._versions:
            return
        if classifier is None:
            self._served, self._versions = None, (None, localiser)
            return
        model, threshold, runtime, crop, trained_on = self.registry.load_classifier(*classifier)
        locator = self.registry.load_localiser(*localiser) if localiser else None
        figures = self.registry.read_test_year(*classifier)
        self._served = Served(name=classifier[0], version=classifier[1], classifier=model, threshold=threshold,
                              runtime=runtime, crop=crop, locator=locator, trained_on=trained_on,
                              localiser=f"{localiser[0]}/{localiser[1]}" if localiser else "",
                              test_year=TestYear(**figures) if figures is not None else None)
        self._versions = (classifier, localiser)
        log.info("serving %s/%s (%s)%s", classifier[0], classifier[1], runtime,
                 f" with localiser {localiser[0]}/{localiser[1]}" if localiser else " without a localiser")


def mlflow_registry(settings) -> Registry:
    """The registry of these settings, read through osteo_mlflow.serving (which `osteo screen` shares)."""
    from osteo_mlflow.serving import load_classifier, load_localiser, read_test_year, registry_client, resolve_version

    client = registry_client(settings)

    def classifier(name: str, version: str):
        model, runtime, files = load_classifier(client, settings, name, version)
        return model, model.threshold, runtime, files.crop, files.trained_on

    return Registry(resolve=lambda uri: resolve_version(client, uri), load_classifier=classifier,
                    load_localiser=lambda name, version: load_localiser(client, name, version),
                    read_test_year=lambda n, v: read_test_year(client, n, v))
