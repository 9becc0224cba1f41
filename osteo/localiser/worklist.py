"""The LabelImg worklist: every paired image still waiting for a femoral-neck box, ready to draw on.

`osteo annotate worklist --out DIR` writes, for each image of the refresh summary's
waiting.no_annotation: `<SOP Instance UID>.png`, the whole image through the export's
normalisation (osteo.etl.imaging.render_png), downscaled so that its long side is at most
`max_size`; `classes.txt` (LabelImg's class list: femoral_neck); and, where a box is proposed,
a pre-filled `<SOP Instance UID>.xml` (Pascal VOC, `<size>` of the PNG, the box scaled to it):
the localiser's unsure box (osteo refresh locates every paired image without a person's box once a
localiser is registered), and on an AP pelvis also the box of a side that has one already, so
that the saved file holds both femoral necks.
A person opens DIR in LabelImg, draws or corrects each box and saves the VOC file beside its PNG;
`osteo refresh --annotations DIR` then scales each box back to the DICOM's pixel grid by its
`<size>` (osteo/ingest/boxes.py). File names are SOP Instance UIDs (not patient identifiers); the PNGs
carry no metadata. Re-running writes the same files with the same bytes, and never overwrites a
VOC file that differs from the proposal (a person's work).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from osteo.errors import UserError
from osteo.etl.annotations import CLASS_NAME, WORKLIST_MAX_SIZE, Box, scale_box, voc_xml
from osteo.etl.pool import shared_pool
from osteo.ingest.boxes import awaiting_box, latest_boxes
from osteo.settings import ROI_MIN_CONFIDENCE, Settings
from osteo_common.files import atomic_write_text

MIN_MAX_SIZE = 64  # smaller renders show no femoral neck to draw on


@dataclass(frozen=True)
class WaitingImage:
    sop_instance_uid: str
    path: str  # the DICOM file
    columns: int
    rows: int


@dataclass(frozen=True, slots=True)
class RenderJob:
    """One waiting image to render (pickled to a worker process)."""

    path: str  # the DICOM file
    out_png: str
    max_size: int


@dataclass(frozen=True, slots=True)
class Rendered:
    """A worker's answer: the PNG's (width, height), or why the pixels cannot be rendered."""

    size: tuple[int, int] = (0, 0)
    error: str | None = None  # the ExportError's reason


@dataclass(frozen=True)
class WorklistResult:
    out_dir: str
    max_size: int
    waiting: int  # paired images without a box
    written: int  # PNGs written (one per waiting image that renders)
    proposals: int  # pre-filled VOC files written
    kept: int  # VOC files already in DIR that differ from the proposal: a person's, left as they are
    unrenderable: dict[str, int]  # images whose pixels cannot be rendered, by reason (their export would fail too)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        size = f"long side <= {self.max_size} px" if self.max_size else "full size"
        lines = [f"worklist        {self.written} PNGs ({size}) of {self.waiting} images waiting for a box,"
                 f" in {self.out_dir}",
                 f"  proposals     {self.proposals} pre-filled VOC files, {self.kept} existing ones kept"]
        if self.unrenderable:
            lines.append("  unrenderable  " + ", ".join(f"{k} {v}" for k, v in self.unrenderable.items()))
        if self.written:
            lines.append(f"next            draw the boxes in LabelImg (open {self.out_dir}, Pascal VOC, save beside"
                         f" each PNG), then: osteo refresh ... --annotations {self.out_dir}")
        return "\n".join(lines)


def waiting_images(factory: sessionmaker[Session],
                   min_confidence: float = ROI_MIN_CONFIDENCE) -> list[WaitingImage]:
    """Paired images with a side that has no winning box, by SOP UID (the summary's waiting.no_annotation)."""
    with factory() as session:
        return [WaitingImage(img.sop_instance_uid, path, img.n_columns, img.n_rows)
                for img, path in session.execute(awaiting_box(min_confidence))]


def propose_boxes(factory: sessionmaker[Session], images: Sequence[WaitingImage]) -> dict[str, list[Box]]:
    """Proposed boxes (SOP UID -> boxes in DICOM pixels, by side) to pre-fill the VOC files: per side,
    a person's box, else the newest localiser box (unsure, or it would not wait)."""
    with factory() as session:
        found = latest_boxes(session, [im.sop_instance_uid for im in images])
        return {uid: [(a.box_xmin, a.box_ymin, a.box_xmax, a.box_ymax) for _, a in sorted(sides.items())]
                for uid, sides in found.items()}


def check_out_dir(out_dir: Path, max_size: int) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError("not_a_folder", f"--out {out_dir} is a file; pass a folder to write the worklist into")
    if max_size != 0 and max_size < MIN_MAX_SIZE:
        raise UserError("bad_max_size", f"--max-size must be 0 (full size) or at least {MIN_MAX_SIZE} px, "
                        f"got {max_size}")


def write_worklist(factory: sessionmaker[Session], settings: Settings, out_dir: Path | str,
                   max_size: int = WORKLIST_MAX_SIZE,
                   proposals: Mapping[str, Box | list[Box]] | None = None) -> WorklistResult:
    """Write the worklist into out_dir (created); `proposals` (SOP UID -> box or boxes in DICOM
    pixels) default to propose_boxes()."""
    out = Path(out_dir)
    check_out_dir(out, max_size)
    images = waiting_images(factory, settings.roi_min_confidence)
    proposals = propose_boxes(factory, images) if proposals is None else proposals
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "classes.txt", CLASS_NAME + "\n")
    jobs = [RenderJob(im.path, str(out / f"{im.sop_instance_uid}.png"), max_size) for im in images]
    if settings.workers > 1 and len(jobs) >= 8:
        pool = shared_pool(settings.workers)
        results = list(pool.map(_render_one, jobs, chunksize=max(1, len(jobs) // (settings.workers * 4))))
    else:
        results = [_render_one(j) for j in jobs]
    written = proposed = kept = 0
    unrenderable: dict[str, int] = {}
    for im, res in zip(images, results, strict=True):
        if res.error is not None:
            unrenderable[res.error] = unrenderable.get(res.error, 0) + 1
            continue
        written += 1
        proposal = proposals.get(im.sop_instance_uid)
        if not proposal:
            continue
        boxes = [proposal] if isinstance(proposal, tuple) else proposal  # one box (a tuple), or a list of them
        png_size = res.size
        text = voc_xml(f"{im.sop_instance_uid}.png", png_size,
                       [scale_box(b, (im.columns, im.rows), png_size) for b in boxes])
        xml = out / f"{im.sop_instance_uid}.xml"
        if xml.exists() and xml.read_text(encoding="utf-8") != text:
            kept += 1  # saved by a person since: theirs wins
            continue
        atomic_write_text(xml, text)
        proposed += 1
    return WorklistResult(out_dir=str(out), max_size=max_size, waiting=len(images), written=written,
                          proposals=proposed, kept=kept, unrenderable=dict(sorted(unrenderable.items())))


def _render_one(job: RenderJob) -> Rendered:
    from osteo.etl import imaging  # imported in the worker process

    try:
        info = imaging.render_png(job.path, job.out_png, max_size=job.max_size)
    except imaging.ExportError as exc:  # bad pixels: listed, not rendered; anything else is a bug
        return Rendered(error=exc.reason)
    return Rendered(size=(info.width, info.height))
