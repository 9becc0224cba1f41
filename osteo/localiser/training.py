"""Training data and evaluation of the femoral-neck localiser, as plain functions (no Prefect, no MLflow).

The localiser learns from the boxes people drew (annotation.source `human`), on whole images at
low resolution: every human box gives one hip view (osteo_model.roi.hip_views: a right hip mirrored
to look like a left one, each half of an AP pelvis its own view). The split follows the
classifier's rules: the test year is held out whole (both sides: the localiser has no reason to
keep right hips out), no patient with a test-year image trains, and the validation patients
(which pick the best epoch) are drawn by a seeded order of their images' content hashes, so the
same data and seed give the same split on every install (never the site's pseudonym key).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Annotation, DicomImage, Patient, SourceFile
from osteo.etl.pool import shared_pool
from osteo.ingest.boxes import HUMAN
from osteo_common.files import atomic_write_bytes, write_json

VAL_SHARE = 0.15  # of the training patients, for the best epoch
NONHIP = {"train": 48, "val": 16, "test": 32}  # other radiographs per part (when the simulator renders them)
NONHIP_CHUNK = 8  # of them per worker job
CALIBRATION_DRAWS, CALIBRATION_STRENGTH = 3, 1.5  # randomised copies of each held-out view, and how hard


@dataclass(frozen=True)
class RoiDataset:
    """The localiser's views on disk (an .npz of arrays) and what they hold."""

    path: str  # .npz: {split}_x [N,S,S] float16, {split}_boxes [N,4] view px; test_image_boxes, test_mm, ...
    digest: str  # of the boxes, image hashes, split and input size: the run's dataset identity
    input_size: int
    test_year: int
    n_train: int
    n_val: int
    n_test: int
    n_images: int
    pelvis_views: int
    synthetic_images: int = 0  # of n_images, marked synthetic (osteo/etl/synthetic.py)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RoiEvaluation:
    """The localiser on the test year's held-out human boxes, in the images' own pixels."""

    metrics: dict[str, float]  # box_metrics: mean_iou, iou_ge_050, iou_ge_075, centre_error_px/_mm, n
    ms_per_view: float  # inference, confidence included, batch of one on this machine's CPU
    seconds: float  # training time
    # the confidence: its mapping, ECE and reliability table on the perturbed test set (and negatives)
    calibration: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BoxedImage:
    """An image with people's boxes, as the localiser learns from it."""

    path: str  # the DICOM file
    sha256: str  # of the file: the split's order and the dataset's identity
    patient: str  # the pseudonymised patient (the split is by patient)
    year: int  # of the study
    laterality: str  # L, R, B (an AP pelvis)
    row_direction: str  # PatientOrientation's first value (which half of a pelvis is which hip)
    mm: float | None  # pixel spacing
    boxes: dict[str, tuple[float, float, float, float]]  # side -> box in the image's pixels
    synthetic: bool


@dataclass(frozen=True, slots=True)
class ViewJob:
    """One image's views to render, in a worker process (pickled)."""

    image: BoxedImage
    size: int  # the localiser's input size
    seed: int


@dataclass(frozen=True, slots=True)
class ImageViews:
    """A worker's answer: (input, view box, view, image box) of each boxed view and the negatives, or why
    the image's pixels do not read (neither then)."""

    views: list = field(default_factory=list)
    negatives: list = field(default_factory=list)
    error: str | None = None  # the ExportError's reason


def _boxed_images(session: Session) -> list[BoxedImage]:
    rows = session.execute(
        select(DicomImage, SourceFile.path, SourceFile.sha256, Patient.patient_key, Annotation)
        .join(SourceFile, SourceFile.id == DicomImage.source_file_id)
        .join(Patient, Patient.id == DicomImage.patient_id)
        .join(Annotation, Annotation.sop_instance_uid == DicomImage.sop_instance_uid)
        .where(Annotation.source == HUMAN).order_by(DicomImage.id, Annotation.side)).all()
    found: dict[int, tuple[DicomImage, str, str, str]] = {}
    boxes: dict[int, dict[str, tuple[float, float, float, float]]] = {}
    for img, path, sha, key, ann in rows:
        if img.laterality not in ("L", "R", "B") or (img.laterality != "B" and ann.side != img.laterality):
            continue
        found.setdefault(img.id, (img, path, sha, key))
        boxes.setdefault(img.id, {})[ann.side] = (ann.box_xmin, ann.box_ymin, ann.box_xmax, ann.box_ymax)
    return [BoxedImage(path=path, sha256=sha, patient=key, year=img.study_date.year, laterality=img.laterality,
                       row_direction=img.row_direction, mm=img.pixel_spacing_mm, boxes=boxes[i],
                       synthetic=img.synthetic) for i, (img, path, sha, key) in found.items()]


