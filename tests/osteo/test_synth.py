"""The synthetic cohort generator: determinism, valid DICOM, DEXA layouts, truth rules."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.errors import InvalidDicomError
from pydicom.uid import JPEG2000Lossless, RLELossless

from osteo.synth import generate_cohort

PATIENTS = 30
SEED = 3
WINDOW = 183


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """The cohort with the truth of its hip radiographs (the files out of scope: `all_truth`)."""
    out = tmp_path_factory.mktemp("synth") / "cohort"
    seen = []
    summary = generate_cohort(out, patients=PATIENTS, seed=SEED, progress=lambda d, t: seen.append((d, t)))
    truth = list(csv.DictReader(open(out / "truth.csv", encoding="utf-8")))
    return out, summary, [r for r in truth if r["expected_scope"] == "in_scope"], seen


@pytest.fixture(scope="module")
def all_truth(cohort):
    return list(csv.DictReader(open(cohort[0] / "truth.csv", encoding="utf-8")))


def _digest_tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_and_independent_of_workers(tmp_path):
    a = generate_cohort(tmp_path / "a", patients=8, seed=11, workers=1)
    b = generate_cohort(tmp_path / "b", patients=8, seed=11, workers=2)
    a.pop("out"), b.pop("out")
    assert a == b
    assert _digest_tree(tmp_path / "a") == _digest_tree(tmp_path / "b")
    c = generate_cohort(tmp_path / "c", patients=8, seed=12, workers=1)
    assert (tmp_path / "a" / "truth.csv").read_bytes() != (tmp_path / "c" / "truth.csv").read_bytes()
    assert c["images"] >= 8


def test_summary_and_progress(cohort, all_truth):
    out, summary, truth, seen = cohort
    assert (summary["patients"], summary["images"]) == (PATIENTS, len(truth))
    assert (summary["junk_files"], summary["malformed_rows"], summary["dexa_files"]) == (5, 6, 4)
    assert summary["annotated"] == sum(int(r["annotated"]) for r in all_truth)
    scope = Counter(r["expected_scope"] for r in all_truth)
    assert summary["unknown_body_part"] == scope.pop("unknown_body_part") and scope.pop("in_scope") == len(truth)
    assert summary["out_of_scope"] == sum(scope.values()) and summary["out_of_scope_by_reason"] == dict(scope)
    assert summary["paired"] == sum(int(r["expected_pair"]) for r in truth)
    assert summary["expected_export"] == sum(int(r["expected_export"]) for r in truth)
    assert summary["pelvis"] == sum(r["view"] == "pelvis" for r in truth) >= 2
    assert summary["expected_crops"] == sum(int(r["crops"]) for r in truth) > summary["expected_export"]
    assert summary["test_images"] == sum(r["study_date"].startswith("2022") and "L" in json.loads(r["boxes"])
                                         for r in truth if r["expected_export"] == "1")
    assert summary["excluded_metal"] >= 1 and summary["excluded_blur"] >= 1
    assert seen[-1][0] == seen[-1][1] and len(seen) == seen[-1][1]


REQUIRED = """SOPClassUID SOPInstanceUID StudyInstanceUID SeriesInstanceUID PatientID PatientName PatientBirthDate
PatientSex AccessionNumber StudyDescription StudyDate SeriesDate ContentDate Modality BodyPartExamined ImageLaterality
ViewPosition PixelSpacing Rows Columns SamplesPerPixel PhotometricInterpretation BitsAllocated BitsStored HighBit
PixelRepresentation PatientOrientation""".split()
SOP_CLASS = {"DX": "1.2.840.10008.5.1.4.1.1.1.1", "CR": "1.2.840.10008.5.1.4.1.1.1"}


def test_every_image_reads_and_decodes(cohort):
    out, _, truth, _ = cohort
    syntaxes, photometrics, bits, no_ext = set(), set(), set(), 0  # the same for hip and pelvis views
    for row in truth:
        path = out / row["file"]
        assert re.fullmatch(r"dicom/S\d{5}/IM\d{4}(\.dcm)?", row["file"])
        no_ext += not path.name.endswith(".dcm")
        ds = pydicom.dcmread(path)
        for tag in REQUIRED:
            assert tag in ds and ds[tag].value not in (None, ""), (row["file"], tag)
        assert ds.SOPInstanceUID == row["sop_instance_uid"] == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.SOPClassUID == SOP_CLASS[ds.Modality] == ds.file_meta.MediaStorageSOPClassUID
        assert ds.StudyInstanceUID == row["study_instance_uid"]
        pelvis = row["view"] == "pelvis"
        assert ds.ImageLaterality == row["laterality"] and ds.ViewPosition == "AP"
        assert ds.BodyPartExamined == ("PELVIS" if pelvis else "HIP") and "\\".join(ds.PatientOrientation) == (
            row["orientation"]) in (("L\\F", "R\\F") if pelvis else ("L\\F",))
        assert "Laterality" not in ds  # Type 2C: not beside ImageLaterality
        if pelvis:
            assert ds.StudyDescription == ds.SeriesDescription == "PELVIS AP"
        assert ds.PatientID == row["patient_id"] and re.fullmatch(r"[A-Z]\d{7}", ds.PatientID)
        assert re.fullmatch(r"[A-Z]+\^[A-Z]+ [A-Z]+", str(ds.PatientName))
        assert dt.datetime.strptime(ds.StudyDate, "%Y%m%d").date().isoformat() == row["study_date"]
        assert 2018 <= int(ds.StudyDate[:4]) <= 2022
        assert ds.BitsAllocated == 16 and ds.BitsStored in (10, 12, 16) and ds.HighBit == ds.BitsStored - 1
        assert ds.PixelRepresentation == 0 and ds.SamplesPerPixel == 1
        if ds.Modality == "DX":  # for presentation: identity rescale, a VOI window, the presentation LUT shape
            assert (ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType) == (1, 0, "US") and "WindowCenter" in ds
            assert ds.PresentationIntentType == "FOR PRESENTATION" and ds.PresentationLUTShape == (
                "INVERSE" if ds.PhotometricInterpretation == "MONOCHROME1" else "IDENTITY")
            assert ds.AnatomicRegionSequence[0].CodeMeaning == ("Pelvis" if pelvis else "Hip joint")
        arr = ds.pixel_array  # the long side 560-720 px; a hip field portrait, a pelvis any shape
        assert arr.shape == (ds.Rows, ds.Columns) and 560 <= max(ds.Rows, ds.Columns) <= 720
        assert min(ds.Rows, ds.Columns) >= 400 and (pelvis or ds.Rows > ds.Columns)
        assert int(arr.max()) <= 2**ds.BitsStored - 1
        syntaxes.add(str(ds.file_meta.TransferSyntaxUID))
        photometrics.add(ds.PhotometricInterpretation)
        bits.add(int(ds.BitsStored))
    assert {RLELossless, JPEG2000Lossless} <= syntaxes and photometrics == {"MONOCHROME1", "MONOCHROME2"}
    assert bits == {10, 12, 16} and no_ext >= 1 and {r["modality"] for r in truth} == {"CR", "DX"}


def _display_fraction(ds) -> np.ndarray:
    arr = ds.pixel_array.astype(np.float64) / (2**ds.BitsStored - 1)
    return 1.0 - arr if ds.PhotometricInterpretation == "MONOCHROME1" else arr


def test_stored_value_contract(cohort):
    out, _, truth, _ = cohort
    for row in truth:
        frac = _display_fraction(pydicom.dcmread(out / row["file"]))
        metal = frac >= 0.97
        anat = frac[~metal]
        assert anat.min() >= 0.05 - 1e-3 and anat.max() <= 0.80 + 1e-3
        assert metal.any() == (row["expected_exclusion"] == "metal")
        if row["expected_exclusion"] == "metal":  # the implant overlaps the neck box
            x0, y0, x1, y1 = (int(row[k]) for k in ("box_xmin", "box_ymin", "box_xmax", "box_ymax"))
            assert metal[y0:y1, x0:x1].mean() > 0.05


def test_export_measures_agree_with_truth(cohort):
    from osteo.etl import imaging

    out, _, truth, _ = cohort
    for row in truth:
        dm = imaging.prepare_display(pydicom.dcmread(out / row["file"]))
        for x0, y0, x1, y1 in json.loads(row["boxes"]).values():
            sl = (slice(y0, y1), slice(x0, x1))
            q = imaging.measure_quality(dm.unit(sl), dm.display(sl))
            cls = row["expected_exclusion"]
            if cls == "metal":
                assert q["metal_fraction"] > 0.05
            else:
                assert q["metal_fraction"] == 0.0
                assert (q["blur_score"] < 3.0) if cls == "blur" else (q["blur_score"] > 8.0), (row, q)  # export: 6


def test_junk_files(cohort, all_truth):
    out = cohort[0]
    in_truth = {r["file"] for r in all_truth}
    all_files = [p.relative_to(out).as_posix() for p in (out / "dicom").rglob("*") if p.is_file()]
    junk = sorted(set(all_files) - in_truth)
    assert len(junk) == 5
    assert "dicom/README.txt" in junk and "dicom/Thumbs.db" in junk
    kinds = []
    for rel in junk:
        try:
            ds = pydicom.dcmread(out / rel)
        except (InvalidDicomError, EOFError, OSError):
            kinds.append("not_dicom")
            continue
        if "PixelData" not in ds:
            kinds.append("truncated")
            assert (out / rel).stat().st_size < 1000 and "PatientID" not in ds
        elif "PatientID" not in ds:
            kinds.append("no_patient_id")
        elif "StudyDate" not in ds:
            kinds.append("no_study_date")
            ds.pixel_array  # noqa: B018 - a real image, only the date is missing
        else:
            kinds.append("other")
    assert sorted(kinds) == ["no_patient_id", "no_study_date", "not_dicom", "not_dicom", "truncated"]


# ---------------------------------------------------------------- independent DEXA reading

SYN = {"patient": {"patientid", "chartno", "病歷號"}, "date": {"examdate", "studydate", "檢查日期"},
       "bmd": {"neckbmd", "股骨頸bmd"}, "t": {"tscore", "neckt", "t值"}}


def _norm(h: str) -> str:
    return re.sub(r"[\s_\-]", "", h.strip().lstrip("\ufeff")).lower()


DATE_STYLES = [(r"\d{4}-\d{2}-\d{2}", "%Y-%m-%d", "iso"), (r"\d{4}/\d{2}/\d{2}", "%Y/%m/%d", "slash"),
               (r"\d{8}", "%Y%m%d", "compact")]


def _parse_date(s: str) -> tuple[dt.date, str] | None:
    s = s.strip()
    try:
        for pattern, fmt, style in DATE_STYLES:
            if re.fullmatch(pattern, s):
                return dt.datetime.strptime(s, fmt).date(), style
        m = re.fullmatch(r"(\d{2,3})/(\d{1,2})/(\d{1,2})", s)
        return (dt.date(int(m[1]) + 1911, int(m[2]), int(m[3])), "roc") if m else None
    except ValueError:
        return None


def read_dexa(folder: Path):
    exams, bad, encodings, formats = [], 0, set(), set()
    for path in sorted(folder.glob("*.csv")):
        raw = path.read_bytes()
        try:
            enc = "utf-8-sig" if raw.startswith(b"\xef\xbb\xbf") else "utf-8"
            text = raw.decode(enc)
        except UnicodeDecodeError:
            text, enc = raw.decode("big5"), "big5"
        encodings.add(enc)
        rows = list(csv.reader(text.splitlines()))
        header = [_norm(h) for h in rows[0]]
        col = {k: next(i for i, h in enumerate(header) if h in names) for k, names in SYN.items()}
        for r in rows[1:]:
            if len(r) != len(header):
                bad += 1
                continue
            pid = r[col["patient"]].strip()
            d = _parse_date(r[col["date"]])
            b, t = r[col["bmd"]].strip(), r[col["t"]].strip()
            try:
                tv = float(t) if t else (float(b) - 0.858) / 0.120
            except ValueError:
                tv = None
            if not pid or d is None or tv is None or abs(tv) > 10:
                bad += 1
                continue
            formats.add(d[1])
            exams.append((pid, d[0], tv, t))
    return exams, bad, encodings, formats


def test_dexa_layouts_and_truth_pairing(cohort):
    out, summary, truth, _ = cohort
    exams, bad, encodings, formats = read_dexa(out / "dexa")
    assert encodings == {"utf-8", "utf-8-sig", "big5"}
    assert formats == {"iso", "slash", "compact", "roc"}
    assert bad == summary["malformed_rows"] == 6
    # the same (patient, date) never carries two different values
    seen: dict = {}
    for pid, d, tv, _ in exams:
        assert seen.setdefault((pid, d), tv) == tv
    by_pid: dict = {}
    for pid, d, tv, t in set(exams):
        by_pid.setdefault(pid, []).append((d, tv, t))
    labels = []
    for row in truth:
        day = dt.date.fromisoformat(row["study_date"])
        cands = [(abs((d - day).days), d, tv, t) for d, tv, t in by_pid.get(row["patient_id"], [])]
        cands = sorted(c for c in cands if c[0] < WINDOW)
        if not cands:
            assert row["expected_pair"] == "0" and row["expected_label"] == "" and row["t_score"] == ""
        else:
            _, _, tv, _ = cands[0]
            assert row["expected_pair"] == "1"
            assert abs(float(row["t_score"]) - tv) < 1e-3
            assert int(row["expected_label"]) == int(tv <= -2.5)
            labels.append(int(tv <= -2.5))
            if len(row["t_score"].split(".")[-1]) > 1:  # derived from BMD: clear of the threshold
                assert abs(tv + 2.5) >= 0.01
        export = row["expected_pair"] == "1" and row["annotated"] == "1" and row["expected_exclusion"] == "none"
        assert row["expected_export"] == str(int(export))
    assert 0 < sum(labels) < len(labels)


def test_edge_cases_present(cohort):
    out, _, truth, _ = cohort
    exams, *_ = read_dexa(out / "dexa")
    by_pid: dict = {}
    for pid, d, tv, _ in set(exams):
        by_pid.setdefault(pid, []).append((d, tv))
    found = {"183_unpaired": False, "182_paired": False, "tie_earlier": False, "other_patient_same_day": False}
    exam_days = {(d, pid) for pid, d, _, _ in exams}
    for row in truth:
        day = dt.date.fromisoformat(row["study_date"])
        gaps = sorted(((d - day).days, tv) for d, tv in by_pid.get(row["patient_id"], []))
        absg = [abs(g) for g, _ in gaps]
        if 183 in absg and min(absg) == 183 and row["expected_pair"] == "0":
            found["183_unpaired"] = True
        if min(absg, default=999) == 182 and row["expected_pair"] == "1":
            found["182_paired"] = True
        for g, tv in gaps:
            if g < 0 and any(g2 == -g for g2, _ in gaps) and min(absg) == -g:
                assert abs(float(row["t_score"]) - tv) < 1e-3  # the earlier exam wins
                found["tie_earlier"] = True
        if any(d == day and pid != row["patient_id"] for d, pid in exam_days):
            found["other_patient_same_day"] = True
    assert all(found.values()), found


def test_annotations(cohort):
    out, summary, truth, _ = cohort
    files = {p.stem: p for p in (out / "annotations").glob("*.xml")}
    malformed = 0
    for row in truth:
        sop = row["sop_instance_uid"]
        if row["annotated"] == "0":
            if sop in files:
                with pytest.raises(ET.ParseError):
                    ET.parse(files[sop])
                malformed += 1
            continue
        root = ET.parse(files[sop]).getroot()
        assert root.findtext("filename") == f"{sop}.png"
        ds = pydicom.dcmread(out / row["file"], stop_before_pixels=True)
        assert [root.findtext(f"size/{k}") for k in ("width", "height", "depth")] == [str(ds.Columns), str(ds.Rows),
                                                                                     "1"]
        objs = root.findall("object")
        assert [o.findtext("name") for o in objs] == ["femoral_neck"] * (2 if row["view"] == "pelvis" else 1)
        vboxes = sorted([int(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")] for o in objs)
        boxes, true_boxes = json.loads(row["boxes"]), json.loads(row["true_boxes"])
        assert vboxes == sorted(boxes.values()) and set(boxes) == set(true_boxes) == (
            {"L", "R"} if row["view"] == "pelvis" else {row["laterality"]})
        if row["view"] == "hip":
            assert boxes[row["laterality"]] == [int(row[k]) for k in ("box_xmin", "box_ymin", "box_xmax", "box_ymax")]
        else:  # standard orientation: the patient's left hip on the image's right half; mirrored: the other way
            assert row["box_xmin"] == "" and row["laterality"] == "B" and row["expected_exclusion"] == "none"
            left_side = "R" if row["orientation"] == "L\\F" else "L"
            assert boxes[left_side][2] < ds.Columns // 2 <= boxes["RL".replace(left_side, "")][0]
        for side, box in boxes.items():
            tb = true_boxes[side]  # the tight box: inside the image with a few px to spare
            assert 0 <= box[0] < box[2] < ds.Columns and 0 <= box[1] < box[3] < ds.Rows
            assert 4 <= tb[0] < tb[2] <= ds.Columns - 5 and 4 <= tb[1] < tb[3] <= ds.Rows - 5
            assert max(abs(a - b) for a, b in zip(box, tb)) <= 3
            assert 40 <= box[2] - box[0] <= 200 and 40 <= box[3] - box[1] <= 200
    assert malformed == summary["malformed_xml"] == 2
    assert len(files) == summary["annotated"] + malformed  # the boxes of the files out of scope included


def test_years_and_lateralities(cohort):
    _, _, truth, _ = cohort
    for year in range(2018, 2023):
        lats = {r["laterality"] for r in truth if r["study_date"].startswith(str(year)) and r["view"] == "hip"}
        assert lats == {"L", "R"}, year
    share_2022 = sum(r["study_date"].startswith("2022") for r in truth) / len(truth)
    assert share_2022 >= 0.2
    per_patient: dict = {}
    for r in truth:
        per_patient.setdefault(r["patient_id"], []).append(r)
    assert max(len(v) for v in per_patient.values()) <= 3
    assert {r["expected_exclusion"] for r in truth} == {"none", "metal", "blur"}
    assert any(abs(float(r["rotation_deg"])) >= 20 for r in truth)
    assert max(abs(float(r["rotation_deg"])) for r in truth if abs(float(r["rotation_deg"])) < 20) > 10


def test_pelvis_views_and_position_spread(cohort):
    _, _, truth, _ = cohort
    pelvis = [r for r in truth if r["view"] == "pelvis"]
    assert all(r["view"] == "hip" for r in truth[:5])  # patients 0..4 carry the pairing edge cases
    studies = Counter(r["study_instance_uid"] for r in truth)
    assert all(studies[r["study_instance_uid"]] == 1 and r["expected_exclusion"] == "none" for r in pelvis)
    assert {r["orientation"] for r in pelvis} == {"L\\F", "R\\F"}
    assert all(int(r["crops"]) == int(r["expected_export"]) * (2 if r["view"] == "pelvis" else 1) for r in truth)
    # the femur's position and size vary widely (hip views: box centres and widths in px)
    b = np.array([json.loads(r["true_boxes"])[r["laterality"]] for r in truth if r["view"] == "hip"])
    cx, cy, w = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0]
    assert np.std(cx) > 30 and np.std(cy) > 30 and w.max() / w.min() > 1.5


# ---------------------------------------------------------------- files that are not hip radiographs
CID_4031 = {"CHEST", "KNEE", "HIP", "PELVIS", "FEMUR"}  # the BodyPartExamined codes the cohort uses
SOP_CLASS_ALL = {**SOP_CLASS, "CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4"}


def test_files_out_of_scope_would_pair_and_are_told_apart_by_the_reader(cohort, all_truth):
    from osteo.etl.dicom_headers import read_one

    out, others = cohort[0], [r for r in all_truth if r["expected_scope"] != "in_scope"]
    assert {r["expected_scope"] for r in others} == {"body part CHEST", "body part KNEE", "modality CT",
                                                     "modality MR", "unknown_body_part"}
    exams, *_ = read_dexa(out / "dexa")
    for row in others:
        assert (row["expected_pair"], row["expected_export"], row["annotated"]) == ("0", "0", "1")
        ds = pydicom.dcmread(out / row["file"])
        assert ds.SOPClassUID == SOP_CLASS_ALL[ds.Modality] == ds.file_meta.MediaStorageSOPClassUID
        assert ds.Modality == row["modality"] and ds.SOPInstanceUID == row["sop_instance_uid"]
        assert ds.ImageLaterality == row["laterality"] in ("L", "R") and ds.PatientID == row["patient_id"]
        # the radiograph of unknown body part has an empty BodyPartExamined (Type 2 in CR Series)
        assert (ds.BodyPartExamined or "HIP") in CID_4031 and ds.pixel_array.shape == (ds.Rows, ds.Columns)
        # a DEXA exam of the patient in the window, and a femoral-neck box: only the scope keeps it out
        day = dt.date.fromisoformat(row["study_date"])
        assert any(pid == row["patient_id"] and abs((d - day).days) < WINDOW for pid, d, *_ in exams)
        box, root = [int(row[k]) for k in ("box_xmin", "box_ymin", "box_xmax", "box_ymax")], ET.parse(
            out / "annotations" / f"{row['sop_instance_uid']}.xml").getroot()
        assert [int(root.findtext(f"object/bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")] == box
        assert 0 <= box[0] < box[2] < ds.Columns and 0 <= box[1] < box[3] < ds.Rows
        r = read_one(str(out / row["file"]), b"key")  # the reader's decision under the default rules is the truth's
        assert (r.out_of_scope.reason if r.out_of_scope else (r.error or ("",))[0]) == row["expected_scope"]
