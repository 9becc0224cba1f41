"""Hostile LabelImg VOC files through the refresh's ingest (osteo.ingest.refresh.ingest_annotations): entity
bombs (billion laughs, in UTF-8 and UTF-16), external entities, boxes outside the image or with no
area, sizes and coordinates that are not numbers, malformed and cut XML. Every file is stored, left
waiting for its image, recorded out of scope, or quarantined with a reason; a stored box lies on its
image's pixel grid."""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import example, given, note
from hypothesis import strategies as st
from sqlalchemy import select

from db.models import Annotation, DicomImage
from osteo.ingest import refresh
from tests.dicom_factory import make_dicom
from tests.fuzz.support import (
    call,
    check_annotation,
    count,
    damage,
    factory_for,
    fuzz,
    quarantine_reasons,
    source,
    weighted,
)

KEY = b"fuzz-pseudonym-key"
_serial = itertools.count(1)
IMAGES = {"hip": "1.2.826.0.1.3680043.10.543.9001", "pelvis": "1.2.826.0.1.3680043.10.543.9002",
          "mr": "1.2.826.0.1.3680043.10.543.9003", "unknown": "1.2.826.0.1.3680043.10.543.9999"}

LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol0 "lol">'  # 10**9 lols once expanded
          + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
          + "]><annotation><filename>{uid}.png</filename><object><name>&lol9;</name></object></annotation>")
EXTERNAL = ('<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            "<annotation><filename>{uid}.png</filename><object><name>&x;</name></object></annotation>")
PARAMETER = ('<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]>'
             "<annotation><filename>{uid}.png</filename></annotation>")
NUMBERS = st.one_of(st.integers(-100, 300).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(["", "abc", "1e999", "-1e999", "nan", "inf", "0x10", "１０", " 12 ", "1_0"]))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("voc-fuzz")
    factory = factory_for(d)
    make_dicom(d / "dicom" / "hip.dcm", sop_uid=IMAGES["hip"])
    make_dicom(d / "dicom" / "pelvis.dcm", sop_uid=IMAGES["pelvis"], rows=48, cols=96, laterality="B",
               body_part="PELVIS")
    make_dicom(d / "dicom" / "mr.dcm", sop_uid=IMAGES["mr"], modality="MR")
    counts = refresh.ingest_dicom(factory, refresh.discover(d / "dicom"), KEY)
    assert (counts.added, counts.out_of_scope) == (2, 1)
    (d / "ann").mkdir()
    return d / "ann", factory


def voc(uid: str, boxes: list[tuple[str, str, str, str]], size: tuple[str, str] | None, name: str) -> str:
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>1</depth></size>" if size else ""
    objects = "".join(f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                      f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for b in boxes)
    return f"<annotation><folder>w</folder><filename>{uid}.png</filename>{size_xml}{objects}</annotation>"


SANE_BOX = st.builds(lambda x, y, w, h: (str(x), str(y), str(x + w), str(y + h)),
                     st.integers(0, 40), st.integers(0, 30), st.integers(3, 20), st.integers(3, 16))


BOX = weighted(sane=(3, SANE_BOX),  # most files are a person's good box: they must be stored
               ints=(1, st.tuples(*[st.integers(-5, 120).map(str)] * 4)),  # inside, outside, no area
               numbers=(1, st.tuples(NUMBERS, NUMBERS, NUMBERS, NUMBERS)))
BOXES = st.sampled_from([1, 1, 1, 1, 2, 2, 0, 3]).flatmap(lambda n: st.lists(BOX, min_size=n, max_size=n))
SIZES = weighted(none=(3, st.none()),
                 sane=(2, st.sampled_from([("64", "64"), ("128", "128"), ("96", "48"), ("0", "0")])),
                 ints=(1, st.tuples(st.integers(-2, 300).map(str), st.integers(-2, 300).map(str))),
                 numbers=(1, st.tuples(NUMBERS, NUMBERS)))
VOC = weighted(
    voc=(6, st.tuples(st.just("voc"), st.tuples(st.sampled_from(list(IMAGES)), BOXES, SIZES, st.just("femoral_neck")))),
    names=(1, st.tuples(st.just("voc"), st.tuples(st.sampled_from(["1Ñ2.826.0.1", "hip_0012", "", "1.02.3"]), BOXES,
                                                  SIZES, st.sampled_from(["neck", "FN", "tumour", "", "&amp;"])))),
    dtd=(2, st.builds(lambda t, image: ("template", t.replace("{uid}", IMAGES[image])),
                      st.sampled_from([LAUGHS, EXTERNAL, PARAMETER]), st.sampled_from(list(IMAGES)))),
)
ENCODE = st.sampled_from(["utf-8"] * 4 + ["utf-16", "utf-8 declared latin-1", "declared ebcdic"])
DAMAGE = st.sampled_from([0, 0, 1]).flatmap(lambda n: st.lists(st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.floats(0, 1, exclude_max=True),
              st.sampled_from([b"<", b">", b"&", b"&lol;", b"]]>", b"<!--", b"\x00", b"\xff", b"<object>"])),
), min_size=n, max_size=2 * n))


