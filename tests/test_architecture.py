"""House rules that keep the layers apart: one import direction, nothing at import time."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(package: str) -> dict[str, set[str]]:
    """Every module imported anywhere in the package's files, lazy imports inside functions included."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize("package,forbidden", [
    ("osteo_model", {"prefect", "mlflow", "sqlalchemy", "db", "flows", "tasks", "osteo"}),
    ("db", {"prefect", "mlflow", "flows", "tasks", "torch"}),
    ("osteo/etl", {"prefect", "mlflow", "flows", "tasks", "torch"}),
    ("osteo/synth", {"prefect", "mlflow", "flows", "tasks", "db"}),
    ("tasks", {"flows"}),
])
def test_import_direction(package, forbidden):
    leaks = {f: sorted(names & forbidden) for f, names in imported_modules(package).items() if names & forbidden}
    assert not leaks, f"{package} must not import {sorted(forbidden)}: {leaks}"


def test_importing_everything_does_nothing(tmp_path):
    """Importing every module writes no file and starts nothing (settings are read when asked)."""
    modules = []
    for package in ("osteo", "osteo_model", "db", "tasks", "flows"):
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            modules.append(".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts))
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    env = {**os.environ, "OSTEO_VAR_DIR": str(tmp_path / "var"), "OSTEO_DATA_DIR": str(tmp_path / "data"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PREFECT_HOME": str(tmp_path / "prefect")}
    subprocess.run([sys.executable, "-c", code, *sorted(modules)], cwd=tmp_path, env=env, check=True, timeout=300)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    # Prefect may create its own home folder when imported; nothing of ours may appear
    assert all(p.startswith("prefect") for p in left), left
