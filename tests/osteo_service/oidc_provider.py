"""A small OpenID Connect provider for the tests, served by uvicorn on 127.0.0.1: discovery, JWKS, an
authorization endpoint that signs in whoever the test names (no login form), and a token endpoint that checks
the client's secret, the one-time code, the redirect URI and the PKCE verifier (S256) before it returns an
RS256 ID token signed with joserfc. Built as a minimal FastAPI app, not Authlib's server parts."""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

import uvicorn
from fastapi import FastAPI, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse
from joserfc import jwt
from joserfc.jwk import RSAKey


@dataclass
class Provider:
    client_id: str = "osteo"
    client_secret: str = "s3cret-of-the-client"
    user: dict = field(default_factory=lambda: {"sub": "u-1", "preferred_username": "dr.chen",
                                                "groups": ["osteo-screening"]})
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"}))
    codes: dict[str, dict] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=lambda: {"token": 0, "bad_verifier": 0})
    issuer: str = ""
    tamper: str | None = None  # "nonce" | "audience" | "signature": the next ID token is wrong in that way

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/.well-known/openid-configuration")
        def discovery():
            return {"issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
                    "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
                    "response_types_supported": ["code"], "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"], "code_challenge_methods_supported": ["S256"]}

        @app.get("/jwks")
        def jwks():
            return {"keys": [self.key.as_dict(private=False)]}

        @app.get("/authorize")
        def authorize(request: Request):
            q = request.query_params
            if q.get("client_id") != self.client_id or q.get("code_challenge_method") != "S256":
                return JSONResponse({"error": "invalid_request"}, 400)
            code = secrets.token_urlsafe(16)
            self.codes[code] = {"nonce": q.get("nonce"), "challenge": q["code_challenge"],
                                "redirect_uri": q["redirect_uri"], "user": dict(self.user)}
            return RedirectResponse(f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q['state']})}", 302)

        @app.post("/token")
        def token(request: Request, code: str = Form(), redirect_uri: str = Form(), code_verifier: str = Form("")):
            self.seen["token"] += 1
            basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
            grant = self.codes.pop(code, None)  # one use only
            if request.headers.get("authorization") != f"Basic {basic}" or grant is None \
                    or grant["redirect_uri"] != redirect_uri:
                return JSONResponse({"error": "invalid_grant"}, 400)
            digest = base64.urlsafe_b64encode(hashlib.sha256(code_verifier.encode()).digest()).rstrip(b"=").decode()
            if digest != grant["challenge"]:
                self.seen["bad_verifier"] += 1
                return JSONResponse({"error": "invalid_grant", "error_description": "PKCE"}, 400)
            return {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "expires_in": 300,
                    "id_token": self.id_token(grant)}

        return app

    def id_token(self, grant: dict) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": self.client_id, "iat": now, "exp": now + 300,
                  "nonce": grant["nonce"], **grant["user"]}
        key = self.key
        if self.tamper == "nonce":
            claims["nonce"] = "not-the-nonce"
        elif self.tamper == "audience":
            claims["aud"] = "another-client"
        elif self.tamper == "signature":
            key = RSAKey.generate_key(2048, parameters={"kid": "k1"})  # the right kid, the wrong key
        self.tamper = None
        return jwt.encode({"alg": "RS256", "kid": "k1"}, claims, key)


class Served:
    """An ASGI app under uvicorn on 127.0.0.1 in a thread, until stop()."""

    def __init__(self, app):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self, timeout: float = 20.0) -> Served:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test's OIDC provider did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
