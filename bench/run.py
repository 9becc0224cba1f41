"""`osteo bench`: every stage against its plain-library baseline, in one run, on one machine.

    osteo bench [--quick] [--json] [--out DIR]        (or: python -m bench.run ...)

Sizes per mode are in SIZES (--quick is also the test suite's). Each row holds
ours, the baseline, ratio = ours / baseline in the row's unit, the work size, the target and
PASS/MISS (INFO where the issue sets no target; SKIP, with the reason, where a row cannot run here: the
cuda stage without a CUDA device). Writes bench.json and bench.md to --out
(default bench/results/, git-ignored). Every store (SQLite, exports, MLflow, Prefect) lives in a
scratch folder that is removed afterwards (--keep keeps it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import isolated_home, load_average, machine_info

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench" / "results"
DEMO_RECORD = "demo-run.json"

SIZES: dict[str, dict[str, Any]] = {
    "quick": dict(cohort=40, ingest=[1_000], orchestration=1_000, orchestration_repeats=1,
                  pairing=[10_000, 100_000], upgrade=[10_000], repeats=2, roi_epochs=12,
                  training=[(96, 16, 64, 1), (224, 5, 20, 1)], cuda_paper=(200, 2), inference=20,
                  service="quick", demo=["--patients", "40", "--folds", "2", "--epochs", "1"], reuse_demo=True),
    "full": dict(cohort=120, ingest=[1_000, 10_000], orchestration=10_000, orchestration_repeats=2,
                 pairing=[10_000, 100_000, 1_000_000], upgrade=[1_000_000], roi_epochs=None,
                 repeats=3, training=[(96, 16, 480, 2), (224, 5, 200, 1)], cuda_paper=(1218, 50), inference=100,
                 service="full", demo=[], reuse_demo=False),
}
STAGES = ("synth", "ingest", "pairing", "upgrade", "export", "training", "inference", "service", "localiser",
          "orchestration", "pacs", "screening", "e2e", "cuda")


def run_bench(mode: str = "quick", out: Path | None = DEFAULT_OUT, *, work: Path | None = None, keep: bool = False,
              only: tuple[str, ...] | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    sizes = SIZES[mode]
    log = log or (lambda msg: None)
    warnings.filterwarnings("ignore", module="pydicom")
    warnings.filterwarnings("ignore", category=UserWarning)
    scratch = Path(work) if work else Path(tempfile.mkdtemp(prefix="osteo-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(scratch / "prefect"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    machine = machine_info()
    started = time.perf_counter()
    rows: list[dict] = []
    info: dict[str, Any] = {"mode": mode, "sizes": {k: v for k, v in sizes.items() if k != "demo"}}
    timings: dict[str, float] = {}
    want = lambda stage: only is None or stage in only  # noqa: E731

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        log(f"[bench] {name} ...")
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            timings[name] = round(time.perf_counter() - t0, 1)
            log(f"[bench] {name}: {timings[name]} s")

    try:
        from bench import corpus

        cohort = scratch / "cohort"
        sources = []
        # the pairing and simulator stages make their own data, and the cuda stage skips without a GPU
        if only is None or set(only) - {"cuda", "pairing", "synth"} or ("cuda" in only and machine["cuda"]):
            summary = stage("cohort", lambda: corpus.make_cohort(cohort, sizes["cohort"]))
            info["cohort"] = {k: summary[k] for k in ("patients", "images", "annotated", "paired", "expected_export")}
            sources = corpus.valid_dicoms(cohort / "dicom")

        if want("synth"):
            from bench import synth

            rows += stage("synth", lambda: synth.run(scratch, 6 if mode == "quick" else 24))

        if want("ingest"):
            from bench import ingest

            def do_ingest():
                biggest = max(sizes["ingest"])
                paths = corpus.make_copies(sources, scratch / "copies", biggest)
                from osteo.settings import Settings

                batch = Settings.model_fields["ingest_batch_size"].default
                return ingest.run({n: paths[:n] for n in sizes["ingest"]}, scratch, sizes["repeats"], batch, sources)

            rows += stage("ingest", do_ingest)
            shutil.rmtree(scratch / "copies", ignore_errors=True)

        if want("pairing"):
            from bench import pairing

            def do_pairing():
                r, i = pairing.run(sizes["pairing"], scratch, 1 if mode == "full" else sizes["repeats"])
                info["pairing"] = i
                return r

            rows += stage("pairing", do_pairing)

        if want("upgrade"):
            from bench import upgrade

            def do_upgrade():
                r, i = upgrade.run(sizes["upgrade"], scratch)
                info["upgrade"] = i
                return r

            rows += stage("upgrade", do_upgrade)

        pngs: list[str] = []
        if want("export") or want("training") or want("inference") or (want("cuda") and machine["cuda"]):
            from bench import export
            from bench.plain_refresh import refresh_direct

            def do_export():
                with isolated_home(scratch / "export-home") as s:
                    refresh_direct(str(cohort / "dicom"), str(cohort / "dexa"), str(cohort / "annotations"),
                                   export=False)
                    from db import make_engine, make_session_factory
                    from osteo.ingest.refresh import plan_exports

                    engine = make_engine(s.resolved_database_url())
                    factory = make_session_factory(engine)
                    try:
                        ids = plan_exports(factory, s)
                        return export.run(factory, s, ids, scratch, sizes["repeats"])
                    finally:
                        engine.dispose()

            export_rows, pngs = stage("export", do_export)
            if want("export"):
                rows += export_rows

        if want("training"):
            from bench import training

            rows += stage("training", lambda: training.run(pngs, sizes["training"]))

        if want("inference"):
            from bench import inference

            rows += stage("inference", lambda: inference.run(pngs[0], sizes["inference"]))

        if want("cuda"):
            from bench import cuda

            n, epochs = sizes["cuda_paper"]
            rows += stage("cuda", lambda: cuda.run(pngs, n, epochs, sizes["inference"]))

        if want("service"):
            from bench import service

            def do_service():
                r, i = service.run(scratch, sizes["service"], log)
                info["service"] = i
                return r

            rows += stage("service", do_service)

        if want("localiser"):
            from bench import roi

            rows += stage("localiser", lambda: roi.run(cohort, scratch, sizes["roi_epochs"]))

        if want("orchestration"):
            from bench import orchestration

            def do_orch():
                folder = scratch / "orch-dicom"
                shutil.copytree(cohort / "dicom", folder / "cohort")
                n_orig = sum(1 for p in (folder / "cohort").rglob("*") if p.is_file())
                corpus.make_copies(sources, folder / "copies", max(0, sizes["orchestration"] - n_orig), start=10**6)
                return orchestration.run(str(folder), str(cohort / "dexa"), str(cohort / "annotations"), scratch,
                                         sizes["orchestration"], repeats=sizes["orchestration_repeats"])

            rows += stage("orchestration", do_orch)
            shutil.rmtree(scratch / "orch-dicom", ignore_errors=True)

        if want("pacs"):
            from bench import pacs

            rows += stage("pacs", lambda: pacs.run(cohort / "dicom", scratch, sizes["repeats"] + 1))

        if want("screening"):
            from bench import screening

            rows += stage("screening", lambda: screening.run(cohort, scratch, sizes["repeats"] + 1))

        if want("e2e"):
            from bench import e2e

            def do_e2e():
                record_file = (Path(out) if out else DEFAULT_OUT) / DEMO_RECORD
                if sizes["reuse_demo"] and record_file.exists():
                    record = json.loads(record_file.read_text())
                    return e2e.rows_from(record, f"read from {record_file.name} (a demo run of {record['recorded']}),"
                                                 " not re-run in quick mode")
                record = e2e.run_demo(scratch / "demo-home", sizes["demo"])
                if out and mode == "full":
                    Path(out).mkdir(parents=True, exist_ok=True)
                    (Path(out) / DEMO_RECORD).write_text(json.dumps(record, indent=1))
                return e2e.rows_from(record, f"osteo demo run by this bench ({mode} mode)")

            rows += stage("end to end", do_e2e)
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)

    machine["load_average_end"] = load_average()
    report = {
        "mode": mode,
        "machine": machine,
        "rows": rows,
        "summary": {s: sum(1 for r in rows if r["status"] == s) for s in ("PASS", "MISS", "INFO", "SKIP")},
        "stage_seconds": timings,
        "wall_s": round(time.perf_counter() - started, 1),
        "info": info,
        "command": "osteo bench" + {"quick": " --quick", "full": ""}[mode],
    }
    if out:
        write_outputs(report, Path(out))
    return report


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
    return str(v)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# osteo bench ({report['mode']})",
        "",
        f"`{report['command']}` on {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, "
        f"{'GPU ' + m['gpu'] if m['cuda'] else 'no GPU'}; Python {m['python']}, torch {m['torch']}; "
        f"load average {m['load_average_start']} at start, {m.get('load_average_end')} at end; "
        f"{m['started']}; {report['wall_s']} s in all.",
        "",
        "ratio = ours / baseline in the row's unit (rates: higher is better; times: lower is better).",
        "",
        "| stage | row | ours | baseline | unit | ratio | work | target | status |",
        "|---|---|---:|---:|---|---:|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(f"| {r['stage']} | {r['name']} | {_fmt(r['ours'])} | {_fmt(r['baseline'])} | {r['unit']} | "
                     f"{_fmt(r['ratio'])} | {r['work']} | {r['target'] or '-'} | {r['status']} |")
    s = report["summary"]
    lines += ["", f"{s['PASS']} PASS, {s['MISS']} MISS, {s['INFO']} INFO (no target)"
                  + (f", {s['SKIP']} SKIP (not run here, see the notes)." if s.get("SKIP") else ".")]
    notes = [f"- **{r['name']}**: {r['note']}" for r in report["rows"] if r.get("note")]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def human(report: dict[str, Any]) -> str:
    width = max(len(r["name"]) for r in report["rows"]) if report["rows"] else 10
    out = [f"{'row':<{width}}  {'ours':>10}  {'baseline':>10}  {'unit':<9} {'ratio':>7}  {'target':<15} status"]
    for r in report["rows"]:
        out.append(f"{r['name']:<{width}}  {_fmt(r['ours']):>10}  {_fmt(r['baseline']):>10}  {r['unit']:<9} "
                   f"{_fmt(r['ratio']):>7}  {(r['target'] or '-'):<15} {r['status']}")
    s = report["summary"]
    m = report["machine"]
    out += [f"SKIP {r['name']}: {r['note']}" for r in report["rows"] if r["status"] == "SKIP"]
    skip = f", {s['SKIP']} SKIP" if s.get("SKIP") else ""
    out.append(f"{s['PASS']} PASS, {s['MISS']} MISS, {s['INFO']} INFO{skip}; {m['cores']} cores, "
               f"{'GPU' if m['cuda'] else 'no GPU'}; {report['wall_s']} s")
    return "\n".join(out)


def write_outputs(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "bench.md").write_text(markdown(report))


def mode_of(args: argparse.Namespace) -> str:
    return "quick" if args.quick else "full"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="smaller sizes (well under 10 minutes on 2 cores)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="folder for bench.json and bench.md (default bench/results)")
    p.add_argument("--work", help="scratch folder (default: a temporary folder, removed afterwards)")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    p.add_argument("--only", action="append", choices=STAGES, help="run only these stages (repeatable)")


def main_args(args: argparse.Namespace) -> int:
    def log(msg):
        return (print(msg, file=sys.stderr, flush=True))
    report = run_bench(mode_of(args), Path(args.out) if args.out else None, work=Path(args.work) if args.work else None,
                       keep=args.keep, only=tuple(args.only) if args.only else None, log=log)
    if args.json:
        print(json.dumps(report, default=str))
    else:
        print(human(report))
        if args.out:
            print(f"wrote {Path(args.out) / 'bench.json'} and {Path(args.out) / 'bench.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--json", action="store_true")
    add_arguments(p)
    return main_args(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
