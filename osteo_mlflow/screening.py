"""What `osteo screen` needs from the registry: which classifier version is champion now (and the champion
localiser beside it), and those versions loaded as the service loads them (osteo_mlflow.serving: ONNX Runtime
where the version has an export). A process keeps the last versions it loaded, so that every batch a worker
screens does not fetch them again."""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path

import mlflow
import mlflow.artifacts
import numpy as np
from mlflow.exceptions import MlflowException

from osteo.screening.model import Champion, ScreeningModel
from osteo.settings import Settings
from osteo_mlflow.registry import VALIDATION_FILE
from osteo_mlflow.serving import load_classifier, load_localiser, registry_client, resolve_version

_loaded: dict[tuple, ScreeningModel] = {}
_lock = threading.Lock()


def find_champion(settings: Settings) -> Champion | None:
    """The classifier version OSTEO_SCREEN_MODEL names (the champion) and the champion localiser's; None when
    no classifier is champion.
    A registry that cannot be reached raises (the task retries), never reads as "no champion"."""
    client = registry_client(settings)
    found = resolve_version(client, settings.screen_model)
    if found is None:
        return None
    return Champion(*found, localiser=resolve_version(client, f"models:/{settings.roi_model}@champion"))


def screening_model(settings: Settings, champion: Champion) -> ScreeningModel:
    """The champion's versions in memory (loaded once per process and versions)."""
    key = (settings.resolved_tracking_uri(), champion)
    with _lock:
        if key not in _loaded:
            client = registry_client(settings)
            # no spinning: the screening's reader thread works beside every run (osteo.screening.score)
            model, runtime, files = load_classifier(client, settings, champion.name, champion.version, spin=False)
            locator = load_localiser(client, *champion.localiser) if champion.localiser else None
            _loaded.clear()  # one champion at a time: an older one is not screened with again
            _loaded[key] = ScreeningModel(name=champion.name, version=champion.version, classifier=model,
                                          threshold=float(model.threshold), crop=files.crop, locator=locator,
                                          runtime=runtime)
        return _loaded[key]


def version_registered(settings: Settings, name: str, version: str) -> bool:
    return resolve_version(registry_client(settings), f"models:/{name}/{version}") is not None


def reference_probabilities(settings: Settings, name: str, version: str) -> tuple[np.ndarray | None, str | None]:
    """The distribution a version's screening probabilities are compared with: its best fold's validation
    probabilities (logged at registration), else, for a version registered before they were kept, its test-year
    predictions; (None, None) when the run holds neither."""
    client = registry_client(settings)
    run_id = client.get_model_version(name, version).run_id
    with tempfile.TemporaryDirectory(prefix="osteo-outcomes-") as tmp:
        for artifact, source in ((VALIDATION_FILE, "validation"), ("test/test_predictions.csv", "test year")):
            try:
                path = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=tmp))
            except (MlflowException, OSError):
                continue
            if path.suffix == ".json":
                values = np.asarray(json.loads(path.read_text())["probabilities"], dtype=float)
            else:
                import pandas as pd

                values = pd.read_csv(path)["probability"].to_numpy(dtype=float)
            if len(values):
                return values, source
    return None, None


def log_outcomes(settings: Settings, name: str, version: str, figures: dict[str, float]) -> None:
    """The outcome figures as tags of the model version (screening_<figure>), where the registry shows them."""
    client = registry_client(settings)
    for key, value in figures.items():
        client.set_model_version_tag(name, version, f"screening_{key}", f"{value:.6g}")
