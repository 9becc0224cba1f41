"""`osteo lineage model|patient|image|verify|refreshes|predictions`: the auditors' commands (see docs/lineage.md).

Exit codes: 0 fine, 1 verification found a missing or changed file, 2 a user error: the thing
asked about is unknown (reason unknown_model, unknown_patient, unknown_image) or a bad reference.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from osteo.errors import UserError
from osteo.ingest.quarantine import place
from osteo.runtime import configure_environment
from osteo.settings import get_settings, session_factory

SHOW = 20  # source files listed in the human summary (--csv / --json have all)


def _setup() -> None:
    configure_environment(get_settings())


def _factory():
    return session_factory(get_settings(), create=True)


def _version(ref: str) -> tuple[Any, dict[str, Any]]:
    """The MLflow client and the registry's view of NAME@ALIAS or NAME/VERSION."""
    from osteo.lineage import LineageError, UnknownModel, parse_model_ref
    from osteo_mlflow.client import client
    from osteo_mlflow.registry import resolve_model_version

    try:
        parse_model_ref(ref)
    except ValueError as exc:
        raise UserError("bad_reference", str(exc)) from None
    _setup()
    c = client(get_settings())
    try:
        return c, resolve_model_version(c, ref)
    except LineageError as exc:
        raise UnknownModel(str(exc)) from None


