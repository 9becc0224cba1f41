"""The localiser in the refresh (osteo/localiser/locate.py, osteo/ingest/boxes.py): model boxes per side with their
version and confidence, a person's box always wins, an AP pelvis gives two crops with the right
sides (either orientation), unsure boxes wait on the worklist as proposals a person can open.

The localiser here is a test double with fixed answers (a box in view pixels and a confidence):
what is tested is what the pipeline does with a localiser's output, not the network
(tests/osteo_model/test_model_roi.py trains a real one).
"""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from db import create_schema, make_engine, make_session_factory
from db.models import Annotation, DicomImage, Export
from osteo.etl.annotations import parse_voc
from osteo.ingest import refresh
from osteo.localiser.locate import locate_missing
from osteo.localiser.worklist import write_worklist
from osteo.settings import Settings
from osteo.synth.tables import write_voc
from osteo.training.snapshot import current_exports
from tests.dicom_factory import make_dicom

SIZE = 64  # the double's view size
VIEW_BOX = (12.0, 20.0, 28.0, 36.0)  # in view pixels: the left part of a (left-hip-looking) view


class FixedLocator:
    """A localiser double: the same view box and confidence for every view."""

    name, version, input_size = "osteo-roi", "7", SIZE

    def __init__(self, confidence: float):
        self.confidence = confidence
        self.calls = 0

    def predict(self, views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += len(views)
        return np.tile(np.asarray(VIEW_BOX, np.float32), (len(views), 1)), np.full(len(views), self.confidence)


@pytest.fixture
def db(tmp_path):
    """A hip (L), an AP pelvis and a mirrored AP pelvis of one patient, paired with a DEXA exam; no boxes."""
    rng = np.random.default_rng(3)
    uids = {
        "hip": make_dicom(tmp_path / "dicom" / "hip.dcm", rows=128, cols=96, laterality="L",
                          pixels=rng.integers(200, 3000, (128, 96))),
        "pelvis": make_dicom(tmp_path / "dicom" / "pelvis.dcm", rows=128, cols=256, laterality="B", body_part="PELVIS",
                             orientation=("L", "F"), pixels=rng.integers(200, 3000, (128, 256))),
        "mirrored": make_dicom(tmp_path / "dicom" / "mirrored.dcm", rows=128, cols=256, laterality="B",
                               body_part="PELVIS", orientation=("R", "F"), pixels=rng.integers(200, 3000, (128, 256))),
    }
    (tmp_path / "dexa").mkdir()
    (tmp_path / "dexa" / "dexa.csv").write_text("PatientID,ExamDate,Neck_BMD,T-score\nA1234567,2021-04-01,0.55,-2.9\n")
    settings = Settings(var_dir=tmp_path / "var", data_dir=tmp_path / "data", pseudonym_key="k" * 32, workers=1,
                        roi_min_confidence=0.8, blur_threshold=0.0)
    engine = make_engine(f"sqlite:///{tmp_path / 'osteo.sqlite'}")
    create_schema(engine)
    factory = make_session_factory(engine)
    key = settings.resolved_pseudonym_key()
    refresh.ingest_dicom(factory, refresh.discover(tmp_path / "dicom"), key)
    refresh.ingest_dexa(factory, refresh.discover(tmp_path / "dexa"), key, settings)
    refresh.pair_and_label(factory, settings)
    yield factory, settings, uids
    engine.dispose()


def _boxes(factory, source: str | None = None) -> dict[tuple[str, str], Annotation]:
    with factory() as s:
        q = select(Annotation).order_by(Annotation.id)
        return {(a.sop_instance_uid, a.side): a for a in s.scalars(q if source is None else
                                                                     q.where(Annotation.source == source))}


def _export_all(factory, settings) -> None:
    refresh.export_images(factory, refresh.plan_exports(factory, settings), settings)


def test_a_pelvis_gives_two_crops_with_the_right_sides_in_either_orientation(db):
    factory, settings, uids = db
    counts = locate_missing(factory, FixedLocator(0.95), min_confidence=settings.roi_min_confidence)
    assert (counts.images, counts.confident, counts.unsure, counts.model) == (3, 5, 0, "osteo-roi/7")
    boxes = _boxes(factory)
    assert set(boxes) == {(uids["hip"], "L"), (uids["pelvis"], "L"), (uids["pelvis"], "R"),
                          (uids["mirrored"], "L"), (uids["mirrored"], "R")}
    assert all(a.source == "model" and a.model_version == "7" and a.confidence == pytest.approx(0.95)
               for a in boxes.values())
    # standard orientation: the patient's left hip on the image's right half; mirrored: on the left half
    assert boxes[(uids["pelvis"], "L")].box_xmin >= 128 > boxes[(uids["pelvis"], "R")].box_xmax
    assert boxes[(uids["mirrored"], "L")].box_xmax <= 128 <= boxes[(uids["mirrored"], "R")].box_xmin
    # each half is a left-hip-looking view: the head side of the box lies towards the midline
    assert boxes[(uids["pelvis"], "L")].box_xmin - 128 < 256 - boxes[(uids["pelvis"], "L")].box_xmax
    _export_all(factory, settings)
    with factory() as s:
        rows = s.execute(select(DicomImage.sop_instance_uid, Export.side, Export.transform)
                         .join(DicomImage, DicomImage.id == Export.image_id)
                         .where(Export.status == "exported")).all()
    crops = {(uid, side): t["flip_horizontal"] for uid, side, t in rows}
    assert crops == {(uids["hip"], "L"): False, (uids["pelvis"], "L"): False, (uids["pelvis"], "R"): True,
                     (uids["mirrored"], "L"): False, (uids["mirrored"], "R"): True}
    # located once per localiser version: the next refresh asks nothing of it
    again = FixedLocator(0.95)
    assert locate_missing(factory, again).images == 0 and again.calls == 0


def test_a_persons_box_beats_the_models(db, tmp_path):
    factory, settings, uids = db
    locate_missing(factory, FixedLocator(0.95), min_confidence=0.8)
    _export_all(factory, settings)
    with factory() as s:
        assert current_exports(s, "human").empty  # model boxes do not train unless asked
        model_crops = current_exports(s, "any")
    assert len(model_crops) == 5 and set(model_crops["box_source"]) == {"model"}

    ann = tmp_path / "ann"
    ann.mkdir()
    write_voc(ann / f"{uids['hip']}.xml", uids["hip"], 96, 128, (30, 50, 70, 90))  # a person draws the hip's box
    refresh.ingest_annotations(factory, refresh.discover(ann))
    planned = refresh.plan_exports(factory, settings)
    human = _boxes(factory, "human")[(uids["hip"], "L")]
    assert planned == [human.id]  # the person's box exports; the model's box of that side no longer does
    _export_all(factory, settings)
    with factory() as s:
        for source in ("human", "any"):
            crops = current_exports(s, source)
            hip = crops[crops["image_id"] == s.scalar(select(DicomImage.id).where(
                DicomImage.sop_instance_uid == uids["hip"]))]
            assert list(hip["box_source"]) == ["human"], source
    # a newer localiser version does not locate a side a person has boxed
    newer = FixedLocator(0.99)
    newer.version = "8"
    assert locate_missing(factory, newer).images == 2 and newer.calls == 4


def test_unsure_boxes_wait_on_the_worklist_as_valid_voc_proposals(db, tmp_path):
    factory, settings, uids = db
    counts = locate_missing(factory, FixedLocator(0.5), min_confidence=settings.roi_min_confidence)
    assert (counts.confident, counts.unsure) == (0, 5)
    assert refresh.plan_exports(factory, settings) == []  # nothing unsure exports
    assert refresh.summarise(factory, settings.roi_min_confidence).waiting["no_annotation"] == 3
    model = _boxes(factory, "model")
    out = tmp_path / "worklist"
    result = write_worklist(factory, settings, out, max_size=128)
    assert (result.waiting, result.written, result.proposals) == (3, 3, 3)
    voc = parse_voc((out / f"{uids['pelvis']}.xml").read_bytes(), f"{uids['pelvis']}.xml")
    assert voc.sop_instance_uid == uids["pelvis"] and voc.size == (128, 64) and len(voc.boxes) == 2

    # a person opens the proposals and saves them as they are: the boxes come back on the DICOM's grid,
    # each on its side, and everything exports from people's boxes
    refresh.ingest_annotations(factory, refresh.discover(out, (".xml",)))
    human = _boxes(factory, "human")
    assert set(human) == set(model)
    for key, a in human.items():
        m = model[key]
        assert max(abs(a.box_xmin - m.box_xmin), abs(a.box_xmax - m.box_xmax)) <= 2, key
    assert refresh.summarise(factory, settings.roi_min_confidence).waiting["no_annotation"] == 0
    assert len(refresh.plan_exports(factory, settings)) == 5
