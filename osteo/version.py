"""Which code ran: the package version and the git commit of the checkout (for runs, refreshes, models)."""

from __future__ import annotations

import datetime as dt
import subprocess
from functools import lru_cache

from osteo import __version__
from osteo.settings import REPO_ROOT


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The checkout's commit, '-dirty' when tracked files changed; 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def code_version() -> str:
    return f"{__version__}+{git_commit()}"


def utcnow() -> dt.datetime:
    """Naive UTC, as the database stores it."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
