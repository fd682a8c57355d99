"""A template's `runtime_type` is the language runtime, as in the original API (python3.11, nodejs20, java17,
go1.21); the sandbox backend is `sandbox_backend`. Sessions of a runtime we lack are refused, not faked."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from sessions_app.models import SandboxSession
from sessions_app.services import SessionError, session_create
from sessions_app.warm_pool import warm_pool_reserve
from templates_app.models import SandboxTemplate

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fake_runtime")]

NEW = {"id": "ruby-basic", "name": "Ruby", "image_url": "sandbox-template-ruby-basic:latest"}


def test_builtin_templates_name_their_language_runtime_and_leave_the_backend_to_the_setting(api):
    templates = {t["id"]: t for t in api.get("/api/v1/templates/").json()}
    assert templates["python-basic"]["runtime_type"] == "python3.11"
    assert templates["python-datascience"]["runtime_type"] == "python3.11"
    assert templates["nodejs-basic"]["runtime_type"] == "nodejs20"
    assert {t["sandbox_backend"] for t in templates.values()} == {""}


def test_the_originals_language_runtimes_are_accepted_with_a_separate_backend(staff_api):
    for language in ("python3.11", "nodejs20", "java17", "go1.21"):
        body = {**NEW, "id": f"t-{language}", "runtime_type": language, "sandbox_backend": "process"}
        created = staff_api.post("/api/v1/templates", body, format="json")
        assert created.status_code == 201, created.json()
        assert created.json()["runtime_type"] == language and created.json()["sandbox_backend"] == "process"
        template = SandboxTemplate.objects.get(pk=f"t-{language}")
        assert (template.runtime_type, template.sandbox_backend) == (language, "process")


def test_a_template_without_a_language_runtime_gets_python(staff_api):
    assert staff_api.post("/api/v1/templates", NEW, format="json").json()["runtime_type"] == "python3.11"


def test_a_session_of_a_missing_language_runtime_is_refused_with_a_clear_400(staff_api, api):
    for language in ("java17", "go1.21"):
        staff_api.post("/api/v1/templates", {**NEW, "id": language, "runtime_type": language}, format="json")
        response = api.post("/api/v1/sessions/", {"template_id": language}, format="json")
        assert response.status_code == 400, response.json()
        body = response.json()
        assert body["error"] == "language_runtime_unavailable"
        assert f"the {language} language runtime, which is not available" in body["message"]
    assert not SandboxSession.objects.exists()


@pytest.mark.django_db(transaction=True)  # sessions are provisioned by a task enqueued after commit
def test_a_session_shows_the_language_runtime_and_its_sandbox_backend(api):
    created = api.post("/api/v1/sessions", {"template_id": "nodejs-basic"}, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["runtime_type"] == "nodejs20" and body["sandbox_backend"] == "fake"
    listed = api.get("/api/v1/sessions").json()["items"][0]
    assert (listed["runtime_type"], listed["sandbox_backend"]) == ("nodejs20", "fake")


def test_a_templates_own_backend_overrides_the_setting(user, builtin_templates, settings):
    template = SandboxTemplate.objects.create(
        id="on-docker", name="x", image_url="i", sandbox_backend="docker", runtime_type="python3.11"
    )
    assert session_create(owner=user, template=template).runtime_type == "docker"
    default = session_create(owner=user, template=builtin_templates["python-basic"])
    assert default.runtime_type == settings.SANDBOX_RUNTIME == "fake"


def test_the_service_refuses_before_recording_anything(user):
    template = SandboxTemplate.objects.create(id="jvm", name="x", image_url="i", runtime_type="java17")
    with pytest.raises(SessionError) as refused:
        session_create(owner=user, template=template)
    assert refused.value.code == "language_runtime_unavailable"
    assert not SandboxSession.objects.exists()


def test_no_warm_sandbox_is_built_for_a_missing_language_runtime(builtin_templates):
    template = SandboxTemplate.objects.create(
        id="go", name="x", image_url="i", runtime_type="go1.21", warm_pool_size=2
    )
    assert warm_pool_reserve(template) == []
    template.runtime_type = "python3.11"
    template.save()
    assert len(warm_pool_reserve(template)) == 2


@pytest.mark.django_db(transaction=True)  # schema changes commit on MySQL
def test_the_migration_moves_the_backend_and_names_each_templates_language(builtin_templates):
    executor = MigrationExecutor(connection)
    before = ("templates_app", "0004_env_and_runtime_validators")
    after = ("templates_app", "0005_language_runtime_and_sandbox_backend")
    SandboxTemplate.objects.exclude(pk__in=builtin_templates).delete()
    executor.migrate([before])
    try:
        old = executor.loader.project_state([before]).apps.get_model("templates_app", "SandboxTemplate")
        old.objects.create(id="node-docker", name="n", image_url="my/node:20", runtime_type="docker")
        old.objects.create(id="plain", name="p", image_url="my/app", runtime_type="")
        old.objects.filter(pk="python-basic").update(runtime_type="process")
        executor = MigrationExecutor(connection)
        executor.migrate([after])
    finally:
        MigrationExecutor(connection).migrate(executor.loader.graph.leaf_nodes())
    rows = {t.id: (t.runtime_type, t.sandbox_backend) for t in SandboxTemplate.objects.all()}
    assert rows["node-docker"] == ("nodejs20", "docker")
    assert rows["plain"] == ("python3.11", "")
    assert rows["python-basic"] == ("python3.11", "process")
    assert rows["nodejs-basic"] == ("nodejs20", "")


def test_the_console_form_takes_the_language_runtime_and_the_backend_apart(client, staff_user):
    from django.urls import reverse

    from templates_app.tests.test_views import NEW_TEMPLATE

    client.force_login(staff_user)
    form = client.get(reverse("templates:create")).content.decode()
    assert 'name="runtime_type"' in form and 'name="sandbox_backend"' in form and 'value="go1.21"' in form
    body = {**NEW_TEMPLATE, "runtime_type": "java17", "sandbox_backend": "process"}
    assert client.post(reverse("templates:create"), body).status_code == 302
    template = SandboxTemplate.objects.get(pk=NEW_TEMPLATE["id"])
    assert (template.runtime_type, template.sandbox_backend) == ("java17", "process")
    assert "java17 · process" in client.get(reverse("templates:list")).content.decode()
