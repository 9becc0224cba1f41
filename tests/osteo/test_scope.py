"""Scope at ingest: only hip radiographs become images; the rest is recorded out of scope with a plain
reason, apart from the quarantine; a radiograph whose body part cannot be told is quarantined."""

from __future__ import annotations

import json
from dataclasses import asdict

import pydicom
import pytest
from sqlalchemy import func, select

from db import make_session_factory
from db.headers import HeaderRead, OutOfScopeHeader
from db.models import Base, DicomImage, OutOfScope, Quarantine, SourceFile
from osteo.etl.dicom_headers import read_headers, read_one
from osteo.etl.errors import InputError
from osteo.etl.scope import ScopeRules, decide_scope
from osteo.ingest import refresh
from osteo.ingest.report import ExportCounts, PairCounts, RefreshReport, StageCounts, ThisRun
from tests.dicom_factory import make_dicom

KEY = b"test-key"
RULES = ScopeRules()
SECRET = "DR WANG ONLY 0912-345-678"  # free text that must never leave the reader


# ---------------------------------------------------------------- the pure decision

@pytest.mark.parametrize("modality,body_part,descriptions,expected", [
    ("DX", "HIP", (), None),
    ("CR", "PELVIS", (), None),
    (" dx ", "femur ", (), None),  # coded values compared stripped, in upper case
    ("CT", "HIP", ("CT HIP",), "modality CT"),  # the modality first: a hip CT is out of scope
    ("MR", None, (), "modality MR"),
    ("", "HIP", (), "modality absent"),
    ("CR", "CHEST", (), "body part CHEST"),
    ("DX", "KNEE", ("HIP AP",), "body part KNEE"),  # BodyPartExamined first: a description never overrides it
    ("DX", None, ("X-ray Hip AP", None), None),  # no body part: the descriptions' keywords decide
    ("DX", "", ("BILATERAL HIPS",), None),
    ("CR", None, (None, "Pelvis AP"), None),
    ("DX", None, ("FEMUR PROXIMAL LT",), None),
    ("CR", None, ("右髖關節正面",), None),
    ("DX", None, ("骨盆正面",), None),
    ("CR", None, ("股骨近端",), None),
])
def test_decision_by_rule(modality, body_part, descriptions, expected):
    assert decide_scope(modality, body_part, descriptions, RULES) == expected


@pytest.mark.parametrize("descriptions", [(), (None, None), ("外院影像", SECRET), ("CHEST PA",)])
def test_a_body_part_that_cannot_be_told_is_bad_input_unless_accepted(descriptions):
    with pytest.raises(InputError) as err:
        decide_scope("CR", None, descriptions, RULES)
    assert err.value.reason == "unknown_body_part"
    assert not any(d and d in str(err.value) for d in descriptions)  # the detail never quotes the text
    assert decide_scope("CR", None, descriptions, ScopeRules(accept_unknown_body_part=True)) is None


def test_configured_local_codes_modalities_and_keywords():
    local = ScopeRules(body_parts=("HIP", "髖關節", "hipjoint"))
    assert decide_scope("DX", "髖關節", (), local) is None and decide_scope("DX", "HIPJOINT", (), local) is None
    assert decide_scope("DX", "髖關節", (), RULES) == "body part 髖關節"
    assert decide_scope("DX", "PELVIS", (), local) == "body part PELVIS"  # the list replaces the default
    assert decide_scope("CT", "HIP", (), ScopeRules(modalities=("CR", "DX", "ct"))) is None
    coxa = ScopeRules(keywords=("Coxa",))
    assert decide_scope("CR", None, ("COXA VARA",), coxa) is None
    with pytest.raises(InputError):
        decide_scope("CR", None, ("HIP AP",), coxa)
    with pytest.raises(TypeError):
        ScopeRules(modalities="CR")  # a bare string would be taken letter by letter


def test_settings_build_the_rules(tmp_path):
    from osteo.settings import settings_from

    names = ("MODALITIES", "BODY_PARTS", "KEYWORDS", "ACCEPT_UNKNOWN_BODY_PART")
    with settings_from({f"OSTEO_SCOPE_{n}": None for n in names}) as s:
        assert s.scope_rules() == ScopeRules()
    env = {"OSTEO_SCOPE_MODALITIES": "CR, DX,ct", "OSTEO_SCOPE_BODY_PARTS": '["HIP", "髖關節"]',
           "OSTEO_SCOPE_KEYWORDS": "hip,髖", "OSTEO_SCOPE_ACCEPT_UNKNOWN_BODY_PART": "true"}
    with settings_from(env) as s:
        assert s.scope_rules() == ScopeRules(("CR", "DX", "CT"), ("HIP", "髖關節"), ("hip", "髖"), True)


# ---------------------------------------------------------------- the header reader

def _read(path, rules=RULES) -> HeaderRead:
    return read_one(str(path), KEY, rules)


