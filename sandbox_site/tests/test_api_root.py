"""The API in a browser and by hand: an index at /api/v1, every path with or without a trailing slash (no
redirect, so a POST keeps its body), a schema that still lists each operation once, the console's links."""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command
from django.urls import resolve, reverse

from sandbox_site.body_guard import rule_for

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema() -> dict:
    from drf_spectacular.generators import SchemaGenerator

    return SchemaGenerator().get_schema(request=None, public=True)


@pytest.mark.parametrize("url", ["/api/v1", "/api/v1/"])
def test_the_index_lists_collections_and_operations_as_json_without_credentials(client, url):
    response = client.get(url, HTTP_ACCEPT="application/json")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    body = response.json()
    assert body["sessions"] == "http://testserver/api/v1/sessions"
    assert body["templates"] == "http://testserver/api/v1/templates"
    assert body["docs"] == "http://testserver/api/docs/"
    operations = {(op["method"], op["path"]) for op in body["operations"]}
    assert ("POST", "/api/v1/sessions") in operations
    assert ("POST", "/api/v1/sessions/{session_id}/execute-sync") in operations
    assert ("GET", "/api/v1/executions/{execution_id}/output") in operations
    # The methods left out of the schema are left out here too.
    assert ("GET", "/api/v1/sessions/{session_id}/files/upload") not in operations


def test_the_index_lists_exactly_the_schemas_operations(client, schema):
    listed = {(op["method"], op["path"]) for op in client.get("/api/v1").json()["operations"]}
    documented = {(method.upper(), path) for path, item in schema["paths"].items() for method in item}
    assert listed == documented


def test_an_unknown_key_does_not_close_the_public_index(client):
    response = client.get("/api/v1/", HTTP_AUTHORIZATION="Bearer scp_not-a-key")
    assert response.status_code == 200


def test_a_browser_gets_the_browsable_index_with_the_login_link(client):
    page = client.get("/api/v1/", HTTP_ACCEPT="text/html")
    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    html = page.content.decode()
    assert 'href="http://testserver/api/v1/sessions"' in html
    assert "/api-auth/login/" in html


def test_a_logged_in_browser_browses_a_collection_with_a_trailing_slash(client, user, builtin_templates):
    client.force_login(user)
    page = client.get("/api/v1/templates/", HTTP_ACCEPT="text/html")
    assert page.status_code == 200 and "python-basic" in page.content.decode()


def test_every_operation_answers_with_and_without_a_trailing_slash(schema):
    for path in schema["paths"]:
        concrete = re.sub(r"\{path\}", "out/a.txt", re.sub(r"\{\w+\}", "x1", path))
        bare, slashed = resolve(concrete), resolve(concrete + "/")
        assert slashed.func is bare.func and slashed.url_name == bare.url_name, path
        assert {k: str(v).rstrip("/") for k, v in slashed.kwargs.items()} == bare.kwargs, path


def test_reverse_gives_the_documented_spelling():
    assert reverse("api-root") == "/api/v1"
    assert reverse("sessions") == "/api/v1/sessions"
    assert reverse("session-files", kwargs={"session_id": "a"}) == "/api/v1/sessions/a/files"


def test_the_front_door_treats_both_spellings_alike(settings):
    for path in ("/api/v1", "/api/v1/", "/api/v1/health/", "/api/v1/schema", "/api/v1/health/detailed/"):
        assert rule_for(path).access == "open", path
    assert rule_for("/api/v1/sessions/").access == "api"
    upload = rule_for("/api/v1/sessions/s1/files/upload/")
    assert upload.limit == settings.SANDBOX_MAX_UPLOAD_REQUEST_BYTES and upload.access == "api"


def test_the_schema_builds_without_warnings_and_lists_each_operation_once(schema, tmp_path):
    # --fail-on-warn turns any drf-spectacular warning or error into a failure; --validate checks OpenAPI 3.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    ids = [op["operationId"] for item in schema["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    assert not [
        path for path in schema["paths"] if path.endswith("/") and path.rstrip("/") in schema["paths"]
    ]
    assert "/api/v1/sessions/" not in schema["paths"] and "/api/v1/sessions" in schema["paths"]


def test_the_console_menu_links_to_the_browsable_api_and_its_docs(client, user):
    client.force_login(user)
    html = client.get("/").content.decode()
    assert 'href="/api/v1"' in html and 'href="/api/docs/"' in html


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fake_runtime")
def test_posts_to_slashed_paths_keep_their_bodies(api):
    created = api.post("/api/v1/sessions/", {"template_id": "python-basic", "id": "slashed"}, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["id"] == "slashed"
    assert [s["id"] for s in api.get("/api/v1/sessions/").json()["items"]] == ["slashed"]
    run = api.post(
        "/api/v1/sessions/slashed/execute-sync/",
        {"code": "print(6 * 7)", "language": "python"},
        format="json",
    )
    assert run.status_code == 200 and run.json()["status"] == "completed", run.json()
    assert api.get(f"/api/v1/executions/{run.json()['id']}/").json()["id"] == run.json()["id"]
    assert api.post("/api/v1/sessions/slashed/terminate/").json()["status"] == "terminated"
