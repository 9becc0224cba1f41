"""DEXA exports (CSV with any of , ; tab, or .xlsx) -> validated, pseudonymised exam rows
(one bad row never costs a good one).

A quarantine detail names the column and the rule it broke, never the cell's value
(docs/privacy.md): the quarantine table is read by people who may not see patient data.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from db.dexa_rows import DexaRow
from osteo.errors import UserError
from osteo.etl.errors import InputError
from osteo.etl.pseudonym import pseudonymise
from osteo.etl.values import AGE_RANGE, DATE_RULE, plausible_age, plausible_date

# Header aliases, compared after lower-casing and dropping spaces, '_' and '-'.
ALIASES: dict[str, tuple[str, ...]] = {
    "patient_id": ("patientid", "chartno", "病歷號", "病歷號碼", "mrn"),
    "exam_date": ("examdate", "studydate", "檢查日期"),
    "neck_bmd": ("neckbmd", "股骨頸bmd", "femoralneckbmd"),
    "t_score": ("tscore", "neckt", "t值", "necktscore"),
    "side": ("side", "左右", "laterality"),
    "z_score": ("zscore", "neckz", "z值"),
    "age": ("age", "年齡"),
}
REQUIRED = ("patient_id", "exam_date")
T_RANGE = 10.0  # |T| beyond this is a data-entry error, not a patient
Z_RANGE = 10.0  # the same for |Z|
BMD_RANGE = (0.05, 2.5)  # g/cm2
SIDES = {"L": "L", "LEFT": "L", "LT": "L", "左": "L", "R": "R", "RIGHT": "R", "RT": "R", "右": "R"}
NO_SIDE = ("", "-", "NA", "N/A", "NULL")


def normalise_header(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name.strip().lstrip("\ufeff")).lower()


def resolve_columns(header: list[str], mapping: dict[str, str] | None = None) -> dict[str, int]:
    """Map canonical field -> column index; a mapping file names columns of any other layout."""
    wanted: dict[str, str] = {}
    for canonical, names in ALIASES.items():
        for n in names:
            wanted[n] = canonical
    for source, canonical in (mapping or {}).items():
        wanted[normalise_header(source)] = canonical
    found: dict[str, int] = {}
    for idx, col in enumerate(header):
        canonical = wanted.get(normalise_header(col))
        if canonical and canonical not in found:
            found[canonical] = idx
    missing = [c for c in REQUIRED if c not in found]
    if missing or not ({"neck_bmd", "t_score"} & found.keys()):
        missing += [] if ({"neck_bmd", "t_score"} & found.keys()) else ["neck_bmd|t_score"]
        raise InputError("unrecognised_columns", f"no column for {', '.join(missing)} among the {len(header)} "
                         f"fields of the first line; {_header_as_read(header)}")
    return found


_VALUE_LIKE = re.compile(r"\d{3}|\d[-/.]\d|^[-+]?\.?\d+(\.\d*)?$")  # an ID, a date, a number: not a column name
SHOW_HEADERS = 20  # fields quoted in a quarantine detail (at most 1000 characters)


def _header_as_read(header: list[str]) -> str:
    """The header fields as decoded (Big5 checked by eye), unless the first line looks like a patient's row:
    a file without a header row must not put a patient's cells in the quarantine (docs/privacy.md)."""
    cells = [c.strip().lstrip("\ufeff") for c in header]
    if any(_VALUE_LIKE.search(c) for c in cells):
        return ("the first line holds dates or numbers, so it looks like a patient's row, not a header (its cells "
                "are not quoted here): the file needs a header row naming its columns")
    shown = ", ".join(json.dumps(c[:40], ensure_ascii=False) for c in cells[:SHOW_HEADERS])
    more = f" and {len(cells) - SHOW_HEADERS} more" if len(cells) > SHOW_HEADERS else ""
    return (f"read as {shown}{more}; name these columns in a --column-map file (JSON "
            '{"column as read": "patient_id|exam_date|neck_bmd|t_score|side|z_score|age"}) and refresh again')


ENCODINGS = ("utf-8", "big5hkscs", "cp950")  # without a byte-order mark, in this order
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # what the csv module ends a record on
_LINE_BREAK_BYTES = re.compile(rb"\r\n|\r|\n")  # never inside a Big5 or UTF-8 character