def split_images(images: list[BoxedImage], test_year: int, seed: int) -> list[str]:
    """Each image's part: test (the test year), train or val (earlier years of patients without a
    test-year image; val by patient), or unused (see the module doc)."""
    test = {im.patient for im in images if im.year == test_year}
    first: dict[str, str] = {}
    for im in images:
        if im.patient not in test and im.year < test_year:
            first[im.patient] = min(first.get(im.patient, im.sha256), im.sha256)
    order = sorted(first, key=lambda p: hashlib.sha256(f"{seed}|{first[p]}".encode()).hexdigest())
    n_val = max(1, round(VAL_SHARE * len(order))) if len(order) > 1 else 0
    val = set(order[:n_val])

    def part(im: BoxedImage) -> str:
        if im.year == test_year:
            return "test"
        if im.patient in first and im.year < test_year:
            return "val" if im.patient in val else "train"
        return "unused"
    return [part(im) for im in images]


def image_views(job: ViewJob) -> ImageViews:
    """Worker: the boxed views of one image and its away-from-the-neck negatives (small arrays
    travel back, never the image)."""
    from osteo.etl.imaging import ExportError, load_dicom, prepare_display
    from osteo.localiser.negatives import film_negatives
    from osteo_model.roi import hip_views, to_view_box, view_input

    im, size = job.image, job.size
    try:
        display = prepare_display(load_dicom(im.path)[0]).display_u8()
    except ExportError as exc:
        return ImageViews(error=exc.reason)
    rows, cols = display.shape
    out = []
    for view in hip_views(rows, cols, im.laterality, im.row_direction):
        box = im.boxes.get(view.side)
        if box is not None:
            out.append((view_input(display, view, size), to_view_box(box, view, size), view, box))
    seed = [job.seed, *bytes.fromhex(im.sha256[:16])]
    return ImageViews(views=out, negatives=film_negatives(display, im.laterality, list(im.boxes.values()), size, seed))


def collect_dataset(factory: sessionmaker[Session], out_dir: Path, *, test_year: int, input_size: int,
                    seed: int = 0, workers: int = 1) -> RoiDataset:
    """Every human box as a view, split by patient, with negative views of each part (osteo.localiser.negatives);
    written once per content digest."""
    with factory() as session:
        images = _boxed_images(session)
    return build_dataset(images, out_dir, test_year=test_year, input_size=input_size, seed=seed, workers=workers)


