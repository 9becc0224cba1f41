"""`osteo pacs pull | receive`: the PACS as an input (osteo/pacs/, docs/production.md).

The pull runs the plain function, not the flow: a command that asks a PACS once needs no Prefect server, and a
PACS that does not answer is one line at once (the nightly's task retries it)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable

from osteo.errors import UserError
from osteo.settings import get_settings, session_factory
from osteo_cli.output import emit


def cmd_pull(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from osteo.pacs.pull import date_window, pull_from_target
    from osteo.pacs.target import PacsUnavailable, pacs_target

    settings = get_settings()
    target = pacs_target(settings)
    if target is None:
        raise UserError("no_pacs", "no PACS is configured: set OSTEO_PACS_DICOMWEB_URL (DICOMweb), or "
                        "OSTEO_PACS_HOST, OSTEO_PACS_PORT and OSTEO_PACS_AET (DIMSE); docs/production.md")
    date_window(args.since, args.until, settings.pacs_lookback_days)  # bad dates refused before any work
    sessions = session_factory(settings, create=True)
    # progress on a terminal only (each file counted once written); --json and logs stay one object, one line
    with tqdm(desc="pulling", unit=" files", file=sys.stderr, leave=False,
              disable=args.json or not sys.stderr.isatty()) as bar:
        try:
            counts = pull_from_target(settings, target, sessions, into=args.into, since=args.since, until=args.until,
                                      after_write=None if bar.disable else (lambda _path: bar.update()))
        except PacsUnavailable as exc:
            raise UserError("pacs_unavailable", f"{exc}; nothing was half-written: run the pull again when it "
                            "answers") from None
    emit(args, {"ok": True, **counts.to_dict()}, counts.summary())
    return 0


def cmd_receive(args: argparse.Namespace) -> int:
    from osteo.pacs.receive import Receiver

    settings = get_settings()
    allowed = tuple(settings.pacs_allowed_aets) or ((settings.pacs_aet,) if settings.pacs_aet else ())
    if not allowed:
        raise UserError("no_allowed_aets", "the receiver takes pushes only from known AE titles: set "
                        "OSTEO_PACS_ALLOWED_AETS (comma-separated) or OSTEO_PACS_AET; docs/production.md")
    inbox = args.into or settings.pacs_inbox
    receiver = Receiver(session_factory(settings, create=True), inbox, settings.scope_rules(), aet=settings.aet,
                        allowed=allowed, port=args.port or settings.pacs_receive_port, host=args.host,
                        timeout_s=settings.pacs_timeout_s)
    try:
        receiver.start()
    except OSError as exc:  # the port taken, or not ours to open
        raise UserError("port_unavailable", f"cannot listen on {args.host}:{args.port or settings.pacs_receive_port}"
                        f" ({exc.strerror or exc})") from None
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # stopped by Ctrl-C or the service manager, summary printed
        signal.signal(sig, lambda *_: stopped.set())
    if not args.json:
        print(f"receiving as {settings.aet} on {args.host}:{receiver.port} from {', '.join(allowed)} into {inbox} "
              "(Ctrl-C stops)", flush=True)
    stopped.wait()
    receiver.stop()
    counts = receiver.counts()
    emit(args, {"ok": True, "aet": settings.aet, "port": receiver.port, "allowed": list(allowed),
                "into": str(inbox), **counts.to_dict()}, counts.summary())
    return 0


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("pacs", None, "the PACS as an input: pull hip radiographs from it, or receive what it pushes")
    sub = p.add_subparsers(dest="pacs_command", required=True, metavar="{pull,receive}")
    pull = sub.add_parser("pull", help="retrieve the hip and pelvis radiographs of a date range into the inbox",
                          description="find the studies of a date range with a hip or pelvis radiograph (DICOMweb "
                          "QIDO-RS, or DIMSE C-FIND), retrieve the series in scope that are not yet held into the "
                          "inbox the refresh reads, and record them so that nothing is fetched twice")
    pull.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object")
    pull.add_argument("--since", metavar="DATE", help="first study date, YYYY-MM-DD (default: OSTEO_PACS_LOOKBACK_DAYS"
                      " days before --until)")
    pull.add_argument("--until", metavar="DATE", help="last study date, YYYY-MM-DD (default: today)")
    pull.add_argument("--into", metavar="DIR", help="folder to file into (default: the inbox, OSTEO_PACS_INBOX)")
    pull.set_defaults(func=cmd_pull)
    rec = sub.add_parser("receive", help="listen for C-STORE pushes and file them into the inbox, until stopped",
                         description="a DICOM C-STORE listener with osteo's AE title (OSTEO_AET) that takes pushes "
                         "from the calling AE titles of OSTEO_PACS_ALLOWED_AETS only and files the hip radiographs "
                         "into the inbox; Ctrl-C or SIGTERM stops it and prints what it received")
    rec.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object at the end")
    rec.add_argument("--port", type=int, help="port to listen on (default: OSTEO_PACS_RECEIVE_PORT, 11112)")
    rec.add_argument("--host", default="0.0.0.0", help="address to listen on (default: 0.0.0.0, every interface)")
    rec.add_argument("--into", metavar="DIR", help="folder to file into (default: the inbox, OSTEO_PACS_INBOX)")
    rec.set_defaults(func=cmd_receive)