def decode_lines(data: bytes) -> list[str | None]:
    """The file's lines as text; None for a line that does not decode (that row is quarantined, its
    neighbours are kept). UTF-16 with its byte-order mark (Excel's "Unicode Text"), else UTF-8 (BOM or
    not), else Big5. InputError when not even the header line decodes."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        text = data.decode("utf-16", errors="replace")  # a damaged code unit spoils its own line only
        return [None if "\ufffd" in line else line for line in _lines(text)]
    try:
        return _lines(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        pass
    # Not all of it decodes: each line on its own, in the first encoding it decodes in (never the whole
    # file in Big5: a UTF-8 file with one junk row would become mojibake, header and all; and no vote
    # over the lines: junk would swing it). A UTF-8 line is taken as UTF-8: Big5 text is practically
    # never valid UTF-8 (its usual lead bytes are UTF-8 continuation bytes). A UTF-8 BOM says UTF-8.
    bom = data.startswith(b"\xef\xbb\xbf")
    encodings = ENCODINGS[:1] if bom else ENCODINGS
    lines = [next((r.decode(e) for e in encodings if _decodes(r, e)), None)
             for r in _lines(data.removeprefix(b"\xef\xbb\xbf"))]
    if not lines or lines[0] is None:
        raise InputError("unknown_encoding", "the header row is neither UTF-16, UTF-8 nor Big5")
    return lines


def _decodes(raw: bytes, encoding: str) -> bool:
    try:
        raw.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _lines(text: str | bytes) -> list:
    """Lines without their breaks, as the csv module ends records (no empty line after the last break)."""
    lines: list = _LINE_BREAK.split(text) if isinstance(text, str) else _LINE_BREAK_BYTES.split(text)
    return lines[:-1] if lines and not lines[-1] else lines


_SEPARATED = re.compile(r"^(\d{2,4})[-/.](\d{1,2})[-/.](\d{1,2})$")


def parse_date(value: str) -> dt.date:
    """YYYY-MM-DD, YYYY/MM/DD, YYYYMMDD, or ROC (Minguo) YYY/MM/DD, e.g. 112/12/16 = 2023-12-16."""
    text = value.strip()
    if not text.isascii():  # str.isdigit and int() take other scripts' digits too
        raise ValueError("not an ASCII date")
    if re.fullmatch(r"\d{8}", text):
        year, month, day = int(text[:4]), int(text[4:6]), int(text[6:])
    elif re.fullmatch(r"\d{7}", text):  # ROC without separators: 1121216
        year, month, day = int(text[:3]) + 1911, int(text[3:5]), int(text[5:])
    else:
        m = _SEPARATED.match(text)
        if not m:
            raise ValueError(f"unrecognised date {text!r}")
        y, month, day = int(m.group(1)), int(m.group(2)), int(m.group(3))
        year = y + 1911 if len(m.group(1)) <= 3 else y
    return dt.date(year, month, day)


def parse_exam_date(value: str) -> dt.date:
    """parse_date, and a plausible day (no exam before 1900 or after tomorrow); ValueError otherwise."""
    day = parse_date(value)
    if not plausible_date(day):
        raise ValueError("date out of range")
    return day


def parse_float(value: str) -> float | None:
    text = value.strip()
    if text in ("", "-", "NA", "N/A", "n/a", "na", "null", "NULL"):
        return None
    if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text) or not text.isascii():
        raise ValueError("not a decimal number")  # float() also takes '1_0', 'nan' and other scripts' digits
    out = float(text)
    if not math.isfinite(out):
        raise ValueError("not finite")
    return out


@dataclass
class ParsedCsv:
    rows: list[DexaRow] = field(default_factory=list)
    errors: list[tuple[int, str, str]] = field(default_factory=list)  # (row number, reason, detail)


CSV_SUFFIXES = (".csv", ".txt", ".tsv")
XLSX_SUFFIXES = (".xlsx", ".xlsm")
DELIMITERS = ",;\t"  # what hospital exports use; anything else falls back to a comma
SNIFF_CHARS = 64 * 1024
_UNSUPPORTED = {  # a plain word for the types people actually drop into the folder
    ".xls": "a legacy Excel .xls workbook is not read; save it as .xlsx or CSV",
    ".pdf": "a PDF report is not read; export the exam table as CSV or .xlsx",
}


def parse_dexa_file(name: str, data: bytes, key: bytes, **kwargs: Any) -> ParsedCsv:
    """One file of the DEXA folder by its type: CSV/TXT/TSV (delimiter sniffed), Excel .xlsx; any
    other type raises InputError unsupported_file_type (it is quarantined, never ignored)."""
    suffix = Path(name).suffix.lower()
    if suffix in CSV_SUFFIXES:
        return parse_dexa_csv(data, key, **kwargs)
    if suffix in XLSX_SUFFIXES:
        return parse_dexa_xlsx(data, key, **kwargs)
    detail = _UNSUPPORTED.get(suffix) or (f"a {suffix} file is not read" if suffix else "a file without a suffix "
                                          "is not read")
    raise InputError("unsupported_file_type", f"{detail}; DEXA exports are read from "
                     f"{', '.join(CSV_SUFFIXES + XLSX_SUFFIXES)} files")


def sniff_delimiter(text: str) -> str:
    """Comma, semicolon or tab, as the header line uses it; a comma when it does not say.

    The header alone is sniffed: data rows may hold decimal commas or free text that a sniffer
    would count as a delimiter.
    """
    header = next((line for line in _LINE_BREAK.split(text[:SNIFF_CHARS]) if line.strip()), "")
    try:
        return csv.Sniffer().sniff(header, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","


def parse_dexa_csv(
    data: bytes,
    key: bytes,
    *,
    bmd_young_mean: float = 0.858,
    bmd_young_sd: float = 0.120,
    mapping: dict[str, str] | None = None,
) -> ParsedCsv:
    """Validate every row; raises InputError only when the file as a whole is unusable.

    Each line is a row of its own: a stray quote opens a field that a CSV reader would carry over
    every following line to the end of the file, losing the good rows after it; here it spoils its
    own row only (a DEXA export has no multi-line cells)."""
    lines = decode_lines(data)
    delimiter = sniff_delimiter("\n".join(line for line in lines[:100] if line is not None))
    return parse_dexa_rows(_csv_rows(lines, delimiter), key, bmd_young_mean=bmd_young_mean,
                           bmd_young_sd=bmd_young_sd, mapping=mapping)


def _csv_rows(lines: list[str | None], delimiter: str) -> Iterator[list[str] | InputError]:
    for line in lines:
        if line is None:
            yield InputError("bad_encoding", "the row does not decode in the file's text encoding")
            continue
        try:
            yield next(csv.reader((line,), delimiter=delimiter), [])
        except csv.Error:  # a field over the csv module's size limit
            yield InputError("bad_row", "the row is not a CSV row (a field is too long)")


def parse_dexa_xlsx(data: bytes, key: bytes, **kwargs: Any) -> ParsedCsv:
    """The first sheet of an Excel workbook, its values as text rows through the CSV's row parser."""
    import warnings
    import zipfile

    import openpyxl

    try:
        with warnings.catch_warnings():  # openpyxl warns about styles and data validation it ignores
            warnings.simplefilter("ignore")
            book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
            try:
                sheets = book.worksheets
                # a read-only sheet is parsed while it is iterated: a damaged one fails here
                rows = [[_xlsx_text(v) for v in row] for row in sheets[0].iter_rows(values_only=True)] if sheets \
                    else None
            finally:
                book.close()
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:  # what openpyxl raises on a non-workbook
        raise InputError("unreadable_xlsx", f"not a readable .xlsx workbook ({exc.__class__.__name__})") from None
    except Exception as exc:  # noqa: BLE001 - a damaged zip or sheet XML raises whatever its parser raises
        raise InputError("unreadable_xlsx", f"not a readable .xlsx workbook ({exc.__class__.__name__})") from None
    if rows is None:
        raise InputError("empty_file", "the workbook has no sheet")
    return parse_dexa_rows(iter(rows), key, **kwargs)


