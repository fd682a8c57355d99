"""The dashboard, login and logout: what each user sees, the htmx refresh, the server-rendered chart."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from executions_app.models import Execution
from sandbox_site.views import CHART_MINUTES, chart_bars, executions_per_minute

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _templates(builtin_templates):
    """The built-in templates, also after a transactional test elsewhere has flushed the tables."""


def test_anonymous_users_are_sent_to_login_and_can_log_in(client, user):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/login/?next=/"
    login = client.post(
        "/login/?next=/", {"username": user.username, "password": "pw-123456789", "next": "/"}
    )
    assert login.status_code == 302 and login["Location"] == "/"
    assert client.get("/").status_code == 200
    assert client.post(reverse("logout")).status_code == 302
    assert client.get("/").status_code == 302


def test_the_dashboard_counts_only_the_users_own_things(client, user, other_user, make_session):
    mine = make_session(user, status="running")
    make_session(user, status="failed", status_detail="image missing")
    theirs = make_session(other_user, status="running")
    Execution.objects.create(session=mine, language="python", code="x", status="running")
    Execution.objects.create(session=mine, language="python", code="x", status="crashed", error_message="oom")
    Execution.objects.create(
        session=theirs, language="python", code="x", status="failed", error_message="theirs"
    )
    client.force_login(user)
    response = client.get("/")
    context = response.context
    assert dict(context["by_status"]) == {
        "creating": 0,
        "running": 1,
        "completed": 0,
        "failed": 1,
        "timeout": 0,
        "terminated": 0,
    }
    assert [e.session_id for e in context["running_executions"]] == [mine.id]
    assert {f["detail"] for f in context["platform_failures"]} == {"oom", "image missing"}
    assert context["code_failures"] == []
    assert context["executions_last_hour"] == 2
    body = response.content.decode()
    assert theirs.id not in body and "theirs" not in body and "<svg" in body


def test_staff_see_everyones_counts(client, staff_user, user, other_user, make_session):
    make_session(user, status="running")
    make_session(other_user, status="running")
    client.force_login(staff_user)
    assert dict(client.get("/").context["by_status"])["running"] == 2


def test_the_dashboard_refreshes_itself_as_a_fragment(client, user):
    client.force_login(user)
    fragment = client.get("/", headers={"HX-Request": "true"}).content.decode()
    assert fragment.lstrip().startswith('<div id="dashboard"') and 'hx-trigger="every 5s"' in fragment


def test_the_warm_pool_table_shows_ready_of_configured_size(client, user):
    from sessions_app.models import WarmSandbox
    from templates_app.models import SandboxTemplate

    SandboxTemplate.objects.filter(pk="python-basic").update(warm_pool_size=3)
    for status in ("ready", "ready", "provisioning"):
        WarmSandbox.objects.create(
            template_id="python-basic", status=status, runtime_type="fake", executor_token="t"
        )
    client.force_login(user)
    response = client.get("/")
    pools = {pool["template"].id: pool for pool in response.context["pools"]}
    assert (pools["python-basic"]["ready"], pools["python-basic"]["size"]) == (2, 3)
    assert (pools["nodejs-basic"]["ready"], pools["nodejs-basic"]["size"]) == (0, 0)
    assert "2 / 3" in response.content.decode()


def test_the_chart_has_a_bar_per_minute_of_the_last_hour(user, make_session):
    session = make_session(user, status="running")
    now = timezone.now()
    for minutes_ago, count in ((0, 3), (5, 1), (59, 2), (61, 7)):
        for _ in range(count):
            Execution.objects.create(
                session=session, language="python", code="x", created_at=now - timedelta(minutes=minutes_ago)
            )
    series = executions_per_minute(Execution.objects.all(), now)
    assert len(series) == CHART_MINUTES
    counts = [count for _, count in series]
    assert counts[-1] == 3 and counts[-6] == 1 and counts[0] == 2 and sum(counts) == 6
    bars, peak = chart_bars(series)
    assert peak == 3 and len(bars) == CHART_MINUTES
    assert bars[-1].height == 120 and bars[-6].height == 40 and bars[1].height == 0
