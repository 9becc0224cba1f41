"""The screening service over real HTTP: POST /api/v1/predict with a 224 px femoral-neck crop
(cropped=true) against the plain PyTorch forward pass alone, and the API under concurrent load.

The model is a randomly initialised one-channel ResNet18 at 224 px, saved as an osteo checkpoint
and exported to ONNX in a scratch folder; the service is `osteo_service.app.create_app` over a
ModelCache whose registry always names that one version (no MLflow, no localiser) and loads it
with `osteo_model.onnx.build_classifier`, as `osteo serve` does (ONNX Runtime when an export
exists). Uvicorn serves it on a free loopback port in a child process (its own process group,
killed at the end, also on error): 1 worker for the latency rows, 2 for the load row, whose
client is another process (both in `bench/service_load.py`). Torch and ONNX Runtime get 2 threads on
both sides of every comparison. The audit row is off (`serve_audit=False`): the breakdown times
it separately.

    python -m bench.service [--quick] [--json]       (or: osteo bench --only service)
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import percentile, row, target
from bench.service_load import ENV, load_test, server

REPO = Path(__file__).resolve().parent.parent
SIZE = 224
THREADS = 2
MODEL_URI = "models:/osteo-bench-classifier@champion"
VERSION = ("osteo-bench-classifier", "1")
CROP = {"size": SIZE, "margin": 0.15, "min_confidence": 0.5}


@dataclass(frozen=True)
class Sizes:
    """A mode's figures: latency requests and rounds, then the load test's clients, duration and request cap."""

    requests: int
    rounds: int
    clients: int
    seconds: float
    max_requests: int


SIZES = {"quick": Sizes(requests=30, rounds=2, clients=10, seconds=3.0, max_requests=2_000),
         "full": Sizes(requests=200, rounds=8, clients=50, seconds=20.0, max_requests=100_000)}
GOAL = target("ratio", "<=", 0.65)  # issue 28: raised from 0.75 (ONNX Runtime alone is 0.57x)


# ------------------------------------------------------------------ the model and the app
def make_model(folder: Path) -> tuple[Path, Path]:
    """A random one-channel ResNet18 (seed 0) as an osteo checkpoint and its ONNX export."""
    import torch

    from osteo_model.models import build_model
    from osteo_model.onnx import export_onnx
    from osteo_model.predict import save_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = build_model("resnet18", in_channels=1).eval()
    checkpoint = save_checkpoint(folder / "model.pth", model,
                                 {"arch": "resnet18", "image_size": SIZE, "threshold": 0.5})
    onnx = export_onnx(model, SIZE, folder / "model.onnx")
    return Path(checkpoint), Path(onnx)


def crop_png(seed: int = 0) -> bytes:
    """A 224 x 224 8-bit grey PNG with bone-like smooth structure and noise (what an export writes)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    neck = np.exp(-((yy - 0.5 - 0.3 * (xx - 0.5)) ** 2) / 0.02)
    pixels = 60 + 120 * neck + 30 * np.sin(12 * xx) * np.cos(9 * yy) + rng.normal(0, 8, (SIZE, SIZE))
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def registry(checkpoint: Path, onnx: Path | None):
    """A Registry that always names VERSION and loads it with build_classifier (as mlflow_registry does)."""
    from osteo_model.onnx import build_classifier
    from osteo_service.models import Registry

    def load_classifier(name: str, version: str):
        model, runtime = build_classifier(checkpoint, onnx, None)
        return model, model.threshold, runtime, dict(CROP), None  # what it learned from: not said

    return Registry(resolve=lambda uri: VERSION if uri == MODEL_URI else None, load_classifier=load_classifier,
                    load_localiser=lambda name, version: None)


def settings_for(home: Path, *, audit: bool = False):
    from osteo.settings import Settings

    return Settings(home=home, serve_model=MODEL_URI, serve_localiser="", serve_audit=audit,
                    serve_secret="osteo-bench", serve_reload_seconds=3600.0)


def build_app(checkpoint: Path, onnx: Path | None, home: Path):
    from osteo_service.app import create_app
    from osteo_service.models import ModelCache

    cache = ModelCache(registry(checkpoint, onnx), MODEL_URI, "", every_s=3600.0)
    return create_app(settings_for(home), models=cache)


