"""The service in users mode over the fake registries of conftest.py: one account and one token per role,
sign-in through the real page (CSRF token and all), the database a SQLite file in tmp_path."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from db.values import ROLES
from osteo_service.models import ModelCache
from tests.osteo_service.conftest import MODEL_URI, ROI_URI

PASSWORD = "a long enough password"


@dataclass
class AuthService:
    app: object
    settings: object
    db: object  # the session factory
    tokens: dict[str, str] = field(default_factory=dict)  # role -> bearer secret

    def client(self, **kwargs):
        from fastapi.testclient import TestClient

        return TestClient(self.app, **kwargs)

    def in_db(self, fn, *args):
        with self.db() as session, session.begin():
            return fn(session, *args)


def make_service(tmp_path, fake_registry, clock, **settings_values) -> AuthService:
    from osteo.settings import Settings, session_factory
    from osteo_service.app import create_app
    from osteo_service.auth.accounts import add_user
    from osteo_service.auth.tokens import create_token

    values = {"auth_mode": "users", "auth_cookie_secure": False, **settings_values}
    settings = Settings(home=tmp_path, serve_upload_limit_mb=1.0, **values)
    db = session_factory(settings, create=True)
    cache = ModelCache(fake_registry.registry(), MODEL_URI, ROI_URI, every_s=60, clock=clock)
    service = AuthService(create_app(settings, models=cache, audit=db), settings, db)
    for role in ROLES:
        service.in_db(add_user, f"{role}-user", role, PASSWORD)
        service.tokens[role] = service.in_db(lambda s, r=role: create_token(s, f"{r}-token", r, None)[1])
    return service


def csrf_of(client, path: str = "/signin") -> str:
    page = client.get(path)
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def sign_in(client, name: str, password: str = PASSWORD, next_: str = "/"):
    """The sign-in form as a browser posts it; the response (303 on success) is returned unfollowed."""
    token = csrf_of(client)
    return client.post("/signin", data={"csrf_token": token, "name": name, "password": password, "next": next_},
                       follow_redirects=False)


def signed_in_client(service: AuthService, role: str):
    client = service.client()
    r = sign_in(client, f"{role}-user")
    assert r.status_code == 303, r.text
    return client
