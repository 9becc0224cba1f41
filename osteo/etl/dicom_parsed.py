"""One file's header as the checks read it (osteo/etl/dicom_headers.py), from either reader: pydicom's
(`parse_with_pydicom`, which reads any file) or our strict one (osteo/etl/dicom_fast.py, which reads only
what it can read exactly as pydicom does and hands every other file back).

Both give a `Parsed`: the wanted elements converted by pydicom's own converters, the transfer syntax,
the synthetic marks (read raw, never through a converter, so that no value of theirs can fail a file),
and where the parse stopped (the Pixel Data element, whose length the checks compare with the file's).
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import pydicom
from pydicom.datadict import keyword_dict
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag

from osteo.etl import synthetic
from osteo.etl.errors import InputError

REQUIRED = (
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "StudyDate",
    "Modality",
    "Rows",
    "Columns",
    "BitsStored",
    "PhotometricInterpretation",
)
UIDS = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
# Only these are parsed: faster than a full header and nothing else is ever touched.
WANTED = REQUIRED + (
    "SOPClassUID",
    "PatientSex",
    "PatientBirthDate",
    "PatientAge",
    "BodyPartExamined",
    "ImageLaterality",
    "Laterality",
    "PatientOrientation",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "BitsAllocated",  # read to check BitsStored and the declared size against, never stored
    "SamplesPerPixel",
    "NumberOfFrames",
    "SeriesDescription",  # free text, for the scope keywords only: never stored
    "StudyDescription",
)
WANTED_TAGS = tuple((kw, BaseTag(keyword_dict[kw])) for kw in WANTED)
# the synthetic marks (osteo/etl/synthetic.py), read raw and decoded here so that no value can fail a file:
# Manufacturer, and the private creator slots (0009,0010-001F) with the flag element of each one's block
MANUFACTURER = BaseTag(keyword_dict["Manufacturer"])
_CREATOR_SLOTS = tuple(range(synthetic.PRIVATE_BLOCK, synthetic.PRIVATE_BLOCK + 16))
CREATORS = tuple(BaseTag((synthetic.PRIVATE_GROUP << 16) | slot) for slot in _CREATOR_SLOTS)
FLAGS = tuple(BaseTag((synthetic.PRIVATE_GROUP << 16) | (slot << 8) | synthetic.ELEMENT_FLAG)
              for slot in _CREATOR_SLOTS)
MARKS = (MANUFACTURER, *CREATORS, *FLAGS)
_SPECIFIC = [*WANTED, *MARKS]
NOT_DICOM = "not a DICOM file"


class Header:
    """The wanted elements of one parsed header by keyword, each value converted once by pydicom's own
    converter; read like a Dataset: `kw in h`, `h.get(kw)`, `h.Keyword`, `h.file_meta`."""

    __slots__ = ("values", "file_meta", "synthetic")

    def __init__(self, values: dict[str, Any], file_meta: Any, is_synthetic: bool) -> None:
        self.values, self.file_meta, self.synthetic = values, file_meta, is_synthetic

    def __contains__(self, keyword: str) -> bool:
        return keyword in self.values

    def get(self, keyword: str, default: Any = None) -> Any:
        return self.values.get(keyword, default)

    def __getattr__(self, keyword: str) -> Any:
        try:
            return self.values[keyword]
        except KeyError:
            raise AttributeError(keyword) from None


@dataclass(frozen=True)
class Parsed:
    """A header and where its parse stopped: `at` is the Pixel Data element's offset (or the end),
    `encoding` the dataset's (implicit VR, little endian) as read."""

    header: Header
    at: int
    encoding: tuple[bool | None, bool | None]


def raw_text(value: Any) -> str | None:
    """A raw value's text without pydicom's converters (which raise on hostile bytes): bytes as Latin-1
    (the marks are ASCII), the first value of a converted multi-valued element."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1").split("\\")[0].strip("\0 ")
    if value is not None and not isinstance(value, str):
        value = next(iter(value), None) if hasattr(value, "__iter__") else value
    return None if value is None else str(value).strip("\0 ")


def is_synthetic(raw_values: dict[int, Any]) -> bool:
    """Either mark (osteo.etl.synthetic.is_synthetic) in the raw values by tag: Manufacturer, or the flag of
    the block whose private creator is osteo's (a block of another creator in group 0009 says nothing)."""
    flag = next((raw_text(raw_values.get(f)) for c, f in zip(CREATORS, FLAGS, strict=True)
                 if (raw_text(raw_values.get(c)) or "").upper() == synthetic.PRIVATE_CREATOR), None)
    return synthetic.is_synthetic(raw_text(raw_values.get(MANUFACTURER)), flag)


def _from_dataset(ds: pydicom.Dataset) -> Header:
    """The wanted elements of a dataset, converted as Dataset.__getitem__ does, less its per-access tag and
    character-set look-ups; none of WANTED has an ambiguous VR (US or SS ...): nothing to correct."""
    charset = ds.original_character_set or ds._character_set
    raw = ds._dict
    values: dict[str, Any] = {}
    for keyword, tag in WANTED_TAGS:
        elem = raw.get(tag)
        if elem is not None:
            values[keyword] = (convert_raw_data_element(elem, encoding=charset, ds=ds)
                               if isinstance(elem, RawDataElement) else elem).value
    marks: dict[int, Any] = {tag: elem.value for tag in MARKS if (elem := raw.get(tag)) is not None}
    return Header(values, getattr(ds, "file_meta", None), is_synthetic(marks))


def parse_with_pydicom(data: bytes) -> Parsed:
    """Any file, through pydicom (stop_before_pixels, the wanted tags only); InputError for bad input."""
    try:
        fp = io.BytesIO(data)  # left at the Pixel Data element (stop_before_pixels): its length is checked
        raw = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=_SPECIFIC)
        header = _from_dataset(raw)
    except InvalidDicomError as exc:  # pydicom's own words ("Use force=True ...") are for programmers
        raise InputError("not_dicom", NOT_DICOM + (": no 'DICM' marker after the 128-byte preamble (a Thumbs.db, a "
                                                   "PDF, a report?)" if "DICM" in str(exc) else "")) from exc
    except (EOFError, OSError, zlib.error, struct.error) as exc:
        raise InputError("truncated", f"header could not be read: {type(exc).__name__}") from exc
    except Exception as exc:  # pydicom's parser and converters raise anything on hostile bytes
        # (BytesLengthException for a US of 3 bytes, LookupError for a charset, ...): all of it is bad input
        raise InputError("bad_header", f"header could not be read: {type(exc).__name__}") from exc
    return Parsed(header, fp.tell(), raw.original_encoding)
