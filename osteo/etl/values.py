"""Checks of coded DICOM values (one place, used by every reader)."""

from __future__ import annotations


def is_uid(text: str) -> bool:
    """A DICOM UID: digits and dots, at most 64 characters, not starting with a dot."""
    return 0 < len(text) <= 64 and all(c.isdigit() or c == "." for c in text) and not text.startswith(".")
