"""What every command prints: a short human summary, or one JSON object with --json.

A user's mistake is one line on stderr (or `{"ok": false, "reason", "detail"}` on stdout with
--json) and exit code 2; a traceback means a bug in our code.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

USER_ERROR = 2


def emit(args: argparse.Namespace, payload: dict[str, Any], human: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(payload, default=str, ensure_ascii=False))
    else:
        print(human)


def refuse(as_json: bool, reason: str, detail: str) -> int:
    """Print a user error as one line (or one JSON object) and return its exit code."""
    detail = " ".join(detail.split())  # one line, whatever a library's message held
    if as_json:
        print(json.dumps({"ok": False, "reason": reason, "detail": detail}, ensure_ascii=False))
    else:
        print(f"osteo: {detail}", file=sys.stderr)
    return USER_ERROR


def fmt_counts(d: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"
