"""A strict reader of our own for the header elements we store (issue 28): pydicom's dcmread costs more
than the rest of a first ingest's parse, and we need 30 of a header's elements.

It reads exactly what pydicom reads, the same way: the preamble and 'DICM', the file meta (explicit VR
little endian, group 0002 until the first element of another group), then an explicit or implicit VR
little endian dataset up to the Pixel Data element, skipping every element we do not keep by its length
and walking undefined-length sequences item by item, as pydicom does. The values are converted by
pydicom's own converter (`convert_value`), with the character set pydicom would use, so they are the
same objects (a UID, a DSfloat, a MultiValue ...).

Whatever it cannot read exactly as pydicom would, it hands back (`parse_fast` returns None) and pydicom
reads the file: big endian, deflate, a private or damaged transfer syntax, an encoding the meta does not
tell the truth about, a command set, a VR it does not know, an item that switches to implicit VR, an
undefined length outside a sequence, any length past the end of the file, a character set with code
extensions, a value pydicom's converter refuses. So a result never depends on which reader read the file
(tests/osteo/test_dicom_fast.py gives every fuzz input and every real test file to both).
"""

from __future__ import annotations

from struct import Struct
from typing import Any

from pydicom.charset import convert_encodings, default_encoding, python_encoding
from pydicom.datadict import _dictionary_vr_fast, dictionary_VR  # the first is read_dataset's look-up
from pydicom.dataelem import RawDataElement, empty_value_for_VR
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    PrivateTransferSyntaxes,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR
from pydicom.values import convert_DA_string, convert_string, convert_UI, convert_value

from osteo.etl.dicom_parsed import MARKS, WANTED_TAGS, Header, Parsed, is_synthetic
from osteo.etl.values import is_uid

_EXPLICIT = Struct("<HH2sH")  # group, element, VR, 16-bit length
_IMPLICIT = Struct("<HHI")  # group, element, 32-bit length (items and delimiters too)
_U32 = Struct("<I")
_VRS = {vr.encode("ascii"): str(vr) for vr in VR}  # pydicom's ENCODED_VR
_LONG = {vr.encode("ascii") for vr in EXPLICIT_VR_LENGTH_32}
_CHARSET = 0x00080005
_WANTED = tuple((keyword, int(tag)) for keyword, tag in WANTED_TAGS)  # plain ints: no BaseTag.__eq__ per look-up
_MARKS = tuple(int(tag) for tag in MARKS)
_KEEP = frozenset({tag for _, tag in _WANTED} | set(_MARKS) | {_CHARSET})
_PIXELS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})  # where pydicom's stop_before_pixels stops
_UNDEFINED = 0xFFFFFFFF
_ITEM, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE0DD
# the converters convert_value calls for these VRs, which cannot fail (a Latin-1 decode and a split): called
# directly, less convert_value's dispatch; every other VR goes through convert_value
_DIRECT = {"UI": convert_UI, "CS": convert_string, "AS": convert_string, "DA": convert_DA_string}


class _HandBack(Exception):
    """Not ours to read exactly: pydicom reads the file."""


def parse_fast(data: bytes) -> Parsed | None:
    """The header as parse_with_pydicom would give it, or None when the file is pydicom's to read."""
    try:
        return _parse(data)
    except Exception:  # noqa: BLE001 - _HandBack, or anything unforeseen: pydicom reads it, and judges it
        return None


class _Meta:
    """The file meta as the checks read it (a FileMetaDataset's TransferSyntaxUID)."""

    __slots__ = ("TransferSyntaxUID",)

    def __init__(self, ts: UID) -> None:
        self.TransferSyntaxUID = ts

    def get(self, keyword: str, default: Any = None) -> Any:
        return getattr(self, keyword, default)


def _parse(data: bytes) -> Parsed:
    if len(data) < 132 or data[128:132] != b"DICM":
        raise _HandBack
    ts, pos = _file_meta(data)
    implicit = _is_implicit(ts)
    if pos + 8 > len(data) or data[pos:pos + 2] == b"\0\0":  # an empty dataset, or a command set (group 0000)
        raise _HandBack
    looks_implicit = not (0x40 < data[pos + 4] < 0x5B and 0x40 < data[pos + 5] < 0x5B)
    if looks_implicit != implicit:  # pydicom would switch the encoding the meta claims
        raise _HandBack
    raw, at = _dataset(data, pos, implicit)
    encodings = _encodings(raw.get(_CHARSET))
    values: dict[str, Any] = {}
    for keyword, tag in _WANTED:
        found = raw.get(tag)
        if found is not None:
            values[keyword] = _convert(tag, found, implicit, encodings)
    marks = {tag: found[2] for tag in _MARKS if (found := raw.get(tag)) is not None}
    return Parsed(Header(values, _Meta(UID(ts)), is_synthetic(marks)), at, (implicit, True))


def _element(data: bytes, pos: int, implicit: bool) -> tuple[int, str | None, int, int]:
    """(tag, VR or None, length, where the value starts) of the element at pos."""
    if implicit:
        group, elem, length = _IMPLICIT.unpack_from(data, pos)
        return group << 16 | elem, None, length, pos + 8
    group, elem, code, length = _EXPLICIT.unpack_from(data, pos)
    vr = _VRS.get(code)
    if vr is None:  # pydicom would guess (implicit, or a 16-bit length)
        raise _HandBack
    if code in _LONG:
        if pos + 12 > len(data):
            raise _HandBack
        return group << 16 | elem, vr, _U32.unpack_from(data, pos + 8)[0], pos + 12
    return group << 16 | elem, vr, length, pos + 8


