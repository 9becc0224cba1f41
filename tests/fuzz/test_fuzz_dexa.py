"""Hostile DEXA exports through the refresh's ingest (osteo.ingest.refresh.ingest_dexa): good rows next to bad
ones (impossible dates, negative BMD, T-, Z-scores and ages out of range, stray quotes, binary junk,
a field over the csv module's limit), in UTF-8, UTF-8 with BOM, Big5 and UTF-16 as Excel writes it
("Unicode Text": BOM, tabs, CRLF). Every good row is stored, no bad row is, each bad row is quarantined
with a reason, and the file itself is never lost. Damaged .xlsx workbooks and plain junk files are
processed or quarantined, never a crash."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import struct

import pytest
from hypothesis import example, given, note
from hypothesis import strategies as st
from sqlalchemy import select

from db.models import DexaExam
from osteo.ingest import refresh
from osteo.settings import Settings
from tests.fuzz.support import call, check_exam, count, factory_for, fuzz, quarantine_reasons, source
from tests.fuzz.support import damage as damage_bytes

KEY = b"fuzz-pseudonym-key"
_serial = itertools.count(1)

COLUMNS = {  # canonical -> header names a hospital may use
    "patient_id": ["PatientID", "Patient ID", "ChartNo", "病歷號"],
    "exam_date": ["ExamDate", "Exam Date", "StudyDate", "檢查日期"],
    "neck_bmd": ["Neck_BMD", "NeckBMD", "股骨頸BMD"],
    "t_score": ["T-score", "Neck_T", "T值"],
    "z_score": ["Z-score", "Z值"],
    "side": ["Side", "左右"],
    "age": ["Age", "年齡"],
}
ENCODINGS = {  # name: (codec, delimiters, line ending)
    "utf-8": ("utf-8", ",;\t", "\n"),
    "utf-8 with BOM": ("utf-8-sig", ",;", "\r\n"),
    "big5": ("big5", ",\t", "\r\n"),
    "utf-16 as Excel writes it": ("utf-16", "\t", "\r\n"),
}


def _date(day: dt.date, style: str) -> str:
    roc = day.year - 1911
    return {"iso": day.isoformat(), "slash": day.strftime("%Y/%m/%d"), "compact": day.strftime("%Y%m%d"),
            "roc": f"{roc}/{day.month}/{day.day}", "roc compact": f"{roc:03d}{day:%m%d}"}[style]


GOOD = st.fixed_dictionaries({
    "exam_date": st.builds(_date, st.dates(dt.date(1990, 1, 1), dt.date(2024, 12, 31)),
                           st.sampled_from(["iso", "slash", "compact", "roc", "roc compact"])),
    "neck_bmd": st.one_of(st.just(""), st.floats(0.30, 1.60).map(lambda x: f"{x:.3f}")),
    "t_score": st.one_of(st.just(""), st.floats(-6, 4).map(lambda x: f"{x:.1f}")),
    "z_score": st.one_of(st.just(""), st.floats(-5, 5).map(lambda x: f"{x:.1f}")),
    "side": st.sampled_from(["L", "R", "", "Left", "right", "左", "右", "-"]),
    "age": st.one_of(st.just(""), st.integers(20, 100).map(str)),
}).filter(lambda r: r["neck_bmd"] or r["t_score"])

BAD_CELLS = {  # bad kind -> (column, values that break its rule)
    "impossible date": ("exam_date", ["2021-02-30", "2021-13-01", "1850-01-01", "2999-01-01", "99999999",
                                      "yesterday", "112/13/01", "", "0000-00-00", "２０２１-０１-０１"]),
    "negative or huge BMD": ("neck_bmd", ["-0.5", "0", "3.5", "1e309", "nan", "inf", "-inf", "0.5.1", "1_0"]),
    "T-score out of range": ("t_score", ["-11", "12.5", "nan", "-inf", "1e5"]),
    "Z-score out of range": ("z_score", ["15", "-99", "nan"]),
    "age out of range": ("age", ["200", "-5", "abc", "1e3"]),
    "side unknown": ("side", ["Q", "both", "???"]),
    "no patient": ("patient_id", ["", "   "]),
}
BAD = st.one_of(
    st.tuples(st.sampled_from(sorted(BAD_CELLS)), st.integers(0, 20)),
    st.tuples(st.just("stray quote"), st.integers(0, 20)),
    st.tuples(st.just("short row"), st.just(0)),
    st.tuples(st.just("junk line"), st.binary(min_size=1, max_size=24)),
    st.tuples(st.just("junk in a cell"), st.binary(min_size=1, max_size=6)),
    st.tuples(st.just("field over the csv limit"), st.just(0)),
)
ROWS = st.lists(st.one_of(st.tuples(st.just("good"), GOOD), st.tuples(st.just("bad"), GOOD, BAD)),
                min_size=1, max_size=12)
JUNK_KINDS = ("junk line", "junk in a cell")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("dexa-fuzz")
    return d, factory_for(d), Settings(var_dir=d)


def _no_break(raw: bytes, codec: str) -> bytes:
    """Junk without line breaks (a break would shift every row number after it); for UTF-16, whole code units."""
    if codec == "utf-16":
        units = [u for u in struct.unpack(f"<{len(raw) // 2}H", raw[: len(raw) // 2 * 2]) if u not in (10, 13)]
        return struct.pack(f"<{len(units)}H", *units) or "\u00a7".encode("utf-16-le")
    return raw.replace(b"\r", b"").replace(b"\n", b"") or b"\xff"


def build(rows, columns: list[str], names: list[str], encoding: str, delimiter: str, n: int):
    """The file's bytes, and which row numbers are good and which bad (and of which kind)."""
    codec, _, eol = ENCODINGS[encoding]
    unit = "utf-16-le" if codec == "utf-16" else ("utf-8" if codec == "utf-8-sig" else codec)
    bom = {"utf-16": b"\xff\xfe", "utf-8-sig": b"\xef\xbb\xbf"}.get(codec, b"")
    lines = [delimiter.join(names).encode(unit)]
    good, bad = [], {}
    for i, row in enumerate(rows, start=1):
        cells = dict(row[1], patient_id=f"FZ{n}-{i}")
        kind = None
        if row[0] == "bad":
            kind, arg = row[2]
            if kind in BAD_CELLS:
                column, values = BAD_CELLS[kind]
                cells[column] = values[arg % len(values)]
            elif kind == "stray quote":  # opens a field that swallows the rest of its line (and, read by a
                # plain CSV reader, every line after it); not in the last column, where it closes at once
                column = columns[arg % (len(columns) - 1)]
                cells[column] = '"' + cells[column]
            elif kind == "field over the csv limit":
                cells["exam_date"] = "x" * 140_000
        text = delimiter.join(cells[c] for c in columns)
        if kind == "short row":
            text = delimiter.join((cells["patient_id"], cells["exam_date"]))
        line = text.encode(unit)
        if kind == "junk line":
            line = _no_break(row[2][1], codec)
        elif kind == "junk in a cell":  # inside the date, which must then fail
            cells["exam_date"] = "\0"
            line = delimiter.join(cells[c] for c in columns).encode(unit).replace(
                "\0".encode(unit), _no_break(row[2][1], codec) + "X".encode(unit))
        lines.append(line)
        if kind is None:
            good.append(i)
        else:
            bad[i] = kind
    data = bom + eol.encode(unit).join(lines) + eol.encode(unit)
    return data, good, bad


