"""Differential testing of our strict DICOM header reader (osteo/etl/dicom_fast.py) against pydicom's path:
every input goes to both (`header_record(..., fast=True)` and `fast=False`) and must give the same record,
the same out-of-scope decision or the same refusal (reason and detail). The fast reader hands whatever it
cannot read exactly back to pydicom, so a disagreement is a bug in what it does read.

Inputs: the fuzz's hostile files (tests/fuzz/dicom_inputs.py) over seeds given the structures the fast
reader walks (undefined-length and nested sequences, private sequences, character sets, the synthetic
marks); the grid of every seed, structure, encoding and edit; pydicom's own test files; a synthetic
cohort. The counts (inputs compared, read by the fast reader, disagreements) are printed at the end of
the session. Short run in `make test`; `OSTEO_FUZZ=long` draws 2000 fresh cases and a larger cohort.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from hypothesis.errors import UnsatisfiedAssumption
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset

from osteo.etl.dicom_fast import parse_fast
from osteo.etl.dicom_headers import header_record
from osteo.etl.dicom_parsed import Parsed, parse_with_pydicom
from osteo.etl.errors import InputError
from osteo.etl.quiet import quiet_reads
from osteo.synth.dicomio import mark_synthetic
from tests.fuzz.dicom_inputs import DICOM, EDITS, ENCODINGS, HONEST, SEEDS, encode, mutate, seed_datasets
from tests.fuzz.support import PROFILE, compared, fuzz

KEY = b"fuzz-differential-key"
_serial = itertools.count(1)


# --- the structures the fast reader walks, given to the seeds -------------------------------------

def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "SCT", meaning
    return item


def _sequences(ds: Dataset) -> None:
    """Undefined-length sequences, one nested in an undefined-length item, an empty item, and a defined one."""
    region = _code("24136001", "Hip joint")
    region.AnatomicRegionModifierSequence = [_code("7771000", "Left")]
    region["AnatomicRegionModifierSequence"].is_undefined_length = True
    region.is_undefined_length_sequence_item = True
    ds.AnatomicRegionSequence = [region, _code("12921003", "Pelvis")]
    ds["AnatomicRegionSequence"].is_undefined_length = True
    ds.ReferencedStudySequence = [Dataset()]
    ds["ReferencedStudySequence"].is_undefined_length = True
    ds.ProcedureCodeSequence = [_code("5880005", "Radiograph")]


def _private_sequence(ds: Dataset) -> None:
    """A private sequence of undefined length (read as implicit VR, pydicom has no dictionary VR for it)."""
    block = ds.private_block(0x0011, "OSTEO TEST", create=True)
    block.add_new(0x10, "SQ", [_code("1", "private")])
    ds[block.get_tag(0x10)].is_undefined_length = True


def _charset(name: str, patient_id: str, description: str) -> Callable[[Dataset], None]:
    def edit(ds: Dataset) -> None:
        ds.SpecificCharacterSet = name
        ds.PatientID, ds.StudyDescription = patient_id, description
    return edit


STRUCTURES: dict[str, Callable[[Dataset], None]] = {
    "plain": lambda ds: None,
    "sequences": _sequences,
    "private sequence": _private_sequence,
    "latin-1 text": _charset("ISO_IR 100", "Ä1234567", "Hüfte links"),
    "utf-8 text": _charset("ISO_IR 192", "王1234567", "左側髖關節 AP"),
    "code extensions": _charset("ISO 2022 IR 100", "A1234567", "HIP AP"),
    "unknown character set": _charset("ISO_IR 999", "A1234567", "HIP AP"),
    "synthetic marks": mark_synthetic,
}


def structured(seed: Dataset, structure: str) -> Dataset:
    ds = copy.deepcopy(seed)
    STRUCTURES[structure](ds)
    return ds


# --- the comparison ---------------------------------------------------------------------------------

def outcome(data: bytes, fast: bool) -> tuple:
    try:
        return ("read", header_record(data, KEY, fast=fast))
    except InputError as exc:
        return ("refused", exc.reason, exc.detail)
    except Exception as exc:  # noqa: BLE001 - a crash must be the same crash (the fuzz of test_fuzz_dicom fails it)
        return ("crash", type(exc).__name__)


def _parse_view(parsed: Parsed) -> tuple:
    """Everything the checks read of a parse, values by type and repr (a NaN is not equal to itself)."""
    h = parsed.header
    return (parsed.at, parsed.encoding, h.synthetic, repr(h.file_meta.get("TransferSyntaxUID")),
            {k: (type(v).__name__, repr(v)) for k, v in h.values.items()})


def compare(data: bytes) -> tuple[tuple, tuple, bool]:
    """(fast outcome, pydicom outcome, whether the fast reader read it itself), counted; where the fast
    reader read the file, its parse must also be pydicom's (values, types, where it stopped)."""
    fast, slow = outcome(data, True), outcome(data, False)
    with quiet_reads():  # as header_record calls them
        parsed = parse_fast(data)
        same = fast == slow
        if parsed is not None:
            try:
                same = same and _parse_view(parsed) == _parse_view(parse_with_pydicom(data))
            except InputError:
                same = False
    compared(same, parsed is not None)
    return fast, slow if same else ("parse differs", slow), parsed is not None


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, Dataset]:
    return seed_datasets(tmp_path_factory.mktemp("seeds"))


