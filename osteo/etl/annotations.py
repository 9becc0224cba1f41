"""LabelImg Pascal VOC boxes of the femoral neck: parsing, the image they name, and the pixel grid.

A VOC file names its image by the SOP Instance UID in `<filename>` (`UID.png`, as `osteo annotate
worklist` writes them) or in its own file name, or through an annotation map (image file name ->
SOP Instance UID or DICOM path) for files named otherwise (`hip_0012.xml`). A box drawn on a render
of another size (`<size>` differs from the DICOM's Columns/Rows) is scaled back to the DICOM's pixel
grid at ingest (docs/design.md "Boxes"). Plain functions, no database.
"""

from __future__ import annotations

import csv
import io
import json
import math
import pyexpat
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath

from osteo.errors import UserError
from osteo.etl.errors import InputError
from osteo.etl.values import MAX_SIDE, is_uid

MAX_XML_BYTES = 1_000_000  # a VOC file is a few hundred bytes; anything huge is not one
NECK_NAMES = ("femoral_neck", "femoralneck", "neck", "fn")
CLASS_NAME = "femoral_neck"  # the one class of LabelImg's classes.txt
WORKLIST_MAX_SIZE = 1024  # px, the long side of a worklist PNG by default (0: the DICOM's full size)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".xml", ".tif", ".tiff", ".bmp")
MAP_IMAGE_COLUMNS = ("image", "image_file", "file", "filename", "file_name", "png")
MAP_TARGET_COLUMNS = ("sop_instance_uid", "sop_uid", "uid", "dicom", "dicom_path", "path")

MAX_BOXES = 2  # femoral necks in one image: one per hip of an AP pelvis

Box = tuple[float, float, float, float]  # xmin, ymin, xmax, ymax


def uid_from_name(name: str) -> str:
    # UIDs contain dots, so Path.stem would cut a UID given without an extension
    base = PurePath(name.replace("\\", "/")).name  # <filename> may carry a Windows path
    for suffix in IMAGE_SUFFIXES:
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


@dataclass(frozen=True)
class VocBox:
    """One VOC file's box, as drawn, and the image it names (not yet looked up)."""

    sop_instance_uid: str | None  # named by <filename>, the file name or the map
    image_path: str | None  # or a DICOM path from the annotation map (resolved at ingest)
    label: str
    boxes: tuple[Box, ...]  # as drawn, on an image of `size`: one, or one per hip of an AP pelvis
    size: tuple[int, int] | None  # <size> width, height; None: drawn on the DICOM's own grid

    @property
    def box(self) -> Box:
        return self.boxes[0]

    @property
    def matched(self) -> bool:
        return self.sop_instance_uid is not None or self.image_path is not None


def parse_voc(data: bytes, file_name: str, mapping: Mapping[str, str] | None = None) -> VocBox:
    """Read one VOC file; InputError (quarantined) for bad XML, no box, a bad box or a bad <size>.

    An image that neither the map, <filename> nor the file name names is not an error here: the
    file waits (ingest_annotations) until a map names it.
    """
    if len(data) > MAX_XML_BYTES:
        raise InputError("bad_xml", "file is too large for a VOC annotation")
    _refuse_dtd(data)
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise InputError("bad_xml", f"not well-formed XML: {exc}") from exc
    except (LookupError, ValueError) as exc:  # an encoding Python has no codec for ("UTF-17")
        raise InputError("bad_xml", f"the XML declares an encoding that cannot be read ({type(exc).__name__})") \
            from exc
    if root.tag != "annotation":
        raise InputError("bad_xml", f"root element is <{root.tag}>, not <annotation>")
    uid, path = image_reference((root.findtext("filename") or "").strip(), file_name, mapping or {})
    objects = root.findall("object")
    if not objects:
        raise InputError("no_box", "annotation has no <object>")
    necks = [o for o in objects if (o.findtext("name") or "").strip().lower().replace(" ", "_") in NECK_NAMES]
    chosen = necks or objects[:1]  # an AP pelvis has one neck box per hip; the side is read at ingest
    if len(chosen) > MAX_BOXES:
        raise InputError("bad_box", f"{len(chosen)} femoral-neck boxes; an image shows at most {MAX_BOXES}")
    return VocBox(sop_instance_uid=uid, image_path=path, label=(chosen[0].findtext("name") or CLASS_NAME).strip()[:64],
                  boxes=tuple(_bndbox(o) for o in chosen), size=_size(root))


class _Dtd(Exception):
    pass


def _refuse(*_args) -> None:
    raise _Dtd


