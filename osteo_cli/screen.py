"""`osteo screen [list | outcomes]`: the champion on every hip image it has not screened (the screening flow),
the screened films for referral, and how often the flag was right."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import sys
from collections.abc import Callable

from osteo.errors import UserError
from osteo.runtime import configure_environment
from osteo.settings import get_settings, session_factory
from osteo_cli.output import emit

PUSH_MODES = ("positive", "all", "none")


def run_screen(rescreen: bool = False, push: str | None = None):
    """The screening flow in this process (also the nightly's step); the database checked first."""
    settings = get_settings()
    session_factory(settings, create=True)  # a database behind the code is refused in one line
    configure_environment(settings)
    from flows.runner import in_process_runs
    from flows.screen import screen_flow

    with in_process_runs():
        return screen_flow(rescreen=rescreen, push=push)


def cmd_screen(args: argparse.Namespace) -> int:
    if args.screen_command == "list":
        return cmd_list(args)
    if args.screen_command == "outcomes":
        return cmd_outcomes(args)
    report = run_screen(args.rescreen, args.push)  # a PACS down: the report's push errors say so (exit 1)
    emit(args, report.to_dict(), report.summary())
    return 1 if report.pushed.errors else 0


def parse_day(text: str | None) -> dt.date | None:
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise UserError("bad_date", f"--since {text!r} is not a date: write YYYY-MM-DD") from None


def cmd_list(args: argparse.Namespace) -> int:
    from osteo.screening.referrals import COLUMNS, list_referrals

    rows = [r.to_dict() for r in list_referrals(session_factory(get_settings(), create=True),
                                                positive=args.positive, since=parse_day(args.since))]
    if args.csv:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        sys.stdout.write(out.getvalue())
        return 0
    lines = [referral_line(r) for r in rows]
    emit(args, {"results": rows, "count": len(rows)}, "\n".join(lines) or "no screened films")
    return 0


def referral_line(r: dict) -> str:
    """One film of the referral list as a line (`osteo screen list`, `osteo demo --pacs`)."""
    return (f"{r['study_date']}  {r['accession_number'] or '-':<16} {r['side']}  p={r['probability']:.3f}"
            f"{'  FLAGGED' if r['flagged'] else ''}  {r['model']}/{r['model_version']}  {r['study_instance_uid']}")


def cmd_outcomes(args: argparse.Namespace) -> int:
    from osteo_mlflow.screening import find_champion, version_registered

    settings = get_settings()
    factory = session_factory(settings, create=True)
    if args.model_version:
        name, version = settings.registered_model, args.model_version
    else:
        champion = find_champion(settings)
        if champion is None:
            raise UserError("no_champion", f"no {settings.registered_model}@champion registered: name the version "
                            "with --model-version V")
        name, version = champion.name, champion.version
    if not version_registered(settings, name, version):
        raise UserError("no_such_version", f"{name} version {version} is not registered (see the MLflow registry)")
    outcomes = outcomes_of(settings, factory, name, version)
    emit(args, outcomes.to_dict(), summary(outcomes))
    return 0


def outcomes_of(settings, factory, name: str, version: str):
    """A registered version's outcomes against the DEXA that followed, logged as its tags (also `osteo demo
    --pacs`)."""
    from osteo.screening.outcomes import screening_outcomes
    from osteo_mlflow.screening import log_outcomes, reference_probabilities

    reference, source = reference_probabilities(settings, name, version)
    outcomes = screening_outcomes(factory, name, version, window_days=settings.pair_window_days,
                                  osteoporosis_t=settings.osteoporosis_t, reference=reference, reference_source=source)
    log_outcomes(settings, name, version, outcomes.metrics())
    return outcomes


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def summary(o) -> str:
    lo, hi = o.ppv_ci
    lines = [f"outcomes of     {o.model} (DEXA on or after the film, within {o.window_days} days)",
             f"screened        {o.screened}, flagged {o.flagged}, with a DEXA after {o.with_dexa}",
             f"confirmed       {o.confirmed} of {o.flagged_with_dexa} flagged with a DEXA: PPV {_pct(o.ppv)} "
             f"(95 % Wilson {_pct(lo)} - {_pct(hi)})",
             f"among DEXA      sensitivity {_pct(o.sensitivity)}, specificity {_pct(o.specificity)}"]
    if o.drift:
        worst = max(o.drift, key=lambda w: w.psi)
        lines.append(f"drift           {len(o.drift)} weeks against the {o.reference} probabilities; highest PSI "
                     f"{worst.psi:.2f} ({worst.week}, {worst.images} images)")
    lines += [f"WARNING         {w}" for w in o.warnings]
    return "\n".join(lines)


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("screen", cmd_screen, "screen every hip image the champion has not screened; push the SR and SC "
            "to the PACS (OSTEO_SCREEN_PUSH)")
    p.add_argument("--rescreen", action="store_true", help="screen every image again (its row replaced)")
    p.add_argument("--push", choices=PUSH_MODES, help="which results go to the PACS (default: OSTEO_SCREEN_PUSH)")
    sub = p.add_subparsers(dest="screen_command", required=False, metavar="{list,outcomes}")
    lst = sub.add_parser("list", help="the screened films for referral (no names)",
                         description="the newest screening result of each film: study UID, accession number (read "
                         "from the file now, never stored), study date, side, probability, model version")
    lst.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object")
    lst.add_argument("--csv", action="store_true", help="print CSV")
    lst.add_argument("--positive", action="store_true", help="only the flagged films")
    lst.add_argument("--since", metavar="YYYY-MM-DD", help="only films taken on or after this day")
    out = sub.add_parser("outcomes", help="PPV, sensitivity and specificity against the DEXA that followed; drift",
                         description="each screened film linked to the first DEXA exam on or after it within the "
                         "pairing window; logged as tags of the model version")
    out.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object")
    out.add_argument("--model-version", metavar="V", help="the classifier version (default: the champion)")
