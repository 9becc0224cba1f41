"""What a refresh did (this run) and what the database holds (totals): typed, then JSON, text, tables.

The two halves use the same key names where they count the same thing, so that a nightly alert
on `this_run.quarantined` means "new bad input tonight", never a total.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Problem:
    """A whole file this run could not use (unreadable, unrecognised columns, unsupported type)."""

    path: str
    stage: str
    reason: str


@dataclass(frozen=True)
class StageCounts:
    """One input stage in this run (DICOM headers, DEXA rows, femoral-neck boxes)."""

    files: int = 0  # inputs looked at
    added: int = 0  # new records
    updated: int = 0  # records replaced by a newer input (a box drawn again)
    already_known: int = 0  # files seen before: a rerun adds nothing
    unchanged: int = 0  # of already_known: skipped unopened, size and mtime as at their last read
    waiting: int = 0  # files read again because what they name is not here yet (a box whose image is not)
    duplicates: int = 0  # records already held, met again in a new file (a copied DICOM, a re-exported exam)
    quarantined: int = 0  # new quarantine entries
    out_of_scope: int = 0  # files newly recorded as not hip radiographs (osteo/etl/scope.py): not errors
    retried: int = 0  # known quarantined files judged again (new column map, settings, code; --retry-quarantined)
    resolved: int = 0  # quarantine entries that a retry no longer found
    wrong_folder: int = 0  # files rejected that look like another stage's input (a DICOM in the DEXA folder)
    problems: tuple[Problem, ...] = ()  # whole files rejected in this run (the summary's first lines)

    def __add__(self, other: StageCounts) -> StageCounts:
        return StageCounts(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    @classmethod
    def from_counter(cls, c: Counter, *, added: str, updated: str = "",
                     problems: tuple[Problem, ...] = ()) -> StageCounts:
        return cls(files=c["files"], added=c[added], updated=c[updated] if updated else 0,
                   already_known=c["already_known"], unchanged=c["unchanged"], waiting=c["waiting"],
                   duplicates=c["duplicate_copies"] + c["duplicate_rows"],
                   quarantined=c["quarantined"], out_of_scope=c["out_of_scope"], retried=c["retried"],
                   resolved=c["resolved"], wrong_folder=c["wrong_folder"], problems=tuple(problems))


@dataclass(frozen=True)
class ExportCounts:
    """One export batch: PNGs written, images excluded by the quality check (by reason), quarantined."""

    exported: int = 0
    excluded: int = 0
    quarantined: int = 0
    excluded_by_reason: dict[str, int] = field(default_factory=dict)
    resolved: int = 0  # export quarantine entries of images that exported this time

    def __add__(self, other: ExportCounts) -> ExportCounts:
        reasons = Counter(self.excluded_by_reason) + Counter(other.excluded_by_reason)
        return ExportCounts(self.exported + other.exported, self.excluded + other.excluded,
                            self.quarantined + other.quarantined, dict(sorted(reasons.items())),
                            self.resolved + other.resolved)


@dataclass(frozen=True)
class LocateCounts:
    """The localiser in this run: paired image sides without a person's box, located."""

    model: str | None = None  # name/version of the localiser; None: none registered (nothing located)
    images: int = 0  # images located
    confident: int = 0  # boxes that export like a person's
    unsure: int = 0  # boxes left on the worklist as proposals
    quarantined: int = 0  # images whose pixels could not be read


@dataclass(frozen=True)
class PairCounts:
    new: int = 0
    changed: int = 0
    removed: int = 0


@dataclass(frozen=True)
class Totals:
    """What the database holds after the refresh."""

    images: int
    dexa_exams: int
    annotations: int
    pairs: int
    positives: int
    negatives: int
    exported: int
    excluded: int
    quarantined: int
    waiting: dict[str, int]
    excluded_by_reason: dict[str, int]
    quarantined_by_reason: dict[str, int]
    out_of_scope: int = 0  # files that are not hip radiographs, apart from the quarantine
    out_of_scope_by_reason: dict[str, int] = field(default_factory=dict)  # "modality CT", "body part CHEST"
    model_boxes: int = 0  # boxes proposed by the localiser (every version kept); `annotations` are people's
    exported_from_model_boxes: int = 0  # of `exported`: crops whose box the localiser drew


@dataclass(frozen=True)
class EmptyFolder:
    """A folder that held no file in this run, where an earlier refresh found some (an unmounted share?)."""

    folder: str  # dicom | dexa | annotations
    last_refresh: int  # the refresh_run id of the last refresh that found files in the same folder
    last_files: int  # the files it found there


