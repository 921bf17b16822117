"""The OpenAPI schema: valid, complete (every API route and method), served to console users only."""

import pytest
import yaml
from django.core.management import call_command

from console.roles import Role
from tests.api_support import api_as, api_routes, person

SCHEMA_VIEWS = {"api-schema", "api-docs"}  # the schema leaves itself out (SERVE_INCLUDE_SCHEMA)


def test_the_schema_validates_without_warnings(db, tmp_path):
    out = tmp_path / "schema.yml"

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))

    assert yaml.safe_load(out.read_text())["openapi"].startswith("3.")


def test_the_schema_names_every_api_endpoint(db):
    api = api_as(person("sec", Role.SECURITY_ADMIN))

    schema = yaml.safe_load(api.get("/api/schema/").content)

    documented = {(path, method) for path, ops in schema["paths"].items() for method in ops}
    expected = {
        # drf-spectacular names a primary key after the model's field (id).
        (route.path.replace("{pk}", "{id}"), method)
        for route in api_routes()
        if route.name not in SCHEMA_VIEWS
        for method in route.methods
    }
    assert ("/api/delegations/{id}/approve/", "post") in expected  # the walk finds router actions
    assert expected - documented == set()
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            assert op.get("description") or op.get("summary"), f"{method.upper()} {path} is not described"


@pytest.mark.parametrize("page", ["/api/schema/", "/api/docs/"])
def test_schema_and_docs_are_for_console_users_only(db, page):
    anonymous = api_as(None).get(page)
    end_user = api_as(person("eve")).get(page)
    auditor = api_as(person("audrey", Role.COMPLIANCE_AUDITOR)).get(page)

    assert anonymous.status_code == 403
    assert end_user.status_code == 403
    assert auditor.status_code == 200


def test_api_writes_need_the_csrf_token_of_the_session(calendar):
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    client.force_login(person("sec", Role.SECURITY_ADMIN))

    response = client.post("/api/servers/calendar/rotate-credentials/")

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_the_docs_page_loads_swagger_ui_from_the_console_not_a_cdn(db):
    page = api_as(person("sec", Role.SECURITY_ADMIN)).get("/api/docs/").content.decode()

    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in page
    assert "cdn." not in page and "unpkg" not in page
