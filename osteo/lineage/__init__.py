"""Lineage for auditors: any registered model back to its source files, any patient or image forward.

Plain functions over a session that the caller passes in; nothing here talks to MLflow (the
registry's view of a model version comes from osteo_mlflow.registry.resolve_model_version, and
verify fetches the registered checkpoint through a function the caller hands in). The chain
(see db/models.py):

    source file -> DICOM image / DEXA row / annotation -> pair -> export PNG -> augmented copy
    -> snapshot member -> snapshot -> training run (one row per registered model version)

A box comes from a person (its VOC file is a source file) or from the localiser (no file: the box
names the localiser's name, version and confidence); every lineage says which box each crop used.

records: errors, model references, rows as dicts; queries: model, snapshot, patient, image and
refresh lineage; predictions: the service's audit rows; versions: the version of a file a model read;
verify: re-hash what a lineage names; openlineage: the optional run event.
"""

from osteo.lineage.openlineage import OPENLINEAGE_NAMESPACE, emit_openlineage, openlineage_event
from osteo.lineage.predictions import predictions
from osteo.lineage.queries import (
    CSV_COLUMNS,
    image_lineage,
    lineage_csv,
    model_lineage,
    patient_lineage,
    refresh_runs,
    snapshot_lineage,
    training_run_for,
)
from osteo.lineage.records import (
    LineageError,
    UnknownImage,
    UnknownModel,
    UnknownPatient,
    UnknownSnapshot,
    parse_model_ref,
    pseudonym_of,
)
from osteo.lineage.verify import check_checkpoint, named_files, verify_lineage

__all__ = [
    "CSV_COLUMNS", "OPENLINEAGE_NAMESPACE", "LineageError", "UnknownImage", "UnknownModel", "UnknownPatient",
    "UnknownSnapshot", "check_checkpoint", "emit_openlineage", "image_lineage", "lineage_csv", "model_lineage",
    "named_files", "openlineage_event", "parse_model_ref", "patient_lineage", "predictions", "pseudonym_of",
    "refresh_runs", "snapshot_lineage", "training_run_for", "verify_lineage",
]
