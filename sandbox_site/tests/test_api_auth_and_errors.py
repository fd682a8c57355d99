from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from sessions_app.models import ApiKey

pytestmark = pytest.mark.django_db

ERROR_KEYS = {"error", "message", "detail", "request_id"}


def test_no_key_is_401_with_the_error_shape():
    response = APIClient().get("/api/v1/sessions")
    assert response.status_code == 401
    body = response.json()
    assert set(body) == ERROR_KEYS and body["error"] == "unauthorized"
    assert body["request_id"] == response["X-Request-ID"]


@pytest.mark.parametrize(
    "headers",
    [
        {"HTTP_AUTHORIZATION": "Bearer scp_not-a-real-key"},
        {"HTTP_AUTHORIZATION": "Bearer "},
        {"HTTP_X_API_KEY": "wrong"},
    ],
)
def test_bad_keys_are_401(headers):
    response = APIClient().get("/api/v1/sessions", **headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_a_revoked_key_is_401(make_api_client, user):
    client = make_api_client(user)
    assert client.get("/api/v1/sessions").status_code == 200
    ApiKey.objects.get(owner=user).revoke()
    assert client.get("/api/v1/sessions").status_code == 401


def test_x_api_key_header_works(make_api_client, user):
    assert make_api_client(user, header="x-api-key").get("/api/v1/sessions").status_code == 200


def test_console_users_use_the_session_cookie_with_csrf(user):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get("/api/v1/sessions").status_code == 200
    response = client.post("/api/v1/sessions", {"template_id": "python-basic"}, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["message"]


def test_request_ids_are_echoed_or_generated(api):
    assert api.get("/api/v1/sessions", HTTP_X_REQUEST_ID="abc-123").headers["X-Request-ID"] == "abc-123"
    generated = api.get("/api/v1/sessions", HTTP_X_REQUEST_ID="bad id with spaces\n").headers["X-Request-ID"]
    assert generated and " " not in generated
    assert APIClient().get("/api/v1/health").headers["X-Request-ID"]


def test_unknown_api_paths_are_json_404(api):
    response = api.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert set(response.json()) == ERROR_KEYS
    assert response["X-Request-ID"]


def test_wrong_methods_are_405_with_the_error_shape(api):
    response = api.put("/api/v1/sessions", {}, format="json")
    assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"


def test_oversize_bodies_are_413(api):
    response = api.post("/api/v1/sessions", "x" * (4 * 1024 * 1024), content_type="application/json")
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


def test_unhandled_errors_are_500_without_internals(api, monkeypatch):
    from sessions_app.api import views

    def explode(*args, **kwargs):
        raise RuntimeError("secret internal detail /etc/passwd")

    monkeypatch.setattr(views.SandboxSession.objects, "visible_to", explode)
    client = api
    client.raise_request_exception = False
    response = client.get("/api/v1/sessions")
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "internal_error"
    assert "secret" not in response.content.decode()


def test_health_and_schema_and_docs_are_public(client):
    assert client.get("/api/v1/health").json()["status"] == "healthy"
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert "/api/v1/sessions" in schema.json()["paths"]
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()
    assert client.get("/docs").headers["Location"] == "/api/docs/"


def test_health_detailed_checks_every_part(client, settings, fake_runtime):
    body = client.get("/api/v1/health/detailed").json()
    assert body["status"] == "healthy", body
    assert set(body["checks"]) == {"database", "storage", "runtime", "broker"}


def test_health_detailed_names_the_failing_part(client, settings, fake_runtime, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(blocker)},
        },
    }
    response = client.get("/api/v1/health/detailed")
    assert response.status_code == 503
    assert response.json()["failing"] == ["storage"]


def test_the_browsable_api_works_for_a_logged_in_user(client, user):
    client.force_login(user)
    response = client.get("/api/v1/sessions", HTTP_ACCEPT="text/html")
    assert response.status_code == 200 and b"<html" in response.content.lower()
