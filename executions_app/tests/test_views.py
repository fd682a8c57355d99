"""Console pages of executions: the runner and history panel, submitting, detail, result fragments, cancel;
ownership everywhere. On the fake runtime; the browser tests run real sandboxes."""

from __future__ import annotations

import pytest
from django.urls import reverse

from executions_app.models import Execution, ExecutionOutputChunk
from executions_app.services import execution_run, execution_submit
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


def finished(session, code="print('hello')\n", **fields):
    execution = execution_submit(session=session, language="python", code=code, **fields)
    execution_run(execution.id)
    return Execution.objects.get(pk=execution.id)


def test_the_panel_is_a_fragment_for_htmx_and_a_page_without(logged_in, live_session):
    url = reverse("executions:session", args=[live_session.id])
    fragment = logged_in.get(url, headers=HTMX).content.decode()
    assert 'id="executions-panel"' in fragment and 'id="runner"' in fragment and "<html" not in fragment
    page = logged_in.get(url).content.decode()
    assert "<html" in page and 'id="runner"' in page


def test_the_history_polls_while_an_execution_is_unfinished_and_stops_with_286(logged_in, live_session):
    pending = execution_submit(session=live_session, language="python", code="print(1)")
    url = reverse("executions:session", args=[live_session.id])
    headers = {**HTMX, "HX-Target": "execution-history"}
    polling = logged_in.get(url, headers=headers)
    assert polling.status_code == 200
    assert "every 3s" in polling.content.decode() and 'id="runner"' not in polling.content.decode()
    execution_run(pending.id)
    stopped = logged_in.get(url, headers=headers)
    assert stopped.status_code == 286
    body = stopped.content.decode()
    assert "every 3s" not in body and "executions-changed from:body" in body and "completed" in body


