"""What must be known of a DICOM file's bytes before pydicom reads its dataset.

pydicom inflates a deflated dataset whole, pixels included, before it reads one element of it
(even with stop_before_pixels): a small file can inflate to gigabytes. The inflated size is
counted first, a megabyte at a time, without keeping the inflated bytes.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

from pydicom.filereader import _read_file_meta_info, read_preamble  # private, but pydicom is pinned <3.1
from pydicom.uid import DeflatedExplicitVRLittleEndian

from osteo.etl.quiet import quiet_reads
from osteo.etl.values import MAX_FILE_BYTES


def meta_transfer_syntax(data: bytes) -> tuple[str | None, int]:
    """The file meta's Transfer Syntax UID and where the dataset starts; (None, 0) when the meta
    cannot be read (pydicom's own read then says why)."""
    fp = io.BytesIO(data)
    try:
        with quiet_reads():
            read_preamble(fp, False)
            ts = _read_file_meta_info(fp).get("TransferSyntaxUID")  # converted here: its VR may be damaged
    except Exception:  # noqa: BLE001 - any failure here is pydicom's to report on the real read
        return None, 0
    return (str(ts) if ts is not None else None), fp.tell()


def deflate_problem(data: bytes, cap: int = MAX_FILE_BYTES) -> tuple[str, str] | None:
    """(reason, detail) when a deflated dataset would inflate past `cap` or is not a whole deflate
    stream; None for a file that is not deflated or inflates within the cap."""
    ts, start = meta_transfer_syntax(data)
    if ts != DeflatedExplicitVRLittleEndian:
        return None
    inflater, rest, total = zlib.decompressobj(-zlib.MAX_WBITS), data[start:], 0
    try:
        while total <= cap and not inflater.eof:
            out = inflater.decompress(rest, 1 << 20)
            rest = inflater.unconsumed_tail
            total += len(out)
            if not out and not rest:
                break
    except zlib.error:
        return "unreadable_dicom", "the deflated dataset is not a valid deflate stream"
    if total > cap:
        return "image_too_large", f"the deflated dataset inflates to over {cap >> 20} MiB"
    if not inflater.eof:
        return "truncated", "the deflated dataset ends early"
    return None


_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}


def pixel_data_problem(data: bytes, at: int, encoding: tuple[bool | None, bool | None],
                       file_meta: Any = None) -> tuple[str, str] | None:
    """("truncated", detail) when the Pixel Data element that starts at `at` (where pydicom stopped
    before the pixels) declares more bytes than the file holds, or its encapsulated fragments have no
    end; None otherwise (no pixel data element there, or a deflated dataset: deflate_problem's)."""
    ts = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    implicit, little = encoding
    if ts == DeflatedExplicitVRLittleEndian or len(data) < at + 8:
        return None
    order = "<" if little is not False else ">"
    if struct.unpack(order + "HH", data[at:at + 4]) != (0x7FE0, 0x0010):
        return None
    if implicit or data[at + 4:at + 6] in _LONG_VRS:
        if not implicit and len(data) < at + 12:
            return "truncated", "the Pixel Data element (7FE0,0010) is cut in its header"
        start = at + (8 if implicit else 12)
        (length,) = struct.unpack(order + "I", data[start - 4:start])
    else:
        start = at + 8
        (length,) = struct.unpack(order + "H", data[at + 6:at + 8])
    if length == 0xFFFFFFFF:  # encapsulated fragments end with a sequence delimiter
        if data.rfind(struct.pack(order + "HH", 0xFFFE, 0xE0DD), start) < 0:
            return "truncated", "the encapsulated pixel data (7FE0,0010) has no end: the file is cut short"
        return None
    if start + length > len(data):
        return "truncated", (f"the Pixel Data element (7FE0,0010) declares {length} bytes, the file holds "
                             f"{len(data) - start}: the file is cut short")
    return None
