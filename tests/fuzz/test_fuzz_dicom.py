"""Hostile DICOM through the refresh's header ingest (osteo.ingest.refresh.ingest_dicom) and the export/render
path (osteo.etl.imaging): every file is processed or quarantined with a reason, nothing crashes,
nothing invalid is stored, pydicom says nothing, and no declared size is allocated unchecked.

A file is a valid seed (tests/dicom_factory.py), encoded in a transfer syntax that may lie about the
encoding, with hostile values set (invalid UIDs, dates, codes, sizes, bit depths, short pixel data)
and then its bytes cut, flipped, inserted, deleted, or an element's length field rewritten
(tests/fuzz/dicom_inputs.py).
"""

from __future__ import annotations

import itertools
import tracemalloc

import pytest
from hypothesis import example, given, note
from pydicom.dataset import Dataset
from sqlalchemy import select

from db.models import DicomImage, OutOfScope
from osteo.etl import imaging
from osteo.etl.dicom_headers import header_record
from osteo.etl.errors import InputError
from osteo.etl.imaging import ExportError
from osteo.ingest import refresh
from tests.fuzz.dicom_inputs import DICOM, ENCODINGS, deflate_bomb, encode, mutate, seed_datasets
from tests.fuzz.support import call, check_image, count, factory_for, fuzz, quarantine_reasons, source

KEY = b"fuzz-pseudonym-key"
BOX = (8, 8, 40, 40)  # inside every seed
_serial = itertools.count(1)


