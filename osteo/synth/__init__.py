"""Synthetic cohort generator: a hospital-like export of hip radiographs, DEXA CSVs,
LabelImg annotations, and the generator's ground truth.

    from osteo.synth import generate_cohort
    summary = generate_cohort(Path("cohort"), patients=200, seed=0)

Layout written under ``out``::

    dicom/S{study:05d}/IM{k:04d}.dcm   hip radiographs (a few without the .dcm suffix), made by the anatomical
                                       simulator (film.py; docs/synthetic.md); ~15% are AP pelvis views of both
                                       hips (ImageLaterality B, portrait, landscape or square, alone in their
                                       study, some stored mirrored: PatientOrientation R\\F), never with implant
                                       or blur; every file marked synthetic (osteo/etl/synthetic.py)
    dicom/README.txt, dicom/Thumbs.db  junk that is not DICOM
    dicom/S{n}/IM0001.dcm ...          junk DICOM: truncated, missing PatientID, missing dates
    dexa/*.csv                         four DEXA exports (UTF-8, UTF-8 BOM, Big5; 4 date styles)
    annotations/<SOPInstanceUID>.xml   LabelImg Pascal VOC femoral-neck boxes (~90% of images; a pelvis: two)
    dicom/S{n}/IM0001.dcm ...          not hip radiographs (others.py): chest CR, knee DX, hip CT, hip MR,
                                       a radiograph whose body part cannot be told; each boxed
    truth.csv                          per cohort image ground truth (never read by the pipeline);
                                       expected_scope: in_scope, the out-of-scope reason, unknown_body_part;
                                       view (hip | pelvis), orientation, crops (femoral-neck crops the image
                                       should export), boxes / true_boxes (JSON side -> [x0, y0, x1, y1]);
                                       screening: the screening population's group (screening.py: no DEXA
                                       before the films; dexa_in_window | dexa_after_window | no_dexa), empty
                                       for the others; followup_days, followup_t_score, followup_confirmed: the
                                       first valid DEXA on or after the film within the window (the outcomes'
                                       link) and whether its T <= -2.5, empty when none
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from osteo.synth.dicomio import render_and_write, uid_for
from osteo.synth.others import KINDS, write_others
from osteo.synth.plan import PAIR_WINDOW_DAYS, make_plan, truth_rows
from osteo.synth.records import Image, Plan
from osteo.synth.tables import write_bad_voc, write_dexa, write_voc

__all__ = ["generate_cohort", "TRUTH_COLUMNS"]

TRUTH_COLUMNS = [
    "sop_instance_uid", "patient_id", "laterality", "study_date", "bmd", "t_score",
    "expected_pair", "expected_label", "expected_exclusion", "annotated", "expected_export", "expected_scope",
    "view", "orientation", "crops",
    # extras (not needed by the rules, handy for checks)
    "file", "study_instance_uid", "modality", "photometric", "bits_stored", "transfer_syntax",
    "rotation_deg", "box_xmin", "box_ymin", "box_xmax", "box_ymax",  # hip views only (a pelvis: `boxes`)
    "boxes", "true_boxes",
    # the screening population and every film's follow-up DEXA (screening.py: what `osteo screen outcomes` links)
    "screening", "followup_days", "followup_t_score", "followup_confirmed",
]


def _boxes_json(boxes: dict) -> str:
    return json.dumps({side: list(b) for side, b in sorted(boxes.items())}, separators=(",", ":"))


def _workers(requested: int | None) -> int:
    if requested is not None:
        return max(1, requested)
    return max(1, min(4, os.cpu_count() or 1))


def make_folders(out: Path) -> tuple[Path, Path]:
    """Replace the cohort's dicom/, dexa/ and annotations/ folders; return the new dicom/ and annotations/."""
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("dicom", "dexa", "annotations"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    dicom_dir, ann_dir = out / "dicom", out / "annotations"
    dicom_dir.mkdir()
    ann_dir.mkdir()
    return dicom_dir, ann_dir


def film_specs(plan: Plan, seed: int, dicom_dir: Path) -> list[dict[str, Any]]:
    """One render spec per film of the plan, in the plan's order (render_and_write's input)."""
    specs: list[dict[str, Any]] = []
    study_uid = {s: uid_for(seed, "study", s) for s in plan.studies}
    for im in plan.images:
        p = plan.patients[im.patient]
        name = f"IM{im.instance:04d}" + ("" if im.no_extension else ".dcm")
        specs.append({
            "idx": im.idx,
            "seed_seq": [int(seed), 7, im.idx],
            "path": str(dicom_dir / f"S{im.study + 1:05d}" / name),
            "sop_uid": uid_for(seed, "sop", im.idx),
            "study_uid": study_uid[im.study],
            "series_uid": uid_for(seed, "series", im.study),
            "study_id": f"{im.study + 1}",
            "accession": f"XR{im.date:%y%m%d}{(im.study * 7919 + seed) % 10000:04d}",
            "instance": im.instance,
            "date": im.date,
            "laterality": im.laterality,
            "view": im.view,
            "mirrored": im.mirrored,
            "patient_id": p.patient_id,
            "patient_name": p.name,
            "birth": p.birth,
            "sex": p.sex,
            "bmd": p.bmd_at(im.date),
            "rotation": im.rotation,
            "implant": im.implant,
            "exclusion": im.exclusion,
        })
    return specs


def junk_specs(specs: list[dict[str, Any]], seed: int, dicom_dir: Path, n_st: int) -> list[dict[str, Any]]:
    """Junk DICOM specs (not in truth), copies of the first films: one missing PatientID, one missing its dates;
    in the studies after the plan's `n_st`."""
    junk = []
    for k, drop in enumerate((("PatientID",), ("StudyDate", "SeriesDate", "ContentDate", "AcquisitionDate"))):
        base = dict(specs[k % len(specs)])
        base.update({
            "idx": None,
            "seed_seq": [int(seed), 9, k],
            "path": str(dicom_dir / f"S{n_st + 1 + k:05d}" / "IM0001.dcm"),
            "sop_uid": uid_for(seed, "junk-sop", k),
            "study_uid": uid_for(seed, "junk-study", k),
            "series_uid": uid_for(seed, "junk-series", k),
            "study_id": f"{n_st + 1 + k}",
            "exclusion": "none",
            "implant": None,
            "drop_tags": drop,
        })
        junk.append(base)
    return junk


def render_films(films: list[dict[str, Any]], junk: list[dict[str, Any]], workers: int,
                 progress: Callable[[int, int], None] | None, total: int) -> list[dict[str, Any]]:
    """Render and write every film and junk file (in this process or a pool); return the films' results in the
    plan's order. `progress` hears each file done, counted out of `total`."""
    results: list[dict[str, Any] | None] = [None] * len(films)
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    with pool if pool is not None else nullcontext():
        done_files = (pool.map(render_and_write, films + junk, chunksize=4) if pool is not None
                      else map(render_and_write, films + junk))
        for done, res in enumerate(done_files, start=1):
            if res["idx"] is not None:
                results[res["idx"]] = res
            if progress:
                progress(done, total)
    if any(r is None for r in results):  # every film spec comes back once from render_and_write
        raise RuntimeError("a film of the plan was not rendered")
    return cast(list[dict[str, Any]], results)


def write_junk_files(dicom_dir: Path, junk: list[dict[str, Any]], seed: int, n_st: int) -> int:
    """Beside the junk DICOMs: a truncated DICOM, a README and a Thumbs.db. Returns how many junk files there are."""
    # truncated DICOM: a copy of the first junk file cut inside the header
    trunc = dicom_dir / f"S{n_st + 3:05d}" / "IM0001.dcm"
    trunc.parent.mkdir(parents=True, exist_ok=True)
    raw = Path(junk[0]["path"]).read_bytes()
    cut = raw.find(b"\x08\x00\x18\x00UI")  # inside the SOPInstanceUID value of the dataset
    trunc.write_bytes(raw[: (cut + 20) if cut > 132 else 420])
    (dicom_dir / "README.txt").write_text(
        "PACS export job 2023-01-05\r\nExported studies: HIP AP\r\nContact: radiology IT ext. 3021\r\n",
        encoding="utf-8",
    )
    (dicom_dir / "Thumbs.db").write_bytes(bytes(np.random.default_rng(seed).integers(0, 256, 512, dtype=np.uint8)))
    return len(junk) + 3


def write_annotations(plan: Plan, rendered: list[dict[str, Any]], specs: list[dict[str, Any]],
                      ann_dir: Path) -> tuple[int, int]:
    """The VOC file of each annotated film (one object per side, left to right on the image) and the malformed
    ones. Returns (annotated, malformed_xml)."""
    annotated = 0
    malformed_xml = 0
    for im, res, spec in zip(plan.images, rendered, specs):
        if im.annotated:
            boxes = sorted(res["boxes"].values())
            write_voc(ann_dir / f"{spec['sop_uid']}.xml", spec["sop_uid"], res["cols"], res["rows"], boxes)
            annotated += 1
        elif im.malformed_xml:
            write_bad_voc(ann_dir / f"{spec['sop_uid']}.xml", spec["sop_uid"])
            malformed_xml += 1
    return annotated, malformed_xml


def write_other_files(out: Path, plan: Plan, specs: list[dict[str, Any]], rows: list[dict[str, Any]], seed: int,
                      first_study: int) -> list[dict[str, Any]]:
    """The files that are not hip radiographs (others.py, hosted by hip views); their truth rows, no crops."""
    hips = [i for i, im in enumerate(plan.images) if im.view == "hip"]
    others = write_others(out, [specs[i] for i in hips], [rows[i] for i in hips], int(seed), first_study)
    for r in others:
        r["crops"] = 0
    return others


def truth_row(out: Path, row: dict[str, Any], res: dict[str, Any], spec: dict[str, Any], im: Image) -> dict[str, Any]:
    """truth.csv's row of one film: the plan's truth with what rendering it decided."""
    row = dict(row)
    row.pop("idx")
    row.update({
        "expected_scope": "in_scope",
        "sop_instance_uid": spec["sop_uid"],
        "file": Path(spec["path"]).relative_to(out).as_posix(),
        "study_instance_uid": spec["study_uid"],
        "modality": res["modality"],
        "photometric": res["photometric"],
        "bits_stored": res["bits"],
        "transfer_syntax": res["transfer_syntax"],
        "rotation_deg": f"{im.rotation:.2f}",
        "orientation": res["orientation"],
        "boxes": _boxes_json(res["boxes"]),
        "true_boxes": _boxes_json(res["true_boxes"]),
    })
    if im.view == "hip":
        b = res["boxes"][im.laterality]
        row.update({"box_xmin": b[0], "box_ymin": b[1], "box_xmax": b[2], "box_ymax": b[3]})
    return row


def write_truth(out: Path, plan: Plan, rows: list[dict[str, Any]], rendered: list[dict[str, Any]],
                specs: list[dict[str, Any]], others: list[dict[str, Any]]) -> None:
    """truth.csv: the films' rows in the plan's order, then the other files' rows."""
    with open(out / "truth.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=TRUTH_COLUMNS, lineterminator="\n")
        w.writeheader()
        for row, res, spec, im in zip(rows, rendered, specs, plan.images):
            w.writerow(truth_row(out, row, res, spec, im))
        w.writerows(others)


@dataclass(frozen=True)
class Written:
    """What generate_cohort wrote beside the films, for its summary."""

    junk_files: int
    annotated: int
    malformed_xml: int
    dexa: dict[str, Any]
    others: list[dict[str, Any]]


def summarize_cohort(out: Path, seed: int, plan: Plan, rows: list[dict[str, Any]], rendered: list[dict[str, Any]],
                     written: Written) -> dict[str, Any]:
    """generate_cohort's summary of counts."""
    others = written.others
    ts_counts: dict[str, int] = {}
    for r in rendered:
        ts_counts[r["transfer_syntax"]] = ts_counts.get(r["transfer_syntax"], 0) + 1
    return {
        "out": str(out),
        "seed": int(seed),
        "patients": len(plan.patients),
        "studies": len(plan.studies),
        "images": len(plan.images),
        "junk_files": written.junk_files,
        "annotated": written.annotated + len(others),
        "malformed_xml": written.malformed_xml,
        **written.dexa,
        "exams_valid": sum(1 for e in plan.exams if e.valid),
        "paired": sum(r["expected_pair"] for r in rows),
        "positives": sum(1 for r in rows if r["expected_label"] == 1),
        "excluded_metal": sum(1 for im in plan.images if im.exclusion == "metal"),
        "excluded_blur": sum(1 for im in plan.images if im.exclusion == "blur"),
        "expected_export": sum(r["expected_export"] for r in rows),
        "pelvis": sum(1 for im in plan.images if im.view == "pelvis"),
        "expected_crops": sum(r["crops"] for r in rows),
        "screening_patients": sum(1 for p in plan.patients if p.screening),
        "screening_films": sum(1 for im in plan.images if plan.patients[im.patient].screening),
        "films_with_followup": sum(r["followup_days"] != "" for r in rows),
        "followup_confirmed": sum(r["followup_confirmed"] == 1 for r in rows),
        # left-side crops of the test year's exports (a pelvis gives its L crop)
        "test_images": sum(1 for r in rows if r["expected_export"] and r["laterality"] in ("L", "B")
                           and r["study_date"].startswith("2022")),
        "transfer_syntaxes": ts_counts,
        "out_of_scope": sum(r["expected_scope"] != "unknown_body_part" for r in others),
        "unknown_body_part": sum(r["expected_scope"] == "unknown_body_part" for r in others),
        "out_of_scope_by_reason": dict(sorted(Counter(r["expected_scope"] for r in others
                                                      if r["expected_scope"] != "unknown_body_part").items())),
    }


def generate_cohort(
    out: Path,
    patients: int = 200,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    *,
    workers: int | None = None,
    window_days: int = PAIR_WINDOW_DAYS,
    screening: bool = False,
) -> dict[str, Any]:
    """Write a synthetic cohort under ``out`` (its dicom/, dexa/, annotations/ and truth.csv are
    replaced) and return a summary of counts. Deterministic for a given ``seed`` and
    ``patients`` (independent of ``workers``). ``screening``: with a screening population (make_plan)."""
    out = Path(out)
    plan = make_plan(int(patients), int(seed), screening=screening)
    dicom_dir, ann_dir = make_folders(out)
    n_st = len(plan.studies)
    specs = film_specs(plan, seed, dicom_dir)
    junk = junk_specs(specs, seed, dicom_dir, n_st)
    total = len(specs) + len(junk) + len(KINDS)
    rendered = render_films(specs, junk, _workers(workers), progress, total)
    junk_files = write_junk_files(dicom_dir, junk, seed, n_st)
    annotated, malformed_xml = write_annotations(plan, rendered, specs, ann_dir)
    dexa = write_dexa(plan, out / "dexa", np.random.default_rng(np.random.SeedSequence([int(seed), 11])))
    # the truth; then the files that are not hip radiographs, from their own generator
    rows = truth_rows(plan, window_days)
    others = write_other_files(out, plan, specs, rows, seed, n_st + 4)
    if progress:
        for k in range(len(others)):
            progress(len(specs) + len(junk) + k + 1, total)
    write_truth(out, plan, rows, rendered, specs, others)
    return summarize_cohort(out, seed, plan, rows, rendered,
                            Written(junk_files, annotated, malformed_xml, dexa, others))
