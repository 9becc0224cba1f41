"""`osteo synth | refresh | render | demo`: the pipeline's commands (they call the flows)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from osteo.errors import UserError
from osteo.ingest.options import RefreshOptions
from osteo.runtime import configure_environment
from osteo.settings import get_settings, session_factory
from osteo_cli.output import emit, fmt_counts
from osteo_cli.train import train, train_options


def cmd_synth(args: argparse.Namespace) -> int:
    from osteo.synth import generate_cohort

    out = Path(args.out)
    summary = generate_cohort(out, patients=args.patients, seed=args.seed, screening=args.screening)
    emit(args, {"out": str(out), **summary}, f"synthetic cohort in {out}: " + fmt_counts(
        {k: v for k, v in summary.items() if isinstance(v, int | float)}))
    return 0


def check_refresh_inputs(dicom: str, dexa: str, annotations: str | None, column_map: str | None,
                         annotation_map: str | None = None) -> None:
    """Everything a refresh can refuse, checked before Prefect starts (seconds) and a flow run fails."""
    from osteo.etl.annotations import load_annotation_map
    from osteo.etl.dexa import load_mapping
    from osteo.ingest.discovery import check_folder

    check_folder(dicom, "--dicom folder")
    check_folder(dexa, "--dexa folder")
    if annotations:
        check_folder(annotations, "--annotations folder")
    load_mapping(column_map)
    if annotation_map and not annotations:
        raise UserError("annotation_map_without_annotations", "--annotation-map names the images of the VOC "
                        "files in --annotations; pass --annotations DIR too")
    load_annotation_map(annotation_map)
    # production without OSTEO_PSEUDONYM_KEY is refused here (UserError missing_pseudonym_key),
    # before a flow run could fail on it
    get_settings().resolved_pseudonym_key()
    # the schema's revision too: a database behind the code is refused in one line (an empty one is made)
    session_factory(get_settings(), create=True)


def refresh(dicom: str, dexa: str, annotations: str | None, column_map: str | None = None,
            retry_quarantined: bool = False, annotation_map: str | None = None, rehash: bool = False):
    check_refresh_inputs(dicom, dexa, annotations, column_map, annotation_map)
    from osteo.ingest.lock import hold_refresh_lock

    options = RefreshOptions(dicom_dir=_absolute(dicom), dexa_dir=_absolute(dexa),
                             annotations_dir=_absolute_or_none(annotations),
                             column_map_file=_absolute_or_none(column_map),
                             annotation_map_file=_absolute_or_none(annotation_map),
                             retry_quarantined=retry_quarantined, rehash=rehash)
    # the lock taken before Prefect starts: a refresh already running is refused in one line
    with hold_refresh_lock(get_settings()):
        return run_refresh_flow(options)


def _absolute(path: str) -> str:
    return str(Path(path).resolve())  # the run's row and the source files name a path, whatever the working folder


def _absolute_or_none(path: str | None) -> str | None:
    return _absolute(path) if path else None


def run_refresh_flow(options: RefreshOptions):
    configure_environment(get_settings())
    from flows.refresh import refresh_flow
    from flows.runner import in_process_runs

    with in_process_runs():  # no heartbeat thread to join (~1 s a run) on an ephemeral server
        return refresh_flow(options=options)


def cmd_refresh(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import OperationalError

    from osteo.ingest.lock import RefreshAlreadyRunning

    try:
        dicom = args.dicom or str(get_settings().pacs_inbox)  # the PACS's inbox by default
        report = refresh(dicom, args.dexa, args.annotations, args.column_map, args.retry_quarantined,
                         annotation_map=args.annotation_map, rehash=args.rehash)
    except RefreshAlreadyRunning as exc:
        raise UserError("refresh_already_running", str(exc)) from None
    except OperationalError as exc:  # the database stayed unreachable through the task retries
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        raise UserError("database_unavailable", f"the database could not be reached ({reason}); nothing was "
                        "half-written: run the refresh again when it answers") from None
    emit(args, report.to_dict(), report.summary())
    # done and recorded either way; --strict lets a scheduler alert on a warning (an unmounted share)
    return WARNED if args.strict and report.this_run.warnings() else 0


WARNED = 1  # --strict: the refresh ran, but its summary has a warning (a user's mistake is 2)


def cmd_render(args: argparse.Namespace) -> int:
    from osteo.etl import imaging

    try:
        info = imaging.render_png(args.file, args.out)
    except imaging.ExportError as exc:
        raise UserError(exc.reason, f"cannot render {args.file}: {exc}") from None
    payload = info.to_dict()
    sizes = fmt_counts({k: v for k, v in payload.items() if k != "sha256"})
    emit(args, {"ok": True, **payload}, f"wrote {args.out} ({sizes})")
    return 0


def demo_cohort(args: argparse.Namespace) -> Path:
    """The demo's synthetic hospital (`<data>/demo-cohort`), written the first time; by `osteo demo --pacs`
    with a screening population (a cohort `osteo demo` wrote first is used as it is)."""
    from osteo.synth import generate_cohort

    cohort = Path(get_settings().data_dir) / "demo-cohort"
    if not (cohort / "truth.csv").exists():
        generate_cohort(cohort, patients=args.patients, seed=args.seed, screening=bool(getattr(args, "pacs", False)))
    return cohort


def cmd_demo(args: argparse.Namespace) -> int:
    """synth + refresh + localiser training + refresh (model boxes) + train on the embedded defaults; with --pacs,
    the screening loop against a PACS of its own (osteo_cli/demo_pacs.py)."""
    from osteo_cli.roi import train_roi
    from osteo_mlflow.client import client
    from osteo_mlflow.registry import experiment_of, runs_table

    if args.pacs:
        from osteo_cli.demo_pacs import cmd_demo_pacs

        return cmd_demo_pacs(args)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    cohort = demo_cohort(args)
    timings["synth_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = refresh(str(cohort / "dicom"), str(cohort / "dexa"), str(cohort / "annotations"))
    timings["refresh_s"] = time.perf_counter() - t0
    # the localiser learns the boxes people drew; the next refresh boxes the pairs nobody boxed
    t0 = time.perf_counter()
    roi = train_roi(seed=args.seed)
    timings["roi_train_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = refresh(str(cohort / "dicom"), str(cohort / "dexa"), str(cohort / "annotations"))
    timings["locate_refresh_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # the demo shows every report: the BMD / 3-class heads and the fusion with age and sex
    args.heads, args.clinical = True, args.clinical or "age,sex"
    result = train(args)
    timings["train_s"] = time.perf_counter() - t0
    name = result.registration.model_name
    where = {
        "ui": f"{Path(sys.executable).parent / 'osteo'} ui   (Prefect and MLflow UIs on this machine)",
        # the runs table on the page `osteo ui` serves (its default port), never MLflow's GenAI landing
        "runs": runs_table("http://127.0.0.1:5000", experiment_of(client(get_settings()), result.run_id)),
        "model_uri": f"models:/{name}@champion",
        "lineage": f"osteo lineage model {name}@champion",
        "serve": f"{Path(sys.executable).parent / 'osteo'} serve   (the screening page on http://127.0.0.1:8000/)",
    }
    payload: dict[str, Any] = {"refresh": report.to_dict(), "roi": roi.to_dict(), **result.to_dict(),
                               "timings": timings, "where": where}
    human = "\n".join([report.summary(), "", roi.summary(), "", result.summary(), "",
                       f"look at the runs:    {where['ui']}, then {where['runs']}",
                       f"load the model:      mlflow.pyfunc.load_model('{where['model_uri']}')",
                       f"trace it:            {where['lineage']}",
                       f"screen with it:      {where['serve']}"])
    emit(args, payload, human)
    return 0


def register(add) -> None:
    p = add("synth", cmd_synth, "write a synthetic cohort (DICOM, DEXA CSV, VOC boxes, truth.csv)")
    p.add_argument("--out", required=True, help="folder to write the cohort into")
    p.add_argument("--patients", type=int, default=200, help="number of patients, at least 6 (default: 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--screening", action="store_true",
                   help="with a screening population: patients with no DEXA before their films, some of whom get one "
                   "later (truth.csv's followup_* columns; docs/synthetic.md)")

    p = add("refresh", cmd_refresh, "the nightly refresh: ingest, pair, label, quality-check, export PNGs")
    p.add_argument("--dicom", help="folder of DICOM files, searched recursively (default: the inbox that `osteo pacs "
                   "pull` and `osteo pacs receive` file into, OSTEO_PACS_INBOX)")
    p.add_argument("--dexa", required=True,
                   help="folder of DEXA exports (CSV with , ; or tab, .xlsx; any other file is quarantined)")
    p.add_argument("--annotations", help="folder of LabelImg VOC XML boxes (default: none)")
    p.add_argument("--column-map", metavar="FILE",
                   help="JSON file mapping other DEXA column names to ours (default: none); a new map judges "
                        "the DEXA files it may fix again")
    p.add_argument("--annotation-map", metavar="FILE",
                   help="CSV (header image,sop_instance_uid) or JSON mapping image file names of VOC files named "
                        "otherwise (hip_0012.png) to SOP Instance UIDs or DICOM paths (default: none)")
    p.add_argument("--retry-quarantined", action="store_true",
                   help="judge every quarantined DICOM, DEXA and annotation file again, even if nothing "
                        "changed (default: only when its column map, settings or the code changed)")
    p.add_argument("--rehash", action="store_true",
                   help="read and hash every input file again (default: a file whose size and modification "
                        "time match its last read is not opened)")
    p.add_argument("--strict", action="store_true",
                   help="exit with code 1 when the summary has a WARNING (a folder empty where the last refresh "
                        "found files, folders that look swapped), for a scheduler to alert on (default: exit 0 "
                        "whenever the refresh ran)")

    p = add("render", cmd_render, "one whole DICOM through the export's normalisation, as PNG")
    p.add_argument("file", help="a DICOM file")
    p.add_argument("--out", required=True, help="the PNG to write")

    p = add("demo", cmd_demo, "synth + refresh + train on the embedded defaults, end to end")
    train_options(p)
    p.add_argument("--patients", type=int, default=300, help="synthetic cohort size (default: 300)")
    p.add_argument("--pacs", action="store_true",
                   help="the screening loop instead: start Orthanc on 127.0.0.1 (make system-packages installs it), "
                        "load the synthetic hospital into it, pull, refresh, train (or reuse the champion), screen "
                        "and push the SR and SC back (OSTEO_SCREEN_PUSH); print the counts, referrals and outcomes")
