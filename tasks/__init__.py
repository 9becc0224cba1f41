"""Prefect tasks: thin wrappers over plain functions; policy (retries, tags) in the decorators."""
