"""A series as a query found it, and whether it is in scope: the refresh's own rule (osteo/etl/scope.py) on the
series' attributes, so the pull fetches what the refresh would take and nothing else."""

from __future__ import annotations

from dataclasses import dataclass

from osteo.etl.errors import InputError
from osteo.etl.scope import ScopeRules, decide_scope


@dataclass(frozen=True)
class SeriesFound:
    study_uid: str
    series_uid: str
    modality: str
    body_part: str
    instances: int | None  # NumberOfSeriesRelatedInstances, when the PACS gives it
    # free text, only matched against the scope keywords here: never stored, logged or returned
    descriptions: tuple[str, ...] = ()
    sop_uids: tuple[str, ...] | None = None  # its instances, when the query listed them (None: ask)


def out_of_scope_reason(series: SeriesFound, rules: ScopeRules) -> str | None:
    """None for a series the refresh would take; else why not (`modality CT`, `body part CHEST`, or
    `unknown body part`: a radiograph with neither body part nor keyword, which the pull leaves on the PACS
    unless OSTEO_SCOPE_ACCEPT_UNKNOWN_BODY_PART)."""
    try:
        return decide_scope(series.modality, series.body_part, series.descriptions, rules)
    except InputError:
        return "unknown body part"
