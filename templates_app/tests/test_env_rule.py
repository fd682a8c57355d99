"""A template's default environment follows the one rule every backend applies (runtime/environment.py):
what a sandbox would refuse at provisioning, the API, the console and the admin refuse when it is saved."""

from __future__ import annotations

import pytest
from django.urls import reverse

from runtime import registry
from templates_app.models import SandboxTemplate

pytestmark = pytest.mark.django_db

NEW = {"id": "ruby-basic", "name": "Ruby", "image_url": "sandbox-template-ruby-basic:latest"}
FORM = {
    "id": "ruby-lite",
    "name": "Ruby (lite)",
    "image_url": "sandbox-template-ruby:latest",
    "runtime_type": "python3.11",
    "sandbox_backend": "",
    "default_cpu_cores": "0.5",
    "default_memory_mb": "256",
    "default_disk_mb": "512",
    "default_timeout_sec": "120",
    "warm_pool_size": "0",
    "is_active": "on",
}
STEERING = ["LD_PRELOAD", "PATH", "HOME", "LD_LIBRARY_PATH", "SANDBOX_EXECUTOR_TOKEN"]


@pytest.fixture(autouse=True)
def _templates(builtin_templates):
    """The built-in templates, also after a transactional test elsewhere has flushed the tables."""


@pytest.mark.parametrize("name", STEERING)
def test_the_api_refuses_a_template_whose_env_would_steer_the_sandbox(staff_api, name):
    response = staff_api.post(
        "/api/v1/templates", {**NEW, "default_env_vars": {name: "/tmp/x", "OK": "1"}}, format="json"
    )
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["error"] == "validation_error" and "default_env_vars" in body["detail"]
    assert name in str(body["detail"]["default_env_vars"])
    assert not SandboxTemplate.objects.filter(pk="ruby-basic").exists()


def test_the_api_refuses_such_env_on_an_existing_template_and_keeps_the_old_one(staff_api):
    before = SandboxTemplate.objects.get(pk="python-basic").default_env_vars
    response = staff_api.patch(
        "/api/v1/templates/python-basic", {"default_env_vars": {"LD_PRELOAD": "/x.so"}}, format="json"
    )
    assert response.status_code == 400
    assert SandboxTemplate.objects.get(pk="python-basic").default_env_vars == before


def test_the_api_keeps_accepting_ordinary_variables(staff_api):
    env = {"LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "MY_SETTING": ""}
    response = staff_api.post("/api/v1/templates", {**NEW, "default_env_vars": env}, format="json")
    assert response.status_code == 201, response.json()
    assert SandboxTemplate.objects.get(pk="ruby-basic").default_env_vars == env


def test_the_api_refuses_a_runtime_this_installation_does_not_have(staff_api, monkeypatch):
    monkeypatch.delitem(registry._BACKENDS, "kubernetes")  # an installation without that backend
    response = staff_api.post("/api/v1/templates", {**NEW, "sandbox_backend": "kubernetes"}, format="json")
    assert response.status_code == 400 and "sandbox_backend" in response.json()["detail"]
    assert not SandboxTemplate.objects.filter(pk="ruby-basic").exists()


def test_non_staff_are_refused_before_any_env_is_judged(api):
    response = api.post("/api/v1/templates", {**NEW, "default_env_vars": {"PATH": "/x"}}, format="json")
    assert response.status_code == 403
    assert not SandboxTemplate.objects.filter(pk="ruby-basic").exists()


@pytest.mark.parametrize("name", ["LD_PRELOAD", "PATH", "HOME"])
def test_the_console_form_shows_the_same_refusal(client, staff_user, name):
    client.force_login(staff_user)
    response = client.post(reverse("templates:create"), {**FORM, "default_env_vars": f"{name}=/tmp/x"})
    assert response.status_code == 400
    body = response.content.decode()
    assert "not allowed as variable names" in body and name in body
    assert not SandboxTemplate.objects.filter(pk="ruby-lite").exists()


def test_the_console_form_offers_only_runtimes_that_exist(client, staff_user, monkeypatch):
    monkeypatch.delitem(registry._BACKENDS, "kubernetes")  # an installation without that backend
    client.force_login(staff_user)
    body = client.get(reverse("templates:create")).content.decode()
    assert 'value="process"' in body and 'value="docker"' in body
    assert 'value="kubernetes"' not in body


def test_the_admin_refuses_it_too(client, staff_user):
    client.force_login(staff_user)
    response = client.post(
        reverse("admin:templates_app_sandboxtemplate_add"),
        {
            **FORM,
            "description": "",
            "default_env_vars": '{"LD_PRELOAD": "/x.so"}',
            "pre_installed_packages": "[]",
        },
    )
    assert response.status_code == 200  # the form again, with its errors
    assert "not allowed as variable names" in response.content.decode()
    assert not SandboxTemplate.objects.filter(pk="ruby-lite").exists()
