"""Proxy mode: the user and groups headers are believed from a configured proxy address only; groups map to
roles by the setting; from any other address the same headers make nobody. The client address is the
ASGI scope's, which uvicorn fills from the socket's peer (TestClient's `client` sets it)."""

from __future__ import annotations

import pytest

from tests.osteo_service.auth_support import make_service
from tests.osteo_service.conftest import hip_png

IMAGE = {"image": ("hip.png", hip_png(220), "image/png")}
PROXY, ELSEWHERE = ("10.20.0.5", 443), ("10.99.0.7", 50000)


@pytest.fixture
def proxy_service(tmp_path, fake_registry, clock):
    return make_service(tmp_path, fake_registry, clock, auth_mode="proxy", auth_proxy_trusted=["10.20.0.0/24"],
                        auth_proxy_user_header="X-Remote-User", auth_proxy_groups_header="X-Remote-Groups",
                        auth_proxy_group_roles={"Radiology Screeners": "screening", "osteo-audit": "audit"})


def as_user(name: str, groups: str) -> dict[str, str]:
    return {"X-Remote-User": name, "X-Remote-Groups": groups}


def test_the_proxys_user_gets_the_roles_of_their_groups(proxy_service):
    proxy = proxy_service.client(client=PROXY)
    screener = as_user("dr.lin", "staff, Radiology Screeners")
    page = proxy.get("/?lang=en", headers=screener)
    assert page.status_code == 200 and "Signed in as dr.lin" in page.text and 'id="signout-form"' not in page.text
    assert proxy.post("/api/v1/predict", files=IMAGE, headers=screener).status_code == 200
    assert proxy.get("/api/v1/audit/predictions", headers=screener).status_code == 403
    auditor = as_user("ms.wu", "osteo-audit")
    rows = proxy.get("/api/v1/audit/predictions", headers=auditor).json()["predictions"]
    assert [r["asked_by"] for r in rows] == ["dr.lin"]
    assert proxy.get("/", headers=as_user("mr.unmapped", "staff")).status_code == 403
    assert proxy.get("/").status_code == 401  # the proxy let through no user


def test_the_headers_from_another_address_make_nobody(proxy_service):
    direct = proxy_service.client(client=ELSEWHERE)
    forged = as_user("admin", "Radiology Screeners,osteo-audit")
    page = direct.get("/?lang=en", headers=forged)
    assert page.status_code == 401 and 'id="signin-proxy"' in page.text and "portal, then open" in page.text
    r = direct.post("/api/v1/predict", files=IMAGE, headers=forged)
    assert r.status_code == 401 and r.json()["code"] == "signin_required"
    assert proxy_service.client().get("/", headers=forged).status_code == 401  # no address at all


def test_a_token_still_serves_a_machine_in_proxy_mode(proxy_service):
    direct = proxy_service.client(client=ELSEWHERE)
    bearer = {"Authorization": f"Bearer {proxy_service.tokens['screening']}"}
    assert direct.post("/api/v1/predict", files=IMAGE, headers=bearer).status_code == 200


def test_the_sign_in_throttle_counts_the_forwarded_address_only_from_a_proxy():
    from starlette.requests import Request

    from osteo_service.auth.proxy import Proxies, client_address

    proxies = Proxies(("10.20.0.0/24",))

    def request(peer: str) -> Request:
        return Request({"type": "http", "client": (peer, 1), "headers": [(b"x-forwarded-for", b"1.2.3.4, 5.6.7.8")]})

    assert client_address(request("10.20.0.5"), proxies) == "5.6.7.8"
    assert client_address(request("10.99.0.7"), proxies) == "10.99.0.7"
