"""Checks of input values (one place, used by every reader): a value must be valid, not only present.

Each check answers yes/no or returns the parsed value and raises ValueError; the readers turn a
failure into an InputError with a plain reason (the quarantine), and never store the value. A
reason's detail names the attribute and the rule, never the value (it may be a patient's data).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

# --- UIDs (PS3.5 9.1): digits and dots, components without leading zeros, at most 64 characters
UID_MAX = 64
_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
UID_RULE = "digits and dots, no empty component, no leading zero, at most 64 characters"


def is_uid(text: object) -> bool:
    return isinstance(text, str) and 0 < len(text) <= UID_MAX and _UID.fullmatch(text) is not None


# --- dates and times
DATE_MIN = dt.date(1900, 1, 1)
_DA = re.compile(r"[0-9]{8}")
_TM = re.compile(r"([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:\.([0-9]{1,6}))?)?)?")


def latest_date() -> dt.date:
    """Tomorrow: the latest plausible date (a clock a day ahead is not bad input)."""
    return dt.date.today() + dt.timedelta(days=1)


def plausible_date(day: dt.date) -> bool:
    return DATE_MIN <= day <= latest_date()


DATE_RULE = f"a real date between {DATE_MIN.isoformat()} and tomorrow"


def parse_da(value: object) -> dt.date:
    """A DICOM DA (YYYYMMDD, nothing else) that is a real, plausible date; ValueError otherwise."""
    text = str(value).rstrip("\0 ")
    if not _DA.fullmatch(text):
        raise ValueError("not YYYYMMDD")
    day = dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    if not plausible_date(day):
        raise ValueError("date out of range")
    return day


def parse_tm(value: object) -> dt.time:
    """A DICOM TM (HH, HHMM, HHMMSS or HHMMSS.FFFFFF) that is a real time of day; ValueError otherwise."""
    m = _TM.fullmatch(str(value).rstrip("\0 "))
    if not m:
        raise ValueError("not HHMMSS.FFFFFF")
    hour, minute, second, fraction = m.groups()
    return dt.time(int(hour), int(minute or 0), int(second or 0), int((fraction or "0").ljust(6, "0")))


# --- code strings (CS): the value sets the pipeline reads
_CS = re.compile(r"[A-Z0-9 _]{1,16}")
# PS3.3 C.7.3.1.1.1 Modality, defined terms and the retired ones (old archives still hold them)
MODALITIES = frozenset("""
ANN AR ASMT AU BDUS BI BMD CFM CR CT CTPROTOCOL DG DMS DOC DX ECG EEG EMG EOG EPS ES FID GM HC HD IO IOL
IVOCT IVUS KER KO LEN LS M3D MG MR NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS OT PA PLAN POS PR PT PX REG
RESP RF RG RTDOSE RTIMAGE RTINTENT RTPLAN RTRAD RTRECORD RTSEGANN RTSTRUCT RWV SEG SM SMR SR SRF STAIN
TEXTUREMAP TG US VA XA XAPROTOCOL XC
AS CD CF CP CS DD DF DM DS EC FA FS LP MA MS OPR ST VF
""".split())
LATERALITIES = ("L", "R", "B", "U")  # ImageLaterality (B: both, U: unpaired)
SEXES = ("M", "F", "O")
PHOTOMETRICS = frozenset(("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "HSV", "ARGB", "CMYK",
                          "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT",
                          "XYB"))


def code_text(value: Any) -> str:
    """A single-valued code string as compared: padding stripped, upper case; '' when absent.
    A multi-valued one comes back with its backslash, so that no value set holds it."""
    if value is None:
        return ""
    if not isinstance(value, (str, bytes)) and hasattr(value, "__iter__"):  # pydicom's MultiValue
        return "\\".join(str(v) for v in value).strip().upper()
    return str(value).strip("\0 ").upper()


def is_cs(text: str) -> bool:
    """DICOM CS characters (upper case letters, digits, space, underscore), 1 to 16 of them."""
    return _CS.fullmatch(text) is not None


def is_printable(text: str, limit: int) -> bool:
    """Text a person could have typed: no control characters, at most `limit` characters."""
    return 0 < len(text) <= limit and text.isprintable()


# --- numbers
AGE_RANGE = (0, 130)  # years
_AS = re.compile(r"([0-9]{3})([DWMY])")
_AS_PER_YEAR = {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}


def plausible_age(years: int) -> bool:
    return AGE_RANGE[0] <= years <= AGE_RANGE[1]


def parse_as(value: object) -> int:
    """A DICOM AS (nnnD, nnnW, nnnM or nnnY) as whole years, plausible; ValueError otherwise."""
    m = _AS.fullmatch(str(value).strip("\0 ").upper())
    if not m:
        raise ValueError("not an AS age")
    years = int(int(m.group(1)) / _AS_PER_YEAR[m.group(2)])
    if not plausible_age(years):
        raise ValueError("age out of range")
    return years


def finite_in(value: float, low: float, high: float) -> bool:
    """A finite number inside [low, high]."""
    return math.isfinite(value) and low <= value <= high


PIXEL_SPACING_RANGE = (1e-3, 10.0)  # mm: a detector pixel, not a whole film

# --- a declared image: refused from its header before any pixel buffer is allocated
MAX_SIDE = 16384  # pixels a side (the service's limit too)
MAX_PIXELS = 50_000_000  # per frame; a 7000 x 7000 radiograph passes
MAX_PIXEL_BYTES = 256 << 20  # Rows x Columns x frames x samples x bytes: a few frames of a large radiograph
MAX_FILE_BYTES = MAX_PIXEL_BYTES + (64 << 20)  # a file (or an inflated deflated dataset) no radiograph exceeds


def image_size_problem(rows: int, cols: int, frames: int = 1, samples: int = 1, bits_allocated: int = 16) -> str | None:
    """Why a declared image is not one a radiograph could be (None: it could be)."""
    if rows < 1 or cols < 1 or frames < 1 or samples < 1:
        return "Rows, Columns, frames and samples must each be at least 1"
    if rows > MAX_SIDE or cols > MAX_SIDE:
        return f"Rows or Columns over {MAX_SIDE}"
    if rows * cols > MAX_PIXELS:
        return f"Rows x Columns over {MAX_PIXELS} pixels"
    nbytes = rows * cols * frames * samples * max(1, (bits_allocated + 7) // 8)
    if nbytes > MAX_PIXEL_BYTES:
        return f"Rows x Columns x frames x bytes per pixel over {MAX_PIXEL_BYTES >> 20} MiB"
    return None