def test_the_reader_decides_scope_before_laterality(tmp_path):
    make_dicom(tmp_path / "mr.dcm", modality="MR", drop=("ImageLaterality",), study_description=SECRET)
    make_dicom(tmp_path / "chest.dcm", modality="CR", body_part="CHEST", drop=("ImageLaterality",))
    mr, chest = _read(tmp_path / "mr.dcm"), _read(tmp_path / "chest.dcm")
    # the SOP UID (not a patient identifier) closes boxes drawn for the image
    assert mr.out_of_scope == OutOfScopeHeader(reason="modality MR", modality="MR", body_part="HIP",
                                               sop_instance_uid=pydicom.dcmread(tmp_path / "mr.dcm").SOPInstanceUID)
    assert chest.out_of_scope == OutOfScopeHeader(
        reason="body part CHEST", modality="CR", body_part="CHEST",
        sop_instance_uid=pydicom.dcmread(tmp_path / "chest.dcm").SOPInstanceUID)
    for r in (mr, chest):
        assert r.error is None and r.record is None and len(r.sha256) == 64
    # no identifier and no free text in what comes back from the worker
    assert not any(s in json.dumps(asdict(mr), ensure_ascii=False) for s in ("A1234567", "CHEN", SECRET, "ACC0001"))
    # a hip radiograph without laterality is still bad input
    make_dicom(tmp_path / "hip.dcm", drop=("ImageLaterality",))
    assert (_read(tmp_path / "hip.dcm").error or ("",))[0] == "missing_tag:ImageLaterality"


def test_the_reader_uses_descriptions_only_without_a_body_part(tmp_path):
    make_dicom(tmp_path / "hip.dcm", modality="CR", body_part=None, series_description="HIP LT AP",
               study_description=SECRET)
    make_dicom(tmp_path / "zh.dcm", body_part=None, series_description="右髖關節正面", study_description="外院")
    make_dicom(tmp_path / "who.dcm", modality="CR", body_part=None, study_description="外院影像")
    hip = _read(tmp_path / "hip.dcm")
    assert hip.record is not None and hip.record.body_part is None and hip.record.modality == "CR"
    assert _read(tmp_path / "zh.dcm").record is not None
    assert SECRET not in json.dumps(asdict(hip), default=str, ensure_ascii=False)
    assert (_read(tmp_path / "who.dcm").error or ("",))[0] == "unknown_body_part"
    assert _read(tmp_path / "who.dcm", ScopeRules(accept_unknown_body_part=True)).record is not None


def test_worker_processes_get_the_rules(tmp_path):
    for i in range(70):
        make_dicom(tmp_path / f"{i}.dcm", patient_id=f"X{i}", rows=8, cols=8, modality="CT")
    paths = refresh.discover(tmp_path)
    assert all(r.out_of_scope is not None for r in read_headers(paths, KEY, workers=2))
    with_ct = ScopeRules(modalities=("CR", "DX", "CT"))
    assert all(r.record is not None for r in read_headers(paths, KEY, workers=2, scope=with_ct))


# ---------------------------------------------------------------- ingest: recorded once, counted apart

@pytest.fixture
def factory(engine):
    return make_session_factory(engine)


def _mixed_folder(root) -> None:
    make_dicom(root / "hip.dcm")
    make_dicom(root / "chest.dcm", modality="CR", body_part="CHEST", drop=("ImageLaterality",),
               study_description=SECRET)
    make_dicom(root / "knee.dcm", body_part="KNEE")
    make_dicom(root / "ct.dcm", modality="CT")
    make_dicom(root / "mr.dcm", modality="MR", drop=("ImageLaterality",))
    make_dicom(root / "unknown.dcm", modality="CR", body_part=None, study_description="OUTSIDE FILM")