def test_submitting_over_htmx_returns_the_live_output_pane(
    logged_in, live_session, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = logged_in.post(
            reverse("executions:create", args=[live_session.id]),
            {
                "language": "python",
                "code": "print('hi')\r\nprint('there')\r\n",
                "event": '{"n": 1}',
                "timeout": "5",
            },
            headers=HTMX,
        )
    execution = Execution.objects.get(session=live_session)
    assert len(callbacks) == 1  # the run is enqueued after commit, as the API does it
    assert (execution.status, execution.code, execution.event, execution.timeout) == (
        "pending",
        "print('hi')\nprint('there')\n",
        {"n": 1},
        5,
    )
    body = response.content.decode()
    assert f'data-stream-url="/ws/executions/{execution.id}/"' in body and 'data-after="0"' in body
    assert "data-finished" not in body and 'hx-trigger="execution-changed, every 5s"' in body
    assert "executions-changed" in response["HX-Trigger-After-Swap"]


def test_a_plain_submit_goes_to_the_execution_page(logged_in, live_session):
    response = logged_in.post(
        reverse("executions:create", args=[live_session.id]), {"language": "shell", "code": "echo hi"}
    )
    execution = Execution.objects.get(session=live_session)
    assert response.status_code == 302 and response["Location"] == reverse(
        "executions:detail", args=[execution.id]
    )


def test_bad_input_is_refused_with_the_apis_words(logged_in, live_session):
    url = reverse("executions:create", args=[live_session.id])
    bad_json = logged_in.post(url, {"language": "python", "code": "x", "event": "{nope"}, headers=HTMX)
    assert bad_json["HX-Retarget"] == "#runner" and bad_json["HX-Reswap"] == "outerHTML"
    assert "not valid JSON" in bad_json.content.decode()
    not_object = logged_in.post(url, {"language": "python", "code": "x", "event": "[1]"}, headers=HTMX)
    assert "event must be a JSON object" in not_object.content.decode()
    too_long = logged_in.post(url, {"language": "python", "code": "x", "timeout": "99999"})
    assert too_long.status_code == 400 and "less than or equal to 3600" in too_long.content.decode()
    assert not Execution.objects.exists()


def test_an_ended_session_takes_no_code(logged_in, live_session, make_session, user):
    ended = make_session(user, status="terminated")
    panel = logged_in.get(reverse("executions:session", args=[ended.id]), headers=HTMX).content.decode()
    assert 'id="runner"' not in panel and "new executions need a running session" in panel
    response = logged_in.post(
        reverse("executions:create", args=[ended.id]), {"language": "python", "code": "x"}, headers=HTMX
    )
    assert "executions need a running session" in response.content.decode()


def test_the_detail_page_shows_code_output_result_metrics_and_files(logged_in, live_session):
    execution = finished(
        live_session,
        code="def handler(event, context):\n    return {'double': event['n'] * 2}\n",
        event={"n": 21},
    )
    ExecutionOutputChunk.objects.create(execution=execution, seq=1, stream="stdout", data="out <b>\n")
    ExecutionOutputChunk.objects.create(execution=execution, seq=2, stream="stderr", data="warned\n")
    Execution.objects.filter(pk=execution.pk).update(
        artifacts=[{"path": "report.txt", "size": 4, "change": "created"}], return_value={"double": 42}
    )
    body = logged_in.get(reverse("executions:detail", args=[execution.id])).content.decode()
    assert "def handler(event, context):" in body and "&quot;n&quot;: 21" in body
    assert 'class="stream-stdout">out &lt;b&gt;' in body and 'class="stream-stderr">warned' in body
    assert "&quot;double&quot;: 42" in body and "status-completed" in body
    assert "report.txt" in body and "Peak memory" in body
    assert "data-finished" in body  # nothing left to stream


def test_an_unfinished_execution_page_resumes_the_stream_after_the_stored_output(logged_in, live_session):
    execution = execution_submit(session=live_session, language="python", code="print(1)")
    ExecutionOutputChunk.objects.create(execution=execution, seq=1, stream="stdout", data="early\n")
    body = logged_in.get(reverse("executions:detail", args=[execution.id])).content.decode()
    assert 'data-after="1"' in body and "early" in body and "data-finished" not in body


def test_the_result_fragment_polls_until_finished_then_answers_286(logged_in, live_session):
    execution = execution_submit(session=live_session, language="python", code="print(1)")
    url = reverse("executions:result", args=[execution.id])
    pending = logged_in.get(url, headers=HTMX)
    assert pending.status_code == 200 and "every 5s" in pending.content.decode()
    execution_run(execution.id)
    done = logged_in.get(url, headers=HTMX)
    assert done.status_code == 286 and "hx-trigger" not in done.content.decode()
    assert logged_in.get(url).status_code == 302


def test_cancel_ends_a_pending_execution(logged_in, live_session):
    execution = execution_submit(session=live_session, language="python", code="print(1)")
    response = logged_in.post(reverse("executions:cancel", args=[execution.id]), headers=HTMX)
    assert "Cancel requested." in response.content.decode()
    execution.refresh_from_db()
    assert execution.status == "cancelled"


def test_another_users_executions_are_404(logged_in, fake_runtime, other_user, python_template):
    theirs = session_provision(session=session_create(owner=other_user, template=python_template))
    execution = finished(theirs)
    for name, args in [
        ("executions:detail", [execution.id]),
        ("executions:result", [execution.id]),
        ("executions:session", [theirs.id]),
    ]:
        assert logged_in.get(reverse(name, args=args), headers=HTMX).status_code == 404, name
    assert logged_in.post(reverse("executions:cancel", args=[execution.id])).status_code == 404
    submit = logged_in.post(
        reverse("executions:create", args=[theirs.id]), {"language": "python", "code": "x"}
    )
    assert submit.status_code == 404
    assert Execution.objects.filter(session=theirs).count() == 1


def test_staff_see_every_execution(client, staff_user, live_session):
    execution = finished(live_session)
    client.force_login(staff_user)
    assert client.get(reverse("executions:detail", args=[execution.id])).status_code == 200


def test_anonymous_users_are_sent_to_login(client, live_session):
    url = reverse("executions:session", args=[live_session.id])
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_the_session_admin_lists_recent_executions_read_only(client, staff_user, live_session):
    execution = finished(live_session)
    client.force_login(staff_user)
    body = client.get(
        reverse("admin:sessions_app_sandboxsession_change", args=[live_session.pk])
    ).content.decode()
    assert "recent executions" in body.lower() and execution.id in body and "status-completed" in body
    detail = client.get(
        reverse("admin:executions_app_execution_change", args=[execution.pk])
    ).content.decode()
    assert "hello" in detail  # the read-only output block
