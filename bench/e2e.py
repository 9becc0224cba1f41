"""End to end: `osteo demo` (synth + refresh + train) wall time split by stage, from the demo's
own timings (its --json output). Runs the demo in a subprocess with every store in a scratch
folder, or reads the record of an earlier run (quick mode, when bench/results/demo-run.json exists)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import row

REPO = Path(__file__).resolve().parent.parent


def run_demo(home: Path, args: list[str], timeout: int = 3600) -> dict[str, Any]:
    env = dict(os.environ)
    env.update({
        "OSTEO_VAR_DIR": str(home / "var"),
        "OSTEO_DATA_DIR": str(home / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "OSTEO_MLFLOW_ARTIFACT_ROOT": str(home / "artifacts"),
        "PREFECT_HOME": str(home / "prefect"),
    })
    env.pop("OSTEO_DATABASE_URL", None)
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "osteo_cli.main", "demo", "--json", *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"osteo demo failed ({proc.returncode}): {proc.stderr[-2000:]}")
    payload = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"args": args, "wall_s": wall, "timings": payload["timings"],
            "images": payload["refresh"]["totals"]["images"], "exported": payload["refresh"]["totals"]["exported"],
            "n_train": payload.get("n_train"), "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def rows_from(record: dict[str, Any], source: str) -> list[dict]:
    t = record["timings"]
    wall = float(record["wall_s"])
    stages = [("synth", t["synth_s"]), ("refresh (incl. Prefect server start)", t["refresh_s"])]
    if "roi_train_s" in t:  # the localiser: trained on the first refresh's boxes, then a refresh that locates
        stages += [("localiser training", t["roi_train_s"]), ("refresh that locates", t["locate_refresh_s"])]
    stages.append(("train", t["train_s"]))
    other = wall - sum(v for _, v in stages)
    args = " ".join(record.get("args") or []) or "(defaults)"
    work = (f"osteo demo {args}: {record.get('images')} images, {record.get('exported')} PNGs, "
            f"{record.get('n_train')} train")
    out = [row(f"end to end: {name}", stage="end to end", ours=v, baseline=wall, unit="s", work=work,
               note=f"ratio = share of the demo's wall time; {source}")
           for name, v in stages]
    out.append(row("end to end: imports, start-up, other", stage="end to end", ours=other, baseline=wall, unit="s",
                   work=work, note=source))
    out.append(row("end to end: osteo demo total", stage="end to end", ours=wall, baseline=wall, unit="s",
                   work=work, note=source))
    return out
