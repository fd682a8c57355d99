"""One front door per behaviour: the API and the console start executions through `execution_start`
(queued only once the submit commits), and the API, the console and the websocket show an execution to
exactly those who may see its session (on the fake runtime)."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.urls import reverse

from executions_app.models import Execution
from executions_app.services import execution_submit
from sandbox_site.asgi import application
from sessions_app.models import ApiKey
from sessions_app.services import session_create, session_provision

pytestmark = pytest.mark.django_db
CODE = 'print("from the front door")\n'
# How long one websocket step may take before the test fails: a guard against hanging, not a speed claim.
STEP_WAIT = 30.0


@pytest.fixture(autouse=True)
def _templates(builtin_templates):
    """The built-in templates, also after a transactional test elsewhere has flushed the tables."""


@pytest.fixture
def live_session(fake_runtime, user, python_template):
    return session_provision(session=session_create(owner=user, template=python_template))


def start_through_api(api, client, session) -> None:
    response = api.post(
        f"/api/v1/sessions/{session.client_id}/execute", {"language": "python", "code": CODE}, format="json"
    )
    assert response.status_code == 201, response.json()


def start_through_mirrored_api(api, client, session) -> None:
    response = api.post(
        f"/api/v1/executions/sessions/{session.client_id}/execute",
        {"language": "python", "code": CODE},
        format="json",
    )
    assert response.status_code == 201, response.json()


def start_through_console(api, client, session) -> None:
    response = client.post(
        reverse("executions:create", args=[session.id]), {"language": "python", "code": CODE, "timeout": "30"}
    )
    assert response.status_code == 302


@pytest.mark.parametrize("start", [start_through_api, start_through_mirrored_api, start_through_console])
def test_an_execution_is_queued_only_once_its_submit_commits(
    api, client, user, live_session, django_capture_on_commit_callbacks, start
):
    client.force_login(user)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        start(api, client, live_session)
    execution = Execution.objects.get(session=live_session)
    # Until the commit nothing has run it: the row is pending and the hand-over is still waiting.
    assert execution.status == "pending" and callbacks
    for callback in callbacks:
        callback()  # the commit; the test's worker stand-in runs the handed-over execution inline
    execution.refresh_from_db()
    assert execution.status == "completed", execution.error_message


def test_visible_to_hides_other_owners_executions_in_the_api_and_the_console(
    api, staff_api, client, user, other_user, live_session, python_template
):
    theirs_session = session_provision(session=session_create(owner=other_user, template=python_template))
    theirs = execution_submit(session=theirs_session, language="python", code=CODE)
    mine = execution_submit(session=live_session, language="python", code=CODE)
    for suffix in ("", "/status", "/result", "/output"):
        missing = api.get(f"/api/v1/executions/{theirs.id}{suffix}")
        assert missing.status_code == 404 and missing.json()["error"] == "execution_not_found", suffix
        assert api.get(f"/api/v1/executions/{mine.id}{suffix}").status_code == 200, suffix
        assert staff_api.get(f"/api/v1/executions/{theirs.id}{suffix}").status_code == 200, suffix
    assert api.post(f"/api/v1/executions/{theirs.id}/cancel").status_code == 404
    listed = api.get(f"/api/v1/sessions/{theirs_session.id}/executions")
    assert listed.status_code == 404 and listed.json()["error"] == "session_not_found"
    refused = api.post(
        f"/api/v1/sessions/{theirs_session.id}/execute", {"language": "python", "code": CODE}, format="json"
    )
    assert refused.status_code == 404
    client.force_login(user)
    assert client.get(reverse("executions:detail", args=[theirs.id])).status_code == 404
    assert client.get(reverse("executions:detail", args=[mine.id])).status_code == 200
    assert client.get(reverse("executions:session", args=[theirs_session.id])).status_code == 404
    assert Execution.objects.filter(session=theirs_session).count() == 1
    theirs.refresh_from_db()
    assert theirs.status == "pending"


@pytest.mark.django_db(transaction=True)
def test_visible_to_hides_other_owners_executions_on_the_websocket(
    user, other_user, staff_user, live_session, python_template, settings
):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    theirs_session = session_provision(session=session_create(owner=other_user, template=python_template))
    theirs = execution_submit(session=theirs_session, language="python", code=CODE)
    Execution.objects.filter(pk=theirs.pk).update(status="completed", exit_code=0)

    def watch(owner) -> tuple[list[str], int | None]:
        raw = ApiKey.objects.create_key(owner=owner)[1]

        async def run() -> tuple[list[dict], int | None]:
            communicator = WebsocketCommunicator(
                application,
                f"/ws/executions/{theirs.id}/",
                headers=[(b"authorization", f"Bearer {raw}".encode())],
            )
            await communicator.connect(STEP_WAIT)
            events: list[dict] = []
            while True:
                output = await communicator.receive_output(STEP_WAIT)
                if output["type"] == "websocket.close":
                    await communicator.disconnect()
                    return events, output.get("code")
                events.append(json.loads(output["text"]))

        events, code = async_to_sync(run)()
        return [event.get("error") or event["type"] for event in events], code

    assert watch(user) == (["execution_not_found"], 4404)
    assert watch(staff_user) == (["status", "result"], 1000)
    events, _ = watch(other_user)
    assert events[-1] == "result", json.dumps(events)
