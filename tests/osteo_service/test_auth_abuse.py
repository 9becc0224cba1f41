"""Abuse of the sign-in (OSTEO_AUTH_MODE=users): guessing passwords, forged, expired and revoked tokens, a
cookie replayed after sign-out or kept past its time-outs, a sign-in without the form's CSRF token."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, update

from db.access import ApiToken, AuthSession
from osteo_service.auth.tokens import PREFIX
from tests.osteo_service.auth_support import PASSWORD, csrf_of, make_service, sign_in, signed_in_client
from tests.osteo_service.conftest import hip_png

IMAGE = {"image": ("hip.png", hip_png(220), "image/png")}


@pytest.fixture
def users_service(tmp_path, fake_registry, clock):
    return make_service(tmp_path, fake_registry, clock)


def test_a_thousand_wrong_passwords_from_one_address_are_throttled(tmp_path, fake_registry, clock):
    """1,000 guesses at one name from one address: only the first few are checked (401), the rest refused
    unchecked (429, with Retry-After); the right password is refused too while the throttle holds, so the
    guesser learns nothing; guesses spread over many names hit the address's limit."""
    service = make_service(tmp_path, fake_registry, clock, auth_signin_per_user=5, auth_signin_per_address=20)
    client = service.client()
    token = csrf_of(client)
    statuses = [client.post("/signin", data={"csrf_token": token, "name": "screening-user",
                                             "password": f"guess {i}"}, follow_redirects=False).status_code
                for i in range(1000)]
    accepted = statuses.count(401)
    assert accepted == 5 and statuses.count(429) == 995, {s: statuses.count(s) for s in set(statuses)}
    r = sign_in(client, "screening-user")
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0 and "osteo_session" not in r.cookies
    spread = [client.post("/signin", data={"csrf_token": token, "name": f"name-{i}", "password": "x"},
                          follow_redirects=False).status_code for i in range(100)]
    assert spread.count(401) == 20 - accepted and spread.count(429) == 100 - (20 - accepted)


def test_the_throttle_admits_again_after_its_window():
    from osteo_service.auth.throttle import Throttle

    now = [0.0]
    throttle = Throttle(per_user=2, per_address=10, window_s=60, clock=lambda: now[0])
    assert throttle.admit("ana", "10.0.0.1") is None and throttle.admit("ANA ", "10.0.0.2") is None
    assert throttle.admit("ana", "10.0.0.3") == 60
    now[0] = 59.0
    assert throttle.admit("ana", "10.0.0.3") == 1
    now[0] = 60.0
    assert throttle.admit("ana", "10.0.0.3") is None


def test_forged_expired_and_revoked_tokens_are_refused(users_service):
    client = users_service.client()
    good = users_service.tokens["screening"]

    def predict(secret: str):
        return client.post("/api/v1/predict", files=IMAGE, headers={"Authorization": f"Bearer {secret}"})

    assert predict(good).status_code == 200
    for forged in (PREFIX + "A" * 43, good[:-1] + ("A" if good[-1] != "A" else "B"), "not-even-ours", ""):
        r = predict(forged)
        assert r.status_code == 401 and r.json()["code"] in ("invalid_token", "signin_required"), forged
    users_service.in_db(lambda s: s.execute(update(ApiToken).where(ApiToken.name == "screening-token")
                                            .values(expires_at=dt.datetime(2020, 1, 1))))
    r = predict(good)
    assert r.status_code == 401 and r.json()["code"] == "invalid_token" and 'error="invalid_token"' in \
        r.headers["www-authenticate"]
    from osteo_service.auth.tokens import revoke_token

    admin = users_service.tokens["admin"]
    assert predict(admin).status_code == 200
    users_service.in_db(revoke_token, "admin-token")
    assert predict(admin).status_code == 401


def test_a_token_records_its_last_use(users_service):
    from osteo_service.auth.tokens import list_tokens

    client = users_service.client(headers={"Authorization": f"Bearer {users_service.tokens['audit']}"})
    assert client.get("/api/v1/audit/predictions").status_code == 200
    used = {t["name"]: t["last_used_at"] for t in users_service.in_db(list_tokens)}
    assert used["audit-token"] is not None and used["screening-token"] is None