def _xlsx_text(value: Any) -> str:
    """A cell as the CSV would have held it: dates ISO, whole numbers without '.0' (a chart number)."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def parse_dexa_rows(
    reader: Iterator[list[str] | InputError],
    key: bytes,
    *,
    bmd_young_mean: float = 0.858,
    bmd_young_sd: float = 0.120,
    mapping: dict[str, str] | None = None,
) -> ParsedCsv:
    """The header, then every row as text cells (from a CSV reader or a sheet); a row that could not
    be read at all comes as its InputError."""
    try:
        header = next(reader)
    except StopIteration as exc:
        raise InputError("empty_file", "no header row") from exc
    if isinstance(header, InputError):
        raise InputError("unrecognised_columns", f"the header row cannot be read: {header.detail}")
    cols = resolve_columns(header, mapping)
    out = ParsedCsv()
    for row_no, row in enumerate(reader, start=1):
        if isinstance(row, InputError):
            out.errors.append((row_no, row.reason, row.detail))
            continue
        if not any(cell.strip() for cell in row):
            continue
        try:
            out.rows.append(_parse_row(row, cols, key, bmd_young_mean, bmd_young_sd, row_no))
        except InputError as exc:
            out.errors.append((row_no, exc.reason, exc.detail))
    return out


def _cell(row: list[str], cols: dict[str, int], name: str) -> str:
    idx = cols.get(name)
    if idx is None:
        return ""
    if idx >= len(row):
        raise InputError("short_row", f"row has {len(row)} fields, column {name} is field {idx + 1}")
    return row[idx]


def _parse_row(row, cols, key, mean, sd, row_no: int) -> DexaRow:
    if len(row) < max(cols.values()) + 1:
        raise InputError("short_row", f"row has {len(row)} fields, header has more")
    raw_id = _cell(row, cols, "patient_id").strip()
    if not raw_id:
        raise InputError("missing_patient_id", "patient ID is empty")
    try:
        exam_date = parse_exam_date(_cell(row, cols, "exam_date"))
    except ValueError as exc:
        raise InputError("bad_date", f"exam date is not a date in a known format, {DATE_RULE}") from exc
    try:
        bmd = parse_float(_cell(row, cols, "neck_bmd"))
        t_score = parse_float(_cell(row, cols, "t_score"))
        z_score = parse_float(_cell(row, cols, "z_score"))
    except ValueError as exc:
        raise InputError("bad_number", "BMD, T-score or Z-score is not a number") from exc
    if bmd is not None and not (BMD_RANGE[0] <= bmd <= BMD_RANGE[1]):
        raise InputError("bmd_out_of_range", f"neck BMD is outside {BMD_RANGE[0]}..{BMD_RANGE[1]} g/cm2")
    derived = False
    if t_score is None:
        if bmd is None:
            raise InputError("missing_bmd_and_t", "neither neck BMD nor T-score is given")
        t_score = (bmd - mean) / sd
        derived = True
    if not abs(t_score) <= T_RANGE:  # not: a NaN derived from settings fails too
        raise InputError("t_score_out_of_range",
                         f"T-score{' derived from neck BMD' if derived else ''} is beyond +-{T_RANGE}")
    if z_score is not None and abs(z_score) > Z_RANGE:
        raise InputError("z_score_out_of_range", f"Z-score is beyond +-{Z_RANGE}")
    side_text = _cell(row, cols, "side").strip().upper()
    side = "-" if side_text in NO_SIDE else SIDES.get(re.split(r"[\s_\-]", side_text, maxsplit=1)[0])
    if side is None:
        raise InputError("bad_side", "side is not L, R, Left, Right, 左 or 右")
    age_text = _cell(row, cols, "age").strip()
    age = None
    if age_text not in ("", "-", "NA", "N/A", "n/a", "na", "null", "NULL"):
        if not re.fullmatch(r"[0-9]{1,3}(\.[0-9]+)?", age_text) or not plausible_age(int(float(age_text))):
            raise InputError("bad_age", f"age is not a number of years from {AGE_RANGE[0]} to {AGE_RANGE[1]}")
        age = int(float(age_text))
    return DexaRow(patient_key=pseudonymise(raw_id, key), exam_date=exam_date, side=side, neck_bmd=bmd,
                   t_score=t_score, t_score_derived=derived, z_score=z_score, age_at_exam=age, source_row=row_no)


def load_mapping(path: str | Path | None) -> dict[str, str] | None:
    """A column-mapping file: JSON {"source column": "patient_id|exam_date|neck_bmd|t_score|side|z_score"}."""
    if not path:
        return None
    try:
        mapping = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("no_such_file", f"column-map file {path} does not exist; check the path") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError("column_map_not_json", f"column-map file {path} is not JSON ({exc.__class__.__name__}); "
                        'write it as {"Source Column": "patient_id", ...}') from None
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise UserError("column_map_not_an_object", f'column-map file {path} must be one JSON object of '
                        'column names, e.g. {"Chart No": "patient_id"}')
    unknown = set(mapping.values()) - set(ALIASES)
    if unknown:
        raise UserError("column_map_unknown_fields", f"column-map file {path} names unknown fields "
                        f"{sorted(unknown)}; known: {sorted(ALIASES)}")
    return mapping
