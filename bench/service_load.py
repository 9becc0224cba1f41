"""The service under load for bench/service.py: the uvicorn server process and the load client.

The client runs as its own process: `--clients` asyncio tasks share one httpx.AsyncClient and
each POSTs the crop to /api/v1/predict (cropped=true) in a loop until the deadline or
`--max-requests` in all; it prints one JSON line (requests/s, errors, p50/p95 ms).

    python -m bench.service_load --url http://127.0.0.1:PORT --png crop.png [--clients 50] [--seconds 20]

Only loopback URLs are accepted: this is a bench, never a load generator against another host.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.common import percentile

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = ("127.0.0.1", "localhost", "::1")
ENV = {"checkpoint": "OSTEO_BENCH_SERVICE_CHECKPOINT", "onnx": "OSTEO_BENCH_SERVICE_ONNX",
       "home": "OSTEO_BENCH_SERVICE_HOME", "threads": "OSTEO_BENCH_SERVICE_THREADS"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(home: Path, workers: int, threads: int, start_timeout: float = 120.0):
    """Uvicorn serving bench.service:load_app (over home/model.pth and home/model.onnx) on
    127.0.0.1:<free port> in a child process group; yields the base URL once the health check
    answers with the model loaded; the group is terminated (then killed) on exit, also on error."""
    import httpx

    port = free_port()
    env = dict(os.environ, **{ENV["checkpoint"]: str(home / "model.pth"), ENV["onnx"]: str(home / "model.onnx"),
                              ENV["home"]: str(home), ENV["threads"]: str(threads)})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    log = open(home / f"uvicorn-{port}.log", "w+b")  # closed below
    proc = subprocess.Popen([sys.executable, "-m", "bench.service_load", "--serve", "--port", str(port),
                             "--workers", str(workers)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                tail = log.read()[-2000:].decode(errors="replace")
                raise RuntimeError(f"the service exited ({proc.returncode}): {tail}")
            try:
                r = httpx.get(url + "/api/v1/health", timeout=2.0)
                if r.status_code == 200 and r.json().get("status") == "ok":
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service did not answer within {start_timeout:.0f} s")
            time.sleep(0.2)
        yield url
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            # the group may outlive the leader (uvicorn's worker processes): make sure of it
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def serve_main(port: int, workers: int) -> None:
    import uvicorn

    uvicorn.run("bench.service:load_app", factory=True, host="127.0.0.1", port=port, workers=workers,
                log_level="warning", access_log=False, server_header=False, proxy_headers=False)


def load_test(url: str, png: Path, clients: int, seconds: float, max_requests: int) -> dict[str, Any]:
    """This module's client in a second process: `clients` tasks POSTing until the deadline."""
    proc = subprocess.run([sys.executable, "-m", "bench.service_load", "--url", url, "--png", str(png),
                           "--clients", str(clients), "--seconds", str(seconds), "--max-requests", str(max_requests)],
                          cwd=REPO, capture_output=True, text=True, timeout=seconds + 120)
    if proc.returncode != 0:
        raise RuntimeError(f"the load client failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


async def hammer(url: str, data: bytes, clients: int, seconds: float, max_requests: int) -> dict:
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    started = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(60.0), limits=limits) as client:
        t_start = time.perf_counter()
        deadline = t_start + seconds

        async def worker() -> None:
            nonlocal started
            while time.perf_counter() < deadline and started < max_requests:
                started += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post("/api/v1/predict", files={"image": ("crop.png", data, "image/png")},
                                          data={"cropped": "true"})
                    ok = r.status_code == 200 and "probability" in r.json()
                    key = "ok" if ok else f"HTTP {r.status_code}"
                except Exception as exc:  # noqa: BLE001 - counted, never raised: the run must end by itself
                    key = type(exc).__name__
                if key == "ok":
                    latencies.append((time.perf_counter() - t0) * 1000)
                else:
                    errors[key] = errors.get(key, 0) + 1

        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t_start
    n_err = sum(errors.values())
    return {"clients": clients, "seconds": seconds, "wall_s": round(wall, 2), "requests": len(latencies) + n_err,
            "ok": len(latencies), "errors": n_err, "error_kinds": errors, "rps": len(latencies) / wall,
            "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.service_load", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--url")
    p.add_argument("--png")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--max-requests", type=int, default=100_000)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the server child process
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve_main(args.port, args.workers)
        return 0
    if not args.url or not args.png:
        p.error("--url and --png are required")
    if urlsplit(args.url).hostname not in LOOPBACK:
        p.error("--url must be a loopback address (127.0.0.1, localhost, ::1)")
    out = asyncio.run(hammer(args.url, Path(args.png).read_bytes(), max(1, args.clients), args.seconds,
                             args.max_requests))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
