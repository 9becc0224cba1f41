"""The refresh's work as plain functions (sessions and settings passed in); tasks/ wraps them.
Which files are read (the walk, the unchanged ones) is osteo/ingest/discovery.py."""

from __future__ import annotations

import errno
import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Annotation, DexaExam, DicomImage, Export, RefreshRun, SourceFile
from db.pairing import sync_pairs
from db.quarantine import active_contexts, judge_again, resolve, settle, tidy
from db.store import quarantine, source_files, store_dexa_rows, store_dicom_results
from db.values import QuarantineStage, SourceStatus
from osteo.errors import UserError
from osteo.etl import dicom_headers
from osteo.etl.dexa import parse_dexa_file
from osteo.etl.errors import InputError
from osteo.etl.imaging import ALGORITHM_VERSION, ExportJob, ExportResult
from osteo.etl.pool import shared_pool
from osteo.etl.scope import ScopeRules
from osteo.ingest.boxes import HUMAN, judge_box_file, winning_boxes
from osteo.ingest.discovery import batches, check_folder, discover, file_bytes, unchanged_files, walk  # noqa: F401 - the refresh's names
from osteo.ingest.lock import failure_reason
from osteo.ingest.quarantine import judging_context
from osteo.ingest.report import ExportCounts, PairCounts, RefreshReport, StageCounts, ThisRun
from osteo.ingest.stage import Stage, ingest_files, resolve_gone, skip_counts, skipped
from osteo.ingest.totals import empty_folders, quarantine_table, summarise  # noqa: F401 - the refresh's names
from osteo.settings import ROI_MIN_CONFIDENCE, Settings
from osteo.version import code_version, utcnow
from osteo_common.files import fsync_dirs

OTHER_INPUTS = (".csv", ".tsv", ".txt", ".xls", ".xlsx", ".xml")  # a DEXA export or a box file, not a DICOM
DICOM, DEXA, BOXES = QuarantineStage.INGEST_DICOM, QuarantineStage.INGEST_DEXA, QuarantineStage.INGEST_ANNOTATION


def ingest_dicom(factory: sessionmaker[Session], paths: list[str], key: bytes, *, workers: int = 1,
                 scope: ScopeRules = dicom_headers.DEFAULT_SCOPE, retry_quarantined: bool = False,
                 rehash: bool = False, io_threads: int = 0) -> StageCounts:
    """Header ingest of one batch: parse in worker processes, write in one transaction. Files that
    are not hip radiographs (`scope`, the settings' Settings.scope_rules()) are recorded out of scope.
    A file whose size and mtime match its last row is not opened (`rehash`: every file is read).
    A quarantined file is judged again under other scope rules or code, or when `retry_quarantined`.
    `io_threads`: the threads that stat the batch (discovery.io_threads; 0: chosen by the file system).
    The skeleton is osteo/ingest/stage.py's; the files of a batch are read and judged together (db/store.py)."""
    stage = Stage(DICOM, "dicom", judging_context(DICOM, config={"scope": asdict(scope)}))
    with factory() as session, session.begin():
        skip = skipped(session, paths, stage, retry_quarantined=retry_quarantined, rehash=rehash, threads=io_threads)
        unread = [p for p in paths if p not in skip]
        if not unread:  # an unchanged batch (one transaction): a file deleted beside it resolves its entries
            gone = resolve_gone(session, stage, paths, skip)
            return StageCounts(files=len(skip), already_known=len(skip), unchanged=len(skip), resolved=gone)
    results = dicom_headers.read_headers(unread, key, workers=workers, scope=scope)
    files = [(r.path, r.sha256) for r in results]
    with factory() as session, session.begin():
        known = source_files(session, files)
        active = active_contexts(session, DICOM, [sha for _, sha in known])
        retry = {k for k, row in known.items() if judge_again(active.get(k[1]), stage.context, kind="dicom",
                                                              row_kind=row.kind, row_status=row.status,
                                                              always=retry_quarantined)}
        counts = store_dicom_results(session, results, retry)
        # only what was judged now settles: a known file skipped keeps its entries as they are
        judged = [sha for path, sha in files if (path, sha) not in known or (path, sha) in retry]
        counts["resolved"] += settle(session, stage=DICOM, sha256s=judged, context=stage.context)
        ours = [k for k, row in source_files(session, files).items() if row.kind == "dicom"]
        counts["resolved"] += tidy(session, stage=DICOM, read=[k for k in files if k[1]], ours=ours)
        counts["resolved"] += resolve_gone(session, stage, paths, skip)
        counts["wrong_folder"] += sum(r.error is not None and r.error[0] == "not_dicom"
                                      and Path(r.path).suffix.lower() in OTHER_INPUTS for r in results)
        counts.update(skip_counts(skip))
        return StageCounts.from_counter(counts, added="images")