def _file_meta(data: bytes) -> tuple[str, int]:
    """The transfer syntax (a clean UID) and where the dataset starts: group 0002 from byte 132, explicit VR
    little endian, led by its group length (the element pydicom converts to test the meta's encoding)."""
    pos, ts = 132, None
    while True:
        if pos + 8 > len(data):
            raise _HandBack
        if data[pos:pos + 2] != b"\x02\x00":
            break
        tag, vr, length, start = _element(data, pos, False)
        if pos == 132 and (tag, vr, length) != (0x00020000, "UL", 4):
            raise _HandBack
        end = start + length
        if length == _UNDEFINED or end > len(data):
            raise _HandBack
        if tag == 0x00020010:
            ts = data[start:end] if vr == "UI" else None
        pos = end
    text = ts.decode("latin-1").rstrip("\0 ") if ts else ""
    if not is_uid(text) or ts not in (text.encode("ascii"), text.encode("ascii") + b"\0"):
        raise _HandBack
    return text, pos


def _is_implicit(ts: str) -> bool:
    if ts == ImplicitVRLittleEndian:
        return True
    if ts in (ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian) or ts in PrivateTransferSyntaxes:
        raise _HandBack
    return False  # pydicom reads every other syntax (the encapsulated ones) as explicit VR little endian


def _dataset(data: bytes, pos: int, implicit: bool) -> tuple[dict[int, tuple[str | None, int, Any]], int]:
    """The kept elements by tag, (VR, length, raw value as pydicom holds it), and where the walk stopped."""
    n, raw = len(data), {}
    while pos + 8 <= n:
        tag, vr, length, start = _element(data, pos, implicit)
        if tag >> 16 == 0xFFFE:  # a stray item or delimiter at the top level
            raise _HandBack
        if tag in _PIXELS:
            return raw, pos
        if length == _UNDEFINED:
            if tag in _KEEP:
                raise _HandBack
            pos = _sequence(data, start, implicit, tag, vr)
            continue
        end = start + length
        if end > n:
            raise _HandBack
        if tag in _KEEP:
            raw[tag] = (vr, length, data[start:end] if length else empty_value_for_VR(vr, raw=True))
        pos = end
    if pos != n:  # a few bytes after the last element
        raise _HandBack
    return raw, pos


def _sequence(data: bytes, pos: int, implicit: bool, tag: int, vr: str | None) -> int:
    """The end of an undefined-length sequence that starts at pos (pydicom's read_sequence)."""
    if vr is None:
        try:
            vr = _dictionary_vr_fast(tag)
        except KeyError:  # pydicom would peek at the next tag
            raise _HandBack from None
    if vr not in ("SQ", "UN"):  # an undefined-length value that is not a sequence
        raise _HandBack
    while True:
        if pos + 8 > len(data):
            raise _HandBack
        item, _, length = _IMPLICIT.unpack_from(data, pos)
        item = item << 16 | _
        pos += 8
        if item == _SEQUENCE_END:
            return pos
        if item != _ITEM:
            raise _HandBack
        end = None if length == _UNDEFINED else pos + length
        pos = _item(data, pos, end, implicit)


def _item(data: bytes, pos: int, end: int | None, implicit: bool) -> int:
    """The end of one item's dataset (pydicom reads it whole: no tag is skipped unread)."""
    n = len(data)
    if end is not None and end > n:
        raise _HandBack
    first = True
    while True:
        if end is not None and pos >= end:
            if pos != end:
                raise _HandBack
            return pos
        if pos + 8 > n:
            raise _HandBack
        if data[pos:pos + 8] == b"\xfe\xff\x0d\xe0\0\0\0\0":  # the item's delimiter
            if end is not None:
                raise _HandBack
            return pos + 8
        if first and not implicit and not (0x40 < data[pos + 4] < 0x5B and 0x40 < data[pos + 5] < 0x5B):
            raise _HandBack  # pydicom would read this item as implicit VR
        first = False
        tag, vr, length, start = _element(data, pos, implicit)
        if tag >> 16 == 0xFFFE or tag == _CHARSET:  # a character set in an item is converted by pydicom
            raise _HandBack
        if length == _UNDEFINED:
            pos = _sequence(data, start, implicit, tag, vr)
            continue
        pos = start + length
        if pos > (n if end is None else end):
            raise _HandBack


def _encodings(found: tuple[str | None, int, Any] | None) -> str | list[str]:
    """The dataset's character set as pydicom decodes text with it (one term without code extensions)."""
    if found is None:
        return default_encoding
    vr, length, value = found
    name = value.decode("latin-1").rstrip(" \0") if vr in (None, "CS") and length else ""
    if not name or "\\" in name or name not in python_encoding or name.startswith("ISO 2022"):
        raise _HandBack
    return convert_encodings(name)


def _convert(tag: int, found: tuple[str | None, int, Any], implicit: bool, encodings: str | list[str]) -> Any:
    """The value as pydicom's raw_element_vr and raw_element_value hooks make it (a VR of UN is replaced
    by the dictionary's there: handed back)."""
    vr, length, value = found
    if vr is None:
        vr = dictionary_VR(tag)
    elif vr == "UN":
        raise _HandBack
    direct = _DIRECT.get(vr)
    if direct is not None:
        return direct(value, True, None) if length else empty_value_for_VR(vr)
    return convert_value(vr, RawDataElement(BaseTag(tag), vr, length, value, 0, implicit, True), encodings)
