"""bench/service.py's breakdown: the time of each part of one API predict (multipart parse, decode, screen, ORT
alone, heat map PNG, response JSON, the audit row), called in a fresh process as the app and the client call them.

    python -m bench.service_breakdown --checkpoint C --onnx O --png P --home H [--calls N]   (run by bench.service)
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from bench.common import percentile
from bench.service import MODEL_URI, REPO, THREADS, _files, _ms, pause, registry, settings_for


def breakdown(checkpoint: Path, onnx: Path, data: bytes, home: Path, n: int, rounds: int = 5) -> dict[str, float]:
    """ms of each part of one API predict, called in this process as the app and the client call them:
    the lowest of `rounds` medians."""
    import httpx
    from starlette.requests import Request

    from osteo_model.gradcam import heatmap_png
    from osteo_model.onnx import OnnxClassifier
    from osteo_service.form_parser import read_form
    from osteo_service.image_decoding import decode_upload
    from osteo_service.limits import Limits
    from osteo_service.models import ModelCache
    from osteo_service.schemas import predict_out
    from osteo_service.screening import screen

    served = ModelCache(registry(checkpoint, onnx), MODEL_URI, "", every_s=3600.0).current()
    if served is None or not isinstance(served.classifier, OnnxClassifier):
        raise RuntimeError(f"the bench's registry served {served!r}, not its ONNX export")
    classifier = served.classifier  # its preprocess and session are timed apart
    limits = Limits(max_pixels=settings_for(home).serve_max_pixels)

    def encode() -> httpx.Request:
        req = httpx.Request("POST", "http://127.0.0.1/api/v1/predict", files=_files(data), data={"cropped": "true"})
        req.read()
        return req

    req = encode()
    body = req.content
    headers = [(k.lower().encode(), v.encode()) for k, v in req.headers.items()]

    async def parse():
        sent = False

        async def receive():
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        scope = {"type": "http", "method": "POST", "path": "/api/v1/predict", "headers": headers,
                 "query_string": b""}
        return await read_form(Request(scope, receive), 64 << 20)

    loop = asyncio.new_event_loop()
    try:
        form = loop.run_until_complete(parse())
        decoded = decode_upload(form.files["image"], limits)
        result = screen(decoded, served, cropped=True)
        x = classifier.preprocess([result.crop])
        heat = heatmap_png(result.heatmap)  # what the API returns
        answer = predict_out(served, decoded, result, heat).model_dump_json()
        parts = {  # in the order of a request; "ORT run alone" is part of "screen"
            "client: multipart encode": encode,
            "multipart parse": lambda: loop.run_until_complete(parse()),
            "decode (sniff, PNG, SHA-256)": lambda: decode_upload(form.files["image"], limits),
            "screen: crop resize + preprocess + ORT": lambda: screen(decoded, served, cropped=True),
            "ORT run alone (logit + heat map)": lambda: classifier.session.run(None, {"image": x}),
            "heat map PNG (grey map, as the API returns it)": lambda: heatmap_png(result.heatmap),
            "response JSON (pydantic, base64)": lambda: predict_out(served, decoded, result, heat).model_dump_json(),
            "client: JSON decode": lambda: json.loads(answer),
        }
        for fn in parts.values():
            for _ in range(3):
                fn()
        medians: dict[str, list[float]] = {name: [] for name in parts}
        for _ in range(rounds):  # a burst of another job hits one round: the least disturbed median counts
            for name, fn in parts.items():
                medians[name].append(percentile(_ms(fn, max(3, n // rounds)), 50))
                if "ORT" in name:
                    pause()
        out = {name: min(v) for name, v in medians.items()}
        out["audit row (SQLite; off here)"] = _audit_ms(home, served, decoded, result, n)
        return {k: round(v, 2) for k, v in out.items()} | {"response KiB": round(len(answer) / 1024, 1)}
    finally:
        loop.close()


def _audit_ms(home: Path, served, decoded, result, n: int) -> float:
    """One prediction_audit row written as the app writes it (serve_audit's default is on)."""
    from db.models import PredictionAudit
    from osteo.settings import session_factory

    audit = session_factory(settings_for(home / "audit-home"), create=True)

    def write():
        with audit() as session, session.begin():
            session.add(PredictionAudit(
                channel="api", model_name=served.name, model_version=served.version, localiser=None,
                input_sha256=decoded.sha256, input_kind=decoded.kind, box=None, box_source=result.box_source,
                side=None, probability=result.probability, label=result.label, threshold=result.threshold))

    write()
    return percentile(_ms(write, max(5, n // 2)), 50)


def breakdown_process(checkpoint: Path, onnx: Path, png: Path, home: Path, n: int) -> dict[str, float]:
    """`breakdown` in a fresh process, as the server is: no torch ops run before it (the baseline, the
    export), whose OpenMP threads could take a core from what is timed."""
    proc = subprocess.run([sys.executable, "-m", "bench.service_breakdown", "--checkpoint", str(checkpoint),
                           "--onnx", str(onnx), "--png", str(png), "--home", str(home), "--calls", str(n)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"the breakdown failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    import argparse

    import torch

    p = argparse.ArgumentParser(prog="python -m bench.service_breakdown", description=(__doc__ or "").split("\n\n")[0])
    for name in ("--checkpoint", "--onnx", "--png", "--home"):
        p.add_argument(name, required=True)
    p.add_argument("--calls", type=int, default=30)
    args = p.parse_args(argv)
    torch.set_num_threads(THREADS)
    print(json.dumps(breakdown(Path(args.checkpoint), Path(args.onnx), Path(args.png).read_bytes(),
                               Path(args.home), args.calls)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
