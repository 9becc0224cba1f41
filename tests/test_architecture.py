"""House rules that keep the layers apart: one import direction over every module, nothing at import time.

The layers, top to bottom (docs/design.md). A module may import its own package and any package
of a lower layer, never one above it nor a neighbour in its own layer. Inside `osteo/` the rooms keep
the same rule among themselves.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LAYERS: list[set[str]] = [
    {"osteo_cli"},  # entry: the `osteo` command and its command modules
    {"bench"},  # `osteo bench`: measures the flows against plain baselines
    {"osteo_service"},  # `osteo serve`: the screening page and API
    {"flows"},
    {"tasks"},
    {"osteo_mlflow"},  # the MLflow edge
    {"osteo"},  # the plain pipeline: settings, ETL, synthetic cohort, snapshot, lineage, training work
    {"osteo_model", "db"},  # PyTorch and the database: neither knows the other
    {"osteo_common"},  # dependency-free helpers
]
OURS = set().union(*LAYERS)
# third-party packages that belong to one place only
ONLY_IN = {"prefect": {"flows", "tasks"}, "prefect_dask": {"flows"}, "mlflow": {"osteo_mlflow"},
           "torch": {"osteo_model", "bench"}, "torchvision": {"osteo_model", "bench"}}  # bench: plain baselines
NEVER_IN = {"osteo_model": {"sqlalchemy", "pydicom"}, "db": {"pandas", "numpy"}}

# The rooms of osteo/ (the plain pipeline), top to bottom, under the same rule as the layers: a room may
# import itself and any room below it, never one above nor a neighbour.
ROOMS: list[set[str]] = [
    {"lineage"},  # auditors' lineage over what the stages recorded
    {"screening"},  # `osteo screen`: the champion on every hip image, its SR and SC back to the PACS, outcomes
    {"localiser", "training"},  # the femoral-neck localiser in the pipeline; the classifier's training
    {"ingest", "synth", "pacs"},  # the refresh's stages; the synthetic hospital; the PACS as an input (pull, receive)
    {"etl"},  # one file read: DICOM headers, DEXA, VOC boxes, pseudonyms, scope, the export's imaging
]
ROOM_NAMES = set().union(*ROOMS)
# the modules at osteo/'s top serve every room; they import no room but etl (settings: etl/scope.py's defaults)
TOP_MODULES = {"__init__", "settings", "errors", "version", "runtime"}
TOP_MAY_IMPORT = {"etl"}


def layer_of(package: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if package in names)


def imported(source: str, module: str) -> set[str]:
    """Top-level names a module imports anywhere (lazy imports inside functions included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolves inside the module's own package
                names.add(module.split(".")[0])
            elif node.module:
                names.add(node.module.split(".")[0])
    return names


def violations(files: dict[str, str]) -> list[str]:
    """Every import against the layer rules, for {path relative to the repo: source}."""
    found = []
    for rel, source in sorted(files.items()):
        package = Path(rel).parts[0]
        module = ".".join(Path(rel).with_suffix("").parts)
        for name in sorted(imported(source, module)):
            if name in OURS and name != package and layer_of(name) <= layer_of(package):
                found.append(f"{rel} imports {name} (layer {layer_of(name)}, its own is {layer_of(package)})")
            if name in ONLY_IN and package not in ONLY_IN[name]:
                found.append(f"{rel} imports {name}, which belongs in {sorted(ONLY_IN[name])} only")
            if name in NEVER_IN.get(package, set()):
                found.append(f"{rel} imports {name}")
    return found


def room_of(rel: str) -> str | None:
    """The room of a module under osteo/ (None: a module at osteo/'s top)."""
    parts = Path(rel).parts
    return parts[1] if len(parts) > 2 else None


def rooms_imported(source: str, rel: str) -> set[str]:
    """The rooms of osteo/ a module imports anywhere (lazy imports included); relative imports stay home."""
    rooms: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            dotted = [a.name.split(".") for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            dotted = [["osteo", room_of(rel)]] if room_of(rel) else []
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module.split(".")
            dotted = [base + [a.name] for a in node.names] if base == ["osteo"] else [base]
        else:
            continue
        rooms.update(d[1] for d in dotted if len(d) > 1 and d[0] == "osteo" and d[1] in ROOM_NAMES)
    return rooms


def room_level(room: str) -> int:
    return next(i for i, names in enumerate(ROOMS) if room in names)


def room_violations(files: dict[str, str]) -> list[str]:
    """Every import inside osteo/ against the rooms' order, for {path relative to the repo: source}."""
    found = []
    for rel, source in sorted(files.items()):
        if Path(rel).parts[0] != "osteo":
            continue
        own = room_of(rel)
        for room in sorted(rooms_imported(source, rel) - {own}):
            if own is None and room not in TOP_MAY_IMPORT:
                found.append(f"{rel} (osteo/'s top) imports the room {room}")
            elif own is not None and room_level(room) <= room_level(own):
                found.append(f"{rel} imports the room {room} (level {room_level(room)}, its own is {room_level(own)})")
    return found


def project_modules() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8")
            for package in sorted(OURS) for p in sorted((ROOT / package).rglob("*.py"))}


def test_every_package_is_in_a_layer():
    """A new top-level package must be placed in LAYERS before it can pass this suite."""
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == OURS, f"place {sorted(packages - OURS)} in LAYERS (or drop {sorted(OURS - packages)})"


def test_one_import_direction_over_every_module():
    files = project_modules()
    assert len(files) > 80  # every module of every package, not a sample
    assert violations(files) == []


def test_every_osteo_module_is_in_a_room():
    """osteo/ holds its rooms and the few modules at its top: a new module goes in a room (docs/design.md)."""
    osteo = ROOT / "osteo"
    rooms = {p.parent.name for p in osteo.glob("*/__init__.py")}
    assert rooms == ROOM_NAMES, f"place {sorted(rooms - ROOM_NAMES)} in ROOMS (or drop {sorted(ROOM_NAMES - rooms)})"
    top = {p.stem for p in osteo.glob("*.py")}
    assert top <= TOP_MODULES, f"put {sorted(top - TOP_MODULES)} in a room of osteo/"


def test_one_direction_between_the_rooms():
    files = project_modules()
    assert sum(1 for rel in files if room_of(rel) in {"ingest", "localiser", "training"}) > 20
    assert room_violations(files) == []


@pytest.mark.parametrize("rel,source", [
    ("osteo/ingest/refresh.py", "from osteo.training.snapshot import load_manifest"),  # a room above
    ("osteo/training/snapshot.py", "def f():\n    from osteo.localiser.locate import FileLocator\n"),  # neighbours
    ("osteo/localiser/locate.py", "import osteo.lineage"),
    ("osteo/etl/dexa.py", "from osteo.ingest import boxes"),
    ("osteo/settings.py", "from osteo.ingest.lock import refresh_lock"),  # osteo/'s top imports etl only
])
def test_an_import_against_the_rooms_is_caught(rel, source):
    assert room_violations({rel: source})


@pytest.mark.parametrize("rel,source", [
    ("osteo/localiser/locate.py", "from osteo.ingest.boxes import HUMAN\nfrom osteo.settings import Settings"),
    ("osteo/lineage/verify.py", "from osteo.training import snapshot"),
    ("osteo/settings.py", "from osteo.etl.scope import ScopeRules"),
    ("osteo/etl/dexa.py", "from osteo.settings import get_settings"),
])
def test_an_import_down_the_rooms_passes(rel, source):
    assert room_violations({rel: source}) == []


@pytest.mark.parametrize("rel,source", [
    ("db/models.py", "from osteo.settings import get_settings"),  # the database layer reaching up
    ("osteo_model/train.py", "def f():\n    import mlflow\n"),  # a lazy import counts too
    ("osteo/ingest/refresh.py", "from flows.refresh import refresh_flow"),
    ("osteo/training/snapshot.py", "import prefect"),
    ("tasks/train.py", "from osteo_cli.main import main"),
    ("osteo_model/data.py", "from db.models import Export"),  # neighbours in one layer
    ("osteo_common/files.py", "from osteo.settings import REPO_ROOT"),
])
def test_an_upward_import_is_caught(rel, source):
    assert violations({rel: source})


def test_no_module_over_400_lines():
    """Split by job what grows past 400 lines (tests included)."""
    files = {**project_modules(), **{str(p.relative_to(ROOT)): p.read_text(encoding="utf-8")
                                     for p in sorted((ROOT / "tests").rglob("*.py"))}}
    big = {rel: n for rel, src in files.items() if (n := len(src.splitlines())) > 400}
    assert not big, big


# the product's packages (bench/ is a tool); a migration is one readable script on purpose
PRODUCT = {"osteo", "osteo_model", "osteo_mlflow", "osteo_service", "osteo_cli", "osteo_common", "db", "flows",
           "tasks"}
MIGRATIONS = Path("db/migrations/versions")


def long_functions(files: dict[str, str], limit: int = 60) -> dict[str, int]:
    """Every function (methods and nested ones included) over `limit` lines, def line to last line."""
    long = {}
    for rel, source in sorted(files.items()):
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > limit:
                    long[f"{rel}:{node.name}"] = n
    return long


def test_a_long_function_is_caught():
    body = "".join(f"    x{i} = {i}\n" for i in range(60))
    assert long_functions({"osteo/x.py": f"def f():\n{body}"}) == {"osteo/x.py:f": 61}
    assert long_functions({"osteo/x.py": f"def f():\n{body[body.index(chr(10)) + 1:]}"}) == {}


def test_no_function_over_60_lines():
    """Split by job (verbs, collaborators passed in) what grows past 60 lines; the migrations are exempt."""
    files = {rel: src for rel, src in project_modules().items()
             if Path(rel).parts[0] in PRODUCT and not Path(rel).is_relative_to(MIGRATIONS)}
    long = long_functions(files)
    assert not long, "\n".join(f"{n:4d} {name}" for name, n in sorted(long.items(), key=lambda kv: -kv[1]))


def test_every_flow_body_reads_as_its_dag():
    """A flow body is its DAG, one line a step: at most 40 lines (docstring excluded)."""
    long = {}
    for path in sorted((ROOT / "flows").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and any(
                    "flow" in ast.unparse(d).split("(")[0] for d in node.decorator_list):
                body = node.body[1:] if ast.get_docstring(node) else node.body
                n = (body[-1].end_lineno or body[-1].lineno) - body[0].lineno + 1
                if n > 40:
                    long[f"{path.name}:{node.name}"] = n
    assert not long, long


def test_importing_everything_does_nothing(tmp_path):
    """Importing every module writes no file and starts nothing (settings are read when asked)."""
    modules = []
    for rel in project_modules():
        parts = Path(rel).with_suffix("").parts
        modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    env = {**os.environ, "OSTEO_HOME": str(tmp_path / "home"), "PREFECT_HOME": str(tmp_path / "prefect")}
    subprocess.run([sys.executable, "-c", code, *sorted(modules)], cwd=tmp_path, env=env, check=True, timeout=300)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    # Prefect may create its own home folder when imported; nothing of ours may appear
    assert all(p.startswith("prefect") for p in left), left