def _refuse_dtd(data: bytes) -> None:
    """A DTD (and so any entity: a billion laughs, an external file) is refused before it is read.

    Expat is asked, not the bytes searched: a UTF-16 file spells "<!DOCTYPE" with zero bytes between
    its letters. The DOCTYPE handler fires at the declaration's name, before its first entity.
    """
    parser = pyexpat.ParserCreate()
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.SetParamEntityParsing(pyexpat.XML_PARAM_ENTITY_PARSING_NEVER)
    try:
        parser.Parse(data, True)
    except _Dtd:
        raise InputError("bad_xml", "DTDs and entities are refused") from None
    except (pyexpat.ExpatError, ValueError, LookupError):
        pass  # not well-formed: ElementTree's parse says where


def _bndbox(obj: ET.Element) -> Box:
    box = obj.find("bndbox")
    try:
        if box is None:
            raise TypeError("no bndbox")
        coords = tuple(float(box.findtext(k) or "") for k in ("xmin", "ymin", "xmax", "ymax"))
    except (AttributeError, TypeError, ValueError) as exc:
        raise InputError("bad_box", "bndbox coordinates missing or not numbers") from exc
    if not all(math.isfinite(v) for v in coords):
        raise InputError("bad_box", "bndbox coordinates must be finite numbers")
    if coords[2] <= coords[0] or coords[3] <= coords[1]:
        raise InputError("bad_box", "box has zero area (xmax <= xmin or ymax <= ymin)")
    return coords  # type: ignore[return-value]


def _size(root: ET.Element) -> tuple[int, int] | None:
    """<size> width and height; absent, empty or 0 (some tools write 0 when unknown): None."""
    size = root.find("size")
    if size is None:
        return None
    texts = [(size.findtext(k) or "").strip() for k in ("width", "height")]
    if not all(texts):
        return None
    try:
        w, h = (float(t) for t in texts)
    except ValueError as exc:
        raise InputError("bad_size", "<size> width and height must be numbers") from exc
    if w == 0 or h == 0:
        return None
    if not (math.isfinite(w) and math.isfinite(h)) or w < 0 or h < 0 or w != int(w) or h != int(h):
        raise InputError("bad_size", "<size> width and height must be positive whole numbers")
    if w > MAX_SIDE or h > MAX_SIDE:
        raise InputError("bad_size", f"<size> width and height must be at most {MAX_SIDE}")
    return int(w), int(h)


def image_reference(filename: str, file_name: str, mapping: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(SOP UID, DICOM path) of the annotated image: the map first (by <filename>, then the file's
    own name), then a UID in <filename>, then in the file name; (None, None) when nothing names it."""
    for name in (filename, file_name):
        target = mapping.get(uid_from_name(name)) if name else None
        if target is not None:
            return (target, None) if is_uid(target) else (None, target)
    for name in (filename, file_name):
        uid = uid_from_name(name)
        if is_uid(uid):
            return uid, None
    return None, None


def _round(v: float) -> int:
    return math.floor(v + 0.5)  # half up, whatever Python's round() does with halves


def to_pixel_box(box: Box, size: tuple[int, int] | None, columns: int | None = None,
                 rows: int | None = None) -> tuple[int, int, int, int]:
    """The box on the DICOM's pixel grid, in whole pixels.

    Drawn on a render of `size` (width, height) other than Columns x Rows: x scaled by
    Columns/width, y by Rows/height. A box beyond its image by more than a pixel, or with no area
    once on the grid, is refused (InputError bad_box; the detail names the rule, never the
    coordinates). `columns`/`rows` None (image not ingested yet) is only allowed without a size.
    """
    width, height = size if size is not None else (columns, rows)
    if width is not None and height is not None:
        x0, y0, x1, y1 = box
        if x0 < -1 or y0 < -1 or x1 > width + 1 or y1 > height + 1:
            raise InputError("bad_box", "box lies outside its image (beyond <size>, or Columns/Rows when no "
                                        "<size> is given)")
    if size is not None:
        if columns is None or rows is None:
            raise ValueError("a box drawn on a render of another size needs the image's Columns and Rows")
        sx, sy = columns / size[0], rows / size[1]
        box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
    x0, y0, x1, y1 = (_round(v) for v in box)
    if columns is not None and rows is not None:
        x0, x1 = min(max(x0, 0), columns), min(max(x1, 0), columns)
        y0, y1 = min(max(y0, 0), rows), min(max(y1, 0), rows)
    if x1 <= x0 or y1 <= y0:
        raise InputError("bad_box", "box has zero area on the image's pixel grid")
    return x0, y0, x1, y1


def scale_box(box: Box, from_size: tuple[int, int], to_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box from one grid (width, height) to another, rounded and clamped (the worklist's proposals)."""
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    x0, y0, x1, y1 = (_round(v * s) for v, s in zip(box, (sx, sy, sx, sy), strict=True))
    clamp = lambda v, hi: min(max(v, 0), hi)  # noqa: E731 - four uses on one line
    return clamp(x0, to_size[0]), clamp(y0, to_size[1]), clamp(x1, to_size[0]), clamp(y1, to_size[1])


def voc_xml(png_name: str, png_size: tuple[int, int], boxes, label: str = CLASS_NAME) -> str:
    """A LabelImg Pascal VOC file for one PNG (a proposal a person checks and saves): one box, or a
    list of them (both hips of an AP pelvis)."""
    if boxes and not isinstance(boxes[0], (tuple, list)):
        boxes = [boxes]
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "worklist"
    ET.SubElement(root, "filename").text = png_name
    size = ET.SubElement(root, "size")
    for k, v in (("width", png_size[0]), ("height", png_size[1]), ("depth", 1)):
        ET.SubElement(size, k).text = str(v)
    ET.SubElement(root, "segmented").text = "0"
    for box in boxes:
        obj = ET.SubElement(root, "object")
        for k, v in (("name", label), ("pose", "Unspecified"), ("truncated", "0"), ("difficult", "0")):
            ET.SubElement(obj, k).text = v
        bnd = ET.SubElement(obj, "bndbox")
        for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True):
            ET.SubElement(bnd, k).text = str(int(v))
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode") + "\n"