def load_app():
    """uvicorn's factory (bench.service:load_app): the app over the files named in the environment."""
    import torch

    torch.set_num_threads(int(os.environ.get(ENV["threads"], THREADS)))  # ORT takes torch's count
    onnx = os.environ.get(ENV["onnx"]) or None
    return build_app(Path(os.environ[ENV["checkpoint"]]), Path(onnx) if onnx else None, Path(os.environ[ENV["home"]]))


# ------------------------------------------------------------------ measurements
def _ms(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def pause() -> None:
    """Between blocks: torch's OpenMP and ONNX Runtime's pool threads spin for a while after a run
    and would take a core from whatever is timed next (osteo_model/onnx.py's docstring)."""
    time.sleep(0.3)


def _files(data: bytes) -> dict:
    return {"image": ("crop.png", data, "image/png")}


def _post(client, data: bytes) -> dict:
    r = client.post("/api/v1/predict", files=_files(data), data={"cropped": "true"})
    if r.status_code != 200:
        raise RuntimeError(f"POST /api/v1/predict answered {r.status_code}: {r.text[:300]}")
    body = r.json()
    if not (0.0 <= body["probability"] <= 1.0 and body["heatmap_png"]):
        raise RuntimeError("POST /api/v1/predict answered without a probability or heat map")
    return body


def _get(client) -> None:
    r = client.get("/api/v1/health")
    if r.status_code != 200:
        raise RuntimeError(f"GET /api/v1/health answered {r.status_code}")


def plain_torch(checkpoint: Path, crop):
    """The plain PyTorch predict alone: model(x) on the preprocessed 1x1x224x224 tensor, eval mode,
    under inference_mode (threads as set by the caller)."""
    import torch

    from osteo_model.onnx import preprocess_numpy
    from osteo_model.predict import load_checkpoint

    model, _, _ = load_checkpoint(checkpoint)  # eval mode
    x = torch.from_numpy(preprocess_numpy(crop, SIZE))[None]
    assert tuple(x.shape) == (1, 1, SIZE, SIZE)

    def call():
        with torch.inference_mode():
            return model(x)

    return call


def latencies(checkpoint: Path, onnx: Path, data: bytes, home: Path, n: int, rounds: int) -> dict[str, list[float]]:
    """ms per call of: the plain PyTorch forward, OnnxClassifier.predict in process, POST /api/v1/predict
    through uvicorn (1 worker; httpx sync, sequential, one keep-alive connection) and GET /api/v1/health
    (the HTTP floor). Interleaved in `rounds` blocks so that the machine's drift hits every side alike."""
    import httpx
    import numpy as np
    from PIL import Image

    from osteo_model.onnx import OnnxClassifier

    crop = np.asarray(Image.open(io.BytesIO(data)))
    plain = plain_torch(checkpoint, crop)
    ort = OnnxClassifier.load(onnx, checkpoint, threads=THREADS)
    times: dict[str, list[float]] = {"plain": [], "ort": [], "api": [], "http": []}
    per = max(1, n // rounds)
    with server(home, workers=1, threads=THREADS) as url, httpx.Client(base_url=url, timeout=60.0) as client:
        calls = {"plain": plain, "ort": lambda: ort.predict([crop], heatmaps=True),
                 "api": lambda: _post(client, data), "http": lambda: _get(client)}
        for fn in calls.values():  # warm-up
            for _ in range(5):
                fn()
            pause()
        for _ in range(rounds):
            for key, fn in calls.items():
                times[key] += _ms(fn, per)
                pause()
    return times
# ------------------------------------------------------------------ the stage
def run(scratch: Path, mode: str = "quick", log=lambda msg: None) -> tuple[list[dict], dict[str, Any]]:
    """The stage's rows and its detail (breakdown, load figures)."""
    import torch

    from bench.service_breakdown import breakdown_process

    sizes = SIZES[mode]
    n, rounds = sizes.requests, sizes.rounds
    folder = Path(scratch) / "service"
    folder.mkdir(parents=True, exist_ok=True)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        checkpoint, onnx = make_model(folder)
        data = crop_png()
        png = folder / "crop.png"
        png.write_bytes(data)
        times = latencies(checkpoint, onnx, data, folder, n, rounds)
        parts = breakdown_process(checkpoint, onnx, png, folder, n)
        log(f"[bench] service: parts (ms) {parts}")
        with server(folder, workers=2, threads=max(1, (os.cpu_count() or 1) // 2)) as url:
            load = load_test(url, png, sizes.clients, sizes.seconds, max_requests=sizes.max_requests)
    finally:
        torch.set_num_threads(old_threads)

    p = {k: (percentile(v, 50), percentile(v, 95)) for k, v in times.items()}
    skip = ("ORT run alone", "audit", "KiB")
    in_parts = [k for k in parts if not any(word in k for word in skip)]
    parts["rest: FastAPI, thread hops, uvicorn, sockets, httpx (API p50 - the parts)"] = round(
        p["api"][0] - sum(parts[k] for k in in_parts), 2)
    threads = f"torch and ONNX Runtime at {THREADS} threads on both sides"
    calls = len(times["api"])
    work = f"1 crop {SIZE}x{SIZE} PNG ({len(data) // 1024} KiB), {calls} sequential requests, 1 worker"
    plain_text = "plain PyTorch model(x) on the preprocessed 1x1x224x224 tensor (eval, inference_mode)"
    part_text = "; ".join(f"{k} {v:g}" for k, v in parts.items())
    rows = [
        row("API predict + heat map (224 px, p50)", stage="service", ours=p["api"][0], baseline=p["plain"][0],
            unit="ms", work=work, goal=GOAL,
            note=f"POST /api/v1/predict cropped=true over HTTP (uvicorn 1 worker, httpx sync, keep-alive) vs "
                 f"{plain_text}, interleaved in {rounds} rounds; {threads}; audit off. "
                 f"Parts, ms (lowest of 5 medians, in a fresh process): {part_text}",
            breakdown_ms=parts),
        row("API predict + heat map (224 px, p95)", stage="service", ours=p["api"][1], baseline=p["plain"][1],
            unit="ms", work=work, note=f"p95 of the same calls; {threads}"),
        row("ONNX Runtime predict + heat map alone (224 px, p50)", stage="service", ours=p["ort"][0],
            baseline=p["plain"][0], unit="ms", work=f"1 crop {SIZE}x{SIZE}, {calls} calls",
            note=f"OnnxClassifier.predict(array, heatmaps=True) in process, no HTTP (p95 {p['ort'][1]:.1f} ms); "
                 f"{threads}"),
        row("HTTP floor: GET /api/v1/health (p50)", stage="service", ours=p["http"][0], baseline=p["api"][0],
            unit="ms", work=f"{calls} sequential requests, 1 worker",
            note="the same server and client, no upload and no model: ratio = its share of the API predict p50"),
    ]
    base_rps = 1000.0 / p["plain"][0]
    load_row = row(f"API load ({sizes.clients} clients x {sizes.seconds:g} s, 2 workers)", stage="service",
                   ours=load["rps"], baseline=base_rps, unit="requests/s",
                   work=f"{load['requests']} requests ({load['ok']} ok, {load['errors']} errors), "
                        f"p50 {load['p50_ms']:.0f} ms, p95 {load['p95_ms']:.0f} ms",
                   note="asyncio + httpx.AsyncClient in a second process, each client POSTing in a loop until the "
                        "deadline; baseline: 1000 / the plain PyTorch p50 (one process doing model(x) in a loop); "
                        f"uvicorn 2 workers x {THREADS} ORT threads on the machine's cores; target errors == 0"
                        + (f"; errors: {load['error_kinds']}" if load["errors"] else ""),
                   errors=load["errors"], p50_ms=load["p50_ms"], p95_ms=load["p95_ms"])
    load_row["target"] = "errors == 0"
    load_row["status"] = "PASS" if load["errors"] == 0 and load["ok"] > 0 else "MISS"
    rows.append(load_row)
    detail = {"breakdown_ms": parts, "load": load,
              "p50_ms": {k: round(v[0], 2) for k, v in p.items()}, "p95_ms": {k: round(v[1], 2) for k, v in p.items()}}
    return rows, detail


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench.service", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="osteo-bench-service-") as tmp:
        rows, detail = run(Path(tmp), "quick" if args.quick else "full",
                           log=lambda msg: print(msg, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps({"rows": rows, "detail": detail}))
    else:
        for r in rows:
            print(f"{r['name']}: ours {r['ours']} baseline {r['baseline']} {r['unit']} ratio {r['ratio']} "
                  f"{r['status']}")
        print(json.dumps(detail, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