def ingest_dexa(factory: sessionmaker[Session], paths: list[str], key: bytes, settings: Settings,
                mapping: dict[str, str] | None = None, *, retry_quarantined: bool = False,
                rehash: bool = False) -> StageCounts:
    """Every file of the DEXA folder, one transaction each; a file unchanged by size and mtime is not
    opened (as ingest_dicom; `rehash`: all are read). A known file is judged again when it has
    active quarantine entries judged under another context (column map, settings, code version) or
    when `retry_quarantined`; its entries that no longer apply are resolved (kept for the auditors)."""
    stage = Stage(DEXA, "dexa", judging_context(DEXA, settings, mapping))
    take_in = partial(_take_in_dexa, key=key, settings=settings, mapping=mapping)
    counts, problems = ingest_files(factory, paths, stage, take_in, retry_quarantined=retry_quarantined,
                                    rehash=rehash, looks_foreign=_looks_like_dicom)
    return StageCounts.from_counter(counts, added="exams", problems=tuple(problems))


def _take_in_dexa(session: Session, sf: SourceFile, new: bool, data: bytes, *, key: bytes, settings: Settings,
                  mapping: dict[str, str] | None) -> Counter:
    """One DEXA export's rows stored (a row already stored from this file is not stored twice)."""
    parsed = parse_dexa_file(sf.path, data, key, bmd_young_mean=settings.bmd_young_mean,
                             bmd_young_sd=settings.bmd_young_sd, mapping=mapping)
    sf.kind, sf.status = "dexa", SourceStatus.INGESTED
    done = set() if new else set(session.scalars(select(DexaExam.source_row).where(DexaExam.source_file_id == sf.id)))
    return store_dexa_rows(session, sf, [r for r in parsed.rows if r.source_row not in done],
                           [e for e in parsed.errors if e[0] not in done])


def _looks_like_dicom(data: bytes) -> bool:
    return data[128:132] == b"DICM"  # a DICOM in the DEXA folder: swapped folders


def ingest_annotations(factory: sessionmaker[Session], paths: list[str], *,
                       retry_quarantined: bool = False, mapping: Mapping[str, str] | None = None,
                       rehash: bool = False) -> StageCounts:
    """A box file unchanged by size and mtime is not opened (`rehash`: all are read). A quarantined box
    file is judged again under new code or when `retry_quarantined` (see ingest_dexa).
    A file whose image is not known yet waits and is read again by every refresh (osteo/ingest/boxes.py);
    `mapping` (an annotation map) names the images of files named otherwise. One transaction for the folder."""
    # a new map: judged again; a file waiting for its image is read again whatever its stamp
    stage = Stage(BOXES, "annotation", judging_context(BOXES, mapping=dict(mapping) if mapping else None), waits=True)
    counts, _problems = ingest_files(factory, paths, stage, partial(_take_in_boxes, mapping=mapping),
                                     retry_quarantined=retry_quarantined, rehash=rehash, one_transaction=True)
    return StageCounts.from_counter(counts, added="annotations", updated="annotations_updated")


def _take_in_boxes(session: Session, sf: SourceFile, new: bool, data: bytes, *,
                   mapping: Mapping[str, str] | None) -> Counter:
    counts = judge_box_file(session, sf, new, data, mapping)  # stored, or left waiting for its image
    sf.kind = "annotation"
    return counts


# --- export -----------------------------------------------------------------------------

def export_recipe(image: DicomImage, ann: Annotation, settings: Settings) -> tuple[dict, str]:
    """Everything that decides an export before any pixel is read, and its digest."""
    recipe = {
        "version": ALGORITHM_VERSION,  # bumped when exported pixels change: every image exports again
        "box": [ann.box_xmin, ann.box_ymin, ann.box_xmax, ann.box_ymax],
        "laterality": ann.side,  # the femur of the crop (R: flipped); a person's box on a hip: its laterality
        "size": settings.export_size,
        "margin": settings.roi_margin,
        "metal_threshold": settings.metal_threshold,
        "blur_threshold": settings.blur_threshold,
    }
    if ann.source != HUMAN:  # a model box exports apart from a person's box of the same pixels
        recipe["box_source"] = f"{ann.source}:{ann.model_name}/{ann.model_version}"
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    return recipe, digest


def export_name(sop_uid: str, digest: str) -> str:
    # the file name is a hash: it names no patient and is stable across reruns
    return hashlib.sha256(f"{sop_uid}|{digest}".encode()).hexdigest()[:24] + ".png"


