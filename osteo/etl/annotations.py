"""LabelImg Pascal VOC boxes of the femoral neck, matched to images by SOP Instance UID."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import PurePath
from typing import Any

from osteo.etl.errors import InputError

MAX_XML_BYTES = 1_000_000  # a VOC file is a few hundred bytes; anything huge is not one
NECK_NAMES = ("femoral_neck", "femoralneck", "neck", "fn")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".xml", ".tif", ".tiff", ".bmp")


def uid_from_name(name: str) -> str:
    # UIDs contain dots, so Path.stem would cut a UID given without an extension
    base = PurePath(name).name
    for suffix in IMAGE_SUFFIXES:
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


def is_uid(text: str) -> bool:
    return 0 < len(text) <= 64 and all(c.isdigit() or c == "." for c in text) and not text.startswith(".")


def parse_voc(data: bytes, file_name: str) -> dict[str, Any]:
    if len(data) > MAX_XML_BYTES:
        raise InputError("bad_xml", "file is too large for a VOC annotation")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise InputError("bad_xml", "DTDs and entities are refused")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise InputError("bad_xml", f"not well-formed XML: {exc}") from exc
    if root.tag != "annotation":
        raise InputError("bad_xml", f"root element is <{root.tag}>, not <annotation>")
    # the annotated image is named by its SOP Instance UID (<filename>UID.png</filename>)
    sop_uid = uid_from_name((root.findtext("filename") or "").strip())
    if not is_uid(sop_uid):
        sop_uid = uid_from_name(file_name)
    if not is_uid(sop_uid):
        raise InputError("no_image_reference", "neither <filename> nor the file name is a SOP Instance UID")
    objects = root.findall("object")
    if not objects:
        raise InputError("no_box", "annotation has no <object>")
    chosen = next(
        (o for o in objects if (o.findtext("name") or "").strip().lower().replace(" ", "_") in NECK_NAMES),
        objects[0],
    )
    box = chosen.find("bndbox")
    try:
        xmin, ymin, xmax, ymax = (int(round(float(box.findtext(k)))) for k in ("xmin", "ymin", "xmax", "ymax"))
    except (AttributeError, TypeError, ValueError) as exc:
        raise InputError("bad_box", "bndbox coordinates missing or not numbers") from exc
    if xmax <= xmin or ymax <= ymin:
        raise InputError("bad_box", f"empty box ({xmin},{ymin})-({xmax},{ymax})")
    return {
        "sop_instance_uid": sop_uid,
        "label": (chosen.findtext("name") or "femoral_neck").strip()[:64],
        "box_xmin": xmin,
        "box_ymin": ymin,
        "box_xmax": xmax,
        "box_ymax": ymax,
    }