CSV = st.tuples(ROWS, st.permutations(list(COLUMNS)), st.sampled_from(list(ENCODINGS)), st.integers(0, 2),
                st.integers(0, 3))


_G = {"exam_date": "2021-01-02", "neck_bmd": "0.600", "t_score": "-2.2", "z_score": "", "side": "L", "age": "70"}
_ORDER = list(COLUMNS)


@fuzz(120)
@given(case=CSV)
# found by this fuzzing (rows lost, or a crash, before the fix)
@example(case=([("bad", _G, ("stray quote", 1)), ("good", _G), ("good", _G)], _ORDER, "utf-8", 0, 0))
@example(case=([("bad", _G, ("field over the csv limit", 0)), ("good", _G)], _ORDER, "utf-8", 0, 0))  # csv.Error
@example(case=([("good", _G), ("bad", _G, ("junk line", b"\xff\xfe\x81junk"))], _ORDER, "utf-8 with BOM", 0, 0))
@example(case=([("good", dict(_G, side="左")), ("bad", _G, ("junk line", b"\xa4\xa4")),
                ("bad", _G, ("junk line", b"\xa4\xa5"))], _ORDER, "utf-8", 0, 0))  # read as Big5
@example(case=([("good", dict(_G, side="左")), ("bad", _G, ("junk line", b"\xc2\x80"))], _ORDER, "big5", 0, 0))
@example(case=([("good", _G), ("bad", _G, ("junk line", b"\x00\xd8"))], _ORDER, "utf-16 as Excel writes it", 0, 0))
def test_good_rows_are_kept_next_to_bad_ones(workdir, case):
    rows, columns, encoding, delimiter_pick, name_pick = case
    d, factory, settings = workdir
    n = next(_serial)
    delimiters = ENCODINGS[encoding][1]
    delimiter = delimiters[delimiter_pick % len(delimiters)]
    names = [COLUMNS[c][name_pick % len(COLUMNS[c])] for c in columns]
    data, good, bad = build(rows, columns, names, encoding, delimiter, n)
    note(f"{encoding}, delimiter {delimiter!r}, good rows {good}, bad rows {bad}")
    path = d / f"{n}.csv"
    path.write_bytes(data)
    count("dexa file", "tried")
    count("dexa row", "tried", len(rows))
    call("dexa file", refresh.ingest_dexa, factory, [str(path)], KEY, settings)
    with factory() as s:
        sf = source(s, str(path))
        quarantined = quarantine_reasons(s, "ingest_dexa", sf.sha256)
        assert sf.status == "ingested", quarantined  # the header is good: the file is never lost
        count("dexa file", "processed")
        exams = s.scalars(select(DexaExam).where(DexaExam.source_file_id == sf.id)).all()
    for exam in exams:
        check_exam(exam)
    stored = {e.source_row for e in exams}
    lost = sorted(set(good) - stored)
    count("dexa row", "processed", len(stored))
    count("dexa row", "quarantined", len(quarantined))
    count("dexa row", "rows_lost", len(lost))
    assert not lost, f"good rows lost: {lost}"
    assert not (stored & set(bad)), f"bad rows stored: {sorted(stored & set(bad))}"
    # a junk line may decode to blank (a line of full-width spaces): no row, nothing to quarantine
    unreported = [i for i, kind in bad.items() if i not in quarantined and kind not in JUNK_KINDS]
    assert not unreported, f"bad rows neither stored nor quarantined: {unreported}"
    assert all(quarantined.values())