def build_dataset(images: list[BoxedImage], out_dir: Path, *, test_year: int, input_size: int, seed: int = 0,
                  workers: int = 1) -> RoiDataset:
    """:func:`collect_dataset` from the boxed images themselves, without a database (bench/roi_unseen.py
    builds them from a cohort's truth.csv)."""
    from osteo.localiser.negatives import NEG_VERSION, nonhip_renderer

    parts = split_images(images, test_year, seed)
    used = [(im, p) for im, p in zip(images, parts, strict=True) if p != "unused"]
    nonhip = nonhip_renderer() is not None
    ident = json.dumps([[im.sha256, sorted(im.boxes.items()), part] for im, part in used]
                       + [input_size, test_year, seed, NEG_VERSION, nonhip])
    digest = hashlib.sha256(ident.encode()).hexdigest()
    jobs = [ViewJob(im, input_size, seed) for im, _ in used]
    if workers > 1 and len(jobs) >= 8:
        done = list(shared_pool(workers).map(image_views, jobs, chunksize=max(1, len(jobs) // (workers * 4))))
    else:
        done = [image_views(j) for j in jobs]
    arrays: dict[str, list] = {}
    for (im, part), res in zip(used, done, strict=True):
        for x, vbox, view, box in res.views:
            arrays.setdefault(f"{part}_x", []).append(x.astype(np.float16))
            arrays.setdefault(f"{part}_boxes", []).append(vbox)
            if part == "test":
                arrays.setdefault("test_image_boxes", []).append(box)
                arrays.setdefault("test_views", []).append([view.x0, view.x1, view.rows, int(view.flip)])
                arrays.setdefault("test_mm", []).append(im.mm or np.nan)
                arrays.setdefault("test_pelvis", []).append(im.laterality == "B")
        for x in res.negatives:
            arrays.setdefault(f"{part}_neg_x", []).append(x.astype(np.float16))
            arrays.setdefault(f"{part}_neg_kind", []).append("pelvis_crop" if im.laterality == "B" else "hip_crop")
    _add_nonhip(arrays, input_size, seed, workers)
    size = input_size
    packed = {k: np.asarray(v) for k, v in arrays.items()}
    for part in ("train", "val", "test"):
        packed.setdefault(f"{part}_x", np.zeros((0, size, size), np.float16))
        packed.setdefault(f"{part}_boxes", np.zeros((0, 4), np.float32))
        packed.setdefault(f"{part}_neg_x", np.zeros((0, size, size), np.float16))
        packed.setdefault(f"{part}_neg_kind", np.zeros(0, dtype="<U16"))
    path = Path(out_dir) / f"{digest[:16]}.npz"
    if not path.exists():
        import io

        buf = io.BytesIO()
        np.savez_compressed(buf, allow_pickle=True, **packed)  # numpy's default, named so no array is read as it
        atomic_write_bytes(path, buf.getvalue())
    return RoiDataset(path=str(path), digest=digest, input_size=input_size, test_year=test_year,
                      n_train=len(packed["train_x"]), n_val=len(packed["val_x"]), n_test=len(packed["test_x"]),
                      n_images=len(used), pelvis_views=int(np.sum(packed.get("test_pelvis", []))),
                      synthetic_images=sum(bool(im.synthetic) for im, _ in used))


def _nonhip_views(job: tuple[int, int, list[int]]) -> tuple[np.ndarray, list[str]]:
    """Worker: ``n`` other radiographs as views (osteo.localiser.negatives.nonhip_negatives)."""
    from osteo.localiser.negatives import nonhip_negatives

    return nonhip_negatives(*job)


def _add_nonhip(arrays: dict[str, list], size: int, seed: int, workers: int) -> None:
    """Other radiographs as negatives of each part (none without the simulator's renderer), rendered
    in chunks of NONHIP_CHUNK (seeded per chunk: the same views for any number of workers)."""
    from osteo.localiser.negatives import nonhip_renderer

    if nonhip_renderer() is None:
        return
    jobs = [(part, (min(NONHIP_CHUNK, NONHIP[part] - i), size, [seed, 31, k, i]))
            for k, part in enumerate(("train", "val", "test")) for i in range(0, NONHIP[part], NONHIP_CHUNK)]
    run = shared_pool(workers).map if workers > 1 else map
    for (part, _), (views, kinds) in zip(jobs, run(_nonhip_views, [j for _, j in jobs]), strict=True):
        arrays.setdefault(f"{part}_neg_x", []).extend(v.astype(np.float16) for v in views)
        arrays.setdefault(f"{part}_neg_kind", []).extend(kinds)


def _negatives(data: Any, part: str) -> np.ndarray | None:
    key = f"{part}_neg_x"
    return data[key].astype(np.float32) if key in data and len(data[key]) else None


def train_and_evaluate(dataset: RoiDataset, config: Any, out_dir: Path, *,
                       on_epoch: Callable[[int, dict], None] | None = None) -> tuple[str, RoiEvaluation]:
    """Train the localiser on the dataset's train views and negatives (best epoch on val), calibrate
    its confidence on the val views and negatives under heavy perturbation, save it, score the test year."""
    from osteo_model.roi_calibrate import calibrate_localiser
    from osteo_model.roi_train import save_localiser, train_localiser

    data = np.load(dataset.path)
    if len(data["train_x"]) == 0:
        raise ValueError("no training views: the localiser needs human boxes before the test year")
    t0 = time.perf_counter()
    val_x = data["val_x"].astype(np.float32)
    model, history = train_localiser(data["train_x"].astype(np.float32), data["train_boxes"], val_x,
                                     data["val_boxes"], config, negatives=_negatives(data, "train"),
                                     val_negatives=_negatives(data, "val"), on_epoch=on_epoch)
    # calibrated on views the weights never learned from (val; the training views where there are none)
    cal_x, cal_boxes = (val_x, data["val_boxes"]) if len(val_x) else (data["train_x"].astype(np.float32),
                                                                       data["train_boxes"])
    fit = calibrate_localiser(model, cal_x, cal_boxes, _negatives(data, "val" if len(val_x) else "train"),
                              seed=config.seed, draws=CALIBRATION_DRAWS, strength=CALIBRATION_STRENGTH)
    seconds = time.perf_counter() - t0
    evaluation = evaluate(model, data, dataset.input_size, seconds, min_confidence=config.min_confidence)
    evaluation.calibration.update(fit)
    checkpoint = Path(out_dir) / "localiser.pth"
    save_localiser(model, config, checkpoint, extra={"dataset_digest": dataset.digest, "test": evaluation.metrics,
                                                     "calibration": evaluation.calibration,
                                                     "epochs_run": len(history)})
    write_json(Path(out_dir) / "history.json", history)
    return str(checkpoint), evaluation


def evaluate(model: Any, data: Any, size: int, seconds: float = 0.0, min_confidence: float = 0.8) -> RoiEvaluation:
    """Test-year boxes back on the images' pixel grids against the held-out human boxes, and the
    confidence (osteo.localiser.reliability.confidence_metrics)."""
    from osteo.localiser.reliability import confidence_metrics
    from osteo_model.roi import HipView, to_image_box
    from osteo_model.roi_train import box_iou, box_metrics, predict_boxes

    test_x = data["test_x"].astype(np.float32)
    if len(test_x) == 0:
        return RoiEvaluation(metrics={"n": 0}, ms_per_view=float("nan"), seconds=seconds)
    boxes, conf = predict_boxes(model, test_x)
    views = [HipView("L", int(v[0]), int(v[1]), int(v[2]), bool(v[3])) for v in data["test_views"]]
    pred = np.asarray([to_image_box(b, v, size) for b, v in zip(boxes, views, strict=True)])
    truth = data["test_image_boxes"].astype(np.float64)
    metrics = box_metrics(pred, truth, data["test_mm"].astype(np.float64))
    metrics_c, calibration = confidence_metrics(model, data, conf, box_iou(pred, truth), min_confidence)
    one = test_x[:1]
    predict_boxes(model, one)  # warm-up
    t0 = time.perf_counter()
    for _ in range(10):
        predict_boxes(model, one)
    return RoiEvaluation(metrics={k: float(v) for k, v in {**metrics, **metrics_c}.items()},
                         ms_per_view=(time.perf_counter() - t0) * 100, seconds=seconds, calibration=calibration)


def _confidence_line(m: dict[str, float]) -> str:
    if "ece" not in m:
        return "not measured"
    return (f"{m['confident_share']:.0%} of test views confident, {m['confident_right']:.0%} of those right;"
            f" ECE {m['ece']:.3f} under heavy perturbation; {m['negatives_confident']:.1%} of"
            f" {int(m['n_negatives'])} negative views confident (max {m['negatives_max_confidence']:.2f})")


@dataclass(frozen=True)
class RoiReport:
    """A localiser training: its JSON, the human summary and the Prefect artifact."""

    run_id: str
    dataset: RoiDataset
    evaluation: RoiEvaluation
    registration: Any  # osteo.training.results.Registration

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "dataset": self.dataset.to_dict(), "test": self.evaluation.metrics,
                "ms_per_view": self.evaluation.ms_per_view, "train_seconds": self.evaluation.seconds,
                "calibration": self.evaluation.calibration, "registration": asdict(self.registration)}

    def summary(self) -> str:
        m, d, r = self.evaluation.metrics, self.dataset, self.registration
        if not m.get("n"):
            test = "no test-year boxes to score"
        else:
            test = (f"mean IoU {m['mean_iou']:.3f}, IoU>=0.5 {m['iou_ge_050']:.1%}, IoU>=0.75 {m['iou_ge_075']:.1%},"
                    f" centre error {m.get('centre_error_mm', float('nan')):.1f} mm ({int(m['n'])} boxes)")
        return "\n".join([
            f"localiser       {d.n_train} train / {d.n_val} val / {d.n_test} test views ({d.test_year} held out),"
            f" trained in {self.evaluation.seconds:.0f} s",
            f"  test year     {test}",
            f"  confidence    {_confidence_line(m)}",
            f"  speed         {self.evaluation.ms_per_view:.1f} ms per view on this CPU (confidence included)",
            _registered_line(r),
        ])

    def markdown(self) -> str:
        return "```\n" + self.summary() + "\n```\n"


def _registered_line(r: Any) -> str:  # osteo.training.results.Registration
    """What the registry did, once: the new version's alias, and why (osteo_mlflow.roi._gate)."""
    if r.champion:
        return f"registered      {r.model_name} version {r.model_version}, now champion: {r.decision}"
    stays = f"champion stays version {r.champion_version}" if r.champion_version else "no champion"
    return f"registered      {r.model_name} version {r.model_version} as challenger; {stays}: {r.decision}"
