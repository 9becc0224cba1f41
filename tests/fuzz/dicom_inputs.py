"""Hostile DICOM files for the fuzz tests: a seed dataset, encoded in a transfer syntax that may lie,
with hostile values set and its bytes then damaged."""

from __future__ import annotations

import copy
import io
import struct
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
from hypothesis import reject
from hypothesis import strategies as st
from pydicom import config
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from osteo.etl.quiet import quiet_reads
from tests.fuzz.support import claim, weighted

SEEDS = ("hip", "pelvis", "mr", "hip8")


def seed_datasets(d: Path) -> dict[str, Dataset]:
    """The valid files the fuzz starts from (tests/dicom_factory.py), written under d: a hip film, an AP
    pelvis, an MR (out of scope) and an 8-bit hip film."""
    from tests.dicom_factory import make_dicom

    make_dicom(d / "hip.dcm")
    make_dicom(d / "pelvis.dcm", rows=48, cols=96, laterality="B", body_part="PELVIS", orientation=("R", "F"))
    make_dicom(d / "mr.dcm", modality="MR", drop=("ImageLaterality",))
    make_dicom(d / "hip8.dcm", rows=40, cols=56)
    out = {name: pydicom.dcmread(d / f"{name}.dcm") for name in SEEDS}
    hip8 = out["hip8"]
    hip8.BitsAllocated, hip8.BitsStored, hip8.HighBit = 8, 8, 7
    hip8.PixelData = np.random.default_rng(1).integers(0, 255, (40, 56), dtype=np.uint8).tobytes()
    return out


# --- hostile values ------------------------------------------------------------------------------

def _raw(keyword: str, vr: str, value: bytes):
    """Set an element's bytes as they are (pydicom would refuse or convert some of these values)."""
    def edit(ds: Dataset) -> None:
        tag = Tag(tag_for_keyword(keyword))
        ds._dict[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)
    return edit


def _set(keyword: str, value):
    return lambda ds: setattr(ds, keyword, value)


def _delete(keyword: str):
    return lambda ds: ds.pop(Tag(tag_for_keyword(keyword)), None)


def _short_pixels(ds: Dataset) -> None:
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]


EDITS = {
    "SOP UID with flipped bytes": _raw("SOPInstanceUID", "UI", "1Ñ2.826.0.1.3680043.2.1\0".encode("latin-1")),
    "SOP UID ending in a dot": _raw("SOPInstanceUID", "UI", b"1.2.826.0.1.3680043.99.1."),
    "SOP UID with a leading zero": _raw("SOPInstanceUID", "UI", b"1.2.826.01.5"),
    "SOP UID of 70 characters": _raw("SOPInstanceUID", "UI", b"1." + b"2" * 68),
    "Study UID not a UID": _raw("StudyInstanceUID", "UI", b"abc "),
    "Series UID empty": _raw("SeriesInstanceUID", "UI", b""),
    "SOP Class UID flipped": _raw("SOPClassUID", "UI", "1.2.840.10008.5.1.4.1.1.1.Ì".encode("latin-1")),
    "StudyDate impossible": _set("StudyDate", "20210230"),
    "StudyDate in the future": _set("StudyDate", "29990101"),
    "StudyDate before 1900": _set("StudyDate", "18500101"),
    "StudyDate cut": _set("StudyDate", "2021"),
    "StudyDate with binary": _raw("StudyDate", "DA", b"2021\x00\xff15"),
    "birth after the study": _set("PatientBirthDate", "20300101"),
    "birth date impossible": _set("PatientBirthDate", "19501301"),
    "PatientAge 999Y": _set("PatientAge", "999Y"),
    "PatientAge words": _raw("PatientAge", "AS", b"seventy "),
    "PatientSex X": _set("PatientSex", "X"),
    "PatientSex word": _set("PatientSex", "FEMALE"),
    "PatientID blank": _set("PatientID", "    "),
    "Modality flipped": _raw("Modality", "CS", "Ì X".encode("latin-1") + b" "),
    "Modality unknown": _set("Modality", "ZZ"),
    "Modality CT": _set("Modality", "CT"),
    "Modality two values": _set("Modality", ["DX", "CR"]),
    "body part CHEST": _set("BodyPartExamined", "CHEST"),
    "body part with control bytes": _raw("BodyPartExamined", "CS", b"HI\x01P"),
    "laterality Q": _set("ImageLaterality", "Q"),
    "laterality U": _set("ImageLaterality", "U"),
    "photometric RGBX": _set("PhotometricInterpretation", "RGBX"),
    "photometric RGB": _set("PhotometricInterpretation", "RGB"),
    "Rows and Columns 65535": lambda ds: (setattr(ds, "Rows", 65535), setattr(ds, "Columns", 65535)),
    "Rows 0": _set("Rows", 0),
    "Rows of 3 bytes": _raw("Rows", "US", b"\x01\x02\x03"),
    "Columns of 4 bytes": _raw("Columns", "US", b"\x40\x00\x40\x00"),
    "NumberOfFrames 99999": _set("NumberOfFrames", "99999"),
    "NumberOfFrames 0": _set("NumberOfFrames", "0"),
    "NumberOfFrames words": _raw("NumberOfFrames", "IS", b"abc "),
    "BitsStored over BitsAllocated": _set("BitsStored", 17),
    "BitsAllocated 12": _set("BitsAllocated", 12),
    "BitsAllocated 32": _set("BitsAllocated", 32),
    "pixel data shorter than declared": _short_pixels,
    "pixel data empty": _set("PixelData", b""),
    "no pixel data": _delete("PixelData"),
    "PixelSpacing NaN": _raw("PixelSpacing", "DS", b"nan\\nan "),
    "PixelSpacing negative": _set("PixelSpacing", [-1, -1]),
    "PixelSpacing words": _raw("PixelSpacing", "DS", b"abc\\def "),
    "WindowCenter junk": lambda ds: (_raw("WindowCenter", "DS", b"1e999 ")(ds), _set("WindowWidth", 0)(ds)),
    "RescaleSlope NaN": lambda ds: (_raw("RescaleSlope", "DS", b"nan "), _set("RescaleIntercept", 0)(ds))[0](ds),
    "VOI LUT junk": lambda ds: setattr(ds, "VOILUTSequence", [Dataset()]),
    "SpecificCharacterSet unknown": _set("SpecificCharacterSet", "ISO_IR 999"),
}