# --- hostile files ------------------------------------------------------------------------------------

@fuzz(300)
@given(structure=st.sampled_from(sorted(STRUCTURES)), case=DICOM)
def test_the_fast_reader_agrees_with_pydicom_on_every_hostile_file(seeds, structure, case):
    seed, edits, encoding, mutations = case
    note(f"structure {structure!r}, seed {seed!r}, edits {edits}, encoding {encoding!r}, mutations {mutations}")
    data = mutate(encode(structured(seeds[seed], structure), edits, encoding, next(_serial)), mutations)
    fast, slow, _ = compare(data)
    assert fast == slow


def _grid(seeds: dict[str, Dataset]):
    """(name, bytes): every seed x structure x honest encoding, every lie about the encoding, every edit."""
    cases = [((seed, structure, encoding, ()), seed, structure, encoding, [])
             for seed in SEEDS for structure in STRUCTURES for encoding in HONEST]
    cases += [(("hip", "plain", encoding, ()), "hip", "plain", encoding, []) for encoding in ENCODINGS
              if encoding not in HONEST]
    cases += [(("hip", "sequences", encoding, (edit,)), "hip", "sequences", encoding, [edit])
              for edit in EDITS for encoding in ("explicit LE", "implicit LE")]
    for name, seed, structure, encoding, edits in cases:
        try:
            yield name, encode(structured(seeds[seed], structure), edits, encoding, next(_serial))
        except UnsatisfiedAssumption:  # a combination pydicom will not write is not an input
            continue


def test_every_seed_structure_encoding_and_edit_agrees(seeds):
    """The grid, and the fast reader reads the honest little-endian files itself (or the test proves nothing)."""
    read = {}
    for name, data in _grid(seeds):
        fast, slow, read[name] = compare(data)
        assert fast == slow, name
    must_read = [n for n in read if n[1] in ("plain", "sequences", "latin-1 text", "utf-8 text", "synthetic marks")
                 and n[2] in ("explicit LE", "implicit LE", "RLE", "JPEG 2000") and not n[3]]
    assert must_read and all(read[n] for n in must_read), [n for n in must_read if not read[n]]
    assert not any(read[n] for n in read if n[2] in ("explicit BE", "deflated"))  # pydicom's to read


# --- real files -----------------------------------------------------------------------------------

def test_pydicoms_test_files_agree():
    files = [Path(f) for f in get_testdata_files() if Path(f).is_file()]
    assert len(files) > 100
    for f in files:
        fast, slow, _ = compare(f.read_bytes())
        assert fast == slow, f.name


def _synth_headers(tmp: Path, n: int) -> list[Path]:
    """Films as `osteo synth` writes their headers (its build_dataset over its own random acquisitions: DX and
    CR, hip and pelvis, windows, rescales, sequences, the marks), with tiny pixel data: no rendering."""
    import datetime as dt

    import numpy as np

    from osteo.synth.dicomio import build_dataset, image_params

    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        view = ("hip", "pelvis")[i % 2]
        spec = {"sop_uid": f"2.25.{1000 + i}", "study_uid": f"2.25.{2000 + i}", "series_uid": f"2.25.{3000 + i}",
                "date": dt.date(2021, 3, 1), "birth": dt.date(1950, 1, 2), "accession": f"XR{i:04d}",
                "patient_name": "CHEN^MEI LING", "patient_id": f"A{i:07d}", "sex": "FM"[i % 2], "study_id": "1",
                "instance": 1, "laterality": "LR"[i % 2], "view": view, "mirrored": i % 3 == 0,
                "_window": (90.5, 200.0)}
        ds = build_dataset(spec, np.zeros((16, 24), np.uint16), image_params(rng, view), rng)
        paths.append(tmp / f"synth{i}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def test_synthetic_films_agree_and_are_read_by_the_fast_reader(tmp_path):
    """The synthetic hospital's headers (a whole cohort, 40 patients, in the long run: `OSTEO_FUZZ=long`)."""
    if PROFILE == "long":
        from osteo.synth import generate_cohort

        generate_cohort(tmp_path / "cohort", patients=40, seed=5, workers=1)
        files = sorted(p for p in (tmp_path / "cohort" / "dicom").rglob("*") if p.is_file())
    else:
        files = _synth_headers(tmp_path, 24)
    images = 0
    for f in files:
        fast, slow, read_fast = compare(f.read_bytes())
        assert fast == slow, f.name
        images += fast[0] == "read"
        assert read_fast or fast[0] != "read", f"{f.name} was handed to pydicom"
    assert images >= len(files) // 2
