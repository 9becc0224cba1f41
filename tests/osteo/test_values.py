"""osteo.etl.values: the checks that make an ingested value valid, not only present."""

from __future__ import annotations

import datetime as dt

import pytest

from osteo.etl import values as v


@pytest.mark.parametrize("uid", ["0", "1.2.3", "1.2.840.10008.1.2.1", "2.25.0.10", "1." + "2" * 62])
def test_valid_uids(uid):
    assert v.is_uid(uid)


@pytest.mark.parametrize("uid", [
    "", "1Ñ2.826.0.1.3680043", "1.2.840.10008.1.Í.1",  # the flipped bytes
    "1.2.826.0.1.3680043.99.1.", ".1.2", "1..2", "1.02.3", "01.2", "1.2 ", " 1.2", "1.2\x00", "1,2",
    "1." + "2" * 63,  # 65 characters
    "١.٢",  # digits of another script
])
def test_invalid_uids(uid):
    assert not v.is_uid(uid)


def test_is_uid_takes_only_text():
    assert not v.is_uid(None) and not v.is_uid(123) and not v.is_uid(b"1.2.3")


def test_da_is_a_real_plausible_yyyymmdd():
    assert v.parse_da("20210315") == dt.date(2021, 3, 15)
    assert v.parse_da("19000101") == v.DATE_MIN
    assert v.parse_da(" 20210315 ".strip()) == dt.date(2021, 3, 15)
    assert v.parse_da(v.latest_date().strftime("%Y%m%d")) == v.latest_date()


@pytest.mark.parametrize("bad", ["", "2021", "202103150", "2021-03-15", "2021.03.15", "20210230", "20211301",
                                 "18991231", "29990101", "2021031a", "２０２１０３１５", "20210315garbage"])
def test_da_refuses_what_is_not_a_plausible_date(bad):
    with pytest.raises(ValueError):
        v.parse_da(bad)


def test_da_refuses_the_day_after_tomorrow():
    with pytest.raises(ValueError):
        v.parse_da((dt.date.today() + dt.timedelta(days=2)).strftime("%Y%m%d"))


@pytest.mark.parametrize("text,expected", [
    ("07", dt.time(7)), ("0730", dt.time(7, 30)), ("073015", dt.time(7, 30, 15)),
    ("073015.5", dt.time(7, 30, 15, 500000)), ("235959.999999", dt.time(23, 59, 59, 999999)),
])
def test_tm(text, expected):
    assert v.parse_tm(text) == expected


@pytest.mark.parametrize("bad", ["", "7", "2400", "0760", "07:30", "073015.", "073015.1234567", "ab"])
def test_tm_refuses(bad):
    with pytest.raises(ValueError):
        v.parse_tm(bad)


@pytest.mark.parametrize("text,years", [("070Y", 70), ("000Y", 0), ("130Y", 130), ("024M", 2), ("104W", 1),
                                        ("400D", 1), ("070y", 70)])
def test_as_ages(text, years):
    assert v.parse_as(text) == years


@pytest.mark.parametrize("bad", ["70Y", "70", "0070Y", "131Y", "999Y", "-01Y", "070X", ""])
def test_as_refuses(bad):
    with pytest.raises(ValueError):
        v.parse_as(bad)


def test_code_strings():
    assert v.code_text(" dx ") == "DX" and v.code_text(None) == "" and v.code_text("L\0") == "L"
    assert v.code_text(["DX", "CR"]) == "DX\\CR"  # multi-valued: in no value set
    assert v.is_cs("MONOCHROME2") and v.is_cs("PALETTE COLOR") and v.is_cs("YBR_FULL")
    assert not v.is_cs("Ì") and not v.is_cs("dx") and not v.is_cs("L-SPINE") and not v.is_cs("A" * 17)
    assert {"CR", "DX", "MR", "CT", "BMD", "OT"} <= v.MODALITIES and "Ì" not in v.MODALITIES
    assert v.LATERALITIES == ("L", "R", "B", "U") and v.SEXES == ("M", "F", "O")
    assert "MONOCHROME1" in v.PHOTOMETRICS and "RGBX" not in v.PHOTOMETRICS


def test_printable():
    assert v.is_printable("髖關節", 64) and v.is_printable("HIP", 64)
    assert not v.is_printable("HI\x00P", 64) and not v.is_printable("", 64) and not v.is_printable("X" * 65, 64)


def test_numbers():
    assert v.finite_in(0.5, 0, 1) and v.finite_in(0, 0, 1) and not v.finite_in(float("nan"), 0, 1)
    assert not v.finite_in(float("inf"), 0, float("inf")) and not v.finite_in(1.5, 0, 1)
    assert v.plausible_age(0) and v.plausible_age(130) and not v.plausible_age(-1) and not v.plausible_age(131)


@pytest.mark.parametrize("rows,cols,frames,bits,ok", [
    (2500, 2000, 1, 16, True), (7000, 7000, 1, 16, True), (16, 16, 1, 8, True), (7000, 7000, 2, 16, True),
    (65535, 65535, 1, 16, False), (16385, 10, 1, 16, False), (7100, 7100, 1, 16, False),  # over 50 Mpx
    (7000, 7000, 3, 16, False),  # 294 MB of pixels
    (2000, 2000, 100000, 16, False), (0, 10, 1, 16, False), (10, 10, 0, 16, False),
])
def test_a_declared_image_too_large_to_be_a_radiograph(rows, cols, frames, bits, ok):
    assert (v.image_size_problem(rows, cols, frames, 1, bits) is None) is ok
