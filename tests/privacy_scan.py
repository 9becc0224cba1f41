"""What identifies the synthetic cohort's patients, and where in a set of outputs any of it turns up.

Identifiers are read from the cohort itself (never from the pipeline): PatientName,
PatientID, PatientBirthDate and AccessionNumber from every DICOM header (pydicom),
truth.csv's patient_id, and the names in the DEXA CSVs (romanised and Chinese, as UTF-8
and Big5 bytes).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

NAME_COLUMNS = {"name", "姓名", "patientname"}
ID_COLUMNS = {"patientid", "病歷號", "chartno"}


def _norm(col: str) -> str:
    return re.sub(r"[\s_\-]", "", col).lower().lstrip("\ufeff")


@dataclass
class Identifiers:
    names: set[str] = field(default_factory=set)
    ids: set[str] = field(default_factory=set)
    birth_dates: set[str] = field(default_factory=set)  # YYYYMMDD
    accessions: set[str] = field(default_factory=set)

    def needles(self) -> Needles:
        """Every byte form in which an identifier could be written (lower-cased; see Needles)."""
        found: dict[bytes, tuple[str, str]] = {}

        def add(kind: str, value: str, *encodings: str) -> None:
            for enc in encodings:
                try:
                    raw = value.lower().encode(enc)
                except UnicodeEncodeError:
                    continue
                if len(raw) >= 4:
                    found.setdefault(raw, (kind, value))

        for n in self.names:
            for variant in {n, n.replace("^", " "), n.replace("^", ", ")}:
                add("name", variant, "utf-8", "big5", "utf-16-le")
        for i in self.ids:
            add("patient_id", i, "utf-8", "utf-16-le")
        for b in self.birth_dates:
            for variant in {b, f"{b[:4]}-{b[4:6]}-{b[6:]}", f"{b[:4]}/{b[4:6]}/{b[6:]}"}:
                add("birth_date", variant, "utf-8")
        for a in self.accessions:
            add("accession", a, "utf-8", "utf-16-le")
        return Needles(found)


class Needles:
    """Many-needle search over large binary files, case-insensitive, via 3-byte prefixes in numpy.

    Values that start or end with a digit must stand alone (no digit or '.' before, no digit
    after), so a birth date does not "match" inside a long float in a metrics file.
    """

    def __init__(self, needles: dict[bytes, tuple[str, str]]):
        import numpy as np

        self.needles = needles
        self.by_prefix: dict[int, list[bytes]] = {}
        for n in needles:
            self.by_prefix.setdefault(int.from_bytes(n[:3], "little"), []).append(n)
        self.table = np.zeros(1 << 24, dtype=bool)  # 3-byte prefixes that start some needle
        self.table[list(self.by_prefix)] = True

    def __len__(self) -> int:
        return len(self.needles)

    @staticmethod
    def _standalone(low: bytes, pos: int, needle: bytes) -> bool:
        end = pos + len(needle)
        if needle[:1].isdigit() and pos > 0 and (low[pos - 1 : pos].isdigit() or low[pos - 1 : pos] == b"."):
            return False
        if needle[-1:].isdigit() and low[end : end + 1].isdigit():
            return False
        return True

    def search(self, data: bytes) -> list[tuple[str, str]]:
        import numpy as np

        low = data.lower()
        hits: set[bytes] = set()
        if len(low) < 1024:
            for n in self.needles:
                pos = low.find(n)
                while pos >= 0:
                    if self._standalone(low, pos, n):
                        hits.add(n)
                        break
                    pos = low.find(n, pos + 1)
        else:
            for off in range(4):  # little-endian words at every offset; their low 3 bytes are the prefix
                words = np.frombuffer(low, dtype="<u4", count=(len(low) - off) // 4, offset=off) & 0xFFFFFF
                for i in np.flatnonzero(self.table[words]).tolist():
                    pos = off + 4 * i
                    for n in self.by_prefix[int(words[i])]:
                        if low.startswith(n, pos) and self._standalone(low, pos, n):
                            hits.add(n)
        return sorted(self.needles[n] for n in hits)


def cohort_identifiers(cohort: Path) -> Identifiers:
    import pydicom

    ids = Identifiers()
    for path in sorted((cohort / "dicom").rglob("*")):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:  # noqa: BLE001 - the cohort's junk files
            continue
        name = str(ds.get("PatientName") or "").strip()
        if len(name) >= 4:
            ids.names.add(name)
        for tag, bucket in (("PatientID", ids.ids), ("AccessionNumber", ids.accessions)):
            value = str(ds.get(tag) or "").strip()
            if len(value) >= 4:
                bucket.add(value)
        birth = str(ds.get("PatientBirthDate") or "").strip()
        if re.fullmatch(r"\d{8}", birth):
            ids.birth_dates.add(birth)
    with open(cohort / "truth.csv", newline="", encoding="utf-8") as f:
        ids.ids.update(r["patient_id"].strip() for r in csv.DictReader(f) if r["patient_id"].strip())
    for path in sorted((cohort / "dexa").glob("*.csv")):
        data = path.read_bytes()
        for enc in ("utf-8-sig", "big5"):
            try:
                rows = list(csv.reader(io.StringIO(data.decode(enc))))
                break
            except UnicodeDecodeError:
                continue
        else:
            continue
        if not rows:
            continue
        header = [_norm(c) for c in rows[0]]
        for r in rows[1:]:
            for col, value in zip(header, r):
                value = value.strip()
                if col in NAME_COLUMNS and len(value) >= 2:
                    ids.names.add(value)
                elif col in ID_COLUMNS and len(value) >= 4:
                    ids.ids.add("".join(value.split()).upper())
    return ids


def scan_tree(root: Path, needles: Needles, skip: tuple[Path, ...] = ()) -> dict[str, list[tuple[str, str]]]:
    """Every file under root -> the identifiers found in its bytes (only files with findings).

    A file whose content was already scanned (the same checkpoint logged twice) is not scanned again.
    """
    import hashlib

    found: dict[str, list[tuple[str, str]]] = {}
    by_digest: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(path.is_relative_to(s) for s in skip):
            continue
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest not in by_digest:
            by_digest[digest] = needles.search(data)
        if by_digest[digest]:
            found[str(path)] = by_digest[digest]
    return found
