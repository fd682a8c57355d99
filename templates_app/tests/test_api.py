from __future__ import annotations

import pytest

from templates_app.models import SandboxTemplate

# Sessions are provisioned by a task enqueued after commit: these tests commit for real.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fake_runtime")]

NEW = {"id": "ruby-basic", "name": "Ruby", "image_url": "sandbox-template-ruby-basic:latest"}


def test_anyone_authenticated_lists_and_reads_templates(api):
    ids = {t["id"] for t in api.get("/api/v1/templates").json()}
    assert {"python-basic", "nodejs-basic", "python-datascience"} <= ids
    body = api.get("/api/v1/templates/python-basic").json()
    assert body["default_memory_mb"] == 512 and body["default_cpu_cores"] == 1.0


def test_non_staff_cannot_write_templates(api):
    assert api.post("/api/v1/templates", NEW, format="json").status_code == 403
    assert api.patch("/api/v1/templates/python-basic", {"name": "x"}, format="json").status_code == 403
    assert api.delete("/api/v1/templates/python-basic").status_code == 403
    assert SandboxTemplate.objects.get(pk="python-basic").name == "Python"


def test_staff_create_replace_patch_and_delete(staff_api):
    created = staff_api.post("/api/v1/templates", NEW, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["default_timeout_sec"] == 300
    assert staff_api.post("/api/v1/templates", NEW, format="json").status_code == 409
    replaced = staff_api.put(
        "/api/v1/templates/ruby-basic", {**NEW, "name": "Ruby 3", "warm_pool_size": 2}, format="json"
    )
    assert replaced.status_code == 200 and replaced.json()["warm_pool_size"] == 2
    patched = staff_api.patch("/api/v1/templates/ruby-basic", {"default_memory_mb": 1024}, format="json")
    assert patched.json()["default_memory_mb"] == 1024 and patched.json()["name"] == "Ruby 3"
    assert staff_api.delete("/api/v1/templates/ruby-basic").status_code == 204
    assert staff_api.get("/api/v1/templates/ruby-basic").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {**NEW, "id": "Bad Id"},
        {**NEW, "default_memory_mb": 10},
        {**NEW, "default_cpu_cores": 64},
        {**NEW, "default_env_vars": {"1X": "y"}},
        {**NEW, "sandbox_backend": "podman"},
        {**NEW, "runtime_type": "ruby3.3"},
        {**NEW, "runtime_type": "docker"},
        {"id": "x"},
    ],
)
def test_bad_templates_are_refused(staff_api, body):
    response = staff_api.post("/api/v1/templates", body, format="json")
    assert response.status_code == 400 and response.json()["error"] == "validation_error"
    assert not SandboxTemplate.objects.filter(name="Ruby").exists()


def test_delete_is_refused_while_live_sessions_use_the_template(staff_api, api):
    staff_api.post("/api/v1/templates", NEW, format="json")
    session = api.post("/api/v1/sessions", {"template_id": "ruby-basic"}, format="json").json()
    response = staff_api.delete("/api/v1/templates/ruby-basic")
    assert response.status_code == 409 and response.json()["error"] == "template_in_use"
    assert "live" in response.json()["message"]
    api.delete(f"/api/v1/sessions/{session['id']}")
    assert staff_api.delete("/api/v1/templates/ruby-basic").status_code == 204


def test_inactive_templates_are_hidden_from_non_staff(api, staff_api):
    staff_api.patch("/api/v1/templates/nodejs-basic", {"is_active": False}, format="json")
    assert api.get("/api/v1/templates/nodejs-basic").status_code == 404
    assert staff_api.get("/api/v1/templates/nodejs-basic").status_code == 200
