"""`osteo annotate worklist`: the images waiting for a femoral-neck box, as a LabelImg folder."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from osteo.settings import get_settings
from osteo_cli.output import emit


def cmd_worklist(args: argparse.Namespace) -> int:
    from osteo.localiser.worklist import check_out_dir, write_worklist
    from osteo.settings import session_factory

    out = Path(args.out).resolve()
    check_out_dir(out, args.max_size)  # before the database is opened
    settings = get_settings()
    # no database yet is not a mistake: nothing waits, 0 written
    result = write_worklist(session_factory(settings, create=True), settings, out, args.max_size)
    emit(args, {"ok": True, **result.to_dict()}, result.summary())
    return 0


def _whole_number(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of pixels (0: full size)")
    return int(text)


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    from osteo.etl.annotations import WORKLIST_MAX_SIZE

    p = add("annotate", None, "the LabelImg round trip: images waiting for a femoral-neck box")
    sub = p.add_subparsers(dest="annotate_command", required=True, metavar="{worklist}")
    c = sub.add_parser("worklist", help="write a PNG per paired image without a box (named by SOP Instance UID),"
                       " LabelImg's classes.txt and any proposed boxes as VOC files",
                       description="write a PNG per paired image without a box (named by SOP Instance UID),"
                       " LabelImg's classes.txt and any proposed boxes as VOC files; draw the boxes in LabelImg,"
                       " then `osteo refresh ... --annotations DIR`")
    # --json after the subcommand too; SUPPRESS keeps `osteo annotate --json worklist ...` working
    c.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object")
    c.add_argument("--out", required=True, metavar="DIR", help="folder to write the worklist into (created)")
    c.add_argument("--max-size", type=_whole_number, default=WORKLIST_MAX_SIZE, metavar="PX",
                   help="long side of each PNG in pixels, 0 for the DICOM's full size (default: %(default)s)")
    c.set_defaults(func=cmd_worklist)
