"""DEXA CSV exports (several hospital layouts, encodings and date styles) and LabelImg XML."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

import numpy as np

from osteo.synth.plan import Exam, Plan

if TYPE_CHECKING:  # the checker's narrowing type only (typing has it from Python 3.13)
    from typing_extensions import TypeIs


def roc_date(d: dt.date) -> str:
    return f"{d.year - 1911}/{d.month:02d}/{d.day:02d}"


# name, encoding, date formatter, header, row builder
# row builder gets (exam, patient name romanised, patient name zh, rng) -> list of cells
def _layout_a(e: Exam, name: str, name_zh: str, rng) -> list[str]:
    return [e.patient_id, name.replace("^", " "), _d(e, "%Y-%m-%d"), "Femoral Neck", e.bmd, e.t, e.z,
            ["TECH01", "TECH02", "LEE"][int(rng.integers(3))]]


def _layout_b(e: Exam, name: str, name_zh: str, rng) -> list[str]:
    return [e.patient_id, _d(e, "%Y/%m/%d"), e.bmd, e.t, e.side]


def _layout_c(e: Exam, name: str, name_zh: str, rng) -> list[str]:
    day = e.date_text if e.date_text is not None else (roc_date(e.date) if e.date else "")
    return [e.patient_id, name_zh, day, "股骨頸", e.bmd, e.t]


def _layout_d(e: Exam, name: str, name_zh: str, rng) -> list[str]:
    return [e.patient_id, _d(e, "%Y%m%d"), e.side, e.bmd, e.t, e.z, ["OP-A", "OP-B"][int(rng.integers(2))]]


def _d(e: Exam, fmt: str) -> str:
    if e.date_text is not None:
        return e.date_text
    return e.date.strftime(fmt) if e.date else ""


LAYOUTS = [
    # file name, encoding, header, builder, years
    ("DXA_export_2017_2018.csv", "utf-8",
     ["PatientID", "Name", "ExamDate", "Site", "Neck_BMD", "T-score", "Z-score", "Operator"], _layout_a, (0, 2018)),
    ("bmd_report_2019_2020.csv", "utf-8-sig",
     ["Patient ID", "Exam Date", "NeckBMD", "Neck_T", "Side"], _layout_b, (2019, 2020)),
    ("vghtc_bmd_2021_big5.csv", "big5",
     ["病歷號", "姓名", "檢查日期", "部位", "股骨頸BMD", "T值"], _layout_c, (2021, 2021)),
    ("dexa_2022_2023.csv", "utf-8",
     ["ChartNo", "StudyDate", "Side", "Neck BMD", "TScore", "Z-score", "Operator"], _layout_d, (2022, 9999)),
]


def _file_for(e: Exam, rng) -> int:
    if e.file_hint is not None:
        return e.file_hint
    if e.date is None:
        return int(rng.integers(len(LAYOUTS)))
    for i, (*_, (y0, y1)) in enumerate(LAYOUTS):
        if y0 <= e.date.year <= y1:
            return i
    return len(LAYOUTS) - 1


def write_dexa(plan: Plan, out: Path, rng: np.random.Generator) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    names = {p.patient_id: (p.name, p.name_zh) for p in plan.patients}
    buckets: list[list[Exam]] = [[] for _ in LAYOUTS]
    for e in plan.exams:
        buckets[_file_for(e, rng)].append(e)
    # one exact duplicate (same patient, date and values) re-exported in the next file: a
    # refresh must not count it twice
    dups = 0
    valid0 = [e for e in buckets[1] if e.valid and e.date is not None]
    if valid0:
        buckets[2].append(valid0[int(rng.integers(len(valid0)))])
        dups = 1
    rows = 0
    malformed = 0
    files = []
    for (fname, enc, header, build, _years), exams in zip(LAYOUTS, buckets):
        exams = sorted(exams, key=lambda e: (e.date or dt.date(1900, 1, 1), e.patient_id))
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\r\n")
        w.writerow(header)
        for e in exams:
            name, name_zh = names.get(e.patient_id, ("", ""))
            cells = build(e, name, name_zh, rng)
            if e.short_row:
                cells = cells[:2]
            w.writerow(cells)
            rows += 1
            malformed += int(not e.valid)
        (out / fname).write_bytes(buf.getvalue().encode(enc))
        files.append(fname)
    return {"dexa_files": len(files), "dexa_rows": rows, "malformed_rows": malformed, "duplicate_rows": dups}


VOC_HEAD = """<annotation>
\t<folder>images</folder>
\t<filename>{sop}.png</filename>
\t<path>C:\\labelImg\\images\\{sop}.png</path>
\t<source>
\t\t<database>Unknown</database>
\t</source>
\t<size>
\t\t<width>{w}</width>
\t\t<height>{h}</height>
\t\t<depth>1</depth>
\t</size>
\t<segmented>0</segmented>
"""
VOC_OBJECT = """\t<object>
\t\t<name>femoral_neck</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>0</truncated>
\t\t<difficult>0</difficult>
\t\t<bndbox>
\t\t\t<xmin>{x0}</xmin>
\t\t\t<ymin>{y0}</ymin>
\t\t\t<xmax>{x1}</xmax>
\t\t\t<ymax>{y1}</ymax>
\t\t</bndbox>
\t</object>
"""
Box = tuple[int, int, int, int]


def _one_box(boxes: Box | Sequence[Box]) -> TypeIs[Box]:
    """Four numbers (one box) rather than a list of boxes."""
    return len(boxes) == 4 and not isinstance(boxes[0], (tuple, list))


def write_voc(path: Path, sop: str, width: int, height: int, boxes: Box | Sequence[Box]) -> None:
    """A LabelImg VOC file with one `femoral_neck` object per box (one box, or a list: an AP pelvis has two)."""
    objects = "".join(VOC_OBJECT.format(x0=b[0], y0=b[1], x1=b[2], y1=b[3])
                      for b in ([boxes] if _one_box(boxes) else boxes))
    path.write_text(VOC_HEAD.format(sop=escape(sop), w=width, h=height) + objects + "</annotation>\n",
                    encoding="utf-8")


def write_bad_voc(path: Path, sop: str) -> None:
    path.write_text(
        f"<annotation>\n\t<folder>images</folder>\n\t<filename>{sop}.png</filename>\n\t<object>\n"
        "\t\t<name>femoral_neck</name>\n\t\t<bndbox><xmin>12</xmin><ymin>30\n",
        encoding="utf-8",
    )
