"""Bad input is an expected outcome, not a crash: it carries a plain reason for the quarantine."""

from __future__ import annotations


class InputError(Exception):
    """Input that must be quarantined: `reason` is a short code, `detail` says it in words."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