ENCODINGS = {  # name: (how the dataset is encoded, what the file meta claims; None: the truth)
    "explicit LE": (ExplicitVRLittleEndian, None),
    "implicit LE": (ImplicitVRLittleEndian, None),
    "explicit BE": (ExplicitVRBigEndian, None),
    "deflated": (DeflatedExplicitVRLittleEndian, None),
    "RLE": (RLELossless, None),
    "JPEG 2000": (JPEG2000Lossless, None),
    "implicit data claimed explicit": (ImplicitVRLittleEndian, ExplicitVRLittleEndian),
    "explicit data claimed implicit": (ExplicitVRLittleEndian, ImplicitVRLittleEndian),
    "little endian claimed big": (ExplicitVRLittleEndian, ExplicitVRBigEndian),
    "plain data claimed deflated": (ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian),
    "native pixels claimed JPEG": (ExplicitVRLittleEndian, JPEGBaseline8Bit),
    "native pixels claimed RLE": (ExplicitVRLittleEndian, RLELossless),
    "RLE pixels claimed native": (RLELossless, ExplicitVRLittleEndian),
    "transfer syntax with a flipped byte": (ExplicitVRLittleEndian, "1.2.840.10008.1.Í.1"),
    "transfer syntax unknown": (ExplicitVRLittleEndian, "1.2.3.4.5"),
    "transfer syntax empty": (ExplicitVRLittleEndian, ""),
}
_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"}


@contextmanager
def _writing():
    """The test's own writer warns on the values it is told to write: that is not the code's noise."""
    saved = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE
    try:
        with quiet_reads(), warnings.catch_warnings():  # quiet_reads: its log records too
            warnings.simplefilter("ignore")
            yield
    finally:
        config.settings.writing_validation_mode = saved


def encode(seed: Dataset, edits: list[str], encoding: str, n: int) -> bytes:
    """The seed with `edits`, in `encoding`; image `n` (its own SOP Instance UID)."""
    actual, claimed = ENCODINGS[encoding]
    ds = copy.deepcopy(seed)
    uid = f"1.2.826.0.1.3680043.10.543.{n}"  # a new image each time: no UID conflict hides a check
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    buf = io.BytesIO()
    with _writing():
        try:
            if actual in (RLELossless, JPEG2000Lossless):
                ds.compress(actual, generate_instance_uid=False)
            for name in edits:
                EDITS[name](ds)
            ds.file_meta.TransferSyntaxUID = actual
            pydicom.dcmwrite(buf, ds, implicit_vr=actual.is_implicit_VR, little_endian=actual.is_little_endian,
                             enforce_file_format=True)
        except Exception:  # noqa: BLE001 - a combination pydicom will not write is not an input
            reject()
    return buf.getvalue() if claimed is None else claim(buf.getvalue(), claimed)


