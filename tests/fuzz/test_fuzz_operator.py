"""The operator's mistakes (issue 23): nights run on swapped folders, on the same folder twice, on a folder
under a second name (a symlink), and files moved, fixed in place or deleted between nights, in any order
hypothesis draws. After each sequence one correct night must leave the database equal to one clean
refresh of the folders as they now are, and no active quarantine entry for a file that is now good.

Short run in `make test` (derandomized); `OSTEO_FUZZ=long` draws fresh sequences (see conftest.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from db import create_schema, make_engine, make_session_factory
from db.models import Annotation, DexaExam, DicomImage, Quarantine, SourceFile
from osteo.ingest import refresh
from osteo.settings import Settings
from tests.dicom_factory import make_dicom
from tests.fuzz.support import fuzz
from tests.osteo.test_annotations import voc

KEY = b"fuzz-operator-key"
HEAD = "PatientID,ExamDate,Neck_BMD,T-score\n"
BAD_ROW = "S3,2021-13-45,0.7,-1.9\n"
MISTAKES = ("swapped", "same_folder_twice", "symlinked", "moved", "fixed_in_place", "deleted", "correct_night")


def cohort(root: Path) -> dict[str, Path]:
    """Two hip films with a box each, a DEXA export with one bad date, a junk file and a broken box file."""
    dicom, dexa, ann = root / "dicom", root / "dexa", root / "ann"
    a = make_dicom(dicom / "a.dcm", patient_id="S1", rows=32, cols=32)
    b = make_dicom(dicom / "b.dcm", patient_id="S2", rows=32, cols=32)
    (dicom / "junk.dcm").write_bytes(b"not a dicom" * 20)
    dexa.mkdir()
    (dexa / "export.csv").write_text(HEAD + "S1,2021-03-01,0.6,-2.6\nS2,2021-03-02,0.8,-0.9\n" + BAD_ROW)
    ann.mkdir()
    (ann / "a.xml").write_bytes(voc(f"{a}.png", (4, 4, 20, 20)))
    (ann / "b.xml").write_text(f"<annotation><filename>{b}.png</filename>")  # cut short: fixed later
    (root / "b_box.xml").write_bytes(voc(f"{b}.png", (6, 5, 22, 24)))  # the fix, kept aside
    return {"dicom": dicom, "dexa": dexa, "ann": ann, "root": root}


def night(factory, settings: Settings, dicom: Path, dexa: Path, ann: Path) -> None:
    """One refresh's ingest stages, as flows/refresh.py walks the three folders."""
    refresh.ingest_dicom(factory, refresh.discover(dicom), KEY)
    refresh.ingest_dexa(factory, refresh.discover(dexa), KEY, settings)
    refresh.ingest_annotations(factory, refresh.discover(ann, (".xml",)))


def make(mistake: str, f: dict[str, Path], factory, settings: Settings) -> None:
    d, x, a = f["dicom"], f["dexa"], f["ann"]
    if mistake == "swapped":
        night(factory, settings, x, d, a)
    elif mistake == "same_folder_twice":
        night(factory, settings, d, d, d)
    elif mistake == "symlinked":
        link = f["root"] / "dicom_link"
        if not link.exists():
            link.symlink_to(d, target_is_directory=True)
        night(factory, settings, link, x, a)
    elif mistake == "moved":  # the archive reorganised: a film into a subfolder, the export renamed
        if (d / "b.dcm").exists():
            (d / "2021").mkdir(exist_ok=True)
            (d / "b.dcm").rename(d / "2021" / "b.dcm")
        if (x / "export.csv").exists():
            (x / "export.csv").rename(x / "DXA_2021.csv")
    elif mistake == "fixed_in_place":
        for csv in x.glob("*.csv"):
            csv.write_text(csv.read_text().replace("2021-13-45", "2021-03-03"))
        shutil.copyfile(f["root"] / "b_box.xml", a / "b.xml")
    elif mistake == "deleted":
        (d / "junk.dcm").unlink(missing_ok=True)
    else:
        night(factory, settings, d, x, a)
    # a night later: stamps written now are old enough to be trusted by the next night's stat
    when = time.time_ns() - 2 * 86_400 * 10**9
    for p in [*refresh.discover(d), *refresh.discover(x), *refresh.discover(a)]:
        os.utime(p, ns=(when, when))


def content(factory, root: Path) -> dict[str, set[tuple]]:
    """What a clean refresh of the folders as they are must hold: each record with the path of the file
    it was read from, the source rows of the files that exist, and the active quarantine."""

    def rel(p: str | None) -> str | None:
        return None if p is None else os.path.relpath(p, root)

    with factory() as s:
        images = {(i.sop_instance_uid, i.study_date, i.laterality, i.n_rows, rel(i.source_file.path))
                  for i in s.scalars(select(DicomImage))}
        exams = {(e.exam_date, e.t_score, e.source_row, e.patient.patient_key, rel(e.source_file.path))
                 for e in s.scalars(select(DexaExam))}
        boxes = {(b.sop_instance_uid, b.side, b.box_xmin, b.box_ymin, b.box_xmax, b.box_ymax,
                  rel(b.source_file.path if b.source_file else None)) for b in s.scalars(select(Annotation))}
        latest: dict[str, tuple] = {}  # a path's latest row (older contents' rows are its history)
        for sf in s.scalars(select(SourceFile).order_by(SourceFile.id)):
            if os.path.exists(sf.path):
                latest[sf.path] = (rel(sf.path), sf.kind, sf.sha256, sf.status)
        active = {(rel(q.source_path), q.stage, q.reason, q.source_row)
                  for q in s.scalars(select(Quarantine).where(Quarantine.resolved_at.is_(None)))}
    return {"images": images, "exams": exams, "boxes": boxes, "files": set(latest.values()), "active": active}


def fresh_factory(db: Path):
    engine = make_engine(f"sqlite:///{db}")
    create_schema(engine)
    return engine, make_session_factory(engine)


@fuzz(ci_examples=12)
@given(st.lists(st.sampled_from(MISTAKES), min_size=1, max_size=4))
def test_a_correct_night_after_any_mistakes_equals_a_clean_refresh(mistakes):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        f = cohort(root / "archive")
        settings = Settings(var_dir=root / "var")
        engine, factory = fresh_factory(root / "night.sqlite")
        for mistake in mistakes:
            make(mistake, f, factory, settings)
        night(factory, settings, f["dicom"], f["dexa"], f["ann"])  # the correct night
        got = content(factory, f["root"])
        engine.dispose()

        clean_engine, clean = fresh_factory(root / "clean.sqlite")
        night(clean, settings, f["dicom"], f["dexa"], f["ann"])
        want = content(clean, f["root"])
        clean_engine.dispose()

        for part in want:
            assert got[part] == want[part], (mistakes, part, got[part] ^ want[part])
        assert len(want["images"]) == 2 and len(want["boxes"]) >= 1  # the good files are in
        still_bad = {q[0] for q in want["active"]}
        assert still_bad <= {"dicom/junk.dcm", "dexa/export.csv", "dexa/DXA_2021.csv", "ann/b.xml"}, still_bad
