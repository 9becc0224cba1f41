"""The `osteo` command. Every command prints a short summary, or one JSON object with --json.

A user's mistake (osteo.errors.UserError, a bad option) is one line and exit code 2; a traceback
is only ever a bug in our code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable

from osteo.errors import UserError
from osteo_cli.output import refuse

# each command module has register(add)
COMMAND_MODULES: tuple[str, ...] = ("osteo_cli.pipeline", "osteo_cli.train", "osteo_cli.annotate", "osteo_cli.roi",
                                    "osteo_cli.quarantine", "osteo_cli.compare", "osteo_cli.screen",
                                    "osteo_cli.lineage", "osteo_cli.ui", "osteo_cli.serve", "osteo_cli.bench",
                                    "osteo_cli.db", "osteo_cli.access", "osteo_cli.pacs")


class Parser(argparse.ArgumentParser):
    """argparse that raises a UserError instead of printing the usage and exiting."""

    def error(self, message: str):
        raise UserError("bad_option", f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="osteo", description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
        p.set_defaults(func=func)
        return p

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(add)
    return parser


def quiet_libraries() -> None:
    """What a command prints is ours: MLflow's INFO lines (creating its tables on first use) are not.

    Set before MLflow is imported (it reads the level once); Prefect's level is set by
    osteo.runtime.configure_environment. An explicit setting in the environment wins.
    """
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    quiet_libraries()
    as_json = "--json" in argv
    started = time.perf_counter()
    try:
        args = build_parser().parse_args(argv)
        code = args.func(args)
    except UserError as exc:
        return refuse(as_json, exc.reason, exc.detail)
    if not as_json:
        print(f"({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