# --- seeds -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, Dataset]:
    return seed_datasets(tmp_path_factory.mktemp("seeds"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("dicom-fuzz")
    return d, factory_for(d)


# --- the properties ------------------------------------------------------------------------------

def ingest_one(factory, path: str) -> str:
    counts = call("dicom ingest", refresh.ingest_dicom, factory, [path], KEY)
    assert counts.files == 1
    with factory() as s:
        sf = source(s, path)
        if sf.status == "quarantined":
            reasons = quarantine_reasons(s, "ingest_dicom", sf.sha256)
            assert reasons and all(reasons.values()), reasons
            return "quarantined"
        if sf.status == "out_of_scope":
            assert s.scalar(select(OutOfScope.id).join(OutOfScope.source_file)
                            .where(OutOfScope.source_file_id == sf.id)) or counts.duplicates
            return "out_of_scope"
        assert sf.status == "ingested", sf.status
        img = s.scalar(select(DicomImage).where(DicomImage.source_file_id == sf.id))
        assert img is not None or counts.duplicates
        if img is not None:
            check_image(img)
        return "processed"


def export_one(kind: str, fn, *args, **kwargs) -> str:
    try:
        out = call(kind, fn, *args, **kwargs)
    except ExportError as exc:
        assert exc.reason and exc.detail
        return "quarantined"
    if isinstance(out, imaging.ExportResult):
        assert out.status in ("exported", "excluded")
    return "processed"


@fuzz(250)
@given(case=DICOM)
# found by this fuzzing (each crashed before its fix; see the report of the "hostile files" issue)
@example(case=("hip", ["Rows of 3 bytes"], "explicit LE", []))  # BytesLengthException in the header reader
@example(case=("hip", [], "plain data claimed deflated", []))  # zlib.error in the header reader
@example(case=("hip", [], "explicit LE", [("flip", 0.30859375, 1, True)]))  # VR UI -> UH in the file meta
@example(case=("hip", ["pixel data empty"], "explicit LE", []))  # len(None) in the export
@example(case=("hip", [], "RLE", [("delete", 0.998046875, 12, True)]))  # a stray delimiter item, export
@example(case=("hip", ["Rows and Columns 65535"], "RLE", []))  # 16 GiB allocated by the RLE decoder
def test_every_dicom_is_ingested_or_quarantined_and_exports_or_is_refused(seeds, workdir, case):
    seed, edits, encoding, mutations = case
    note(f"seed {seed!r}, edits {edits}, encoding {encoding!r}, mutations {mutations}")
    d, factory = workdir
    n = next(_serial)
    data = mutate(encode(seeds[seed], edits, encoding, n), mutations)
    path = d / f"{n}.dcm"
    path.write_bytes(data)
    for kind in ("dicom ingest", "dicom export", "dicom render"):
        count(kind, "tried")
    count("dicom ingest", ingest_one(factory, str(path)))
    count("dicom export", export_one("dicom export", imaging.export_roi, path, BOX, "L", d / f"{n}.png",
                                     metal_threshold=1.0, blur_threshold=0.0))
    count("dicom render", export_one("dicom render", imaging.render_png, path, d / f"{n}-all.png", max_size=32))


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_every_encoding_is_written_and_says_what_it_claims(seeds, encoding):
    """The fuzz's own builder: no encoding is silently rejected, and a lie is in the file meta."""
    data = encode(seeds["hip"], [], encoding, next(_serial))
    assert data[128:132] == b"DICM"
    claimed = ENCODINGS[encoding][1]
    if claimed:
        assert str(claimed).encode("latin-1") in data[132:400]


def test_the_seeds_themselves_are_processed(seeds, workdir):
    """The fuzz starts from good files: each seed, in each honest encoding, ingests and exports."""
    d, factory = workdir
    for seed in seeds:
        for encoding in ("explicit LE", "implicit LE", "deflated", "RLE", "JPEG 2000"):
            n = next(_serial)
            path = d / f"seed-{n}.dcm"
            path.write_bytes(encode(seeds[seed], [], encoding, n))
            assert ingest_one(factory, str(path)) == ("out_of_scope" if seed == "mr" else "processed")
            assert export_one("seed", imaging.export_roi, path, BOX, "L", d / f"seed-{n}.png",
                              metal_threshold=1.0, blur_threshold=0.0) == "processed", (seed, encoding)


# --- no buffer of a declared size is allocated unchecked -------------------------------------------

@pytest.mark.parametrize("encoding", ["explicit LE", "RLE", "JPEG 2000", "deflated"])
@pytest.mark.parametrize("edit", ["Rows and Columns 65535", "NumberOfFrames 99999"])
def test_a_declared_huge_image_is_refused_from_its_header(seeds, tmp_path, encoding, edit):
    """64 x 64 pixels on disk that declare 65535 x 65535 (8 GiB to decode into) or 99999 frames: refused
    by the header reader and by the export, with no more than a few MiB allocated."""
    path = tmp_path / "huge.dcm"
    path.write_bytes(encode(seeds["hip"], [edit], encoding, next(_serial)))
    tracemalloc.start()
    try:
        with pytest.raises(InputError) as ingest:
            header_record(path.read_bytes(), KEY)
        with pytest.raises(ExportError) as export:
            imaging.export_roi(path, BOX, "L", tmp_path / "huge.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ingest.value.reason == "image_too_large" or edit.startswith("NumberOfFrames") and ingest.value.reason \
        in ("image_too_large", "bad_tag:NumberOfFrames"), ingest.value.reason
    assert export.value.reason == "image_too_large", export.value.reason
    assert peak < 32 << 20, f"{peak >> 20} MiB allocated"


def test_a_deflate_bomb_is_refused_before_it_is_inflated(seeds, tmp_path):
    """pydicom inflates a deflated dataset whole, even to read its header: its size is counted first."""
    path = tmp_path / "bomb.dcm"
    path.write_bytes(deflate_bomb(seeds["hip"], 400 << 20, next(_serial)))
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(InputError) as ingest:
            header_record(path.read_bytes(), KEY)
        with pytest.raises(ExportError) as export:
            imaging.render_png(path, tmp_path / "bomb.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ingest.value.reason == export.value.reason == "image_too_large"
    assert peak < 32 << 20, f"{peak >> 20} MiB allocated"