def length_fields(data: bytes) -> list[tuple[int, int, str]]:
    """(offset, size, struct byte order) of each top-level element's length field; none for a file
    whose positions are not the file's (deflated) or that does not parse."""
    try:
        with quiet_reads(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data))
            if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
                return []
            out = []
            for tag in list(ds.keys()):
                raw = ds.get_item(tag)
                if not isinstance(raw, RawDataElement) or raw.length == 0xFFFFFFFF or not raw.value_tell:
                    continue
                size = 4 if raw.is_implicit_VR or raw.VR in _LONG_VRS else 2
                out.append((raw.value_tell - size, size, "<" if raw.is_little_endian else ">"))
            return out
    except Exception:  # noqa: BLE001 - a file that does not parse gets no length mutation
        return []


position = st.floats(0, 1, exclude_max=True)
MUTATIONS = st.one_of(
    st.tuples(st.just("truncate"), position),
    st.tuples(st.just("flip"), position, st.integers(1, 255), st.booleans()),
    st.tuples(st.just("insert"), position, st.binary(min_size=1, max_size=8), st.booleans()),
    st.tuples(st.just("delete"), position, st.integers(1, 16), st.booleans()),
    st.tuples(st.just("length"), st.integers(0, 200),
              st.sampled_from([0, 1, 3, 7, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, -2, 2, 1000])),
)


def mutate(data: bytes, mutations) -> bytes:
    header_end = max(200, data.find(b"\xe0\x7f\x10\x00"), data.find(b"\x7f\xe0\x00\x10"))
    out = bytearray(data)
    for m in mutations:
        kind = m[0]
        if kind == "length":
            fields = length_fields(bytes(out))
            if not fields:
                continue
            offset, size, order = fields[m[1] % len(fields)]
            fmt = order + ("I" if size == 4 else "H")
            old = struct.unpack_from(fmt, out, offset)[0]
            new = old + m[2] if m[2] in (-2, 2, 1000) else m[2]
            struct.pack_into(fmt, out, offset, new % (1 << (8 * size)))
            continue
        # the header is where damage matters: most mutations land there, some anywhere
        span = (header_end if m[-1] else len(out)) if kind != "truncate" else len(out)
        at = int(m[1] * max(1, min(span, len(out))))
        if kind == "truncate":
            del out[at:]
        elif kind == "flip" and at < len(out):
            out[at] ^= m[2]
        elif kind == "insert":
            out[at:at] = m[2]
        elif kind == "delete":
            del out[at:at + m[2]]
    return bytes(out)


HONEST = [name for name, (_, claimed) in ENCODINGS.items() if claimed is None]
DICOM = st.tuples(
    st.sampled_from(SEEDS),
    st.sampled_from([0, 0, 1, 1, 1, 2, 3]).flatmap(
        lambda n: st.lists(st.sampled_from(sorted(EDITS)), min_size=n, max_size=n, unique=True)),
    weighted(honest=(3, st.sampled_from(HONEST)), lying=(1, st.sampled_from(sorted(set(ENCODINGS) - set(HONEST))))),
    st.sampled_from([0, 0, 1, 1, 2, 3]).flatmap(lambda n: st.lists(MUTATIONS, min_size=n, max_size=n)),
)


def deflate_bomb(seed: Dataset, inflated: int, n: int) -> bytes:
    """A deflated file whose Pixel Data inflates to `inflated` bytes of zeros (a few hundred KiB on disk)."""
    plain = encode(seed, [], "explicit LE", n)
    start = 144 + struct.unpack_from("<I", plain, 140)[0]  # the dataset follows the meta group
    at = plain.index(b"\xe0\x7f\x10\x00OW\x00\x00", start)
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = [packer.compress(plain[start:at + 8] + struct.pack("<I", inflated))]
    zeros = bytes(1 << 20)
    body += [packer.compress(zeros) for _ in range(inflated >> 20)]
    return claim(plain[:start], DeflatedExplicitVRLittleEndian) + b"".join(body) + packer.flush()
