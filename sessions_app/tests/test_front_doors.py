"""One front door per behaviour: the API, the console and the admin open, list, find, end and delete
sessions through the same services and the same visibility rule (on the fake runtime)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from sessions_app import services
from sessions_app.models import SandboxSession
from sessions_app.sandboxes import runtime_for

pytestmark = pytest.mark.django_db
# Opening starts the session through a task enqueued after the commit: those tests commit for real.
COMMITS = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _templates(builtin_templates):
    """The built-in templates, also after a transactional test elsewhere has flushed the tables."""


@pytest.fixture
def waits(monkeypatch):
    """The timeout of every create wait, recorded on the way to the real `session_wait_started`."""
    seen: list[float] = []
    real = services.session_wait_started

    def recording(*, session, timeout):
        seen.append(timeout)
        return real(session=session, timeout=timeout)

    monkeypatch.setattr(services, "session_wait_started", recording)
    return seen


def live_session(owner, template, **fields) -> SandboxSession:
    return services.session_provision(
        session=services.session_create(owner=owner, template=template, **fields)
    )


def sandbox_ids(session: SandboxSession) -> set[str]:
    return {handle.sandbox_id for handle in runtime_for(session).list_managed()}


@COMMITS
def test_the_api_and_the_console_open_sessions_with_the_one_create_wait(
    api, client, user, settings, fake_runtime, waits
):
    settings.SANDBOX_CREATE_WAIT = 7
    response = api.post("/api/v1/sessions", {"template_id": "python-basic", "id": "by-api"}, format="json")
    assert response.status_code == 201 and response.json()["status"] == "running"
    client.force_login(user)
    page = client.post(reverse("sessions:create"), {"template_id": "python-basic"})
    assert page.status_code == 302
    assert waits == [7, 7]
    assert sorted(SandboxSession.objects.filter(owner=user).values_list("status", flat=True)) == [
        "running",
        "running",
    ]


@COMMITS
def test_a_session_still_creating_after_the_wait_is_shown_as_creating_by_both_doors(
    api, client, user, settings, fake_runtime, monkeypatch
):
    # No worker takes the provisioning task, and no wait: both doors answer with the `creating` session.
    settings.SANDBOX_CREATE_WAIT = 0
    monkeypatch.setattr("sessions_app.tasks.enqueue_session_provision", lambda session_id: None)
    response = api.post("/api/v1/sessions", {"template_id": "python-basic"}, format="json")
    assert response.status_code == 201 and response.json()["status"] == "creating"
    client.force_login(user)
    page = client.post(reverse("sessions:create"), {"template_id": "python-basic"}, follow=True)
    assert page.status_code == 200 and "creating" in page.content.decode()
    assert set(SandboxSession.objects.filter(owner=user).values_list("status", flat=True)) == {"creating"}


def test_visible_to_hides_other_owners_sessions_in_the_api_and_the_console(
    api, staff_api, client, user, other_user, make_session
):
    mine = make_session(user, status="running", client_id="mine-1")
    theirs = make_session(other_user, status="running", client_id="theirs-1")
    listed = {item["id"] for item in api.get("/api/v1/sessions").json()["items"]}
    assert listed == {"mine-1"}
    for ident in (theirs.id, theirs.client_id):
        missing = api.get(f"/api/v1/sessions/{ident}")
        assert missing.status_code == 404 and missing.json()["error"] == "session_not_found"
        assert api.post(f"/api/v1/sessions/{ident}/terminate").status_code == 404
        assert api.get(f"/api/v1/sessions/{ident}/files").json()["error"] == "session_not_found"
    assert {item["id"] for item in staff_api.get("/api/v1/sessions").json()["items"]} == {
        "mine-1",
        "theirs-1",
    }
    client.force_login(user)
    page = client.get(reverse("sessions:list")).content.decode()
    assert mine.client_id in page and theirs.client_id not in page
    assert client.get(reverse("sessions:detail", args=[theirs.id])).status_code == 404
    assert client.get(reverse("sessions:detail", args=[mine.id])).status_code == 200
    theirs.refresh_from_db()
    assert theirs.status == "running"


def test_the_api_and_the_console_filter_the_list_alike(api, client, user, make_session):
    make_session(user, status="running", client_id="blue-run", metadata={"team": "blue"})
    make_session(user, status="failed", client_id="blue-failed", metadata={"team": "blue"})
    make_session(user, status="running", client_id="red-run", metadata={"team": "red"})
    api_ids = {
        item["id"]
        for item in api.get("/api/v1/sessions", {"status": "running", "metadata.team": "blue"}).json()[
            "items"
        ]
    }
    client.force_login(user)
    page = client.get(reverse("sessions:list"), {"status": "running", "q": "team=blue"}).content.decode()
    console_ids = {ident for ident in ("blue-run", "blue-failed", "red-run") if ident in page}
    assert api_ids == console_ids == {"blue-run"}


def test_the_admin_terminates_through_the_session_service(
    client, staff_user, user, python_template, fake_runtime
):
    session = live_session(user, python_template)
    assert session.container_id in sandbox_ids(session)
    client.force_login(staff_user)
    client.post(
        reverse("admin:sessions_app_sandboxsession_changelist"),
        {"action": "terminate_sessions", "_selected_action": [session.pk]},
    )
    session.refresh_from_db()
    assert (session.status, session.termination_reason) == ("terminated", "operator_request")
    assert session.container_id not in sandbox_ids(session)


@pytest.mark.parametrize("how", ["bulk action", "change page"])
def test_the_admin_deletes_through_the_session_service(
    client, staff_user, user, python_template, fake_runtime, how
):
    session = live_session(user, python_template)
    assert session.container_id in sandbox_ids(session)
    client.force_login(staff_user)
    if how == "bulk action":
        response = client.post(
            reverse("admin:sessions_app_sandboxsession_changelist"),
            {"action": "delete_selected", "_selected_action": [session.pk], "post": "yes"},
        )
    else:
        response = client.post(
            reverse("admin:sessions_app_sandboxsession_delete", args=[session.pk]), {"post": "yes"}
        )
    assert response.status_code == 302
    assert not SandboxSession.objects.filter(pk=session.pk).exists()
    # As the API's DELETE: the sandbox goes with the row, not only the row.
    assert session.container_id not in sandbox_ids(session)