def plan_exports(factory: sessionmaker[Session], settings: Settings) -> list[int]:
    """The winning boxes (annotation ids: a person's, else a confident localiser box; one per
    paired image side) that have no export under the current recipe."""
    with factory() as session:
        rows = session.execute(winning_boxes(settings.roi_min_confidence)).all()
        done = {tuple(r) for r in session.execute(select(Export.image_id, Export.recipe_digest))}
        return [ann.id for ann, img in rows if (img.id, export_recipe(img, ann, settings)[1]) not in done]


@dataclass(frozen=True, slots=True)
class ExportOutcome:
    """A worker's answer for one job: the export's result, or bad input (quarantined), or the export folder
    refusing the PNG (the batch fails whole). Pickled back from the worker process."""

    job: ExportJob
    result: ExportResult | None = None
    error: tuple[str, str] | None = None  # reason, detail
    os_error: tuple[int | None, str, str] | None = None  # errno, message, file


def _export_one(job: ExportJob) -> ExportOutcome:
    from osteo.etl import imaging  # imported in the worker process

    try:
        return ExportOutcome(job, result=imaging.export_roi(
            job.path, job.box, job.side, job.out_png, size=job.size, margin=job.margin,
            metal_threshold=job.metal_threshold, blur_threshold=job.blur_threshold))
    except InputError as exc:  # bad input is quarantined; anything else is our bug and fails the batch
        return ExportOutcome(job, error=(exc.reason, (exc.detail or str(exc))[:500]))
    except OSError as exc:  # reading errors are InputErrors: this is the export folder refusing a PNG
        # returned, not raised: every job of the batch ends before the batch's files are removed
        return ExportOutcome(job, os_error=(exc.errno, exc.strerror or str(exc), job.out_png))


class ExportWriteError(UserError):
    """The export folder refused a PNG (disk full, read-only): the batch failed whole, nothing of it kept."""


_WRITE_ADVICE = {
    "disk_full": "free space on that disk",
    "export_not_writable": "make the export folder writable by the refresh",
    "export_write_failed": "fix the export folder",
}


def export_write_error(os_error: tuple[int | None, str, str], removed: int) -> ExportWriteError:
    code, message, filename = os_error
    reason = ("disk_full" if code in (errno.ENOSPC, errno.EDQUOT) else
              "export_not_writable" if code in (errno.EACCES, errno.EPERM, errno.EROFS) else "export_write_failed")
    return ExportWriteError(reason, f"cannot write the export PNG {filename}: {message}. This batch's files were "
                                    f"removed ({removed}) and none of it was recorded; {_WRITE_ADVICE[reason]} and run "
                                    "the refresh again")


def _remove_files(jobs: list[ExportJob]) -> int:
    """Remove the batch's PNGs. Safe: a planned job has no committed export row (export_images skips
    those), so no recorded export names its file; a file there is this batch's or a failed run's."""
    removed = 0
    for job in jobs:
        try:
            Path(job.out_png).unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def _export_jobs(session: Session, box_ids: list[int], settings: Settings) -> list[ExportJob]:
    """The batch's boxes not exported yet under their recipe, as jobs (by box id)."""
    out_dir = Path(settings.data_dir) / "export"
    rows = session.execute(
        select(DicomImage, Annotation, SourceFile)
        .join(Annotation, Annotation.sop_instance_uid == DicomImage.sop_instance_uid)
        .join(SourceFile, SourceFile.id == DicomImage.source_file_id)
        .where(Annotation.id.in_(box_ids)).order_by(Annotation.id)
    ).all()
    # a retried batch whose first commit went through (a connection lost at COMMIT) exports nothing twice
    done = {tuple(r) for r in session.execute(select(Export.image_id, Export.recipe_digest)
                                              .where(Export.image_id.in_({img.id for img, _, _ in rows})))}
    jobs = []
    for img, ann, sf in rows:
        recipe, digest = export_recipe(img, ann, settings)
        if (img.id, digest) in done:
            continue
        jobs.append(ExportJob(
            annotation_id=ann.id, image_id=img.id, side=ann.side, path=sf.path, sha256=sf.sha256,
            box=(ann.box_xmin, ann.box_ymin, ann.box_xmax, ann.box_ymax), digest=digest,  # the recipe's box
            out_png=str(out_dir / digest[:2] / export_name(img.sop_instance_uid, digest)), size=recipe["size"],
            margin=recipe["margin"], metal_threshold=recipe["metal_threshold"],
            blur_threshold=recipe["blur_threshold"]))
    return jobs


