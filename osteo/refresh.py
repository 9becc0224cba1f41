"""The refresh's work as plain functions (sessions and settings passed in); tasks/ wraps them."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Annotation, DicomImage, Export, Pair, Quarantine, SourceFile
from db.store import get_or_create_source, quarantine, store_annotation, store_dexa_rows, store_dicom_results
from osteo.etl import dicom_headers
from osteo.etl.annotations import parse_voc
from osteo.etl.dexa import parse_dexa_csv
from osteo.etl.errors import InputError
from osteo.etl.pool import shared_pool
from osteo.settings import Settings

Progress = Callable[[int], None] | None
EXPORT_VERSION = "roi-export-1"


def discover(root: Path | str | None, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """Every regular file under root (sorted, hidden files skipped); DICOMs often have no suffix."""
    if not root:
        return []
    base = Path(root)
    if not base.exists():
        raise FileNotFoundError(f"input folder {base} does not exist")
    files = [p for p in base.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(base).parts)]
    if suffixes:
        files = [p for p in files if p.suffix.lower() in suffixes]
    return sorted(str(p.resolve()) for p in files)


def batched(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def ingest_dicom(factory: sessionmaker[Session], paths: list[str], key: bytes, *, workers: int = 1) -> Counter:
    """Header ingest of one batch: parse in worker processes, write in one transaction."""
    results = dicom_headers.read_headers(paths, key, workers=workers)
    with factory() as session, session.begin():
        return store_dicom_results(session, results)


def _file_bytes(path: str) -> tuple[bytes, str]:
    data = Path(path).read_bytes()
    return data, hashlib.sha256(data).hexdigest()


def ingest_dexa(factory: sessionmaker[Session], paths: list[str], key: bytes, settings: Settings,
                mapping: dict[str, str] | None = None) -> Counter:
    counts: Counter = Counter()
    for path in paths:
        data, sha = _file_bytes(path)
        with factory() as session, session.begin():
            sf, new = get_or_create_source(session, kind="dexa", path=path, sha256=sha, size=len(data))
            counts["files"] += 1
            if not new:
                counts["already_known"] += 1
                continue
            try:
                parsed = parse_dexa_csv(data, key, bmd_young_mean=settings.bmd_young_mean,
                                        bmd_young_sd=settings.bmd_young_sd, mapping=mapping)
            except InputError as exc:
                sf.status = "quarantined"
                counts["quarantined"] += quarantine(session, stage="ingest_dexa", path=path, sha256=sha,
                                                    reason=exc.reason, detail=exc.detail)
                continue
            counts.update(store_dexa_rows(session, sf, parsed.rows, parsed.errors))
    return counts


def ingest_annotations(factory: sessionmaker[Session], paths: list[str]) -> Counter:
    counts: Counter = Counter()
    with factory() as session, session.begin():
        for path in paths:
            data, sha = _file_bytes(path)
            sf, new = get_or_create_source(session, kind="annotation", path=path, sha256=sha, size=len(data))
            counts["files"] += 1
            if not new:
                counts["already_known"] += 1
                continue
            try:
                box = parse_voc(data, Path(path).name)
            except InputError as exc:
                sf.status = "quarantined"
                counts["quarantined"] += quarantine(session, stage="ingest_annotation", path=path, sha256=sha,
                                                    reason=exc.reason, detail=exc.detail)
                continue
            counts.update(store_annotation(session, sf, box))
    return counts


# --- export -----------------------------------------------------------------------------

def export_recipe(image: DicomImage, ann: Annotation, settings: Settings) -> tuple[dict, str]:
    """Everything that decides an export before any pixel is read, and its digest."""
    recipe = {
        "version": EXPORT_VERSION,
        "box": [ann.box_xmin, ann.box_ymin, ann.box_xmax, ann.box_ymax],
        "laterality": image.laterality,
        "size": settings.export_size,
        "margin": settings.roi_margin,
        "metal_threshold": settings.metal_threshold,
        "blur_threshold": settings.blur_threshold,
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    return recipe, digest


def export_name(sop_uid: str, digest: str) -> str:
    # the file name is a hash: it names no patient and is stable across reruns
    return hashlib.sha256(f"{sop_uid}|{digest}".encode()).hexdigest()[:24] + ".png"


def plan_exports(factory: sessionmaker[Session], settings: Settings) -> list[int]:
    """Paired, annotated images that have no export under the current recipe."""
    with factory() as session:
        rows = session.execute(
            select(DicomImage, Annotation)
            .join(Pair, Pair.image_id == DicomImage.id)
            .join(Annotation, Annotation.sop_instance_uid == DicomImage.sop_instance_uid)
            .order_by(DicomImage.id)
        ).all()
        done = {tuple(r) for r in session.execute(select(Export.image_id, Export.recipe_digest))}
        return [img.id for img, ann in rows if (img.id, export_recipe(img, ann, settings)[1]) not in done]


def _export_one(job: dict[str, Any]) -> dict[str, Any]:
    from osteo.etl import imaging  # imported in the worker process

    try:
        out = imaging.export_roi(
            job["path"], tuple(job["box"]), job["laterality"], job["out_png"], size=job["size"],
            margin=job["margin"], metal_threshold=job["metal_threshold"], blur_threshold=job["blur_threshold"],
        )
        return {"image_id": job["image_id"], "result": out}
    except Exception as exc:  # noqa: BLE001 - bad pixels are quarantined, never fatal
        reason = getattr(exc, "reason", None) or "undecodable_pixels"
        return {"image_id": job["image_id"], "error": (reason, (getattr(exc, "detail", None) or str(exc))[:500])}


def export_images(factory: sessionmaker[Session], image_ids: list[int], settings: Settings, *,
                  workers: int = 1, progress: Progress = None) -> Counter:
    out_dir = Path(settings.data_dir) / "export"
    jobs: list[dict[str, Any]] = []
    with factory() as session:
        rows = session.execute(
            select(DicomImage, Annotation, SourceFile)
            .join(Annotation, Annotation.sop_instance_uid == DicomImage.sop_instance_uid)
            .join(SourceFile, SourceFile.id == DicomImage.source_file_id)
            .where(DicomImage.id.in_(image_ids))
        ).all()
        for img, ann, sf in rows:
            recipe, digest = export_recipe(img, ann, settings)
            jobs.append({
                "image_id": img.id, "annotation_id": ann.id, "path": sf.path, "sha256": sf.sha256,
                "box": recipe["box"], "laterality": img.laterality, "recipe": recipe, "digest": digest,
                "out_png": str(out_dir / digest[:2] / export_name(img.sop_instance_uid, digest)),
                "size": recipe["size"], "margin": recipe["margin"],
                "metal_threshold": recipe["metal_threshold"], "blur_threshold": recipe["blur_threshold"],
            })
    if workers > 1 and len(jobs) >= 8:
        results = list(shared_pool(workers).map(_export_one, jobs, chunksize=max(1, len(jobs) // (workers * 4))))
    else:
        results = [_export_one(j) for j in jobs]
    by_id = {j["image_id"]: j for j in jobs}
    counts: Counter = Counter()
    with factory() as session, session.begin():
        for r in results:
            job = by_id[r["image_id"]]
            if "error" in r:
                reason, detail = r["error"]
                counts["quarantined"] += quarantine(session, stage="export", path=job["path"], sha256=job["sha256"],
                                                    reason=reason, detail=detail)
                continue
            res = r["result"]
            session.add(Export(
                image_id=job["image_id"], annotation_id=job["annotation_id"], recipe_digest=job["digest"],
                transform=res.get("transform") or job["recipe"], status=res["status"], exclusion=res.get("exclusion"),
                metal_fraction=float(res["metal_fraction"]), blur_score=float(res["blur_score"]),
                path=res.get("path"), sha256=res.get("sha256"),
            ))
            counts[res["status"]] += 1
            if res.get("exclusion"):
                counts[f"excluded_{res['exclusion']}"] += 1
    if progress:
        progress(len(results))
    return counts


# --- summary ------------------------------------------------------------------------------

def summarise(factory: sessionmaker[Session]) -> dict[str, Any]:
    """State of the database after a refresh: what the nightly report shows."""
    with factory() as session:
        n = lambda stmt: int(session.scalar(stmt) or 0)  # noqa: E731
        images = n(select(func.count(DicomImage.id)))
        pairs = n(select(func.count(Pair.id)))
        positives = n(select(func.count(Pair.id)).where(Pair.label == 1))
        annotated_uids = select(Annotation.sop_instance_uid)
        no_annotation = n(select(func.count(Pair.id)).join(DicomImage, DicomImage.id == Pair.image_id)
                          .where(DicomImage.sop_instance_uid.not_in(annotated_uids)))
        latest = select(Export.status, Export.exclusion, func.count(Export.id)).group_by(Export.status, Export.exclusion)
        exported = excluded_total = 0
        excluded: dict[str, int] = {}
        for status, exclusion, count in session.execute(latest):
            if status == "exported":
                exported += count
            else:
                excluded[exclusion or "other"] = excluded.get(exclusion or "other", 0) + count
                excluded_total += count
        quarantined = dict(session.execute(
            select(Quarantine.reason, func.count(Quarantine.id)).group_by(Quarantine.reason)).all())
        return {
            "images": images,
            "pairs": pairs,
            "positives": positives,
            "negatives": pairs - positives,
            "waiting": {"no_dexa": images - pairs, "no_annotation": no_annotation},
            "exported": exported,
            "excluded": excluded,
            "quarantined": {k: int(v) for k, v in sorted(quarantined.items())},
        }
