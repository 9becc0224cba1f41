"""VOC boxes: <size> scaled back to the DICOM's pixel grid, boxes outside or empty quarantined, files
named otherwise matched through an annotation map, a box whose image is unknown waiting for it."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from db import make_session_factory
from db.models import Annotation, Quarantine, SourceFile
from osteo.errors import UserError
from osteo.etl.annotations import load_annotation_map, parse_voc, scale_box, to_pixel_box, voc_xml
from osteo.etl.errors import InputError
from osteo.ingest import refresh
from tests.dicom_factory import make_dicom

KEY = b"test-key"


def voc(filename: str, box=(10, 5, 40, 30), size: tuple[int, int] | None = None) -> bytes:
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>1</depth></size>" if size else ""
    x0, y0, x1, y1 = box
    return (f"<annotation><filename>{filename}</filename>{size_xml}<object><name>femoral_neck</name><bndbox>"
            f"<xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
            "</annotation>").encode()


def test_parse_voc_reads_size_and_the_box_as_drawn():
    v = parse_voc(voc("1.2.3.png", (10.4, 5, 40, 30.6), size=(256, 200)), "whatever.xml")
    assert (v.sop_instance_uid, v.image_path, v.size, v.box) == ("1.2.3", None, (256, 200), (10.4, 5.0, 40.0, 30.6))
    assert parse_voc(voc("1.2.3.png"), "x.xml").size is None  # no <size>: drawn on the DICOM's grid
    zero = voc("1.2.3.png").replace(b"<annotation>", b"<annotation><size><width>0</width><height>0</height></size>")
    assert parse_voc(zero, "x.xml").size is None  # some tools write 0 when they do not know
    assert parse_voc(voc(r"C:\labelImg\1.2.3.png"), "x.xml").sop_instance_uid == "1.2.3"


@pytest.mark.parametrize("size", [("-5", "10"), ("abc", "10"), ("10.5", "10")])
def test_a_bad_size_is_quarantined(size):
    data = voc("1.2.3.png").replace(
        b"<annotation>", f"<annotation><size><width>{size[0]}</width><height>{size[1]}</height></size>".encode())
    with pytest.raises(InputError) as err:
        parse_voc(data, "x.xml")
    assert err.value.reason == "bad_size"


def test_the_box_is_scaled_by_columns_over_width_and_rows_over_height():
    # drawn on a 256 x 200 render of a 512 x 600 image: x doubled, y tripled
    assert to_pixel_box((10, 5, 40, 30), (256, 200), 512, 600) == (20, 15, 80, 90)
    assert to_pixel_box((10.5, 5, 40, 30), (512, 600), 512, 600) == (11, 5, 40, 30)  # same size: as is, rounded
    assert to_pixel_box((10, 5, 40, 30), None, 512, 600) == (10, 5, 40, 30)  # no <size>: as is
    assert to_pixel_box((10, 5, 40, 30), None) == (10, 5, 40, 30)  # image not ingested yet
    assert to_pixel_box((0, 0, 256.5, 200), (256, 200), 512, 600) == (0, 0, 512, 600)  # clamped within a pixel
    with pytest.raises(ValueError):
        to_pixel_box((10, 5, 40, 30), (256, 200))  # a size needs the image's grid: the caller waits


@pytest.mark.parametrize("box,size,grid,rule", [
    ((300, 5, 340, 30), (256, 200), (512, 600), "outside"),  # beyond <size>
    ((10, 5, 40, 30), None, (32, 32), "outside"),  # beyond Columns/Rows (no <size>)
    ((-10, -10, -2, -2), None, (64, 64), "outside"),
    ((10.1, 5, 10.3, 30), None, (64, 64), "zero area"),  # rounds to nothing on the grid
    ((10, 5, 10.2, 30), (256, 200), (64, 64), "zero area"),  # scaled down to nothing
])
def test_boxes_outside_the_image_or_empty_are_bad(box, size, grid, rule):
    with pytest.raises(InputError) as err:
        to_pixel_box(box, size, *grid)
    assert err.value.reason == "bad_box" and rule in err.value.detail
    assert not any(str(v) in err.value.detail for v in (*box, *grid) if abs(v) > 9)  # the rule, not the values


def test_an_empty_box_as_drawn_is_bad_and_says_no_coordinates():
    with pytest.raises(InputError) as err:
        parse_voc(voc("1.2.3.png", (40, 5, 40, 30)), "x.xml")
    assert err.value.reason == "bad_box" and "40" not in err.value.detail


def test_scale_box_and_voc_xml_round_trip():
    box = scale_box((100, 50, 300, 250), (1000, 500), (256, 128))
    assert box == (26, 13, 77, 64)
    back = parse_voc(voc_xml("1.2.3.png", (256, 128), box).encode(), "1.2.3.xml")
    assert back.sop_instance_uid == "1.2.3" and back.size == (256, 128) and back.box == (26.0, 13.0, 77.0, 64.0)


# --- the annotation map --------------------------------------------------------------------

def test_map_names_the_image_of_a_file_named_otherwise(tmp_path):
    (tmp_path / "map.csv").write_text("image,sop_instance_uid\nhip_0012.png,1.2.840.5\n"
                                      "hip_0013.png,dicom/b.dcm\n\n", encoding="utf-8")
    mapping = load_annotation_map(tmp_path / "map.csv")
    assert mapping == {"hip_0012": "1.2.840.5", "hip_0013": str(tmp_path / "dicom" / "b.dcm")}
    assert parse_voc(voc("hip_0012.png"), "hip_0012.xml", mapping).sop_instance_uid == "1.2.840.5"
    assert parse_voc(voc("other.png"), "hip_0012.xml", mapping).sop_instance_uid == "1.2.840.5"  # by file name
    by_path = parse_voc(voc("hip_0013.png"), "hip_0013.xml", mapping)
    assert (by_path.sop_instance_uid, by_path.image_path) == (None, str(tmp_path / "dicom" / "b.dcm"))
    unnamed = parse_voc(voc("hip_0014.png"), "hip_0014.xml", mapping)
    assert not unnamed.matched  # waits for a map entry; not an error
    (tmp_path / "map.json").write_text(json.dumps({"hip_0012.png": "1.2.840.5", "hip_9.png": "/x/y.dcm"}))
    assert load_annotation_map(tmp_path / "map.json") == {"hip_0012": "1.2.840.5", "hip_9": "/x/y.dcm"}
    assert load_annotation_map(None) is None


@pytest.mark.parametrize("name,text,reason", [
    ("map.json", "{not json", "annotation_map_not_json"),
    ("map.json", '["hip_1.png"]', "annotation_map_not_an_object"),
    ("map.json", "{}", "annotation_map_empty"),
    ("map.csv", "hip_0012.png,1.2.840.5\n", "annotation_map_no_header"),  # the header is required
    ("map.csv", "image,uid\nhip_1.png\n", "annotation_map_short_row"),
    ("map.csv", "image,uid\nhip_1.png,\n", "annotation_map_empty_cell"),
    ("map.csv", "image,uid\nhip_1.png,1.2.3\nhip_1.png,1.2.4\n", "annotation_map_conflict"),
])
def test_a_bad_map_is_the_users_mistake(tmp_path, name, text, reason):
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as err:
        load_annotation_map(tmp_path / name)
    assert err.value.reason == reason and str(tmp_path / name) in err.value.detail
    with pytest.raises(UserError) as err:
        load_annotation_map(tmp_path / "missing.csv")
    assert err.value.reason == "no_such_file"


# --- at ingest -----------------------------------------------------------------------------------

@pytest.fixture
def factory(engine):
    return make_session_factory(engine)


def _boxes(factory) -> dict[str, tuple[int, int, int, int]]:
    with factory() as s:
        return {a.sop_instance_uid: (a.box_xmin, a.box_ymin, a.box_xmax, a.box_ymax)
                for a in s.scalars(select(Annotation))}


def test_ingest_scales_waits_for_the_image_and_matches_through_the_map(factory, tmp_path):
    dicom, ann = tmp_path / "dicom", tmp_path / "ann"
    ann.mkdir()
    uid_a = make_dicom(dicom / "a.dcm", rows=120, cols=100)
    uid_b = make_dicom(dicom / "b.dcm", rows=64, cols=64)
    uid_c = make_dicom(dicom / "c.dcm", rows=64, cols=64)
    (ann / f"{uid_a}.xml").write_bytes(voc(f"{uid_a}.png", (10, 5, 40, 30), size=(50, 60)))  # a half-size render
    (ann / "hip_0002.xml").write_bytes(voc("hip_0002.png", (8, 8, 24, 24), size=(32, 32)))
    (ann / "hip_0003.xml").write_bytes(voc("hip_0003.png", (8, 8, 60, 24)))
    first = refresh.ingest_annotations(factory, refresh.discover(ann))
    assert (first.files, first.added, first.quarantined) == (3, 0, 0)  # no image ingested, no map: all wait
    with factory() as s:
        assert set(s.scalars(select(SourceFile.status))) == {"waiting"}
    assert refresh.summarise(factory).waiting["unmatched_box_files"] == 3

    refresh.ingest_dicom(factory, refresh.discover(dicom), KEY)
    (tmp_path / "map.csv").write_text(f"file,dicom\nhip_0002.png,dicom/b.dcm\nhip_0003.png,{uid_c}\n")
    mapping = load_annotation_map(tmp_path / "map.csv")
    second = refresh.ingest_annotations(factory, refresh.discover(ann), mapping=mapping)
    assert (second.added, second.already_known, second.retried) == (3, 0, 0)  # waiting files read again
    # scaled by Columns/width and Rows/height; the map's DICOM path found through its source_file row
    assert _boxes(factory) == {uid_a: (20, 10, 80, 60), uid_b: (16, 16, 48, 48), uid_c: (8, 8, 60, 24)}
    third = refresh.ingest_annotations(factory, refresh.discover(ann), mapping=mapping)
    assert third.already_known == 3 and third.added == third.updated == 0
    with factory() as s:
        assert set(s.scalars(select(SourceFile.status))) == {"ingested"}
    assert refresh.summarise(factory).waiting["unmatched_box_files"] == 0


def test_a_box_outside_its_image_is_quarantined_with_the_rule(factory, tmp_path):
    uid = make_dicom(tmp_path / "dicom" / "a.dcm", rows=64, cols=64)
    refresh.ingest_dicom(factory, refresh.discover(tmp_path / "dicom"), KEY)
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / f"{uid}.xml").write_bytes(voc(f"{uid}.png", (10, 5, 140, 30)))  # drawn on a bigger render, no <size>
    counts = refresh.ingest_annotations(factory, refresh.discover(ann))
    assert counts.quarantined == 1 and counts.added == 0
    with factory() as s:
        (reason, detail), = s.execute(select(Quarantine.reason, Quarantine.detail)).all()
    assert reason == "bad_box" and "outside" in detail and "140" not in detail
    assert refresh.summarise(factory).waiting["unmatched_box_files"] == 0


def test_a_waiting_file_changed_in_place_supersedes_its_old_content(factory, tmp_path):
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "hip_1.xml").write_bytes(voc("hip_1.png"))
    refresh.ingest_annotations(factory, refresh.discover(ann))
    assert refresh.summarise(factory).waiting["unmatched_box_files"] == 1
    (ann / "hip_1.xml").write_bytes(voc("hip_1.png", (11, 5, 40, 30)))
    refresh.ingest_annotations(factory, refresh.discover(ann))
    assert refresh.summarise(factory).waiting["unmatched_box_files"] == 1
    with factory() as s:
        assert sorted(s.scalars(select(SourceFile.status))) == ["superseded", "waiting"]
