"""Prefect flows: the DAG only."""
