"""Scope: is a file a hip radiograph? Decided at ingest, from the headers (docs/design.md, "Scope").

A hip image is a radiograph (a modality of `modalities`, CR or DX) of the hip, pelvis or femur:
BodyPartExamined decides when it is there (codes of `body_parts`, local codes allowed); without
it, a keyword of `keywords` in the SeriesDescription or StudyDescription does (case-insensitive,
anywhere in the text: "LT HIP AP", "BILATERAL HIPS", "右髖關節"). Anything else is out of scope,
with a plain reason ("modality CT", "body part CHEST"): recorded, never paired, not an error.
A radiograph whose body part cannot be told is bad input (`unknown_body_part`) for a person to
review, unless `accept_unknown_body_part` says to take it.

Descriptions are free text: they are only matched against the keywords here, never returned,
stored or logged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from osteo.etl.errors import InputError

MODALITIES = ("CR", "DX")
BODY_PARTS = ("HIP", "PELVIS", "FEMUR")  # DICOM CID 4031 codes
KEYWORDS = ("hip", "pelvis", "pelvic", "femur", "femoral", "髖", "髋", "骨盆", "股骨")
MODALITY_CHARS = 16
BODY_PART_CHARS = 64


def code(value: object, limit: int) -> str:
    """A coded header value as compared and recorded: stripped, upper case, at most `limit` characters."""
    return str(value or "").strip().upper()[:limit]


@dataclass(frozen=True)
class ScopeRules:
    """What counts as a hip radiograph (settings: OSTEO_SCOPE_*). Plain tuples: it pickles to workers."""

    modalities: tuple[str, ...] = MODALITIES
    body_parts: tuple[str, ...] = BODY_PARTS
    keywords: tuple[str, ...] = KEYWORDS
    accept_unknown_body_part: bool = False

    def __post_init__(self) -> None:  # normalised once, so that the decision only compares
        for name in ("modalities", "body_parts", "keywords"):
            if isinstance(getattr(self, name), str):  # a bare string would be taken letter by letter
                raise TypeError(f"ScopeRules.{name} takes a sequence of strings, not one string")
        object.__setattr__(self, "modalities", _codes(self.modalities, MODALITY_CHARS))
        object.__setattr__(self, "body_parts", _codes(self.body_parts, BODY_PART_CHARS))
        object.__setattr__(self, "keywords", tuple(k.strip().casefold() for k in self.keywords if k.strip()))


def _codes(values: Iterable[str], limit: int) -> tuple[str, ...]:
    return tuple(c for c in (code(v, limit) for v in values) if c)


def decide_scope(modality: object, body_part: object, descriptions: Iterable[object], rules: ScopeRules) -> str | None:
    """None when the file is a hip radiograph, else the reason it is out of scope.

    Raises InputError("unknown_body_part") for a radiograph with no BodyPartExamined and no
    keyword in its descriptions (unless the rules accept it). The detail never quotes a description.
    """
    mod = code(modality, MODALITY_CHARS)
    if mod not in rules.modalities:
        return f"modality {mod or 'absent'}"
    part = code(body_part, BODY_PART_CHARS)
    if part:
        return None if part in rules.body_parts else f"body part {part}"
    texts = [str(d).casefold() for d in descriptions if d]
    if any(k in t for t in texts for k in rules.keywords):
        return None
    if rules.accept_unknown_body_part:
        return None
    raise InputError("unknown_body_part", "no BodyPartExamined, and no scope keyword in SeriesDescription or "
                     "StudyDescription: a person should say whether this radiograph shows a hip "
                     "(or set OSTEO_SCOPE_ACCEPT_UNKNOWN_BODY_PART)")
