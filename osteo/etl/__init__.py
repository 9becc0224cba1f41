"""Plain ETL functions (no Prefect, no MLflow): the refresh tasks wrap these."""
