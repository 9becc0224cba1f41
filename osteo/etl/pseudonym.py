"""Keyed-hash pseudonyms: the only form in which a patient ever reaches the database."""

from __future__ import annotations

import hashlib
import hmac


def normalise_patient_id(raw: str) -> str:
    # chart numbers are exported with stray spaces, leading zeros kept, and mixed case
    return "".join(str(raw).split()).upper()


def pseudonymise(raw_patient_id: str, key: bytes) -> str:
    """HMAC-SHA256 of the normalised ID, 96 bits in hex: stable for one key, useless without it."""
    digest = hmac.new(key, normalise_patient_id(raw_patient_id).encode("utf-8"), hashlib.sha256)
    return "P" + digest.hexdigest()[:24]
