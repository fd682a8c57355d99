"""A session's env_vars follow the one rule every backend applies (runtime/environment.py): the API and the
console refuse what would steer the sandbox's executor, before anything is created; ownership still holds."""

from __future__ import annotations

import pytest
from django.urls import reverse

from sessions_app.models import SandboxSession

# Sessions are provisioned by a task enqueued after commit: these tests commit for real.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fake_runtime")]


@pytest.fixture(autouse=True)
def _templates(builtin_templates):
    """The built-in templates, also after a transactional test elsewhere has flushed the tables."""


def create(api, **body):
    return api.post("/api/v1/sessions", {"template_id": "python-basic", **body}, format="json")


@pytest.mark.parametrize("name", ["LD_PRELOAD", "PATH", "HOME", "LD_AUDIT", "SANDBOX_EXECUTOR_TOKEN"])
def test_the_api_refuses_variables_that_would_steer_the_sandbox(api, name):
    response = create(api, env_vars={name: "/tmp/x"})
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["error"] == "validation_error" and name in str(body["detail"]["env_vars"])
    assert not SandboxSession.objects.exists()


@pytest.mark.parametrize(
    "env", [{"OK": "nul\0byte"}, {"OK": "x" * 32769}, {f"V{i}": "" for i in range(101)}, {"A-B": "x"}]
)
def test_the_api_refuses_malformed_or_oversized_environments(api, env):
    assert create(api, env_vars=env).status_code == 400
    assert not SandboxSession.objects.exists()


def test_ordinary_variables_reach_the_session_and_only_its_owner_sees_them(api, other_api):
    response = create(api, env_vars={"PYTHONUNBUFFERED": "1", "MODE": "test"})
    assert response.status_code == 201, response.json()
    sid = response.json()["id"]
    assert api.get(f"/api/v1/sessions/{sid}").json()["env_vars"] == {"PYTHONUNBUFFERED": "1", "MODE": "test"}
    assert other_api.get(f"/api/v1/sessions/{sid}").status_code == 404


@pytest.mark.parametrize("name", ["LD_PRELOAD", "PATH", "HOME"])
def test_the_console_form_shows_the_same_refusal(client, user, name):
    client.force_login(user)
    response = client.post(
        reverse("sessions:create"), {"template_id": "python-basic", "env_vars": f"{name}=/tmp/x"}
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert "not allowed as variable names" in body and name in body
    assert not SandboxSession.objects.exists()


def test_the_console_does_not_show_another_owners_session(client, user, other_api):
    sid = create(other_api, env_vars={"MODE": "theirs"}).json()["id"]
    client.force_login(user)
    assert client.get(reverse("sessions:detail", args=[sid])).status_code == 404
