"""The image size a compressed DICOM frame declares in its own codestream (JPEG, JPEG-LS, JPEG 2000):
the decoder allocates that size, whatever the DICOM header says, so the two must agree."""

from __future__ import annotations

import struct

_SOF = {*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC} | {0xF7}  # JPEG and JPEG-LS start-of-frame markers


def codestream_size(frame: bytes) -> tuple[int, int] | None:
    """(rows, cols) a compressed frame declares; its decoder allocates that, whatever the header says."""
    if frame[:2] == b"\xff\xd8":  # JPEG / JPEG-LS: walk the marker segments to the frame header
        pos = 2
        while pos + 9 <= len(frame) and frame[pos] == 0xFF:
            if frame[pos + 1] in _SOF:
                return struct.unpack(">HH", frame[pos + 5 : pos + 9])
            pos += 2 + int.from_bytes(frame[pos + 2 : pos + 4], "big")
        return None
    at = frame.find(b"\xff\x4f\xff\x51", 0, 4096)  # JPEG 2000: SOC then SIZ (after a JP2 wrapper, if any)
    if at < 0 or len(frame) < at + 24:
        return None
    x, y, x0, y0 = struct.unpack(">IIII", frame[at + 8 : at + 24])
    return y - y0, x - x0
