"""The session pages' newer parts: the dependency badge refresh, the timeline, usage sparklines, snippets,
bulk terminate, Python by default; and the admin's handling of live sessions (read-only spec, deletion
through the services). On the fake runtime; the browser tests run real sandboxes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from executions_app.models import Execution
from sessions_app.models import SandboxSession, SessionUsageSample
from sessions_app.sandboxes import runtime_named
from sessions_app.services import session_create, session_provision

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}


@pytest.fixture(autouse=True)
def _templates(builtin_templates):
    """The built-in templates, also after a transactional test elsewhere has flushed the tables."""


@pytest.fixture
def live_session(fake_runtime, user, python_template):
    return session_provision(session=session_create(owner=user, template=python_template))


@pytest.fixture
def logged_in(client, user):
    client.force_login(user)
    return client


def fake_sandboxes() -> set[str]:
    return set(runtime_named("fake").sandboxes)  # type: ignore[attr-defined]


def test_the_status_poll_reloads_the_page_when_the_dependency_install_ends(logged_in, user, make_session):
    session = make_session(user, status="running", dependency_install_status="installing")
    page = logged_in.get(reverse("sessions:detail", args=[session.id])).content.decode()
    assert "shown=running&amp;deps=installing" in page
    url = reverse("sessions:status", args=[session.id])
    unchanged = logged_in.get(url, {"shown": "running", "deps": "installing"}, headers=HTMX)
    assert unchanged.status_code == 200 and "HX-Refresh" not in unchanged
    SandboxSession.objects.filter(pk=session.pk).update(dependency_install_status="completed")
    finished = logged_in.get(url, {"shown": "running", "deps": "installing"}, headers=HTMX)
    assert finished["HX-Refresh"] == "true"


def test_the_timeline_tells_what_happened_when(logged_in, user, make_session):
    start = timezone.now() - timedelta(minutes=10)
    session = make_session(
        user,
        status="terminated",
        termination_reason="idle_timeout",
        created_at=start,
        running_at=start + timedelta(seconds=1),
        dependency_install_started_at=start + timedelta(seconds=2),
        dependency_install_finished_at=start + timedelta(seconds=30),
        dependency_install_status="completed",
        requested_dependencies=[{"name": "requests"}],
        completed_at=start + timedelta(minutes=9),
    )
    execution = Execution.objects.create(
        session=session,
        language="python",
        code="x",
        status="failed",
        created_at=start + timedelta(minutes=1),
        metrics={"duration_ms": 12.0},
    )
    response = logged_in.get(reverse("sessions:detail", args=[session.id]))
    events = [(event.what, event.status) for event in response.context["timeline"]]
    assert events == [
        ("created", ""),
        ("sandbox ready", "running"),
        ("dependency install started", ""),
        ("dependency install ended", "completed"),
        (f"execution {execution.id}", "failed"),
        ("ended", "terminated"),
    ]
    body = response.content.decode()
    assert "idle timeout" in body and "python, 12 ms" in body and "requests" in body


def test_usage_over_time_is_drawn_as_inline_svg_sparklines(logged_in, live_session):
    start = timezone.now() - timedelta(minutes=5)
    for minute, (cpu, memory) in enumerate([(10.0, 100.0), (50.0, 200.0), (20.0, 150.0)]):
        SessionUsageSample.objects.record(
            session_id=live_session.pk,
            cpu_percent=cpu,
            memory_mb=memory,
            at=start + timedelta(minutes=minute),
        )
    response = logged_in.get(reverse("sessions:detail", args=[live_session.id]))
    history = response.context["history"]
    assert history["cpu"].latest == 20.0 and history["cpu"].peak == 50.0
    assert history["memory"].count == 3 and history["memory"].top == float(live_session.memory_mb)
    body = response.content.decode()
    assert body.count('<polyline class="spark-line') == 2
    # x runs over the width by time; y is measured down from the top against the memory limit.
    points = history["memory"].points.split()
    assert points[0].startswith("0.0,") and points[-1].startswith("240.0,")
    limit = live_session.memory_mb
    assert float(points[1].split(",")[1]) == pytest.approx(40 - 40 * 200 / limit, abs=0.1)


def test_the_session_page_offers_curl_and_e2b_snippets(logged_in, live_session):
    body = logged_in.get(reverse("sessions:detail", args=[live_session.id])).content.decode()
    assert f"http://testserver/api/v1/sessions/{live_session.client_id}/execute-sync" in body
    assert "E2B_API_URL=http://testserver/e2b E2B_SANDBOX_URL=http://testserver/e2b" in body
    assert f'Sandbox.connect("{live_session.id}")' in body
    assert 'data-copy="#snippet-curl-session"' in body


def test_bulk_terminate_ends_the_users_ticked_live_sessions_only(
    client, fake_runtime, user, other_user, python_template
):
    def live(owner):
        return session_provision(session=session_create(owner=owner, template=python_template))

    first, second, kept, theirs = live(user), live(user), live(user), live(other_user)
    client.force_login(user)
    list_page = client.get(reverse("sessions:list")).content.decode()
    assert f'value="{first.id}" form="bulk-terminate"' in list_page
    response = client.post(
        reverse("sessions:bulk-terminate"),
        {"session": [first.id, second.id, theirs.id, "nope"], "next": "/sessions/?status=running"},
    )
    assert response.status_code == 302 and response["Location"] == "/sessions/?status=running"
    statuses = dict(SandboxSession.objects.values_list("id", "status"))
    assert statuses[first.id] == statuses[second.id] == "terminated"
    assert statuses[kept.id] == statuses[theirs.id] == "running"
    assert SandboxSession.objects.get(pk=first.pk).termination_reason == "user_request"
    assert first.id not in fake_sandboxes() and kept.id in fake_sandboxes()
    # A foreign redirect target is not followed.
    elsewhere = client.post(
        reverse("sessions:bulk-terminate"), {"session": [kept.id], "next": "https://x.io/"}
    )
    assert elsewhere["Location"] == reverse("sessions:list")


def test_the_new_session_form_defaults_to_python(logged_in):
    form = logged_in.get(reverse("sessions:create")).context["form"]
    assert form["template_id"].value() == "python-basic"
    chosen = logged_in.get(reverse("sessions:create"), {"template": "nodejs-basic"}).context["form"]
    assert chosen["template_id"].value() == "nodejs-basic"


# --- admin ------------------------------------------------------------------------------------------------


def admin_change(session) -> str:
    return reverse("admin:sessions_app_sandboxsession_change", args=[session.pk])


def test_a_live_sessions_spec_is_read_only_in_the_admin(client, staff_user, live_session, make_session, user):
    client.force_login(staff_user)
    fields = client.get(admin_change(live_session)).context["adminform"].form.fields
    for name in ("owner", "template", "cpu", "memory_mb"):
        assert name not in fields, name
    ended = make_session(user, status="terminated")
    assert "memory_mb" in client.get(admin_change(ended)).context["adminform"].form.fields


def test_deleting_a_live_session_in_the_admin_ends_its_sandbox_first(
    client, staff_user, fake_runtime, user, python_template
):
    def live():
        return session_provision(session=session_create(owner=user, template=python_template))

    one, bulk_a, bulk_b = live(), live(), live()
    client.force_login(staff_user)
    response = client.post(
        reverse("admin:sessions_app_sandboxsession_delete", args=[one.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    assert not SandboxSession.objects.filter(pk=one.pk).exists() and one.id not in fake_sandboxes()
    response = client.post(
        reverse("admin:sessions_app_sandboxsession_changelist"),
        {"action": "delete_selected", "_selected_action": [bulk_a.pk, bulk_b.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert not SandboxSession.objects.filter(pk__in=[bulk_a.pk, bulk_b.pk]).exists()
    assert not {bulk_a.id, bulk_b.id} & fake_sandboxes()


def test_executions_are_view_only_in_the_admin(client, staff_user, live_session):
    execution = Execution.objects.create(
        session=live_session, language="python", code="x", status="completed"
    )
    client.force_login(staff_user)
    url = reverse("admin:executions_app_execution_change", args=[execution.pk])
    page = client.get(url)
    assert page.status_code == 200
    assert b'name="_save"' not in page.content and b'name="_continue"' not in page.content
    assert client.post(url, {"code": "changed"}).status_code == 403
    assert Execution.objects.get(pk=execution.pk).code == "x"


def test_a_single_reading_draws_a_level_line_across_the_graph(live_session):
    from sessions_app.views import SPARK_WIDTH, sparkline

    line = sparkline([(timezone.now(), 128.0)], top=512.0)
    assert line is not None and line.points == f"0.0,30.0 {SPARK_WIDTH:.1f},30.0"
    assert sparkline([], top=512.0) is None


def test_an_ended_session_offers_no_snippets_to_reach_it(logged_in, user, make_session):
    ended = make_session(user, status="terminated")
    body = logged_in.get(reverse("sessions:detail", args=[ended.id])).content.decode()
    assert 'id="snippets"' not in body and 'id="timeline"' in body
