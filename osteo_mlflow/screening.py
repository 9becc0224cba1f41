"""What `osteo screen` needs from the registry: which classifier version is champion now (and the champion
localiser beside it), and those versions loaded as the service loads them (osteo_mlflow.serving: ONNX Runtime
where the version has an export). A process keeps the last versions it loaded, so that every batch a worker
screens does not fetch them again."""

from __future__ import annotations

import threading

from osteo.screening.model import Champion, ScreeningModel
from osteo.settings import Settings
from osteo_mlflow.serving import load_classifier, load_localiser, registry_client, resolve_version

_loaded: dict[tuple, ScreeningModel] = {}
_lock = threading.Lock()


def champion_uri(settings: Settings) -> str:
    return f"models:/{settings.registered_model}@champion"


def find_champion(settings: Settings) -> Champion | None:
    """The champion classifier's version and the champion localiser's; None when no classifier is champion.
    A registry that cannot be reached raises (the task retries), never reads as "no champion"."""
    client = registry_client(settings)
    found = resolve_version(client, champion_uri(settings))
    if found is None:
        return None
    return Champion(*found, localiser=resolve_version(client, f"models:/{settings.roi_model}@champion"))


def screening_model(settings: Settings, champion: Champion) -> ScreeningModel:
    """The champion's versions in memory (loaded once per process and versions)."""
    key = (settings.resolved_tracking_uri(), champion)
    with _lock:
        if key not in _loaded:
            client = registry_client(settings)
            model, runtime, files = load_classifier(client, settings, champion.name, champion.version)
            locator = load_localiser(client, *champion.localiser) if champion.localiser else None
            _loaded.clear()  # one champion at a time: an older one is not screened with again
            _loaded[key] = ScreeningModel(name=champion.name, version=champion.version, classifier=model,
                                          threshold=float(model.threshold), crop=files.crop, locator=locator,
                                          runtime=runtime)
        return _loaded[key]
