"""osteo: the plain pipeline package (settings, ETL, synthetic cohort, snapshot, lineage, training work).

No Prefect and no MLflow here: flows/ and tasks/ orchestrate it, osteo_mlflow/ tracks it, and
osteo_cli/ is the command line. The layers are in docs/design.md.
"""

__version__ = "0.1.0"
