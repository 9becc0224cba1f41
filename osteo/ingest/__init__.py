"""The refresh's stages as plain functions (no Prefect, no MLflow; flows/refresh.py is the DAG, tasks/refresh.py
wraps each step): the lock and the sweep of half-written files, the walk of the folders (discovery), the
ingest, pairing and export (refresh), the boxes at ingest (boxes), the quarantine and what waits, and the
report of what a refresh did (report) and what the database holds (totals). Layers: docs/design.md."""
