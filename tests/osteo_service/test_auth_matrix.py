"""Who may use what (OSTEO_AUTH_MODE=users): every route and API operation of the app, anonymous and signed in
as each role (a session cookie on the page and the API, a bearer token on the API), against the status it
must answer. A route the matrix does not name fails the test: a new route needs its guard and its row here."""

from __future__ import annotations

import pytest

from db.values import ROLES
from tests.osteo_service.auth_support import csrf_of, make_service, signed_in_client
from tests.osteo_service.conftest import hip_png

PUBLIC = None
# (method, path): (the role it needs or PUBLIC, the status when allowed, the request's path and body)
IMAGE = {"files": {"image": ("hip.png", hip_png(220), "image/png")}}
MATRIX = {
    ("GET", "/"): ("screening", 200, "/", {}),
    ("POST", "/predict"): ("screening", 200, "/predict", {**IMAGE, "csrf": "form"}),
    ("GET", "/self-check"): (PUBLIC, 200, "/self-check", {}),
    ("POST", "/self-check"): (PUBLIC, 200, "/self-check", {"data": {"age": "70", "weight": "50"}, "csrf": "form"}),
    ("GET", "/manual"): (PUBLIC, 200, "/manual", {}),
    ("GET", "/lang/{code}"): (PUBLIC, 303, "/lang/en", {}),
    ("GET", "/signin"): (PUBLIC, 200, "/signin", {}),
    ("GET", "/api/v1/health"): (PUBLIC, 200, "/api/v1/health", {}),
    ("POST", "/api/v1/predict"): ("screening", 200, "/api/v1/predict", {**IMAGE, "csrf": "header"}),
    ("POST", "/api/v1/locate"): ("screening", 200, "/api/v1/locate", {**IMAGE, "csrf": "header"}),
    ("GET", "/api/v1/audit/predictions"): ("audit", 200, "/api/v1/audit/predictions", {}),
    ("GET", "/referrals"): ("referrals", 200, "/referrals", {}),  # issue 27: the screening's referral list
    ("GET", "/api/v1/referrals"): ("referrals", 200, "/api/v1/referrals", {}),
    ("GET", "/openapi.json"): (PUBLIC, 200, "/openapi.json", {}),
    ("GET", "/docs"): (PUBLIC, 200, "/docs", {}),
    ("GET", "/redoc"): (PUBLIC, 200, "/redoc", {}),
    ("GET", "/docs/oauth2-redirect"): (PUBLIC, 200, "/docs/oauth2-redirect", {}),
    ("MOUNT", "/static"): (PUBLIC, 200, "/static/style.css", {}),
}
# routes with their own tests: the sign-in form's POST and sign-out (test_auth_abuse.py), the OIDC flow
# (test_auth_oidc.py; 404 in users mode), the manual's screenshots (a folder that may not exist)
ELSEWHERE = {("POST", "/signin"), ("POST", "/signout"), ("GET", "/signin/oidc"), ("GET", "/signin/callback"),
             ("MOUNT", "/screenshots")}
WHO = ["anonymous", *ROLES]


@pytest.fixture
def users_service(tmp_path, fake_registry, clock):
    return make_service(tmp_path, fake_registry, clock)


def app_routes(app) -> set[tuple[str, str]]:
    """(method, path) of every route, through the included routers; a mount as ("MOUNT", path)."""
    found: set[tuple[str, str]] = set()

    def walk(routes):
        for route in routes:
            inner = getattr(route, "original_router", None)
            if inner is not None:
                walk(inner.routes)
            elif getattr(route, "methods", None) is None:
                found.add(("MOUNT", route.path))
            else:
                found.update((m, route.path) for m in route.methods - {"HEAD"})

    walk(app.routes)
    return found


def test_the_matrix_names_every_route(users_service):
    routes = app_routes(users_service.app)
    missing = sorted(routes - set(MATRIX) - ELSEWHERE)
    assert not missing, f"routes with no row in the matrix (give each its guard, then its row): {missing}"
    assert not sorted(set(MATRIX) - routes)


def expected(needs: str | None, ok: int, who: str) -> int:
    if needs is PUBLIC:
        return ok
    if who == "anonymous":
        return 401
    return ok if who in (needs, "admin") else 403