def export_images(factory: sessionmaker[Session], box_ids: list[int], settings: Settings, *,
                  workers: int = 1) -> ExportCounts:
    """Export one batch of boxes (plan_exports): one crop per box, so an AP pelvis gives two."""
    with factory() as session:
        jobs = _export_jobs(session, box_ids, settings)
    if workers > 1 and len(jobs) >= 8:
        results = list(shared_pool(workers).map(_export_one, jobs, chunksize=max(1, len(jobs) // (workers * 4))))
    else:
        results = [_export_one(j) for j in jobs]
    failed = [r.os_error for r in results if r.os_error is not None]
    if failed:
        raise export_write_error(failed[0], _remove_files(jobs))
    # the batch's PNG names are durable before the rows that name them are committed
    fsync_dirs(j.out_png for j in jobs)
    counts: Counter = Counter()
    reasons: Counter = Counter()
    with factory() as session:
        try:
            _record_exports(session, results, counts, reasons)
        except BaseException:
            session.rollback()
            _remove_files(jobs)  # nothing of the batch is recorded: its files go too
            raise
        # a failure at COMMIT is in doubt (the server may have committed): the files stay, and a
        # rerun or retry either finds the rows or writes the same bytes again
        session.commit()
    return ExportCounts(exported=counts["exported"], excluded=counts["excluded"], quarantined=counts["quarantined"],
                        excluded_by_reason=dict(sorted(reasons.items())), resolved=counts["resolved"])


def _record_exports(session: Session, results: list[ExportOutcome], counts: Counter, reasons: Counter) -> None:
    """The batch's export rows and quarantine entries, flushed (not committed)."""
    for r in results:
        job, res = r.job, r.result
        if r.error is not None:
            reason, detail = r.error
            counts["quarantined"] += quarantine(session, stage=QuarantineStage.EXPORT, path=job.path,
                                                sha256=job.sha256, reason=reason, detail=detail)
            continue
        assert res is not None  # neither bad input nor a refused PNG (that failed the batch before this)
        session.add(Export(
            image_id=job.image_id, side=job.side, annotation_id=job.annotation_id, recipe_digest=job.digest,
            transform=res.transform, transform_digest=res.transform_digest,
            status=res.status, exclusion=res.exclusion,
            metal_fraction=float(res.metal_fraction), blur_score=float(res.blur_score),
            path=res.path, sha256=res.sha256,
        ))
        counts[res.status] += 1
        if res.exclusion:
            reasons[res.exclusion] += 1
    # an image quarantined by an earlier export that reads now leaves the active quarantine
    counts["resolved"] = resolve(session, stage=QuarantineStage.EXPORT,
                                 sha256s=[r.job.sha256 for r in results if r.result is not None])
    session.flush()


# --- pairing, summary, the refresh_run row ------------------------------------------------

def pair_and_label(factory: sessionmaker[Session], settings: Settings) -> PairCounts:
    """Run the pairing SQL and bring the pair table in line (sql/pair_xray_dexa.sql)."""
    with factory() as session, session.begin():
        c = sync_pairs(session, window_days=settings.pair_window_days, osteoporosis_t=settings.osteoporosis_t,
                       normal_t=settings.normal_t)
    return PairCounts(new=c["new"], changed=c["changed"], removed=c["removed"])


def start_refresh_run(factory: sessionmaker[Session], inputs: dict[str, str | bool | None]) -> int:
    """The auditors' row for this refresh: when, which code, which inputs (finished by finish_refresh_run)."""
    with factory() as session, session.begin():
        row = RefreshRun(code_version=code_version(), inputs=inputs, status="running")
        session.add(row)
        session.flush()
        return row.id


def finish_refresh_run(factory: sessionmaker[Session], refresh_id: int, this_run: ThisRun,
                       min_confidence: float = ROI_MIN_CONFIDENCE) -> RefreshReport:
    """Record what this run did, and report it beside the database's totals (and the last run's folders)."""
    this_run = replace(this_run, empty_folders=empty_folders(factory, refresh_id, this_run))
    report = RefreshReport(refresh_id=refresh_id, this_run=this_run, totals=summarise(factory, min_confidence))
    with factory() as session, session.begin():
        row = session.get_one(RefreshRun, refresh_id)
        row.finished_at, row.status, row.counts = utcnow(), "finished", report.to_dict()
    return report


def fail_refresh_run(factory: sessionmaker[Session], refresh_id: int, exc: BaseException) -> None:
    """A refresh that stopped on an error says so in its row (status 'failed', counts {'error': ...});
    a killed one stays 'running'. What it committed before the error stays: the next run goes on from it."""
    with factory() as session, session.begin():
        row = session.get_one(RefreshRun, refresh_id)
        row.finished_at, row.status, row.counts = utcnow(), "failed", {"error": failure_reason(exc)}