def _workbook() -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["PatientID", "ExamDate", "Neck_BMD", "T-score", "Side", "Age"])
    for i in range(6):
        sheet.append([f"XL{i}", dt.datetime(2021, 1, 2 + i), 0.6 + i / 100, -2.2, "L", 70 + i])
    sheet.append(["XL9", "2021-02-30", 0.6, -2.2, "L", 70])
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


WORKBOOK = _workbook()
DAMAGE = st.lists(st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=8)),
), min_size=1, max_size=3)


def _ingest_whole_file(workdir, suffix: str, data: bytes, kind: str) -> None:
    d, factory, settings = workdir
    path = d / f"{next(_serial)}{suffix}"
    path.write_bytes(data)
    count(kind, "tried")
    call(kind, refresh.ingest_dexa, factory, [str(path)], KEY, settings)
    with factory() as s:
        sf = source(s, str(path))
        if sf.status == "quarantined":
            reasons = quarantine_reasons(s, "ingest_dexa", sf.sha256)
            assert reasons and all(reasons.values())
            count(kind, "quarantined")
            return
        assert sf.status == "ingested"
        count(kind, "processed")
        for exam in s.scalars(select(DexaExam).where(DexaExam.source_file_id == sf.id)):
            check_exam(exam)


@fuzz(40)
@given(damage=DAMAGE)
def test_a_damaged_workbook_is_read_or_quarantined(workdir, damage):
    _ingest_whole_file(workdir, ".xlsx", damage_bytes(WORKBOOK, damage), "dexa xlsx")


@fuzz(40)
@given(data=st.one_of(st.binary(max_size=300),
                      st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
                      st.sampled_from([b"", b"\xff\xfe", b"\xfe\xff\x00", b"\xef\xbb\xbf", b"\n\n\n", b'"' * 50,
                                       "PatientID,ExamDate,T-score\n".encode("utf-16")])))
def test_a_junk_file_is_read_or_quarantined(workdir, data):
    _ingest_whole_file(workdir, ".csv", data, "dexa junk file")