def render(case, encoding: str) -> bytes:
    kind, spec = case
    text = spec if kind == "template" else voc(IMAGES.get(spec[0], spec[0]), *spec[1:])
    if encoding == "utf-16":
        return text.replace('<?xml version="1.0"?>', "").join(['<?xml version="1.0" encoding="UTF-16"?>', ""]) \
            .encode("utf-16")
    if encoding == "utf-8 declared latin-1":
        return ('<?xml version="1.0" encoding="ISO-8859-1"?>' + text.replace('<?xml version="1.0"?>', "")).encode()
    if encoding == "declared ebcdic":
        return ('<?xml version="1.0" encoding="cp500"?>' + text.replace('<?xml version="1.0"?>', "")).encode()
    return text.encode()


@fuzz(300)
@given(case=VOC, encoding=ENCODE, steps=DAMAGE)
# found by this fuzzing (each crashed before its fix)
@example(case=("voc", ("hip_0012", [], None, "femoral_neck")), encoding="utf-16",
         steps=[("flip", 0.3125, 1)])  # encoding="UTF-17": LookupError
@example(case=("voc", ("hip", [("1", "1", "9", "9")], ("inf", "64"), "femoral_neck")), encoding="utf-8",
         steps=[])  # OverflowError
@example(case=("voc", ("hip", [("1", "1", "9", "9")], ("nan", "64"), "femoral_neck")), encoding="utf-8",
         steps=[])  # ValueError
def test_every_box_file_is_stored_waits_or_is_quarantined(workdir, case, encoding, steps):
    d, factory = workdir
    data = damage(render(case, encoding), steps)
    note(f"{encoding}, {steps}: {data[:300]!r}")
    path = d / f"{next(_serial)}.xml"
    path.write_bytes(data)
    count("voc", "tried")
    started = time.monotonic()
    call("voc", refresh.ingest_annotations, factory, [str(path)])
    assert time.monotonic() - started < 5, "an entity bomb was expanded"
    with factory() as s:
        sf = source(s, str(path))
        if sf.status == "quarantined":
            reasons = quarantine_reasons(s, "ingest_annotation", sf.sha256)
            assert reasons and all(reasons.values())
            count("voc", "quarantined")
        elif sf.status == "out_of_scope":
            count("voc", "out_of_scope")
        else:
            assert sf.status in ("ingested", "waiting"), sf.status
            count("voc", "processed")
        for ann, img in s.execute(select(Annotation, DicomImage)
                                  .join(DicomImage, DicomImage.sop_instance_uid == Annotation.sop_instance_uid)):
            check_annotation(ann, img)
    if case[0] == "template":  # every DTD is refused, whatever it declares
        assert sf.status == "quarantined"
