"""The API against its own OpenAPI schema (schemathesis): whatever the schema allows, the service
answers with a documented status and body, never a 5xx. A short run; the fakes stand in for MLflow."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from osteo_service.models import ModelCache
from tests.osteo_service.conftest import MODEL_URI, ROI_URI, FakeRegistry

OPERATIONS = [("/api/v1/predict", "POST"), ("/api/v1/locate", "POST"), ("/api/v1/health", "GET")]


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    from osteo.settings import Settings, session_factory
    from osteo_service.app import create_app

    home = tmp_path_factory.mktemp("schema")
    s = Settings(home=home, serve_upload_limit_mb=1.0)
    fake = FakeRegistry(versions={MODEL_URI: ("osteo-classifier", "3"), ROI_URI: ("osteo-roi", "7")})
    app = create_app(s, models=ModelCache(fake.registry(), MODEL_URI, ROI_URI), audit=session_factory(s, create=True))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_api_conforms_to_its_schema(api_schema, path, method):
    seen: list[int] = []

    @given(case=api_schema[path][method].as_strategy())
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def check(case):
        response = case.call()
        seen.append(response.status_code)
        assert response.status_code < 500, response.text
        # a schema cannot say "the bytes are a radiograph": schema-valid random bytes are rightly refused (415/422)
        case.validate_response(response, excluded_checks=[positive_data_acceptance])

    check()
    assert seen  # the strategy produced requests