FOLDERS = ("dicom", "dexa", "annotations")


@dataclass(frozen=True)
class ThisRun:
    """What this refresh did."""

    files_seen: int
    dicom: StageCounts
    dexa: StageCounts
    annotations: StageCounts
    pairing: PairCounts
    export: ExportCounts
    located: LocateCounts = LocateCounts()
    empty_folders: tuple[EmptyFolder, ...] = ()  # set when the run is recorded (osteo.ingest.totals)

    def files_by_folder(self) -> dict[str, int]:
        return {"dicom": self.dicom.files, "dexa": self.dexa.files, "annotations": self.annotations.files}

    def warnings(self) -> list[str]:
        """What a person must look at although the run ended well (`osteo refresh --strict` exits 1 on any)."""
        return [*(f"most files of the --{f} folder look like another input (DICOM files in the DEXA folder, CSVs "
                  "in the DICOM folder): were the folders swapped? Nothing is lost: run again with the right folders"
                  for f in self.swapped()),
                *(f"the --{e.folder} folder held no file, where refresh #{e.last_refresh} found {e.last_files}: "
                  "is the share mounted? Nothing was removed; run again when the files are there"
                  for e in self.empty_folders)]

    def swapped(self) -> list[str]:
        """The folders whose files read now mostly look like another stage's input (swapped folders?)."""
        return [name for name, s in (("dicom", self.dicom), ("dexa", self.dexa), ("annotations", self.annotations))
                if s.wrong_folder and 2 * s.wrong_folder >= s.files - s.unchanged]

    @property
    def problems(self) -> tuple[Problem, ...]:
        """Whole files this run could not use, named (not only counted) in the summary and JSON."""
        return self.dicom.problems + self.dexa.problems + self.annotations.problems

    def to_dict(self) -> dict[str, Any]:
        stages = (self.dicom, self.dexa, self.annotations)
        return {
            "problems": [asdict(p) for p in self.problems],
            "files_seen": self.files_seen,
            "already_known": sum(s.already_known for s in stages),
            "unchanged": sum(s.unchanged for s in stages),  # of already_known: not even opened
            "waiting": sum(s.waiting for s in stages),
            "duplicates": sum(s.duplicates for s in stages),
            # a re-exported DEXA file adds no exam: its rows are these (the summary says so)
            "duplicates_by_stage": {"dicom": self.dicom.duplicates, "dexa": self.dexa.duplicates,
                                    "annotations": self.annotations.duplicates},
            "files_by_folder": self.files_by_folder(),  # the next run's empty-folder check reads this
            "images": self.dicom.added,
            "dexa_exams": self.dexa.added,
            "annotations": self.annotations.added + self.annotations.updated,
            "pairs": self.pairing.new,
            "pairs_changed": self.pairing.changed,
            "pairs_removed": self.pairing.removed,
            "exported": self.export.exported,
            "excluded": self.export.excluded,
            "quarantined": sum(s.quarantined for s in stages) + self.export.quarantined + self.located.quarantined,
            "retried": sum(s.retried for s in stages),
            "resolved": sum(s.resolved for s in stages) + self.export.resolved,
            "out_of_scope": self.dicom.out_of_scope,
            "excluded_by_reason": self.export.excluded_by_reason,
            "quarantined_by_stage": {"ingest_dicom": self.dicom.quarantined, "ingest_dexa": self.dexa.quarantined,
                                     "ingest_annotation": self.annotations.quarantined,
                                     "locate": self.located.quarantined, "export": self.export.quarantined},
            "located": asdict(self.located),
            "folders_look_swapped": self.swapped(),  # e.g. ["dicom", "dexa"]: --dicom and --dexa exchanged?
            "empty_folders": [asdict(e) for e in self.empty_folders],  # an unmounted share?
            "warnings": self.warnings(),  # each in words; `osteo refresh --strict` exits 1 on any
        }

    def added_anything(self) -> bool:
        d = self.to_dict()
        return any(d[k] for k in ("images", "dexa_exams", "annotations", "pairs", "pairs_changed", "exported",
                                  "excluded", "quarantined", "out_of_scope"))


def _fmt(d: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items() if v) or "none"


def _located_line(loc: LocateCounts) -> str:
    if loc.model is None:
        return "  located       no localiser registered (osteo roi train): unboxed images wait for a person"
    return (f"  located       {loc.images} images by {loc.model}: {loc.confident} confident boxes export,"
            f" {loc.unsure} unsure ones wait on the worklist")


