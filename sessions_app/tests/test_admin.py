from __future__ import annotations

import pytest
from django.urls import reverse

from sessions_app.models import ApiKey, SandboxSession

ADMIN_PAGES = [
    "admin:index",
    "admin:sessions_app_sandboxsession_changelist",
    "admin:sessions_app_apikey_changelist",
    "admin:templates_app_sandboxtemplate_changelist",
    "admin:executions_app_execution_changelist",
]


@pytest.mark.django_db
@pytest.mark.parametrize("name", ADMIN_PAGES)
def test_staff_see_admin_pages(client, staff_user, make_session, user, name):
    make_session(user, status="running")
    client.force_login(staff_user)
    assert client.get(reverse(name)).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("name", ADMIN_PAGES)
def test_anonymous_users_are_sent_to_login(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.django_db
def test_non_staff_users_are_sent_to_login(client, user):
    client.force_login(user)
    response = client.get(reverse("admin:sessions_app_sandboxsession_changelist"))
    assert response.status_code == 302


@pytest.mark.django_db
def test_session_detail_page_hides_the_executor_token(client, staff_user, make_session, user):
    session = make_session(user, status="running", executor_token="tok-secret-value")
    client.force_login(staff_user)
    response = client.get(reverse("admin:sessions_app_sandboxsession_change", args=[session.pk]))
    assert response.status_code == 200
    assert b"tok-secret-value" not in response.content
    assert b"status-badge" in client.get(reverse("admin:sessions_app_sandboxsession_changelist")).content


@pytest.mark.django_db
def test_the_terminate_action_ends_live_sessions_only(client, staff_user, make_session, user):
    live = make_session(user, status="running")
    creating = make_session(user, status="creating")
    failed = make_session(user, status="failed", termination_reason="container_lost")
    client.force_login(staff_user)
    response = client.post(
        reverse("admin:sessions_app_sandboxsession_changelist"),
        {"action": "terminate_sessions", "_selected_action": [live.pk, creating.pk, failed.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert b"Terminated 2 session(s)." in response.content
    statuses = dict(SandboxSession.objects.values_list("id", "status"))
    assert statuses[live.pk] == statuses[creating.pk] == "terminated"
    assert statuses[failed.pk] == "failed"
    assert SandboxSession.objects.get(pk=live.pk).termination_reason == "operator_request"


@pytest.mark.django_db
def test_the_revoke_action_revokes_keys(client, staff_user, user):
    key, raw = ApiKey.objects.create_key(owner=user)
    client.force_login(staff_user)
    client.post(
        reverse("admin:sessions_app_apikey_changelist"),
        {"action": "revoke_keys", "_selected_action": [key.pk]},
    )
    assert ApiKey.objects.authenticate(raw) is None
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
