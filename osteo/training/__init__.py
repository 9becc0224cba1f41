"""The classifier's training as plain functions (the network is osteo_model/, MLflow osteo_mlflow/): the snapshot,
the folds (folds) and what they produce (results), the test-year evaluation (evaluation) and its subgroups and
calibration (evaluation_report), the optional heads (heads, clinical), the architecture comparison (compare),
and whether the nightly run trains (decision)."""
