"""One small full pipeline (synth -> refresh -> train) shared by the lineage and privacy tests.

Both modules need the same expensive run (minutes on CPU), so it is made once per test
session and cached here; each module re-enters `isolated_settings(home)` to look at it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

PATIENTS = 70
SEED = 11
MODEL_REF_ALIAS = "champion"

_CACHE: dict[str, Any] = {}


def demo_pipeline(tmp_path_factory) -> dict[str, Any]:
    """Run once per session: a synthetic cohort of PATIENTS, one refresh, one tiny training (1 epoch, 2 folds)."""
    if "run" in _CACHE:
        return _CACHE["run"]
    from tests.helpers import isolated_settings

    root = tmp_path_factory.mktemp("audit")
    cohort, home = root / "cohort", root / "home"
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    from osteo.synth import generate_cohort

    generate_cohort(cohort, patients=PATIENTS, seed=SEED)
    timings["synth_s"] = time.perf_counter() - t0
    with isolated_settings(home) as settings:
        from flows.refresh import refresh_flow
        from flows.train import train_flow

        t0 = time.perf_counter()
        refresh = refresh_flow(dicom_dir=str(cohort / "dicom"), dexa_dir=str(cohort / "dexa"),
                               annotations_dir=str(cohort / "annotations"))
        timings["refresh_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        # offline copies whatever the preset says: the audit follows a model to its augmented copies
        train = train_flow(preset="demo", epochs=1, folds=2, augment="offline")
        timings["train_s"] = time.perf_counter() - t0
        model_name = settings.registered_model
    _CACHE["run"] = {"cohort": cohort, "home": home, "refresh": refresh, "train": train, "timings": timings,
                     "model_name": model_name, "ref": f"{model_name}@{MODEL_REF_ALIAS}"}
    return _CACHE["run"]


def sqlite_path(home: Path) -> Path:
    return home / "var" / "osteo.sqlite"
