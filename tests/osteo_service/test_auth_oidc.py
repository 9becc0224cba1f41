"""OIDC mode against a small provider the test starts on 127.0.0.1 (tests/osteo_service/oidc_provider.py):
authorization code with PKCE (S256) and a nonce through Authlib; the groups claim maps to roles; a replayed
callback, a forged ID token (nonce, audience, signature) and a stolen code without its verifier are refused."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.osteo_service.auth_support import make_service
from tests.osteo_service.oidc_provider import Provider, Served


@pytest.fixture
def provider():
    p = Provider()
    served = Served(p.app()).start()
    p.issuer = f"http://127.0.0.1:{served.port}"
    yield p
    served.stop()


@pytest.fixture
def oidc_service(tmp_path, fake_registry, clock, provider):
    return make_service(tmp_path, fake_registry, clock, auth_mode="oidc", auth_oidc_issuer=provider.issuer,
                        auth_oidc_client_id=provider.client_id, auth_oidc_client_secret=provider.client_secret,
                        auth_oidc_group_roles={"osteo-screening": "screening", "osteo-audit": "audit"})


def to_provider(client, next_: str = "/"):
    """The service's redirect to the provider, and the provider's redirect back (the callback's path)."""
    start = client.get(f"/signin/oidc?next={next_}", follow_redirects=False)
    assert start.status_code == 302, start.text
    asked = parse_qs(urlsplit(start.headers["location"]).query)
    back = httpx.get(start.headers["location"], follow_redirects=False)
    assert back.status_code == 302, back.text
    callback = urlsplit(back.headers["location"])
    return asked, f"{callback.path}?{callback.query}"


def test_sign_in_with_the_providers_account(oidc_service, provider):
    client = oidc_service.client()
    assert client.get("/").status_code == 401
    page = client.get("/signin?lang=en")
    assert 'id="signin-oidc"' in page.text and 'id="signin-form"' not in page.text
    asked, callback = to_provider(client, "/manual")
    assert asked["code_challenge_method"] == ["S256"] and asked["nonce"] and asked["state"]
    assert asked["scope"] == ["openid profile"] and asked["redirect_uri"] == ["http://testserver/signin/callback"]
    done = client.get(callback, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/manual"
    home = client.get("/?lang=en")
    assert home.status_code == 200 and "Signed in as dr.chen" in home.text
    assert client.get("/api/v1/audit/predictions").status_code == 403  # osteo-screening gives screening only
    r = client.post("/signout", data={"csrf_token": _csrf(home.text)}, follow_redirects=False)
    assert r.status_code == 303 and client.get("/").status_code == 401


def _csrf(html: str) -> str:
    return html.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


def test_the_groups_claim_gives_the_roles(oidc_service, provider):
    provider.user = {"sub": "u-2", "preferred_username": "ms.wu", "groups": ["osteo-audit"]}
    client = oidc_service.client()
    _, callback = to_provider(client)
    assert client.get(callback, follow_redirects=False).status_code == 303
    assert client.get("/api/v1/audit/predictions").status_code == 200
    assert client.get("/").status_code == 403


def test_a_replayed_callback_is_refused(oidc_service):
    client = oidc_service.client()
    _, callback = to_provider(client)
    assert client.get(callback, follow_redirects=False).status_code == 303
    again = oidc_service.client()  # another browser with the same URL (a leaked referrer, a history entry)
    assert again.get(callback, follow_redirects=False).status_code == 401
    assert client.get(callback, follow_redirects=False).status_code == 401  # the same browser: state used up


@pytest.mark.parametrize("tamper", ["nonce", "audience", "signature"])
def test_a_forged_id_token_is_refused(oidc_service, provider, tamper):
    client = oidc_service.client()
    _, callback = to_provider(client)
    provider.tamper = tamper
    r = client.get(callback + "&lang=en", follow_redirects=False)
    assert r.status_code == 401 and "did not complete" in r.text
    assert client.get("/").status_code == 401


def test_a_stolen_code_without_its_verifier_is_worthless(oidc_service, provider):
    client = oidc_service.client()
    _, callback = to_provider(client)
    code = parse_qs(urlsplit(callback).query)["code"][0]
    r = httpx.post(f"{provider.issuer}/token", auth=(provider.client_id, provider.client_secret),
                   data={"grant_type": "authorization_code", "code": code, "code_verifier": "guessed" * 8,
                         "redirect_uri": "http://testserver/signin/callback"})
    assert r.status_code == 400 and provider.seen["bad_verifier"] == 1