def test_ingest_records_out_of_scope_files_once_apart_from_the_quarantine(factory, tmp_path):
    _mixed_folder(tmp_path / "in")
    paths = refresh.discover(tmp_path / "in")
    counts = refresh.ingest_dicom(factory, paths, KEY, scope=RULES)
    assert (counts.added, counts.out_of_scope, counts.quarantined) == (1, 4, 1)
    with factory() as s:
        rows = s.execute(select(SourceFile.path, OutOfScope.reason, OutOfScope.modality, OutOfScope.body_part)
                         .join(OutOfScope, OutOfScope.source_file_id == SourceFile.id)).all()
        status = dict(s.execute(select(SourceFile.path, SourceFile.status)).all())
        quarantined = s.execute(select(Quarantine.source_path, Quarantine.reason)).all()
        assert s.scalar(select(func.count(DicomImage.id))) == 1
        dump = " ".join(str(tuple(r)) for t in Base.metadata.sorted_tables for r in s.execute(select(t)))
    by_name = {p.rsplit("/", 1)[1]: (reason, mod, part) for p, reason, mod, part in rows}
    assert by_name == {"chest.dcm": ("body part CHEST", "CR", "CHEST"), "knee.dcm": ("body part KNEE", "DX", "KNEE"),
                       "ct.dcm": ("modality CT", "CT", "HIP"), "mr.dcm": ("modality MR", "MR", "HIP")}
    assert {p.rsplit("/", 1)[1]: v for p, v in status.items()} == {
        "hip.dcm": "ingested", "unknown.dcm": "quarantined", **dict.fromkeys(by_name, "out_of_scope")}
    assert [(p.rsplit("/", 1)[1], r) for p, r in quarantined] == [("unknown.dcm", "unknown_body_part")]
    assert SECRET not in dump and "OUTSIDE FILM" not in dump and "A1234567" not in dump
    # a rerun adds nothing; a copy under another path is a duplicate, not a second record
    again = refresh.ingest_dicom(factory, paths, KEY, scope=RULES)
    assert (again.already_known, again.out_of_scope, again.quarantined, again.added) == (6, 0, 0, 0)
    (tmp_path / "in2").mkdir()
    (tmp_path / "in2" / "chest-copy.dcm").write_bytes((tmp_path / "in" / "chest.dcm").read_bytes())
    copy = refresh.ingest_dicom(factory, refresh.discover(tmp_path / "in2"), KEY, scope=RULES)
    assert (copy.duplicates, copy.out_of_scope) == (1, 0)
    totals = refresh.summarise(factory)
    assert totals.out_of_scope == 4 and totals.images == 1
    assert totals.out_of_scope_by_reason == {"body part CHEST": 1, "body part KNEE": 1, "modality CT": 1,
                                             "modality MR": 1}
    assert totals.quarantined_by_reason.get("unknown_body_part") == 1


def test_the_report_shows_out_of_scope_apart_from_quarantined(factory, tmp_path):
    _mixed_folder(tmp_path / "in")
    dicom = refresh.ingest_dicom(factory, refresh.discover(tmp_path / "in"), KEY, scope=RULES)
    dicom = dicom + StageCounts(files=1)  # batches add up, out_of_scope included
    this_run = ThisRun(7, dicom, StageCounts(), StageCounts(), PairCounts(), ExportCounts())
    report = RefreshReport(1, this_run, refresh.summarise(factory))
    run = report.to_dict()["this_run"]
    assert (run["out_of_scope"], run["quarantined"], run["files_seen"]) == (4, 1, 7)
    assert report.to_dict()["totals"]["out_of_scope_by_reason"]["modality MR"] == 1
    lines = report.summary().splitlines()
    assert [ln.split()[:4] for ln in lines if "out of scope" in ln] == [["out", "of", "scope", "4"]] * 2
    assert "body part CHEST 1" in [ln for ln in lines if "out of scope" in ln][-1]  # the totals' line
    table = {r["count"]: r for r in report.table()}
    assert table["out_of_scope"]["this_run"] == 4 and table["out_of_scope"]["totals"] == 4
    assert table["out of scope: modality CT"]["totals"] == 1


# ---------------------------------------------------------------- the synthetic cohort's files out of scope

def test_only_the_scope_keeps_the_cohorts_other_files_from_export(tmp_path):
    """Under rules that take everything, the cohort's chest, knee, CT, MR and unknown files pair and
    export: the truth's expected_scope is what keeps them out, not a missing exam or box."""
    import csv

    from db import create_schema, make_engine
    from db.models import Export
    from osteo.settings import Settings
    from osteo.synth import generate_cohort

    cohort = tmp_path / "cohort"
    generate_cohort(cohort, patients=6, seed=5, workers=1)
    others = {r["sop_instance_uid"] for r in csv.DictReader(open(cohort / "truth.csv", encoding="utf-8"))
              if r["expected_scope"] != "in_scope"}
    settings = Settings(home=tmp_path)
    engine = make_engine(f"sqlite:///{tmp_path / 'all.sqlite'}")
    create_schema(engine)
    factory = make_session_factory(engine)
    everything = ScopeRules(("CR", "DX", "CT", "MR"), ("HIP", "PELVIS", "CHEST", "KNEE"),
                            accept_unknown_body_part=True)
    assert refresh.ingest_dicom(factory, refresh.discover(cohort / "dicom"), KEY, scope=everything).out_of_scope == 0
    refresh.ingest_dexa(factory, refresh.discover(cohort / "dexa", (".csv",)), KEY, settings)
    refresh.ingest_annotations(factory, refresh.discover(cohort / "annotations", (".xml",)))
    refresh.pair_and_label(factory, settings)
    refresh.export_images(factory, refresh.plan_exports(factory, settings), settings)
    with factory() as s:
        status = dict(s.execute(select(DicomImage.sop_instance_uid, Export.status)
                                .join(Export, Export.image_id == DicomImage.id)).all())
    engine.dispose()
    assert len(others) == 5 and {status.get(uid) for uid in others} == {"exported"}
