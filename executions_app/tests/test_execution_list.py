"""The executions list across sessions, and how a finished run explains itself (timeouts, kills, no output,
no JavaScript). On the database alone: rows are made as the services leave them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from executions_app.models import Execution
from executions_app.views import LIST_PAGE

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}
URL = "/executions/"


@pytest.fixture(autouse=True)
def _templates(builtin_templates):
    """The built-in templates, also after a transactional test elsewhere has flushed the tables."""


def run(session, **fields):
    fields.setdefault("status", "completed")
    fields.setdefault("language", "python")
    return Execution.objects.create(session=session, code="print(1)", **fields)


def test_it_lists_the_users_executions_across_sessions_and_none_of_anothers(
    client, user, other_user, make_session
):
    first, second = make_session(user, status="running"), make_session(user, status="terminated")
    theirs = make_session(other_user, status="running")
    mine = [run(first), run(second, status="failed", language="shell")]
    hidden = run(theirs, error_message="their secret")
    client.force_login(user)
    response = client.get(URL)
    assert response.status_code == 200
    body = response.content.decode()
    assert all(execution.id in body for execution in mine)
    assert hidden.id not in body and "their secret" not in body
    assert f'href="{reverse("executions:list")}" aria-current="page">Executions</a>' in body


def test_staff_see_everyones_executions_with_their_owner(client, staff_user, user, make_session):
    execution = run(make_session(user, status="running"))
    client.force_login(staff_user)
    body = client.get(URL).content.decode()
    assert execution.id in body and f"<td>{user.username}</td>" in body


def test_it_filters_by_status_and_language(client, user, make_session):
    session = make_session(user, status="running")
    python_ok = run(session)
    shell_failed = run(session, status="failed", language="shell")
    js_failed = run(session, status="failed", language="javascript")
    client.force_login(user)
    body = client.get(URL, {"status": "failed"}).content.decode()
    assert python_ok.id not in body and shell_failed.id in body and js_failed.id in body
    body = client.get(URL, {"status": "failed", "language": "shell"}).content.decode()
    assert shell_failed.id in body and js_failed.id not in body
    # Values that are not a status or a language filter nothing, rather than failing.
    body = client.get(URL, {"status": "bogus", "language": "cobol"}).content.decode()
    assert all(e.id in body for e in (python_ok, shell_failed, js_failed))


def test_it_is_paginated_newest_first(client, user, make_session):
    session = make_session(user, status="running")
    start = timezone.now() - timedelta(hours=1)
    made = [run(session, created_at=start + timedelta(seconds=i)) for i in range(LIST_PAGE + 3)]
    client.force_login(user)
    first = client.get(URL)
    assert [e.id for e in first.context["page"].object_list] == [e.id for e in reversed(made)][:LIST_PAGE]
    second = client.get(URL, {"page": 2})
    assert [e.id for e in second.context["page"].object_list] == [e.id for e in reversed(made[:3])]
    assert "Page 2 of 2" in second.content.decode()


def test_the_table_polls_while_an_execution_runs_and_stops_with_286(client, user, make_session):
    session = make_session(user, status="running")
    running = run(session, status="running")
    client.force_login(user)
    polling = client.get(URL, headers=HTMX)
    assert polling.status_code == 200 and 'hx-trigger="every 3s"' in polling.content.decode()
    Execution.objects.filter(pk=running.pk).update(status="completed")
    stopped = client.get(URL, headers=HTMX)
    assert stopped.status_code == 286 and "hx-trigger" not in stopped.content.decode()


def test_anonymous_users_are_sent_to_login(client):
    response = client.get(URL)
    assert response.status_code == 302 and response["Location"] == "/login/?next=/executions/"


def test_a_timed_out_run_says_it_was_killed_after_its_timeout(client, user, make_session):
    session = make_session(user, status="running")
    timed_out = run(session, status="timeout", exit_code=-9, timeout=2, error_message="")
    client.force_login(user)
    body = client.get(reverse("executions:detail", args=[timed_out.id])).content.decode()
    assert "timed out after 2 s, the process was killed" in body
    assert "data-finished" in body  # the empty output reads "no output", not "no output yet"
    crashed = run(session, status="crashed", exit_code=-9)
    body = client.get(reverse("executions:detail", args=[crashed.id])).content.decode()
    assert "killed by SIGKILL (often: out of memory)" in body
    completed = run(session, exit_code=0)
    body = client.get(reverse("executions:detail", args=[completed.id])).content.decode()
    assert "data-exit-explained" not in body


def test_an_unfinished_run_without_javascript_offers_a_reload_not_connecting(client, user, make_session):
    pending = run(make_session(user, status="running"), status="running")
    client.force_login(user)
    body = client.get(reverse("executions:detail", args=[pending.id])).content.decode()
    assert "connecting" not in body
    assert f'<a href="{reverse("executions:detail", args=[pending.id])}">reload</a> for more' in body


def test_the_session_history_says_just_now_not_zero_minutes(client, user, make_session):
    session = make_session(user, status="running")
    run(session)
    client.force_login(user)
    body = client.get(reverse("executions:session", args=[session.id])).content.decode()
    assert "just now" in body and "0 minutes" not in body