SHOW_PROBLEMS = 10  # files named in the summary; --json and `osteo quarantine` have them all


def _problem_lines(problems: tuple[Problem, ...]) -> list[str]:
    if not problems:
        return []
    lines = [f"PROBLEMS        {len(problems)} file(s) could not be used (`osteo quarantine` lists every entry)"]
    lines += [f"  {p.stage:<14}{p.reason}: {p.path}" for p in problems[:SHOW_PROBLEMS]]
    if len(problems) > SHOW_PROBLEMS:
        lines.append(f"  ... and {len(problems) - SHOW_PROBLEMS} more (--json lists them all)")
    return lines


def _duplicate_lines(by_stage: dict[str, int]) -> list[str]:
    """Records met again: why a re-exported DEXA file or a copied DICOM adds nothing."""
    words = {"dexa": "DEXA exams already held (the same exam in another file: a re-export?)",
             "dicom": "DICOM files already held under another path (copies)",
             "annotations": "boxes already held"}
    parts = [f"{n} {words[k]}" for k, n in by_stage.items() if n]
    return [f"  duplicates    {', '.join(parts)}"] if parts else []


def _waiting_line(waiting: dict[str, int]) -> str:
    w = {k: waiting.get(k, 0) for k in ("no_dexa", "no_annotation", "unmatched_box_files")}
    return (f"  waiting       {w['no_dexa']} images for a DEXA exam, {w['no_annotation']} image sides for a box"
            f" (osteo annotate worklist), {w['unmatched_box_files']} box files for the image they name"
            " (osteo waiting lists them)")


@dataclass(frozen=True)
class RefreshReport:
    refresh_id: int  # the refresh_run row (osteo lineage refreshes)
    this_run: ThisRun
    totals: Totals

    def to_dict(self) -> dict[str, Any]:
        return {"refresh_id": self.refresh_id, "this_run": self.this_run.to_dict(), "totals": asdict(self.totals)}

    def summary(self) -> str:
        r, t = self.this_run.to_dict(), self.totals
        return "\n".join([
            *(f"WARNING         {w}" for w in self.this_run.warnings()),
            *_problem_lines(self.this_run.problems),
            f"this run        {r['files_seen']} files seen, {r['already_known']} already known"
            f" ({r['unchanged']} unchanged, not opened), {r['waiting']} waiting for the image they name",
            f"  added         {r['images']} images, {r['dexa_exams']} DEXA exams, {r['annotations']} annotations,"
            f" {r['pairs']} pairs ({r['pairs_changed']} changed)",
            *_duplicate_lines(r["duplicates_by_stage"]),
            _located_line(self.this_run.located),
            f"  exported      {r['exported']} PNGs, {r['excluded']} excluded ({_fmt(r['excluded_by_reason'])})",
            f"  quarantined   {r['quarantined']} ({_fmt(r['quarantined_by_stage'])});"
            f" {r['retried']} files retried, {r['resolved']} entries resolved",
            f"  out of scope  {r['out_of_scope']} (not hip radiographs: recorded, never paired)",
            f"totals          {t.images} images, {t.dexa_exams} DEXA exams, {t.annotations} boxes drawn by people,"
            f" {t.model_boxes} by the localiser",
            f"  pairs         {t.pairs} ({t.positives} osteoporosis, {t.negatives} not)",
            _waiting_line(t.waiting),
            f"  exported      {t.exported} PNGs ({t.exported_from_model_boxes} from localiser boxes), {t.excluded}"
            f" excluded ({_fmt(t.excluded_by_reason)})",
            f"  quarantined   {t.quarantined} ({_fmt(t.quarantined_by_reason)})",
            f"  out of scope  {t.out_of_scope} ({_fmt(t.out_of_scope_by_reason)})",
            f"refresh run     #{self.refresh_id}",
        ])

    def table(self) -> list[dict[str, Any]]:
        """Rows for the Prefect table artifact: this run beside the totals, one key a row."""
        run, tot = self.this_run.to_dict(), asdict(self.totals)
        keys = [f.name for f in fields(Totals) if not isinstance(tot[f.name], dict)]
        rows = [{"count": k, "this_run": run.get(k, ""), "totals": tot[k]} for k in keys]
        rows += [{"count": f"quarantined: {k}", "this_run": "", "totals": v}
                 for k, v in self.totals.quarantined_by_reason.items()]
        rows += [{"count": f"out of scope: {k}", "this_run": "", "totals": v}
                 for k, v in self.totals.out_of_scope_by_reason.items()]
        return rows
