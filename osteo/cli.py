"""The `osteo` command. Every command prints a short summary, or one JSON object with --json."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from osteo.settings import get_settings


EXTRA_COMMANDS: tuple[str, ...] = ("bench.cli", "osteo.lineage_cli")


def _emit(args: argparse.Namespace, payload: dict[str, Any], human: str) -> None:
    if args.json:
        print(json.dumps(payload, default=str, ensure_ascii=False))
    else:
        print(human)


def _setup() -> None:
    from osteo.runtime import configure_environment

    configure_environment(get_settings())


def _fmt_counts(d: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"


def refresh_summary(c: dict[str, Any]) -> str:
    return "\n".join([
        f"files seen      {c['files_seen']}",
        f"ingested        {c['ingested']} new records ({c['new']['images']} images, {c['new']['dexa_exams']} DEXA exams,"
        f" {c['new']['annotations']} annotations)",
        f"quarantined     {sum(c['quarantined'].values())} ({_fmt_counts(c['quarantined'])})",
        f"pairs           {c['pairs']} ({c['positives']} osteoporosis, {c['negatives']} not)",
        f"waiting         {_fmt_counts(c['waiting'])}",
        f"exported        {c['exported']} PNGs ({c['new_files']} new this run)",
        f"excluded        {sum(c['excluded'].values())} ({_fmt_counts(c['excluded'])})",
        f"this run added  {c['new_rows']} rows, {c['new_files']} files",
    ])


def cmd_synth(args: argparse.Namespace) -> int:
    from osteo.synth import generate_cohort

    out = Path(args.out)
    summary = generate_cohort(out, patients=args.patients, seed=args.seed)
    _emit(args, {"out": str(out), **summary}, f"synthetic cohort in {out}: " + _fmt_counts(
        {k: v for k, v in summary.items() if isinstance(v, int | float)}))
    return 0


def cmd_refresh(args: argparse.Namespace) -> int:
    _setup()
    from flows.refresh import refresh_flow
    from osteo.orchestration import RefreshAlreadyRunning

    try:
        counts = refresh_flow(
            dicom_dir=str(Path(args.dicom).resolve()), dexa_dir=str(Path(args.dexa).resolve()),
            annotations_dir=str(Path(args.annotations).resolve()) if args.annotations else None,
            column_map_file=args.column_map)
    except RefreshAlreadyRunning as exc:
        _emit(args, {"ok": False, "reason": "refresh_already_running", "detail": str(exc)}, f"refused: {exc}")
        return 3
    _emit(args, counts, refresh_summary(counts))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from osteo.etl import imaging

    try:
        info = imaging.render_png(args.file, args.out)
    except Exception as exc:  # noqa: BLE001
        reason = getattr(exc, "reason", type(exc).__name__)
        _emit(args, {"ok": False, "reason": reason, "detail": str(exc)}, f"cannot render {args.file}: {exc}")
        return 2
    _emit(args, {"ok": True, **info}, f"wrote {args.out} ({_fmt_counts({k: v for k, v in info.items() if k != 'sha256'})})")
    return 0


def train_summary(r: dict[str, Any]) -> str:
    folds = ", ".join(f"fold {f['fold']} val loss {f['val_loss']:.3f} AUC {f['val_auc']:.3f}" for f in r["folds"])
    return "\n".join([
        f"snapshot        {r['snapshot_digest'][:16]} ({r['n_train']} train, {r['n_test']} test images)",
        f"folds           {folds}",
        f"best fold       {r['best_fold']}",
        f"test year       AUC {r['test_auc']:.3f}, accuracy {r['test_accuracy']:.3f}, "
        f"osteoporosis recall {r['test_recall']:.3f}, specificity {r['test_specificity']:.3f}",
        f"baseline        mean-intensity logistic regression AUC {r['baseline_auc']:.3f}",
        f"registered      {r['model_name']} version {r['model_version']} (challenger)"
        + (" -> champion" if r["champion"] else f"; champion stays version {r['champion_version']}"),
        f"decision        {r['decision']}",
        f"MLflow run      {r['run_id']}",
    ])


def _train(args: argparse.Namespace) -> dict[str, Any]:
    from flows.train import train_flow

    return train_flow(preset=args.preset, arch=args.arch, folds=args.folds, epochs=args.epochs,
                      test_year=args.test_year, select_by=args.select_by,
                      pretrained_weights=args.pretrained_weights, augment=args.augment, seed=args.seed)


def cmd_train(args: argparse.Namespace) -> int:
    _setup()
    result = _train(args)
    _emit(args, result, train_summary(result))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """synth + refresh + train on the embedded defaults."""
    _setup()
    from flows.refresh import refresh_flow
    from osteo.synth import generate_cohort

    settings = get_settings()
    cohort = Path(settings.data_dir) / "demo-cohort"
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if not (cohort / "truth.csv").exists():
        generate_cohort(cohort, patients=args.patients, seed=args.seed)
    timings["synth_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    counts = refresh_flow(dicom_dir=str(cohort / "dicom"), dexa_dir=str(cohort / "dexa"),
                          annotations_dir=str(cohort / "annotations"))
    timings["refresh_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = _train(args)
    timings["train_s"] = time.perf_counter() - t0
    uri = settings.resolved_tracking_uri()
    where = {
        "mlflow_ui": f"{sys.executable.rsplit('/', 1)[0]}/mlflow ui --backend-store-uri {uri}",
        "model_uri": f"models:/{result['model_name']}@champion",
        "lineage": f"osteo lineage model {result['model_name']}@champion",
    }
    payload = {"refresh": counts, **result, "timings": timings, "where": where}
    human = "\n".join([refresh_summary(counts), "", train_summary(result), "",
                       f"look at the runs:    {where['mlflow_ui']}",
                       f"load the model:      mlflow.pyfunc.load_model('{where['model_uri']}')",
                       f"trace it:            {where['lineage']}"])
    _emit(args, payload, human)
    return 0


def _train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=["demo", "paper"], default="demo")
    p.add_argument("--arch", choices=["resnet18", "resnet34", "googlenet", "densenet121", "vgg16"])
    p.add_argument("--folds", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--test-year", type=int)
    p.add_argument("--select-by", choices=["val_loss", "val_recall", "val_auc"])
    p.add_argument("--pretrained-weights", help="a local torchvision state dict (nothing is downloaded)")
    p.add_argument("--augment", choices=["offline", "online", "none"],
                   help="offline: one recorded copy per training image (the seed's); online: new draws every epoch")
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="osteo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.set_defaults(func=func)
        return p

    p = add("synth", cmd_synth, "write a synthetic cohort (DICOM, DEXA CSV, VOC boxes, truth.csv)")
    p.add_argument("--out", required=True)
    p.add_argument("--patients", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)

    p = add("refresh", cmd_refresh, "the nightly refresh: ingest, pair, label, quality-check, export PNGs")
    p.add_argument("--dicom", required=True)
    p.add_argument("--dexa", required=True)
    p.add_argument("--annotations")
    p.add_argument("--column-map", help="JSON file mapping other DEXA column names to ours")

    p = add("render", cmd_render, "one whole DICOM through the export's normalisation, as PNG")
    p.add_argument("file")
    p.add_argument("--out", required=True)

    p = add("train", cmd_train, "augmentation, k-fold training, test-year evaluation, MLflow registration")
    _train_options(p)

    p = add("demo", cmd_demo, "synth + refresh + train on the embedded defaults, end to end")
    _train_options(p)
    p.add_argument("--patients", type=int, default=300)

    # later stages own their commands: each module has register(add)
    for module in EXTRA_COMMANDS:
        importlib.import_module(module).register(add)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    code = args.func(args)
    if not args.json:
        print(f"({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