# --- the annotation map ----------------------------------------------------------------

def load_annotation_map(path: str | Path | None) -> dict[str, str] | None:
    """Image file name (its suffix dropped) -> SOP Instance UID, or -> absolute DICOM path.

    JSON (`.json`): one object {"hip_0012.png": "1.2.840...", ...}. Otherwise CSV with a header row:
    an image column (image, file, filename, ...) and a target column (sop_instance_uid, uid, dicom,
    path, ...). A target that is not a UID is a DICOM path, relative to the map's folder unless
    absolute. Every mistake is a UserError, raised before the refresh starts.
    """
    if not path:
        return None
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError("no_such_file", f"annotation-map file {p} does not exist; check the path") from None
    except IsADirectoryError:
        raise UserError("not_a_file", f"annotation-map {p} is a folder; pass a CSV or JSON file") from None
    except UnicodeDecodeError:
        raise UserError("annotation_map_unreadable", f"annotation-map file {p} is not UTF-8 text") from None
    pairs = _json_pairs(p, text) if p.suffix.lower() == ".json" else _csv_pairs(p, text)
    mapping: dict[str, str] = {}
    for where, image, target in pairs:
        image, target = image.strip(), target.strip()
        if not image or not target:
            raise UserError("annotation_map_empty_cell", f"annotation-map file {p}: {where} has an empty image "
                            "name or target; every entry needs both")
        key = uid_from_name(image)
        value = target if is_uid(target) else str((p.parent / target).resolve())
        if mapping.setdefault(key, value) != value:
            raise UserError("annotation_map_conflict", f"annotation-map file {p}: {where} maps an image already "
                            "mapped to another target; one target per image")
    if not mapping:
        raise UserError("annotation_map_empty", f"annotation-map file {p} maps no image; "
                        "write one line per image file name")
    return mapping


def _json_pairs(p: Path, text: str) -> list[tuple[str, str, str]]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        raise UserError("annotation_map_not_json", f"annotation-map file {p} is not JSON; write it as "
                        '{"hip_0012.png": "SOP Instance UID or DICOM path", ...} or as CSV') from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in obj.items()):
        raise UserError("annotation_map_not_an_object", f"annotation-map file {p} must be one JSON object of "
                        'strings, e.g. {"hip_0012.png": "1.2.840.1"}')
    return [(f"key {i + 1}", k, v) for i, (k, v) in enumerate(obj.items())]


def _csv_pairs(p: Path, text: str) -> list[tuple[str, str, str]]:
    rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    header = [c.strip().lower().replace(" ", "_") for c in rows[0]] if rows else []
    image_col = next((i for i, c in enumerate(header) if c in MAP_IMAGE_COLUMNS), None)
    target_col = next((i for i, c in enumerate(header) if c in MAP_TARGET_COLUMNS), None)
    if image_col is None or target_col is None:
        raise UserError("annotation_map_no_header", f"annotation-map file {p} needs a header row naming an image "
                        f"column ({', '.join(MAP_IMAGE_COLUMNS)}) and a target column "
                        f"({', '.join(MAP_TARGET_COLUMNS)}), e.g. `image,sop_instance_uid`")
    pairs = []
    for n, row in enumerate(rows[1:], start=2):
        if len(row) <= max(image_col, target_col):
            raise UserError("annotation_map_short_row", f"annotation-map file {p}: row {n} has too few columns")
        pairs.append((f"row {n}", row[image_col], row[target_col]))
    return pairs
