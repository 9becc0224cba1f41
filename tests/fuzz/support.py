"""What the fuzz tests share: the profile, the counts printed at the end of the session, the checks that
nothing escaped (a crash, a warning, a pydicom log record) and that nothing invalid was stored."""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import struct
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Annotation, DexaExam, DicomImage, Quarantine, SourceFile
from osteo.etl import values as v
from osteo.etl.dexa import BMD_RANGE, T_RANGE, Z_RANGE
from osteo.etl.errors import InputError

PROFILE = os.environ.get("OSTEO_FUZZ", "ci").strip().lower() or "ci"
if PROFILE not in ("ci", "long"):
    raise RuntimeError(f"OSTEO_FUZZ={PROFILE!r}: use ci (the default) or long")
LONG_EXAMPLES = int(os.environ.get("OSTEO_FUZZ_EXAMPLES", "2000"))
_COMMON = {"deadline": None, "database": None, "print_blob": False,
           "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                     HealthCheck.large_base_example]}
# ci: the same examples on every run (derandomized), few enough for `make test`; long: fresh random ones
settings.register_profile("osteo-fuzz-ci", derandomize=True, **_COMMON)
settings.register_profile("osteo-fuzz-long", derandomize=False, **_COMMON)
FUZZ = settings.get_profile(f"osteo-fuzz-{PROFILE}")


def fuzz(ci_examples: int) -> settings:
    """The settings of one fuzz test: `ci_examples` in the short run, LONG_EXAMPLES in the long one."""
    return settings(FUZZ, max_examples=ci_examples if PROFILE == "ci" else LONG_EXAMPLES)


def weighted(**choices: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """One of the strategies, drawn in proportion to its weight (one_of draws its branches alike)."""
    names = [name for name, (weight, _) in choices.items() for _ in range(weight)]
    return st.sampled_from(names).flatmap(lambda name: choices[name][1])


# --- the counts ----------------------------------------------------------------------------
COLUMNS = ("tried", "processed", "quarantined", "out_of_scope", "crashes", "rows_lost")
STATS: dict[str, Counter] = defaultdict(Counter)


# the fast DICOM reader against pydicom (tests/fuzz/test_fuzz_dicom_fast.py): inputs compared, how many the
# fast reader read itself (the rest it handed to pydicom) and disagreements (the goal: 0)
DIFFERENTIAL: Counter = Counter()


def count(kind: str, outcome: str, n: int = 1) -> None:
    STATS[kind][outcome] += n


def compared(same: bool, read_fast: bool) -> None:
    DIFFERENTIAL.update(compared=1, read_fast=int(read_fast), disagreements=int(not same))


def summary_lines() -> list[str]:
    differential = ([f"fast DICOM reader vs pydicom: {DIFFERENTIAL['compared']} inputs compared, "
                     f"{DIFFERENTIAL['read_fast']} read by the fast reader, the rest handed to pydicom; "
                     f"{DIFFERENTIAL['disagreements']} disagreements"] if DIFFERENTIAL else [])
    if not STATS:
        return differential
    width = max(len(k) for k in STATS)
    head = f"{'input kind':<{width}}  " + "  ".join(f"{c:>12}" for c in COLUMNS)
    lines = [head]
    total: Counter = Counter()
    for kind in sorted(STATS):
        total.update(STATS[kind])
        lines.append(f"{kind:<{width}}  " + "  ".join(f"{STATS[kind][c]:>12}" for c in COLUMNS))
    lines.append(f"{'all':<{width}}  " + "  ".join(f"{total[c]:>12}" for c in COLUMNS))
    return lines + differential


# --- nothing escapes -------------------------------------------------------------------------
_NOISY = ("pydicom", "pylibjpeg", "openjpeg", "libjpeg", "rle")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.split(".", 1)[0] in _NOISY:
            self.records.append(record)


@contextmanager
def nothing_escapes(kind: str) -> Iterator[None]:
    """No exception but an InputError (a crash is counted, then fails the test), no warning and no
    pydicom log record (they quote header values) out of the block."""
    handler = _Records()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # everything the code lets through is recorded here
            try:
                yield
            except InputError:
                raise
            except Exception:
                count(kind, "crashes")
                raise
    finally:
        root.removeHandler(handler)
    assert not caught, [f"{w.category.__name__}: {w.message}" for w in caught]
    assert not handler.records, [r.getMessage() for r in handler.records]


def call(kind: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    with nothing_escapes(kind):
        return fn(*args, **kwargs)


# --- what was stored is valid -----------------------------------------------------------------

def source(session: Session, path: str) -> SourceFile:
    (sf,) = session.scalars(select(SourceFile).where(SourceFile.path == path)).all()
    return sf


def quarantine_reasons(session: Session, stage: str, sha256: str) -> dict[int, str]:
    """Active entries of a file's content (an entry is recorded once per content): row (0: the whole
    file) -> reason."""
    return {row: reason for row, reason in session.execute(
        select(Quarantine.source_row, Quarantine.reason).where(
            Quarantine.stage == stage, Quarantine.source_sha256 == sha256, Quarantine.resolved_at.is_(None)))}


def check_image(img: DicomImage) -> None:
    for uid in (img.sop_instance_uid, img.study_instance_uid, img.series_instance_uid, img.transfer_syntax):
        assert v.is_uid(uid), uid
    assert isinstance(img.study_date, dt.date) and v.plausible_date(img.study_date)
    assert img.age_at_exam is None or v.plausible_age(img.age_at_exam)
    assert img.modality in v.MODALITIES and img.laterality in ("L", "R", "B") and img.row_direction in ("L", "R")
    assert img.photometric in v.PHOTOMETRICS
    assert v.image_size_problem(img.n_rows, img.n_columns) is None
    assert 1 <= img.bits_stored <= 32
    assert img.pixel_spacing_mm is None or v.finite_in(img.pixel_spacing_mm, *v.PIXEL_SPACING_RANGE)
    assert img.body_part is None or v.is_printable(img.body_part, 64)


def check_exam(exam: DexaExam) -> None:
    assert isinstance(exam.exam_date, dt.date) and v.plausible_date(exam.exam_date)
    assert exam.neck_bmd is None or v.finite_in(exam.neck_bmd, *BMD_RANGE)
    assert math.isfinite(exam.t_score) and abs(exam.t_score) <= T_RANGE
    assert exam.z_score is None or (math.isfinite(exam.z_score) and abs(exam.z_score) <= Z_RANGE)
    assert exam.age_at_exam is None or v.plausible_age(exam.age_at_exam)
    assert exam.side in ("L", "R", "-")


def check_annotation(ann: Annotation, img: DicomImage) -> None:
    assert 0 <= ann.box_xmin < ann.box_xmax <= img.n_columns, (ann.box_xmin, ann.box_xmax, img.n_columns)
    assert 0 <= ann.box_ymin < ann.box_ymax <= img.n_rows, (ann.box_ymin, ann.box_ymax, img.n_rows)
    assert ann.side in ("L", "R")


def claim(data: bytes, ts: str) -> bytes:
    """The file with its meta's Transfer Syntax UID replaced by `ts`, the dataset left as it was encoded
    (pydicom will not write native pixels under a compressed transfer syntax: the bytes are edited)."""
    at = data.index(b"\x02\x00\x10\x00UI", 132)
    (old,) = struct.unpack_from("<H", data, at + 6)
    value = ts.encode("latin-1")
    value += b"\0" * (len(value) % 2)
    out = bytearray(data[:at + 6] + struct.pack("<H", len(value)) + value + data[at + 8 + old:])
    assert out[132:140] == b"\x02\x00\x00\x00UL\x04\x00"  # the meta's group length follows its changes
    struct.pack_into("<I", out, 140, struct.unpack_from("<I", out, 140)[0] + len(value) - old)
    return bytes(out)


def factory_for(tmp_dir) -> sessionmaker[Session]:
    from db import create_schema, make_engine, make_session_factory

    engine = make_engine(f"sqlite:///{tmp_dir / 'fuzz.sqlite'}")
    create_schema(engine)
    return make_session_factory(engine)


def damage(data: bytes, steps) -> bytes:
    """Apply (kind, where in [0, 1), arg) steps: truncate there, flip a byte with a mask, insert bytes."""
    out = bytearray(data)
    for kind, where, *arg in steps:
        at = int(where * len(out))
        if kind == "truncate":
            del out[at:]
        elif kind == "flip" and at < len(out):
            out[at] ^= arg[0]
        elif kind == "insert":
            out[at:at] = arg[0]
    return bytes(out)
