"""Execution endpoints, against real bubblewrap sandboxes."""

from __future__ import annotations

import pytest

from executions_app.models import Execution
from sandbox_site.testing import wait_until

# Sessions are provisioned by a task enqueued after commit: these tests commit for real.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("real_runtime")]
THREADED = pytest.mark.django_db(transaction=True)

HELLO = 'def handler(event):\n    return {"result": "hello world"}'
FAMILIES = ["/api/v1/sessions/{id}", "/api/v1/executions/sessions/{id}"]


@pytest.fixture
def sync_worker(inline_worker):
    """Queued executions run inline when the request's transaction commits, as in a worker."""


@pytest.fixture
def session_id(api):
    response = api.post(
        "/api/v1/sessions",
        {
            "template_id": "python-basic",
            "timeout": 300,
            "resources": {"cpu": "1", "memory": "512Mi", "disk": "1Gi"},
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    yield response.json()["id"]
    api.post(f"/api/v1/sessions/{response.json()['id']}/terminate")


@THREADED
@pytest.mark.parametrize("family", FAMILIES)
def test_execute_sync_returns_the_finished_execution(api, session_id, family):
    response = api.post(
        family.format(id=session_id) + "/execute-sync",
        {"code": HELLO, "language": "python", "timeout": 30},
        format="json",
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "completed" and body["return_value"] == {"result": "hello world"}
    assert body["session_id"] == session_id and body["exit_code"] == 0
    assert set(body["metrics"]) == {"duration_ms", "cpu_time_ms", "peak_memory_mb"}


@THREADED
def test_execute_sync_answers_408_and_the_execution_goes_on(api, session_id):
    response = api.post(
        f"/api/v1/sessions/{session_id}/execute-sync?sync_timeout=1",
        {"code": "import time\ntime.sleep(2.5)\nprint('finished')", "language": "python", "timeout": 30},
        format="json",
    )
    assert response.status_code == 408
    body = response.json()
    assert body["error"] == "sync_timeout" and body["execution_id"].startswith("exec_")

    def ended():
        execution = api.get(f"/api/v1/executions/{body['execution_id']}").json()
        return execution if execution["status"] not in ("pending", "running") else None

    execution = wait_until(ended, what="the execution to go on to its end")
    assert execution["status"] == "completed" and execution["stdout"] == "finished\n"


@pytest.mark.parametrize("family", FAMILIES)
def test_async_execute_runs_in_a_worker_and_is_readable(api, session_id, family, sync_worker):
    response = api.post(
        family.format(id=session_id) + "/execute",
        {"code": "print('out')\nimport sys; print('err', file=sys.stderr)", "language": "python"},
        format="json",
    )
    assert response.status_code == 201
    accepted = response.json()
    assert set(accepted) == {"execution_id", "session_id", "status", "created_at"}
    assert accepted["status"] == "pending"
    execution_id = accepted["execution_id"]
    for suffix in ("", "/status", "/result"):
        body = api.get(f"/api/v1/executions/{execution_id}{suffix}").json()
        assert body["status"] == "completed" and body["stdout"] == "out\n" and body["stderr"] == "err\n"
    output = api.get(f"/api/v1/executions/{execution_id}/output").json()
    assert output["finished"] is True
    assert "".join(c["data"] for c in output["chunks"] if c["stream"] == "stdout") == "out\n"
    last = output["next_after"]
    assert api.get(f"/api/v1/executions/{execution_id}/output?after={last}").json()["chunks"] == []
    listing = api.get(family.format(id=session_id) + "/executions").json()
    assert listing["total"] == 1 and listing["items"][0]["id"] == execution_id


def test_every_language_runs_through_the_api(api, session_id, sync_worker):
    # JavaScript runs on the Node template (the Python image has no Node); shell runs anywhere.
    node = api.post("/api/v1/sessions", {"template_id": "nodejs-basic"}, format="json").json()
    assert node["status"] == "running", node
    cases = [
        (
            node["id"],
            "javascript",
            "exports.handler = async (event) => ({sum: event.a + event.b});",
            {"sum": 5},
        ),
        (session_id, "shell", 'read -r line; echo "got $line"', None),
    ]
    for target, language, code, expected in cases:
        execution_id = api.post(
            f"/api/v1/sessions/{target}/execute",
            {"code": code, "language": language, "event": {"a": 2, "b": 3}},
            format="json",
        ).json()["execution_id"]
        body = api.get(f"/api/v1/executions/{execution_id}").json()
        assert body["status"] == "completed", body
        if expected is not None:
            assert body["return_value"] == expected
        else:
            assert body["stdout"].startswith('got {"a": 2')
    api.post(f"/api/v1/sessions/{node['id']}/terminate")


def test_execution_refreshes_the_session_idle_clock(api, session_id, sync_worker):
    from datetime import timedelta

    from sessions_app.models import SandboxSession

    # Idle for a minute (activity within a second of the last is not written again).
    before = SandboxSession.objects.get(pk=session_id).last_activity_at - timedelta(minutes=1)
    SandboxSession.objects.filter(pk=session_id).update(last_activity_at=before)
    api.post(
        f"/api/v1/sessions/{session_id}/execute", {"code": "print(1)", "language": "python"}, format="json"
    )
    assert SandboxSession.objects.get(pk=session_id).last_activity_at > before


def test_cancel_of_a_finished_execution_returns_it_unchanged(api, session_id, sync_worker):
    execution_id = api.post(
        f"/api/v1/sessions/{session_id}/execute", {"code": "print(1)", "language": "python"}, format="json"
    ).json()["execution_id"]
    response = api.post(f"/api/v1/executions/{execution_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "completed"


def test_cancel_of_a_pending_execution(api, session_id, monkeypatch):
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", False)  # queued, and no worker is running: it stays pending
    execution_id = api.post(
        f"/api/v1/sessions/{session_id}/execute", {"code": "print(1)", "language": "python"}, format="json"
    ).json()["execution_id"]
    response = api.post(f"/api/v1/executions/{execution_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"language": "python"}, "code"),
        ({"code": "", "language": "python"}, "code"),
        ({"code": "x" * (1024 * 1024 + 1), "language": "python"}, "code"),
        ({"code": "print(1)", "language": "cobol"}, "language"),
        ({"code": "print(1)"}, "language"),
        ({"code": "print(1)", "language": "python", "timeout": 0}, "timeout"),
        ({"code": "print(1)", "language": "python", "timeout": 3601}, "timeout"),
        ({"code": "print(1)", "language": "python", "timeout": "soon"}, "timeout"),
        ({"code": "print(1)", "language": "python", "event": [1, 2]}, "event"),
        ({"code": "print(1)", "language": "python", "event": {"big": "x" * (1024 * 1024)}}, "event"),
        ({"code": "print(1)", "language": "python", "entrypoint": "os.system"}, "entrypoint"),
        ({"code": 42, "language": "python"}, "code"),
    ],
)
def test_bad_execution_requests_are_400_and_create_nothing(api, session_id, body, field):
    response = api.post(f"/api/v1/sessions/{session_id}/execute", body, format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json()["detail"]
    assert not Execution.objects.exists()


def test_bad_sync_timeouts_are_400(api, session_id):
    for value in ("0", "3601", "abc"):
        response = api.post(
            f"/api/v1/sessions/{session_id}/execute-sync?sync_timeout={value}",
            {"code": "print(1)", "language": "python"},
            format="json",
        )
        assert response.status_code == 400
    assert not Execution.objects.exists()


def test_executing_on_an_ended_session_is_409(api, session_id):
    api.post(f"/api/v1/sessions/{session_id}/terminate")
    response = api.post(
        f"/api/v1/sessions/{session_id}/execute", {"code": "print(1)", "language": "python"}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["error"] == "session_not_running" and "terminated" in response.json()["message"]


def test_another_owners_execution_is_404(api, other_api, session_id, sync_worker):
    execution_id = api.post(
        f"/api/v1/sessions/{session_id}/execute", {"code": "print(1)", "language": "python"}, format="json"
    ).json()["execution_id"]
    for method, suffix in [
        ("get", ""),
        ("get", "/status"),
        ("get", "/result"),
        ("get", "/output"),
        ("post", "/cancel"),
    ]:
        response = getattr(other_api, method)(f"/api/v1/executions/{execution_id}{suffix}")
        assert response.status_code == 404 and response.json()["error"] == "execution_not_found"
    assert other_api.get("/api/v1/executions/exec_missing0000000").status_code == 404


def test_bad_output_cursor_is_400(api, session_id, sync_worker):
    execution_id = api.post(
        f"/api/v1/sessions/{session_id}/execute", {"code": "print(1)", "language": "python"}, format="json"
    ).json()["execution_id"]
    assert api.get(f"/api/v1/executions/{execution_id}/output?after=-1").status_code == 400
