"""`osteo quarantine`: the inputs the pipeline set aside, why, and since when (docs/design.md, Quarantine);
`osteo waiting`: the box files that wait for their image (not errors, so not quarantined).

The active entries by default; `--all` adds the resolved ones (a retried input that passed) with
when they were resolved. A fix is picked up by the next refresh (a new `--column-map`, new code)
or by `osteo refresh --retry-quarantined`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from osteo.errors import UserError
from osteo.ingest.quarantine import STAGES
from osteo.settings import get_settings, session_factory
from osteo_cli.output import emit


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def summary(entries: list, include_resolved: bool) -> str:
    active = sum(e.resolved_at is None for e in entries)
    head = f"{active} active quarantine {'entry' if active == 1 else 'entries'}"
    head += f", {len(entries) - active} resolved" if include_resolved else ""
    lines = [head]
    # columns as wide as their longest value, two spaces apart: a long reason (missing_tag:StudyInstanceUID)
    # never runs into the path
    stage_w, reason_w = (max((len(getattr(e, k)) for e in entries), default=0) for k in ("stage", "reason"))
    for e in entries:
        state = f", resolved {_when(e.resolved_at)}" if e.resolved_at else ""
        lines.append(f"{e.stage:<{stage_w}}  {e.reason:<{reason_w}}  {e.where()}   first {_when(e.first_seen)}, "
                     f"last {_when(e.last_seen)}{state}")
        if e.detail:
            lines.append(f"{'':<{stage_w}}  {e.detail}")
    return "\n".join(lines)


def cmd_quarantine(args: argparse.Namespace) -> int:
    from osteo.ingest.quarantine import list_quarantine, quarantine_csv

    if args.csv and args.json:
        raise UserError("bad_option", "--csv and --json are two formats of the same list; give one")
    entries = list_quarantine(session_factory(get_settings(), create=True), stage=args.stage, reason=args.reason,
                              include_resolved=args.all)
    if args.csv:
        sys.stdout.write(quarantine_csv(entries))
        return 0
    payload = {"entries": [e.to_dict() for e in entries], "count": len(entries),
               "active": sum(e.resolved_at is None for e in entries)}
    emit(args, payload, summary(entries, args.all))
    return 0


def waiting_summary(files: list) -> str:
    if not files:
        return "no box file waits for its image"
    lines = [f"{len(files)} box {'file waits' if len(files) == 1 else 'files wait'} for the image they name "
             "(read again by every refresh)"]
    for f in files:
        lines.append(f"{f.path}   first seen {_when(f.first_seen)}" + (f"   names {f.names}" if f.names else ""))
        lines.append(f"  {f.why}")
    return "\n".join(lines)


def cmd_waiting(args: argparse.Namespace) -> int:
    from osteo.ingest.waiting import waiting_box_files

    files = waiting_box_files(session_factory(get_settings(), create=True))
    emit(args, {"box_files": [f.to_dict() for f in files], "count": len(files)}, waiting_summary(files))
    return 0


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    add("waiting", cmd_waiting, "list the box files waiting for the image they name (not errors: every refresh "
        "reads them again)")
    p = add("quarantine", cmd_quarantine, "list the quarantined inputs: path, stage, row, reason, first and last seen")
    p.add_argument("--stage", choices=STAGES, help="only this stage (default: every stage)")
    p.add_argument("--reason", help="only this reason code, e.g. unrecognised_columns (default: every reason)")
    p.add_argument("--all", action="store_true",
                   help="the resolved entries too, with when they were resolved (default: active ones only)")
    p.add_argument("--csv", action="store_true", help="one CSV row per entry instead of the summary")
