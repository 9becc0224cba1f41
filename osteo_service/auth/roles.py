"""The roles and who holds them: a Principal is whoever a request turned out to be (a signed-in person, a
token, the proxy's user), with the roles that person holds. Admin passes every role's check."""

from __future__ import annotations

from dataclasses import dataclass

from db.values import ROLES

SCREENING, REFERRALS, AUDIT, ADMIN = ROLES  # the upload page and predict API | the referral list | audit | users


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str]
    via: str  # open (mode none) | password | oidc | proxy | token

    def may(self, role: str) -> bool:
        return role in self.roles or ADMIN in self.roles

    @property
    def audit_name(self) -> str | None:
        """What prediction_audit.asked_by records: the person, token:NAME for a machine, nothing when open."""
        if self.via == "open":
            return None
        return f"token:{self.name}" if self.via == "token" else self.name

    def to_dict(self) -> dict:
        return {"name": self.name, "roles": sorted(self.roles), "via": self.via}


OPEN = Principal("", frozenset(ROLES), "open")  # OSTEO_AUTH_MODE=none: anyone who reaches the page


def roles_of_groups(groups: list[str], mapping: dict[str, str]) -> frozenset[str]:
    """The roles a proxy's or an identity provider's groups map to (unknown groups give none)."""
    return frozenset(mapping[g] for g in groups if g in mapping and mapping[g] in ROLES)


def check_mapping(mapping: dict[str, str], setting: str) -> None:
    """Refuse a group map that names no role of ours (a typo would lock everyone out, silently)."""
    from osteo.errors import UserError

    bad = sorted({r for r in mapping.values() if r not in ROLES})
    if bad:
        raise UserError("bad_setting", f"{setting} maps groups to {', '.join(bad)}: the roles are {', '.join(ROLES)}")