def test_a_cookie_replayed_after_sign_out_is_refused(users_service):
    client = signed_in_client(users_service, "screening")
    stolen = client.cookies.get("osteo_session")
    assert client.get("/").status_code == 200
    r = client.post("/signout", data={"csrf_token": csrf_of(client, "/manual")}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/signin?out=1"
    thief = users_service.client(cookies={"osteo_session": stolen})
    assert thief.get("/").status_code == 401
    assert thief.post("/api/v1/locate", files=IMAGE, headers={"X-CSRF-Token": csrf_of(thief, "/signin")}
                      ).status_code == 401


def test_a_sign_in_rotates_the_session(users_service):
    """A session id never survives a sign-in: the one the browser brought is ended, a new one issued."""
    client = signed_in_client(users_service, "screening")
    first = client.cookies.get("osteo_session")
    r = client.post("/signin", data={"csrf_token": csrf_of(client, "/manual"), "name": "audit-user",
                                     "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 303
    second = client.cookies.get("osteo_session")
    assert second and second != first
    assert users_service.client(cookies={"osteo_session": first}).get("/").status_code == 401


def test_the_cookie_is_httponly_samesite_and_secure_by_default(tmp_path, fake_registry, clock):
    service = make_service(tmp_path, fake_registry, clock, auth_cookie_secure=True)
    client = service.client(base_url="https://testserver")
    r = sign_in(client, "screening-user")
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("__Host-osteo_session="))
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert client.get("/").status_code == 200


def age_sessions(service, column: str, by: dt.timedelta) -> None:
    """Move the live sessions' `column` back in time (as if the person had waited that long)."""
    def move(session):
        for row in session.scalars(select(AuthSession).where(AuthSession.ended_at.is_(None))):
            setattr(row, column, getattr(row, column) - by)
    service.in_db(move)


def test_idle_and_absolute_time_outs_end_a_session(users_service):
    client = signed_in_client(users_service, "screening")
    assert client.get("/").status_code == 200
    age_sessions(users_service, "last_seen_at", dt.timedelta(minutes=users_service.settings.auth_idle_minutes - 1))
    assert client.get("/").status_code == 200  # not idle long enough
    age_sessions(users_service, "last_seen_at", dt.timedelta(minutes=users_service.settings.auth_idle_minutes + 1))
    assert client.get("/").status_code == 401
    client = signed_in_client(users_service, "screening")
    age_sessions(users_service, "created_at", dt.timedelta(hours=users_service.settings.auth_session_hours, minutes=1))
    assert client.get("/").status_code == 401


def test_disabling_an_account_ends_its_sessions(users_service):
    from osteo_service.auth.accounts import disable_user, reset_password

    client = signed_in_client(users_service, "screening")
    assert users_service.in_db(disable_user, "screening-user") == 1
    assert client.get("/").status_code == 401
    assert sign_in(client, "screening-user").status_code == 401
    users_service.in_db(reset_password, "screening-user", "another long password")
    assert sign_in(client, "screening-user", "another long password").status_code == 303


def test_sign_in_and_cookie_api_calls_need_the_csrf_token(users_service):
    client = users_service.client()
    client.get("/signin")
    r = client.post("/signin", data={"name": "screening-user", "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 403 and "osteo_session" not in r.cookies
    client = signed_in_client(users_service, "screening")
    r = client.post("/api/v1/locate", files=IMAGE)
    assert r.status_code == 403 and r.json()["code"] == "csrf"


def test_a_wrong_password_and_an_unknown_name_read_alike(users_service):
    client = users_service.client()
    wrong, unknown = sign_in(client, "screening-user", "wrong password!!"), sign_in(client, "nobody", PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    for lang, words in (("zh-TW", "帳號或密碼不正確"), ("en", "The user name or password is wrong")):
        client.get(f"/lang/{lang}")
        assert words in sign_in(client, "nobody", PASSWORD).text
