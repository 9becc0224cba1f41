"""The PACS pull as a flow (a deployment of its own, or the nightly's first step): hip and pelvis radiographs of
the last days into the inbox the refresh reads. No PACS configured: nothing happens (None)."""

from __future__ import annotations

from prefect import flow, get_run_logger

from osteo.pacs.target import PacsUnavailable
from tasks.pacs import pull_from_pacs


@flow(name="pacs-pull")
def pacs_pull_flow(into: str | None = None, since: str | None = None, until: str | None = None) -> dict | None:
    counts = pull_from_pacs(into, since, until)
    return counts.to_dict() if counts else None


def pull_before_refresh(into: str) -> dict | None:
    """The nightly's pull: a PACS still down after the task's retries is a warning, and the night goes on (the
    refresh reads what the inbox holds; the next night fetches what this one missed). Any other fault fails."""
    state = pull_from_pacs(into, return_state=True)
    try:
        counts = state.result()
    except PacsUnavailable as exc:
        get_run_logger().warning("PACS pull: %s; the refresh goes on without it", exc)
        return {"error": str(exc)}
    return counts.to_dict() if counts else None
