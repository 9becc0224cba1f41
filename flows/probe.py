"""A flow that does nothing: what Prefect itself costs (its server start, one flow run), for the bench."""

from __future__ import annotations

from prefect import flow


@flow(name="osteo-noop")
def noop_flow() -> int:
    return 1
