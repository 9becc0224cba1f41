"""A small synthetic hospital in a PACS, for the pull and receive tests: the cohort's valid files (truth.csv:
hip and pelvis radiographs, and the chest CR, knee DX, hip CT, hip MR and the radiograph of no known body part
that prove the scope filter) loaded into Orthanc, and what a pull should fetch from it."""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

PATIENTS, SEED = 8, 3


@dataclass(frozen=True)
class PacsCohort:
    root: Path
    rows: list[dict]  # truth.csv

    def files(self) -> list[Path]:
        return [self.root / r["file"] for r in self.rows]

    def in_scope(self, since: dt.date | None = None, until: dt.date | None = None) -> set[str]:
        """The SOP Instance UIDs a pull of these dates should retrieve."""
        return {r["sop_instance_uid"] for r in self.rows if r["expected_scope"] == "in_scope"
                and (since is None or since <= _day(r)) and (until is None or _day(r) <= until)}

    def radiographs_out_of_scope(self) -> list[dict]:
        """The CR and DX files a pull finds and leaves (chest, knee, no known body part)."""
        return [r for r in self.rows if r["modality"] in ("CR", "DX") and r["expected_scope"] != "in_scope"]

    def dates(self) -> list[dt.date]:
        return sorted(_day(r) for r in self.rows if r["expected_scope"] == "in_scope")


def _day(row: dict) -> dt.date:
    return dt.date.fromisoformat(row["study_date"])


def make_pacs_cohort(root: Path) -> PacsCohort:
    from osteo.synth import generate_cohort

    generate_cohort(root, patients=PATIENTS, seed=SEED, workers=2)
    with (root / "truth.csv").open(newline="") as fh:
        return PacsCohort(root, list(csv.DictReader(fh)))
