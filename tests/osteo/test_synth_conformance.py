"""The synthetic DICOM is conformant: dicom3tools' validator, dciodvfy, finds no error in it.

Every file of a small cohort's truth.csv is checked: the CR and DX hip and AP pelvis views (hip and
pelvis, both photometric interpretations, mirrored, uncompressed, RLE and JPEG 2000) and the files out of
scope (chest CR, knee DX, the CR with an empty BodyPartExamined, hip CT, hip MR). Not checked: the junk
the generator breaks on purpose (a truncated file, a file without PatientID, one without dates), which
is not in truth.csv.

Warnings are allowed, printed by kind (`pytest -s`), not failed on. None remain with Debian's
dicom3tools 1.00~20220618; the one the generator used to draw, "ViewCodeSequence is empty or absent,
but view is known since ViewPosition has a value", went when the DX files got their coded view (AP).

dicom3tools is a Debian package, not a Python one: `make test` installs it (its system-packages step).
Without /usr/bin/dciodvfy this test fails, it does not skip.
"""

from __future__ import annotations

import csv
import re
import subprocess
from collections import Counter
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from osteo.synth import generate_cohort
from tests.helpers import synthetic_cohort

DCIODVFY = Path("/usr/bin/dciodvfy")
# 12 patients, seed 5: CR and DX, hip and (mirrored) pelvis of each, compressed ones of each, all transfer syntaxes
PATIENTS, SEED = 12, 5
IOD = {"CR": "CRImage", "DX": "DXImageForPresentation", "CT": "CTImage", "MR": "MRImage"}
# a message can follow a tag on its line: "(0x0010,0x0020)  ?  - Error - ..."
MESSAGE = re.compile(r"(?:^|\s)(Error|Warning) - (.*)$")


def _dciodvfy(path: Path) -> tuple[list[str], list[str], list[str]]:
    """(errors, warnings, other lines) of one file; dciodvfy writes its report to stderr."""
    if not DCIODVFY.exists():
        pytest.fail(f"{DCIODVFY} is missing: the DICOM conformance check needs dicom3tools (Debian package "
                    "dicom3tools); `make test` installs it (make system-packages)", pytrace=False)
    run = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True, timeout=60)
    errors, warnings, other = [], [], []
    for line in (run.stdout + run.stderr).splitlines():
        m = MESSAGE.search(line)
        if m is None:
            other.append(line.strip())
        else:
            (errors if m.group(1) == "Error" else warnings).append(m.group(2).strip())
    return errors, warnings, other


def test_dciodvfy_finds_no_error_in_the_cohort(tmp_path):
    if not DCIODVFY.exists():  # before the cohort is made: fail at once
        _dciodvfy(tmp_path)
    out = tmp_path / "cohort"
    generate_cohort(out, patients=PATIENTS, seed=SEED)
    rows = list(csv.DictReader(open(out / "truth.csv", encoding="utf-8")))
    hips = [r for r in rows if r["expected_scope"] == "in_scope"]
    # the sample holds every kind of hip image the generator writes
    kinds = {(r["modality"], r["view"], r["orientation"]) for r in hips}
    for modality in ("CR", "DX"):
        assert {(modality, "hip", "L\\F"), (modality, "pelvis", "R\\F")} <= kinds  # R\F: mirrored
    assert {r["photometric"] for r in hips} == {"MONOCHROME1", "MONOCHROME2"}
    assert {r["transfer_syntax"] for r in hips} == {ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless}
    assert {r["modality"] for r in hips if r["transfer_syntax"] != ExplicitVRLittleEndian} == {"CR", "DX"}
    assert {r["modality"] for r in rows} == set(IOD)

    errors: dict[str, list[str]] = {}
    warnings: Counter[str] = Counter()
    checked: Counter[str] = Counter()
    for r in rows:
        path = out / r["file"]
        errs, warns, other = _dciodvfy(path)
        # the IOD it was checked against is named on a line of its own: it did read the file
        assert IOD[r["modality"]] in other, (r["file"], other, errs)
        if errs:
            errors[r["file"]] = errs
        warnings.update(warns)
        kind = "hip/pelvis" if r["expected_scope"] == "in_scope" else "out of scope"
        checked[f"{kind} {r['modality']} {r['view'] or ''}".strip()] += 1
    n_err = sum(len(e) for e in errors.values())
    print(f"\ndciodvfy: {len(rows)} files checked ({', '.join(f'{k}: {v}' for k, v in sorted(checked.items()))}); "
          f"errors {n_err}; warnings {sum(warnings.values())}")
    for message, n in warnings.most_common():
        print(f"  warning x{n}: {message}")
    assert not errors, errors


def test_dciodvfy_reports_what_a_file_lacks(tmp_path):
    """The check itself: a DX without its Presentation LUT Shape (Type 1) and with a slope of 2 is an error."""
    out = synthetic_cohort(tmp_path / "cohort", patients=6, seed=1)
    row = next(r for r in csv.DictReader(open(out / "truth.csv", encoding="utf-8"))
               if r["modality"] == "DX" and r["expected_scope"] == "in_scope")
    ds = pydicom.dcmread(out / row["file"])
    assert (ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType) == (1, 0, "US")
    assert _dciodvfy(out / row["file"])[0] == []
    del ds.PresentationLUTShape
    ds.RescaleSlope = "2"
    ds.save_as(tmp_path / "bad.dcm")
    errors = " | ".join(_dciodvfy(tmp_path / "bad.dcm")[0])
    assert "PresentationLUTShape" in errors and "Rescale Slope" in errors, errors


def test_without_dciodvfy_the_check_fails_and_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(globals(), "DCIODVFY", tmp_path / "dciodvfy")  # this module's global
    with pytest.raises(pytest.fail.Exception, match=r"`make test` installs it"):
        _dciodvfy(tmp_path / "any.dcm")
