"""Closed values: the sets a status or source column may hold, checked by the database (CHECK constraints,
migrations 0003, 0004). A new value needs a revision that widens its check; an outside value is refused by the
database, not stored."""

from __future__ import annotations

from sqlalchemy import CheckConstraint

SOURCE_STATUSES = ("ingested", "quarantined", "out_of_scope", "waiting", "superseded")  # source_file.status
QUARANTINE_STAGES = ("ingest_dicom", "ingest_dexa", "ingest_annotation", "locate", "export")  # quarantine.stage
EXPORT_STATUSES = ("exported", "excluded")  # export.status
BOX_SOURCES = ("human", "model")  # annotation.source: a person's box or the localiser's
AUDIT_BOX_SOURCES = ("user", "model", "image")  # prediction_audit.box_source: drawn, located, a crop used whole
# the service's roles (issue 26, migration 0004): account.role, api_token.role; admin passes every role's check
ROLES = ("screening", "referrals", "audit", "admin")
SESSION_KINDS = ("password", "oidc")  # auth_session.kind: how the person signed in
# `osteo screen` (issue 27, migration 0006): screening_result.status; screening_push.kind, .transport, .status
SCREENING_STATUSES = ("screened", "not_located", "excluded: metal", "excluded: blur", "excluded: unreadable")
PUSH_KINDS = ("SR", "SC")  # the structured report, the secondary capture of the box and heat map
PUSH_TRANSPORTS = ("stow-rs", "c-store")
PUSH_STATUSES = ("pushed", "failed")
# the PACS pull and receiver (issue 27, migration 0005): pacs_instance.transport
PACS_TRANSPORTS = ("dicomweb", "dimse", "c-store")


def one_of(table: str, column: str, values: tuple[str, ...]) -> CheckConstraint:
    """`column IN (...)`, named ck_<table>_<column> so that a migration can drop or widen it by name."""
    return CheckConstraint(f"{column} IN ({', '.join(repr(v) for v in values)})", name=f"ck_{table}_{column}")
