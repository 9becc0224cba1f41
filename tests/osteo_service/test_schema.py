"""The API against its own OpenAPI schema (schemathesis): whatever the schema allows, the service
answers with a documented status and body, never a 5xx. A short run; the fakes stand in for MLflow. The
service signs in (OSTEO_AUTH_MODE=users) and schemathesis calls with an admin's bearer token, which passes
every role's guard."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from osteo_service.models import ModelCache
from tests.osteo_service.conftest import MODEL_URI, ROI_URI, FakeRegistry

OPERATIONS = [("/api/v1/predict", "POST"), ("/api/v1/locate", "POST"), ("/api/v1/health", "GET"),
              ("/api/v1/audit/predictions", "GET")]


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    from osteo.settings import Settings, session_factory
    from osteo_service.app import create_app
    from osteo_service.auth.tokens import create_token

    home = tmp_path_factory.mktemp("schema")
    s = Settings(home=home, serve_upload_limit_mb=1.0, auth_mode="users")
    fake = FakeRegistry(versions={MODEL_URI: ("osteo-classifier", "3"), ROI_URI: ("osteo-roi", "7")})
    db = session_factory(s, create=True)
    with db.begin() as session:
        _, secret = create_token(session, "schemathesis", "admin", None)
    app = create_app(s, models=ModelCache(fake.registry(), MODEL_URI, ROI_URI), audit=db)
    return schemathesis.openapi.from_asgi("/openapi.json", app), {"Authorization": f"Bearer {secret}"}


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_api_conforms_to_its_schema(api_schema, path, method):
    schema, bearer = api_schema
    seen: list[int] = []

    @given(case=schema[path][method].as_strategy())
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def check(case):
        response = case.call(headers=bearer)
        seen.append(response.status_code)
        assert response.status_code < 500, response.text
        # a schema cannot say "the bytes are a radiograph": schema-valid random bytes are rightly refused (415/422)
        case.validate_response(response, excluded_checks=[positive_data_acceptance])

    check()
    assert seen and 401 not in seen and 403 not in seen  # the strategy produced requests, the token passed
