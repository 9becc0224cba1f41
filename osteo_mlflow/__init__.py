"""The MLflow edge: every call to MLflow (tracking, the pyfunc, the champion gate, registry look-ups).

Functions take the client and paths as arguments; nothing here imports Prefect.
"""
