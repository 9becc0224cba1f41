"""Export: our ROI export (decode, display LUT, quality checks, crop, resize, PNG, DB rows) against
bench.baselines.plain_export (pydicom + apply_voi_lut + min/max + Pillow) on the same files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench.baselines import plain_export
from bench.common import best_of, cores, row, target, timed


def export_jobs(factory, ids: list[int]) -> list[dict]:
    from db.models import Annotation, DicomImage, SourceFile

    with factory() as session:
        rows = session.execute(
            select(DicomImage.id, SourceFile.path, DicomImage.laterality, Annotation.box_xmin, Annotation.box_ymin,
                   Annotation.box_xmax, Annotation.box_ymax)
            .join(Annotation, Annotation.sop_instance_uid == DicomImage.sop_instance_uid)
            .join(SourceFile, SourceFile.id == DicomImage.source_file_id)
            .where(DicomImage.id.in_(ids)).order_by(DicomImage.id)).all()
    return [{"id": r[0], "path": r[1], "laterality": r[2], "box": tuple(r[3:7])} for r in rows]


def _best_fresh(factory, fn, repeats: int) -> float:
    """Fastest run, each on a database without earlier Export rows (a rerun would plan nothing)."""
    from sqlalchemy import delete

    from db.models import Export

    best = float("inf")
    for _ in range(max(1, repeats)):
        with factory() as session, session.begin():
            session.execute(delete(Export))
        best = min(best, timed(fn)[0])
    return best


def run(factory, settings, ids: list[int], tmp: Path, repeats: int) -> tuple[list[dict], list[str]]:
    """Rows, and the PNGs ours exported (the training bench's input)."""
    from osteo.etl.imaging import export_roi
    from osteo.ingest.refresh import export_images

    jobs = export_jobs(factory, ids)
    n = len(jobs)
    plain_dir = tmp / "plain-export"
    plain_dir.mkdir(parents=True, exist_ok=True)
    roi_dir = tmp / "roi-export"
    roi_dir.mkdir(parents=True, exist_ok=True)

    def plain_loop():
        for j in jobs:
            plain_export(j["path"], plain_dir / f"{j['id']}.png")

    def roi_loop():
        for j in jobs:
            try:
                export_roi(j["path"], j["box"], j["laterality"], roi_dir / f"{j['id']}.png",
                           size=settings.export_size, margin=settings.roi_margin,
                           metal_threshold=settings.metal_threshold, blur_threshold=settings.blur_threshold)
            except Exception:  # noqa: BLE001 - bad pixels are the export's quarantine, not the bench's
                pass

    plain_loop()  # warm caches and imports on both sides
    roi_loop()
    t_plain = best_of(plain_loop, repeats)
    t_roi = best_of(roi_loop, repeats)
    n_cores = cores()
    t_one = _best_fresh(factory, lambda: export_images(factory, ids, settings, workers=1), repeats)
    t_all = _best_fresh(factory, lambda: export_images(factory, ids, settings, workers=n_cores), repeats)
    work = f"{n} images"
    base: dict[str, Any] = dict(stage="export", baseline=n / t_plain, unit="images/s", work=work,
                                baseline_s=round(t_plain, 3))
    rows = [
        row("export_roi, 1 process", ours=n / t_roi, goal=target("ratio", ">=", 1.0), ours_s=round(t_roi, 3),
            note="osteo.etl.imaging.export_roi loop vs plain_export loop (pydicom + apply_voi_lut + Pillow)", **base),
        row("export_images, 1 worker", ours=n / t_one, goal=target("ratio", ">=", 1.0), ours_s=round(t_one, 3),
            note="osteo.ingest.refresh.export_images (DB reads + export_roi + Export rows) vs plain_export loop",
            **base),
        row(f"export_images, {n_cores} workers", ours=n / t_all, ours_s=round(t_all, 3),
            note=f"workers={n_cores} (process pool, forkserver) vs the 1-process plain loop; no target set", **base),
    ]
    pngs = sorted(str(p) for p in roi_dir.glob("*.png"))
    return rows, pngs