def call(client, method: str, path: str, spec: dict, headers: dict | None = None):
    headers = dict(headers or {})
    data = dict(spec.get("data", {}))
    if spec.get("csrf") == "form":
        data["csrf_token"] = csrf_of(client, "/self-check")
    elif spec.get("csrf") == "header":
        headers["X-CSRF-Token"] = csrf_of(client, "/self-check")
    return client.request(method, path, files=spec.get("files"), data=data or None, headers=headers,
                          follow_redirects=False)


@pytest.mark.parametrize("who", WHO)
def test_each_route_by_role_with_a_session(users_service, who):
    client = users_service.client() if who == "anonymous" else signed_in_client(users_service, who)
    got = {}
    for (method, _), (needs, ok, path, spec) in MATRIX.items():
        r = call(client, "GET" if method == "MOUNT" else method, path, spec)
        got[(method, path)] = (r.status_code, expected(needs, ok, who))
        if path == "/signin" and who != "anonymous":  # a signed-in person is sent on
            got[(method, path)] = (r.status_code, 303)
    wrong = {k: v for k, v in got.items() if v[0] != v[1]}
    assert not wrong, f"{who}: (got, expected) {wrong}"


@pytest.mark.parametrize("who", WHO)
def test_each_api_operation_by_role_with_a_token(users_service, who):
    client = users_service.client()
    headers = {} if who == "anonymous" else {"Authorization": f"Bearer {users_service.tokens[who]}"}
    wrong = {}
    for (method, _), (needs, ok, path, spec) in MATRIX.items():
        if not path.startswith("/api/"):
            continue
        r = call(client, method, path, {k: v for k, v in spec.items() if k != "csrf"}, headers)
        if r.status_code != expected(needs, ok, who):
            wrong[path] = (r.status_code, expected(needs, ok, who))
        if r.status_code in (401, 403):
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["status"] == r.status_code
    assert not wrong, f"{who}: (got, expected) {wrong}"


def test_a_refused_page_is_a_page_in_both_languages(users_service):
    anonymous = users_service.client()
    for lang, words in (("zh-TW", "此頁面需要登入"), ("en", "This page needs you to sign in")):
        r = anonymous.get(f"/?lang={lang}")
        assert r.status_code == 401 and r.headers["content-type"].startswith("text/html") and words in r.text
        assert 'id="signin-form"' in r.text and 'name="next" value="/?lang=' in r.text
    refused_post = anonymous.post("/predict", files=IMAGE["files"])
    assert refused_post.status_code == 401 and 'name="next" value="/"' in refused_post.text
    audit = signed_in_client(users_service, "audit")
    for lang, words in (("zh-TW", "沒有權限"), ("en", "Not allowed")):
        r = audit.get(f"/?lang={lang}")
        assert r.status_code == 403 and words in r.text and "audit-user" in r.text


def test_the_api_refusal_says_how_to_authenticate(users_service):
    r = users_service.client().post("/api/v1/predict", files=IMAGE["files"])
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["code"] == "signin_required"
    schema = users_service.client().get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "401" in schema["paths"]["/api/v1/predict"]["post"]["responses"]


def test_who_asked_is_in_the_audit(users_service):
    token_client = users_service.client(headers={"Authorization": f"Bearer {users_service.tokens['screening']}"})
    assert token_client.post("/api/v1/predict", files=IMAGE["files"]).status_code == 200
    person = signed_in_client(users_service, "screening")
    assert call(person, "POST", "/predict", {**IMAGE, "csrf": "form"}).status_code == 200
    auditor = users_service.client(headers={"Authorization": f"Bearer {users_service.tokens['audit']}"})
    rows = auditor.get("/api/v1/audit/predictions").json()["predictions"]
    assert [r["asked_by"] for r in rows] == ["screening-user", "token:screening-token"]
    only = auditor.get("/api/v1/audit/predictions", params={"user": "screening-user"}).json()
    assert only["count"] == 1 and only["predictions"][0]["channel"] == "page"


def test_mode_none_is_open_with_its_banner(service):
    client, *_ = service
    page = client.get("/")
    assert page.status_code == 200 and 'id="open-banner"' in page.text and "signin" not in page.text
    assert client.post("/api/v1/predict", files=IMAGE["files"]).status_code == 200
    assert client.get("/api/v1/audit/predictions").json()["predictions"][0]["asked_by"] is None
    assert client.get("/signin", follow_redirects=False).status_code == 303  # nobody signs in: on to the page