def _model(ref: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """MLflow registry lookup, then the database's lineage of that model version: (client, version, lineage)."""
    from osteo import lineage

    c, version = _version(ref)
    with _factory()() as session:
        return c, version, lineage.model_lineage(session, version)


def _print(args: argparse.Namespace, payload: dict[str, Any], human: str) -> None:
    text = json.dumps(payload, default=str, ensure_ascii=False, indent=None) if args.json else human
    if getattr(args, "out", None):
        Path(args.out).write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(text)


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from osteo.lineage import LineageError

        try:
            return fn(args)
        except LineageError as exc:  # unknown_model, unknown_patient, unknown_image, ...
            raise UserError(exc.reason, str(exc)) from None
    run.__name__ = fn.__name__
    return run


def boxes_summary(box_sources: dict[str, int]) -> str:
    """'40 crops from people's boxes, 3 from osteo-roi/7 boxes' (crops per box origin, people's first)."""
    parts = []
    for origin, n in box_sources.items():
        noun = ("crop " if n == 1 else "crops ") if not parts else ""
        name = "people's" if origin == "human" else origin
        parts.append(f"{n} {noun}from {name} boxes")
    return ", ".join(parts) or "no crops"


def model_summary(lin: dict[str, Any], show: int = SHOW) -> str:
    m, s, tr = lin["model"], lin["snapshot"], lin["training_run"]
    fold_name = {"-1": "none", "-2": "always-train"}
    splits = "; ".join(f"{k} {v['n']} images ({v['positives']} osteoporosis), folds "
                       + ", ".join(f"{fold_name.get(f, f)}: {n}" for f, n in v["folds"].items())
                       for k, v in lin["splits"].items())
    c = lin["counts"]
    lines = [
        f"model           {m['name']} version {m['version']}" + (f" (aliases {', '.join(m['aliases'])})"
                                                                 if m["aliases"] else ""),
        f"MLflow run      {m['run_id']} ({tr['arch']}, preset {tr['preset']}, test AUC {tr['test_auc']})",
        f"code            {m.get('git_commit')}",
        f"snapshot        {s['digest']} created {s['created']} params {json.dumps(s['params'])}",
        f"manifest        {s['manifest_path']}",
        f"members         {c['members']}: {splits}",
        f"boxes           {boxes_summary(lin.get('box_sources', {}))}",
        f"augmented       {c['augmented_copies']} copies",
        f"screened        {screening_summary(lin.get('screening'))}",
        f"source files    {c['source_files']} (" + ", ".join(f"{k[:-6]} {v}" for k, v in sorted(c.items())
                                                            if k.endswith("_files") and k != "source_files") + ")",
    ]
    for src in lin["source_files"][:show]:
        lines.append(f"  {src['kind']:<10} {src['sha256'][:16]}  {src['size_bytes']:>9}  {src['path']}")
    if len(lin["source_files"]) > show:
        lines.append(f"  ... {len(lin['source_files']) - show} more (--csv or --json lists every file)")
    lines += [f"note            {n}" for n in lin.get("notes", [])]
    return "\n".join(lines)


def screening_summary(s: dict | None) -> str:
    if not s or not s["images"]:
        return "no image (osteo screen)"
    pushed = ", ".join(f"{k} {v}" for k, v in sorted(s["pushed"].items())) or "nothing pushed"
    return (f"{s['images']} images: " + ", ".join(f"{k} {v}" for k, v in sorted(s["by_status"].items()))
            + f"; flagged {s['flagged']}; {pushed}")


@_guard
def cmd_model(args: argparse.Namespace) -> int:
    from osteo.lineage import lineage_csv

    _, _, lin = _model(args.ref)
    if args.openlineage:
        from osteo.lineage import emit_openlineage

        run_id = emit_openlineage(lin, args.openlineage)
        print(f"OpenLineage run event {run_id} sent to {args.openlineage}", file=sys.stderr)
    if args.csv:
        text = lineage_csv(lin)
        if args.out:
            Path(args.out).write_text(text, encoding="utf-8")
            print(f"wrote {args.out} ({len(lin['source_files'])} source files)", file=sys.stderr)
        else:
            sys.stdout.write(text)
        return 0
    _print(args, lin, model_summary(lin))
    return 0


def _pseudonym(raw: str) -> str:
    """The pseudonym of a raw patient ID ('-': read from stdin), with this installation's key; never printed."""
    from osteo.lineage import pseudonym_of

    if raw == "-":
        raw = sys.stdin.readline()
    if not "".join(raw.split()):
        raise UserError("bad_option", "--patient-id is empty")
    s = get_settings()
    key = s.resolved_pseudonym_key(create=False)  # looking up never invents a key
    if key is None:
        raise UserError("no_pseudonym_key", f"no pseudonym key here (OSTEO_PSEUDONYM_KEY unset, no {s.var_dir}"
                        "/pseudonym.key): nothing was ingested with a key on this installation")
    return pseudonym_of(raw, key)


@_guard
def cmd_patient(args: argparse.Namespace) -> int:
    _setup()
    from osteo.lineage import patient_lineage

    key = args.key if args.key is not None else _pseudonym(args.patient_id)
    with _factory()() as session:
        lin = patient_lineage(session, key, from_patient_id=args.key is None)
    lin["looked_up_by"] = "key" if args.key is not None else "patient_id"  # the raw ID itself is never kept
    lines = [f"patient         {lin['patient']['patient_key']} (sex {lin['patient']['sex'] or '?'})"
             + (" <- pseudonym of the given patient ID" if args.key is None else ""),
             f"images          {len(lin['images'])}"]
    for im in lin["images"]:
        state = ", ".join(f"{e['side']} {e['exclusion'] or e['status']} ({e['box_model'] or e['box_source']} box)"
                          for e in im["exports"]) or "not exported"
        lines.append(f"  {im['study_date']} {im['laterality']} {im['sop_instance_uid']}"
                     f"  label {im['pair']['label'] if im['pair'] else '-'}  {state}  <- {im['source_file']['path']}")
    lines.append(f"DEXA exams      {len(lin['dexa_exams'])}")
    for e in lin["dexa_exams"]:
        lines.append(f"  {e['exam_date']} side {e['side']} T {e['t_score']:.2f}  <- {e['source_file']}"
                     f" {place(e['source_file'] or '', e['source_row'])}")
    lines.append(f"snapshots       {len(lin['snapshots'])}")
    for s in lin["snapshots"]:
        lines.append(f"  {s['digest'][:16]} {'+'.join(s['splits'])} ({len(s['members'])} images)")
    lines.append(f"model versions  {len(lin['model_versions'])}")
    for r in lin["model_versions"]:
        lines.append(f"  {r['model_name']} version {r['model_version']} ({'+'.join(r['used_as'])})"
                     f" run {r['mlflow_run_id']}")
    _print(args, lin, "\n".join(lines))
    return 0


def box_origin(box: dict[str, Any]) -> str:
    """A person's box with its VOC file; a model box with its localiser version and confidence."""
    if box["source"] == "human":
        sf = box.get("source_file") or {}
        return f"human {sf.get('path')} sha256 {(sf.get('sha256') or '')[:16]}"
    conf = box.get("confidence")
    return f"model {box['model_name']} version {box['model_version']}" + (
        f" confidence {conf:.2f}" if conf is not None else "")


@_guard
def cmd_image(args: argparse.Namespace) -> int:
    _setup()
    from osteo.lineage import image_lineage

    with _factory()() as session:
        lin = image_lineage(session, args.sop_uid)
    if lin["image"] is None:
        lines = [f"no image record for {args.sop_uid}; quarantine:"]
    else:
        im, sf = lin["image"], lin["source_file"]
        lines = [f"image           {im['sop_instance_uid']} ({im['modality']} {im['laterality']} {im['study_date']},"
                 f" patient {im['patient_key']})",
                 f"source file     {sf['path']} sha256 {sf['sha256'][:16]} {sf['size_bytes']} bytes,"
                 f" first seen {sf['first_seen']}"]
        for b in lin["boxes"]:
            lines.append(f"box             #{b['id']} side {b['side']} {box_origin(b)} {b['box']}")
        p = lin["pair"]
        if p:
            d = p["dexa_exam"]
            lines.append(f"pair            {p['rule_version']} window {p['window_days']} d, gap {p['gap_days']} d,"
                         f" label {p['label']} ({p['label3']}) <- DEXA {d['exam_date']} {d['source_file']['path']}"
                         f" {place(d['source_file']['path'] or '', d['source_row'])}")
        else:
            lines.append("pair            none")
        for e in lin["exports"]:
            why = f" ({e['exclusion']})" if e["exclusion"] else ""
            lines.append(f"export          #{e['id']} side {e['side']} box #{e['annotation_id']}"
                         f" ({e['box_model'] or e['box_source']}) {e['status']}{why} {e['path'] or ''}"
                         f" {(e['sha256'] or '')[:16]}")
            for c in e["augmented_copies"]:
                lines.append(f"  augmented     seed {c['seed']} {c['path']} {c['sha256'][:16]}")
        for s in lin["snapshots"]:
            runs = ", ".join(f"{r['model_name']}/{r['model_version']}" for r in s["training_runs"]) or "no training run"
            lines.append(f"snapshot        {s['digest'][:16]} side {s['side']} {s['split']} fold {s['fold']}"
                         f" -> {runs}")
        for r in lin.get("screening", []):
            sent = ", ".join(f"{p['kind']} {p['status']}" for p in r["pushed"]) or "nothing pushed"
            p = f" p={r['probability']:.3f} side {r['side']} label {r['label']}" if r["probability"] is not None else ""
            lines.append(f"screening       {r['model']} {r['status']}{p} ({sent})")
    for q in lin["quarantine"]:
        lines.append(f"quarantine      {q['stage']}: {q['reason']} {q['path']} {q['detail'] or ''}")
    _print(args, lin, "\n".join(lines))
    return 0


@_guard
def cmd_verify(args: argparse.Namespace) -> int:
    from osteo.lineage import verify_lineage
    from osteo_mlflow.registry import checkpoint_file

    c, version, lin = _model(args.ref)
    result = verify_lineage(lin, fetch_checkpoint=lambda dst: checkpoint_file(c, version, dst))
    payload = {"model": lin["model"], "snapshot_digest": lin["snapshot"]["digest"], **result}
    lines = [f"verified        {result['checked']} files of {lin['model']['name']} version {lin['model']['version']} ("
             + ", ".join(f"{k} {v}" for k, v in result["by_role"].items()) + ")"]
    for f in result["missing"]:
        lines.append(f"MISSING         {f['role']:<10} {f['path']}")
    for f in result["changed"]:
        lines.append(f"CHANGED         {f['role']:<10} {f['path']}")
    for f in result["unchecked"]:
        lines.append(f"UNCHECKED       {f['role']:<10} {f['path']} (no hash recorded at registration)")
    lines += [f"NOTE            {n}" for n in result["notes"]]
    lines.append("result          " + ("OK: every file is present and unchanged" if result["ok"] else
                                       f"FAILED: {len(result['missing'])} missing, {len(result['changed'])} changed"
                                       + (f", {len(result['notes'])} notes" if result["notes"] else "")))
    _print(args, payload, "\n".join(lines))
    return 0 if result["ok"] else 1


def refreshes_summary(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no refresh recorded yet (osteo refresh writes one row per run)"
    lines = []
    for r in rows:
        lines.append(f"refresh #{r['id']:<6} {r['started']} -> {r['finished'] or '-'}  {r['status']}"
                     f"  code {r['code_version']}")
        lines.append("  inputs        " + _inputs(r["inputs"]))
        t = r["this_run"]
        if t is None:
            lines.append("  this run      no counts (still running, or killed before it finished)")
            continue
        lines.append(f"  this run      {t['files_seen']} files seen, {t['already_known']} already known; added"
                     f" {t['images']} images, {t['dexa_exams']} DEXA exams, {t['annotations']} annotations,"
                     f" {t['pairs']} pairs; {_located(t.get('located'))}; exported {t['exported']}, excluded"
                     f" {t['excluded']}, quarantined {t['quarantined']}")
        lines += [f"  WARNING       {w}" for w in t.get("warnings") or []]
    return "\n".join(lines)


def _inputs(inputs: dict[str, Any]) -> str:
    """The folders and files a refresh read, then its options as they were typed (--retry-quarantined)."""
    named = [f"{k} {v}" for k, v in inputs.items() if v and not isinstance(v, bool)]
    options = [f"--{k.replace('_', '-')}" for k, v in inputs.items() if v is True]
    return ", ".join(named + options) or "none"


def _located(loc: dict[str, Any] | None) -> str:
    if not loc:  # a refresh recorded before the localiser
        return "located -"
    if loc.get("model") is None:
        return "located 0 (no localiser registered)"
    return f"located {loc['images']} by {loc['model']} ({loc['confident']} confident, {loc['unsure']} unsure)"


@_guard
def cmd_refreshes(args: argparse.Namespace) -> int:
    _setup()
    from osteo.lineage import refresh_runs

    with _factory()() as session:
        rows = refresh_runs(session, args.last)
    _print(args, {"refreshes": rows, "count": len(rows)}, refreshes_summary(rows))
    return 0


def predictions_summary(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no prediction recorded yet (the screening service, osteo serve, writes one row per answer)"
    lines = [f"{'id':>6}  {'at':19}  {'via':4}  {'asked by':16}  {'model':22}  {'p':>6}  label  "
             f"{'box (source)':34}  input sha256"]
    for r in rows:
        box = ",".join(str(v) for v in r["box"]) if r["box"] else "-"
        who = (r["asked_by"] or "-")[:16]
        lines.append(f"{r['id']:>6}  {str(r['at'])[:19]:19}  {r['channel']:4}  {who:16}  {r['model']:22}  "
                     f"{r['probability']:6.3f}  {r['label']:>5}  {(box + ' (' + r['box_source'] + ')'):34}  "
                     f"{r['input_sha256'][:16]}")
    return "\n".join(lines)


@_guard
def cmd_predictions(args: argparse.Namespace) -> int:
    _setup()
    from osteo.lineage import predictions

    with _factory()() as session:
        rows = predictions(session, args.last, args.model_version, args.user)
    _print(args, {"predictions": rows, "count": len(rows)}, predictions_summary(rows))
    return 0


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("lineage", None, "trace models to source files, patients and images to models")
    sub = p.add_subparsers(dest="lineage_command", required=True,
                           metavar="{model,patient,image,verify,refreshes,predictions}")

    def child(name: str, func: Callable, help_: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_, description=help_)
        # --json after the subcommand too; SUPPRESS keeps `osteo lineage --json model ...` working
        c.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object")
        c.add_argument("--out", help="write the output to this file instead of stdout")
        c.set_defaults(func=func)
        return c

    c = child("model", cmd_model, "a model version's snapshot, members by split and every source file with its hash")
    c.add_argument("ref", metavar="NAME@ALIAS|NAME/VERSION")
    c.add_argument("--csv", action="store_true", help="one row per source file (for auditors)")
    c.add_argument("--openlineage", metavar="FILE|URL",
                   help="also emit an OpenLineage run event (openlineage-python) to this file or endpoint")
    c = child("patient", cmd_patient, "every image, exam, snapshot and model version of one pseudonymised patient")
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("key", metavar="KEY", nargs="?", help="the patient's pseudonym (patient_key)")
    who.add_argument("--patient-id", metavar="RAW", help="a raw patient ID ('-': read it from stdin), turned into its "
                     "pseudonym with the pseudonym key; neither stored nor printed")
    c = child("image", cmd_image, "one image's path through the pipeline, from source file to model versions")
    c.add_argument("sop_uid", metavar="SOP_INSTANCE_UID")
    c = child("verify", cmd_verify, "re-hash every file a model's lineage names and its registered checkpoint;"
                                    " exit 1 if any is missing or changed")
    c.add_argument("ref", metavar="NAME@ALIAS|NAME/VERSION")
    c = child("refreshes", cmd_refreshes, "the recorded refreshes, newest first: when, status, code version,"
                                          " inputs and what each run did")
    c.add_argument("--last", type=_positive, default=10, metavar="N", help="the newest N (default 10)")
    c = child("predictions", cmd_predictions, "the screening service's answers, newest first: when, model version,"
                                              " the upload's SHA-256, box and result (no patient data)")
    c.add_argument("--last", type=_positive, default=20, metavar="N", help="the newest N (default 20)")
    c.add_argument("--model-version", metavar="V", help="only the answers of this model version")
    c.add_argument("--user", metavar="NAME", help="only the answers this user (or token:NAME) asked for")
