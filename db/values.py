"""Closed values: the sets a status or source column may hold, as `StrEnum`s the code writes and compares with,
checked by the database (CHECK constraints, migrations 0003, 0004, 0005, 0006). A member is its stored string
(`SourceStatus.INGESTED == "ingested"`), so rows read back compare equal to members. A new value needs a revision
that widens its check; an outside value is refused by the database, not stored."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import CheckConstraint


class SourceStatus(StrEnum):
    """source_file.status"""

    INGESTED = "ingested"
    QUARANTINED = "quarantined"
    OUT_OF_SCOPE = "out_of_scope"  # not a hip radiograph (out_of_scope row), or a box file drawn on one
    WAITING = "waiting"  # a box file whose image is not known yet
    SUPERSEDED = "superseded"  # a waiting box file replaced by a newer content of its path


class QuarantineStage(StrEnum):
    """quarantine.stage: every stage that quarantines"""

    INGEST_DICOM = "ingest_dicom"
    INGEST_DEXA = "ingest_dexa"
    INGEST_ANNOTATION = "ingest_annotation"
    LOCATE = "locate"
    EXPORT = "export"


class ExportStatus(StrEnum):
    """export.status"""

    EXPORTED = "exported"
    EXCLUDED = "excluded"  # the quality check: metal or blur


class BoxSource(StrEnum):
    """annotation.source, screening_result.box_source_l/_r: a person's box or the localiser's"""

    HUMAN = "human"
    MODEL = "model"


class AuditBoxSource(StrEnum):
    """prediction_audit.box_source: drawn, located, a crop used whole"""

    USER = "user"
    MODEL = "model"
    IMAGE = "image"


class Role(StrEnum):
    """account.role, api_token.role (issue 26, migration 0004); admin passes every role's check"""

    SCREENING = "screening"
    REFERRALS = "referrals"
    AUDIT = "audit"
    ADMIN = "admin"


class SessionKind(StrEnum):
    """auth_session.kind: how the person signed in"""

    PASSWORD = "password"
    OIDC = "oidc"


class ScreeningStatus(StrEnum):
    """screening_result.status (`osteo screen`, issue 27, migration 0006)"""

    SCREENED = "screened"
    NOT_LOCATED = "not_located"
    EXCLUDED_METAL = "excluded: metal"
    EXCLUDED_BLUR = "excluded: blur"
    EXCLUDED_UNREADABLE = "excluded: unreadable"


class PushKind(StrEnum):
    """screening_push.kind: the structured report, the secondary capture of the box and heat map"""

    SR = "SR"
    SC = "SC"


class PushTransport(StrEnum):
    """screening_push.transport"""

    STOW_RS = "stow-rs"
    C_STORE = "c-store"


class PushStatus(StrEnum):
    """screening_push.status"""

    PUSHED = "pushed"
    FAILED = "failed"


class PacsTransport(StrEnum):
    """pacs_instance.transport: how `osteo pacs pull` or `osteo pacs receive` got an instance (migration 0005)"""

    DICOMWEB = "dicomweb"
    DIMSE = "dimse"
    C_STORE = "c-store"


def values_of(closed: type[StrEnum]) -> tuple[str, ...]:
    """The stored strings of a closed set, in its order."""
    return tuple(member.value for member in closed)


SOURCE_STATUSES = values_of(SourceStatus)
QUARANTINE_STAGES = values_of(QuarantineStage)
BOX_SOURCES = values_of(BoxSource)
AUDIT_BOX_SOURCES = values_of(AuditBoxSource)
ROLES = values_of(Role)
SESSION_KINDS = values_of(SessionKind)
SCREENING_STATUSES = values_of(ScreeningStatus)
PUSH_STATUSES = values_of(PushStatus)
# every closed column: (table, column) -> its set (the test compares each with the migrated database's CHECK)
CLOSED_COLUMNS: dict[tuple[str, str], type[StrEnum]] = {
    ("source_file", "status"): SourceStatus,
    ("quarantine", "stage"): QuarantineStage,
    ("export", "status"): ExportStatus,
    ("annotation", "source"): BoxSource,
    ("prediction_audit", "box_source"): AuditBoxSource,
    ("account", "role"): Role,
    ("api_token", "role"): Role,
    ("auth_session", "kind"): SessionKind,
    ("screening_result", "status"): ScreeningStatus,
    ("screening_result", "box_source_l"): BoxSource,
    ("screening_result", "box_source_r"): BoxSource,
    ("screening_push", "kind"): PushKind,
    ("screening_push", "transport"): PushTransport,
    ("screening_push", "status"): PushStatus,
    ("pacs_instance", "transport"): PacsTransport,
}


def one_of(table: str, column: str, closed: type[StrEnum]) -> CheckConstraint:
    """`column IN (...)` of the set's values, named ck_<table>_<column> so that a migration can drop or widen it by
    name."""
    return CheckConstraint(f"{column} IN ({', '.join(repr(v) for v in values_of(closed))})",
                           name=f"ck_{table}_{column}")
