"""`osteo serve`: the screening web page and JSON API (osteo_service) under uvicorn.

Binds to 127.0.0.1 unless told otherwise: the page shows patients' radiographs. The model and the
localiser are registry references (aliases follow new versions within a minute).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from collections.abc import Callable

from osteo.errors import UserError
from osteo.runtime import configure_environment
from osteo.settings import get_settings, session_factory
from osteo_cli.output import emit


def _check_bind(host: str, port: int) -> None:
    if not 0 < port < 65536:
        raise UserError("bad_option", f"--port {port} is not a port; choose one from 1 to 65535")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise UserError("port_in_use", f"cannot listen on {host}:{port} ({exc.strerror}); choose another "
                                           "--port or --host") from None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def cmd_serve(args: argparse.Namespace) -> int:
    if not args.model.startswith("models:/") or (args.localiser and not args.localiser.startswith("models:/")):
        raise UserError("bad_option", "--model and --localiser are registry references: models:/NAME@ALIAS or "
                                      "models:/NAME/VERSION")
    if args.workers < 1:
        raise UserError("bad_option", "--workers must be at least 1")
    _check_bind(args.host, args.port)
    # the workers are separate processes: they read the same settings from the environment
    os.environ["OSTEO_SERVE_MODEL"] = args.model
    os.environ["OSTEO_SERVE_LOCALISER"] = args.localiser
    # N workers x the cores' threads each would overload the cores: measured on 2 cores, 2 workers x 1 thread
    # answered 95 requests/s where 2 x 2 answered 59 (docs/performance.md)
    os.environ.setdefault("OSTEO_SERVE_THREADS", str(max(1, (os.cpu_count() or 1) // args.workers)))
    get_settings.cache_clear()
    settings = get_settings()
    configure_environment(settings)
    if settings.serve_audit or settings.auth_mode != "none":  # the schema checked once here, not in each worker
        session_factory(settings, create=True)
    from osteo_service.auth.modes import build_access

    build_access(settings, None)  # a bad sign-in setting refuses here, in one line
    url = f"http://{args.host if ':' not in args.host else '[' + args.host + ']'}:{args.port}/"
    emit(args, {"ok": True, "url": url, "api": url + "api/v1/predict", "docs": url + "docs", "model": args.model,
                "localiser": args.localiser or None, "workers": args.workers, "auth_mode": settings.auth_mode},
         f"osteo serve: {url} (API {url}api/v1/predict, docs {url}docs), model {args.model}"
         + (f", localiser {args.localiser}" if args.localiser else "") + f"; sign-in {settings.auth_mode}"
         + (" (open to anyone who reaches it)" if settings.auth_mode == "none" else "") + "; Ctrl-C stops it")
    if not _is_loopback(args.host):
        print(f"osteo serve: listening on {args.host}, beyond this machine: put it behind the hospital's TLS proxy "
              "and access control (docs/service.md)", file=sys.stderr)
    sys.stdout.flush()
    import uvicorn

    uvicorn.run("osteo_service.app:create_app", factory=True, host=args.host, port=args.port, workers=args.workers,
                log_level="warning", access_log=False, server_header=False, proxy_headers=False)
    return 0


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    s = get_settings()
    p = add("serve", cmd_serve, "the screening web page and JSON API over the registry's champion")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--model", default=s.serve_model,
                   help=f"the classifier, a registry reference (default {s.serve_model}; OSTEO_SERVE_MODEL)")
    p.add_argument("--localiser", default=s.serve_localiser,
                   help=f"the femoral-neck localiser, a registry reference; '' for none (default {s.serve_localiser})")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
