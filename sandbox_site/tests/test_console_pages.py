"""Console-wide pieces: error pages in the console's layout (JSON under /api/), the favicon, the dashboard's
failures split by whose they are, the owner's limits, and times that read the same in console and admin."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from executions_app.models import Execution

pytestmark = pytest.mark.django_db
CONSOLE_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


@pytest.fixture(autouse=True)
def _templates(builtin_templates):
    """The built-in templates, also after a transactional test elsewhere has flushed the tables."""


def test_a_missing_console_page_is_a_404_in_the_console_layout_with_its_menu(client, user):
    client.force_login(user)
    response = client.get("/sessions/nope/")
    assert response.status_code == 404
    body = response.content.decode()
    assert 'nav class="mainnav"' in body and "Page not found" in body and 'rel="icon"' in body
    anonymous = Client().get("/no/such/page/")
    assert anonymous.status_code == 404 and "Page not found" in anonymous.content.decode()


def test_api_paths_keep_json_errors(client, user):
    client.force_login(user)
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404 and response["Content-Type"].startswith("application/json")
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize(
    "status,words", [(400, "Bad request"), (403, "Not allowed"), (500, "Something went wrong")]
)
def test_every_console_error_page_extends_the_layout(rf, user, status, words):
    from sandbox_site import views

    request = rf.get("/sessions/")
    request.user = user
    handler = {400: views.error_400, 403: views.error_403, 500: views.error_500}[status]
    response = handler(request) if status == 500 else handler(request, Exception("x"))
    assert response.status_code == status
    body = response.content.decode()
    assert words in body and 'nav class="mainnav"' in body
    api = rf.get("/api/v1/sessions")
    api.user = user
    response = handler(api) if status == 500 else handler(api, Exception("x"))
    assert response.status_code == status and response["Content-Type"].startswith("application/json")


def test_a_favicon_is_linked_and_served(client, user):
    client.force_login(user)
    assert '<link rel="icon" href="/static/favicon.svg"' in client.get("/").content.decode()
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"] == "/static/favicon.svg"


def test_the_dashboard_lists_failed_runs_apart_from_platform_problems(client, user, make_session):
    running = make_session(user, status="running")
    make_session(user, status="failed", status_detail="image missing")
    Execution.objects.create(
        session=running, language="python", code="x", status="failed", error_message="ValueError: mine"
    )
    Execution.objects.create(session=running, language="python", code="x", status="timeout", timeout=3)
    Execution.objects.create(
        session=running, language="python", code="x", status="crashed", error_message="killed: oom"
    )
    client.force_login(user)
    response = client.get("/")
    context = response.context
    assert {f["status"] for f in context["code_failures"]} == {"failed", "timeout"}
    assert {f["detail"] for f in context["platform_failures"]} == {"killed: oom", "image missing"}
    body = response.content.decode()
    code_part = body[body.index('id="code-failures"') : body.index('id="platform-failures"')]
    assert "ValueError: mine" in code_part and "killed: oom" not in code_part
    assert "just now" in body and "0 minutes" not in body


def test_the_dashboard_shows_the_owners_limits_and_usage(client, user, other_user, make_session, settings):
    settings.SANDBOX_MAX_SESSIONS_PER_KEY = 7
    settings.SANDBOX_MAX_SESSION_MEMORY_PER_OWNER = 4096
    settings.SANDBOX_MAX_RUNNING_EXECUTIONS_PER_OWNER = 5
    mine = make_session(user, status="running", memory_mb=512)
    make_session(user, status="creating", memory_mb=1024)
    make_session(user, status="terminated", memory_mb=2048)
    make_session(other_user, status="running", memory_mb=2048)
    Execution.objects.create(session=mine, language="python", code="x", status="running")
    client.force_login(user)
    limits = {
        limit.name: (limit.shown_used, limit.shown_limit) for limit in client.get("/").context["limits"]
    }
    assert limits == {
        "Live sessions": ("2", "7"),
        "Memory of live sessions": ("1.5 GiB", "4 GiB"),
        "Executions at a time": ("1", "5"),
    }
    assert "<b>2</b> of 7" in client.get("/").content.decode()


def test_the_admin_writes_times_as_the_console_does(client, staff_user, user, make_session):
    session = make_session(user, status="terminated")
    client.force_login(staff_user)
    admin_page = client.get(reverse("admin:sessions_app_sandboxsession_changelist")).content.decode()
    console_page = client.get(reverse("sessions:detail", args=[session.id])).content.decode()
    created = session.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert created in admin_page and created in console_page
    assert CONSOLE_TIME.search(admin_page)


def test_a_new_api_key_comes_with_a_copy_button_and_snippets(client, user):
    client.force_login(user)
    body = client.post(reverse("sessions:api-keys"), {"name": "agent"}).content.decode()
    secret = re.search(r"scp_[\w-]+", body)
    assert secret is not None
    assert '<button type="button" class="copy" data-copy="#new-key-secret" hidden>Copy</button>' in body
    assert f"E2B_API_KEY={secret.group(0)}" in body and f"Authorization: Bearer {secret.group(0)}" in body


def test_a_form_without_its_csrf_token_gets_a_console_page_not_djangos(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post(reverse("sessions:bulk-terminate"), {"session": ["x"]})
    assert response.status_code == 403
    body = response.content.decode()
    assert "The form expired" in body and 'class="brand"' in body
