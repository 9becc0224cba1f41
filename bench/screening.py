"""Screening (`osteo screen`'s batch task, osteo.screening.score.screen_images) against a plain ONNX Runtime loop
over the same crops, both with the same InferenceSession of an untrained ResNet18 at 224 px (the default preset's
size) exported as the registry exports it.

Ours is what one screening batch does per image: read the DICOM through the export's normalisation, place the
boxes, the quality check, the neck crop, the crops scored in batches, one screening_result row each (replaced in
place: the bench screens the same images again, as `--rescreen`). The baseline is what a user would write who
already had the crops (cut once beforehand, outside the clock): resize to the model's size, normalise, and
session.run in the classifier's batch size. Both count the images that have a crop to score; the bench has no
trained localiser, so those are the images with a person's box."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.common import isolated_home, row, target

GOAL = 0.8  # issue 27: screening at least 0.8x the plain loop's images per second
IMAGE_SIZE = 224
CROP = {"size": 256, "margin": 0.15, "min_confidence": 0.8}  # the registry's defaults (osteo_mlflow.pyfunc)


def run(cohort: Path, scratch: Path, repeats: int) -> list[dict]:
    from osteo.screening.score import SCREENED, judge_image, load_jobs, screen_images

    with isolated_home(scratch / "screen-home") as s:
        factory = _refreshed(cohort)
        model = _screening_model(scratch / "screen-model")
        with factory() as session:
            jobs = load_jobs(session, _all_images(session))
        judged = [judge_image(j, model, s.metal_threshold, s.blur_threshold) for j in jobs]
        ids = [j.job.image_id for j in judged if j.status == SCREENED]
        crops = [c for j in judged if j.status == SCREENED for c in j.crops]
        batches = [ids[i:i + s.screen_batch_size] for i in range(0, len(ids), s.screen_batch_size)]

        def ours() -> None:
            for batch in batches:
                screen_images(factory, model, batch, metal_threshold=s.metal_threshold,
                              blur_threshold=s.blur_threshold)

        ours()  # warm-up (the session's first runs, the rows written once)
        plain = _plain_loop(model.classifier, crops)
        times: dict[str, list[float]] = {"ours": [], "plain": []}
        for _ in range(repeats):  # interleaved: a busy moment of the shared machine hits both alike
            times["ours"].append(_timed(ours))
            times["plain"].append(_timed(plain))
    n = len(ids)
    work = (f"{n} images ({len(crops)} crops) of the {len(jobs)} the cohort's refresh recorded, batches of "
            f"{s.screen_batch_size} images, {model.classifier.batch_size} crops per run, best of {repeats}")
    return [row("screening (read, box, check, crop, score, record)", stage="screening", ours=n / min(times["ours"]),
                baseline=n / min(times["plain"]), unit="images/s", work=work, goal=target("ratio", ">=", GOAL),
                note="baseline: the same crops, cut beforehand, resized and normalised, through the same ONNX "
                     "Runtime session in the same batch size; people's boxes only (no trained localiser here)")]


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _refreshed(cohort: Path):
    """The bench's synthetic cohort refreshed with the plain steps (no export); its session factory."""
    from bench.plain_refresh import refresh_direct
    from osteo.settings import get_settings, session_factory

    refresh_direct(str(cohort / "dicom"), str(cohort / "dexa"), str(cohort / "annotations"), export=False)
    return session_factory(get_settings())


def _all_images(session) -> list[int]:
    from sqlalchemy import select

    from db.models import DicomImage

    return list(session.scalars(select(DicomImage.id).order_by(DicomImage.id)))


def _screening_model(folder: Path):
    """An untrained ResNet18 exported to ONNX and loaded as the registry loads a version (no MLflow)."""
    import torch

    from osteo.screening.model import ScreeningModel
    from osteo_model.models import build_model
    from osteo_model.onnx import build_classifier, export_onnx
    from osteo_model.predict import save_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = build_model("resnet18").eval()
    checkpoint = save_checkpoint(folder / "fold-0.pth", net, {"arch": "resnet18", "image_size": IMAGE_SIZE},
                                 {"threshold": 0.5})
    # as osteo_mlflow.screening loads the champion (no spinning)
    classifier, runtime = build_classifier(checkpoint, export_onnx(net, IMAGE_SIZE, folder / "model.onnx"), None,
                                           spin=False)
    assert runtime == "onnxruntime", runtime
    return ScreeningModel(name="osteo-classifier", version="1", classifier=classifier, threshold=0.5, crop=CROP)


def _plain_loop(classifier, crops: list[np.ndarray]):
    from PIL import Image

    session, size, batch = classifier.session, classifier.image_size, classifier.batch_size
    name = session.get_inputs()[0].name

    def plain() -> None:
        for start in range(0, len(crops), batch):
            x = np.stack([np.asarray(Image.fromarray(c).resize((size, size), Image.Resampling.BILINEAR),
                                     dtype=np.float32) for c in crops[start:start + batch]])
            x = (x / 255.0 - 0.449) / 0.226  # ImageNet's mean and std averaged over RGB, as training uses
            session.run(["logit"], {name: x[:, None].astype(np.float32)})

    return plain
