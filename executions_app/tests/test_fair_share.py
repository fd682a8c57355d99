"""Fair share with real worker processes (`manage.py run_worker`) and real bubblewrap sandboxes.

One tenant's long executions must not stall another tenant's session create or first result: provisioning
has its own queue and workers, and async executions are streamed by a pool of threads in one process, not
one worker process each. Executions here wait until the test drops a file into their workspace, so the
test decides when they end and no assertion depends on timing.
"""

from __future__ import annotations

import io
import os
import signal

import pytest
from django.db import connection

from conftest import at_once
from executions_app.models import Execution
from executions_app.services import execution_submit
from executions_app.tasks import enqueue_execution_run
from sandbox_site.testing import wait_until
from sessions_app.models import SandboxSession
from sessions_app.sandboxes import handle_for, runtime_for
from sessions_app.services import session_create, session_provision, session_terminate

pytestmark = [pytest.mark.django_db(transaction=True)]

# Runs until a file named `go` appears in the workspace (polling: the sandbox has no inotify guarantees).
WAIT_FOR_GO = "import os, time\nwhile not os.path.exists('go'):\n    time.sleep(0.2)\nprint('released')"


@pytest.fixture
def queued(monkeypatch):
    """Work goes to the worker processes through the broker and the stream pool, not inline."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", False)


@pytest.fixture
def sessions(user, python_template):
    """Provisions sessions of `user` in this process; terminates them at the end (cancelling what runs)."""
    made: list[SandboxSession] = []

    def make(owner=None, **fields) -> SandboxSession:
        fields.setdefault("memory_mb", 1024)
        owner = owner or user
        session = session_provision(session=session_create(owner=owner, template=python_template, **fields))
        assert session.status == "running", session.status_detail
        made.append(session)
        return session

    yield make
    for session in made:
        session.refresh_from_db()
        session_terminate(session=session)


def submit(session, code=WAIT_FOR_GO, count=1) -> list[str]:
    ids = []
    for _ in range(count):
        execution = execution_submit(session=session, language="python", code=code, timeout=300)
        enqueue_execution_run(execution.id)
        ids.append(execution.id)
    return ids


def release(session) -> None:
    handle = handle_for(session)
    assert handle is not None
    runtime_for(session).executor(handle).upload("go", io.BytesIO(b"go"), 2)


def running(ids) -> int:
    return Execution.objects.filter(pk__in=ids, status="running").count()


def completed(ids) -> int:
    return Execution.objects.filter(pk__in=ids, status="completed").count()


pytestmark.append(pytest.mark.usefixtures("sessions_on_process", "queued"))


def test_tenant_b_creates_a_session_and_gets_a_result_while_tenant_a_holds_eight_long_runs(
    sessions, start_worker, make_api_client, other_user
):
    start_worker()
    session_a = sessions()
    held = submit(session_a, count=8)
    wait_until(lambda: running(held) == 8, what="tenant A's eight runs to start")

    b = make_api_client(other_user)
    created = b.post("/api/v1/sessions", {"template_id": "python-basic", "timeout": 300}, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["status"] == "running"
    session_b = created.json()["id"]
    accepted = b.post(
        f"/api/v1/sessions/{session_b}/execute",
        {"language": "python", "code": "def handler(event):\n    return 'b was served'"},
        format="json",
    )
    assert accepted.status_code == 201, accepted.json()

    def b_result():
        body = b.get(f"/api/v1/executions/{accepted.json()['execution_id']}").json()
        return body if body["status"] not in ("pending", "running") else None

    # How long B waits while A holds its runs is measured by bench/session_create.py --busy-tenant.
    result = wait_until(b_result, what="tenant B's result")
    assert result["status"] == "completed" and result["return_value"] == "b was served"
    assert running(held) == 8, "tenant A's runs ended before tenant B was served"

    release(session_a)
    wait_until(lambda: completed(held) == 8, what="tenant A's released runs to complete")
    b.post(f"/api/v1/sessions/{session_b}/terminate")


def test_one_pool_process_streams_a_hundred_executions_at_once(sessions, start_worker, settings):
    settings.SANDBOX_MAX_RUNNING_EXECUTIONS_PER_OWNER = 200
    start_worker()
    pool = [sessions() for _ in range(5)]
    ids = [execution_id for session in pool for execution_id in submit(session, count=20)]
    wait_until(lambda: running(ids) == 100, timeout=180, interval=0.5, what="a hundred runs to start")
    workers = set(Execution.objects.filter(pk__in=ids).values_list("worker", flat=True))
    assert len(workers) == 1, workers
    for session in pool:
        release(session)
    wait_until(lambda: completed(ids) == 100, timeout=180, interval=0.5, what="a hundred runs to complete")
    assert set(Execution.objects.filter(pk__in=ids).values_list("stdout", flat=True)) == {"released\n"}


def test_provisioning_is_not_blocked_by_a_full_execution_pool(
    sessions, start_worker, make_api_client, other_user
):
    start_worker(SANDBOX_EXECUTION_STREAMS="2")
    session_a = sessions()
    held = submit(session_a, count=4)
    wait_until(lambda: running(held) == 2, what="two runs to fill the pool")

    b = make_api_client(other_user)
    created = b.post("/api/v1/sessions", {"template_id": "python-basic"}, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["status"] == "running"
    # The pool is still full: A's runs hold both streams, two more wait.
    assert running(held) == 2
    assert Execution.objects.filter(pk__in=held, status="pending").count() == 2
    release(session_a)
    wait_until(lambda: completed(held) == 4, what="the four runs to complete")
    b.post(f"/api/v1/sessions/{created.json()['id']}/terminate")


def test_a_killed_pool_process_ends_its_executions_crashed_and_its_successor_takes_new_work(
    sessions, start_worker
):
    start_worker(SANDBOX_EXECUTION_LEASE="6")
    session = sessions()
    [held] = submit(session)
    execution = wait_until(
        lambda: Execution.objects.filter(pk=held, status="running").first(), what="the pool to claim the run"
    )
    pid = int(execution.worker.rpartition(":")[2])
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        assert b"run_executions" in cmdline.read(), "the execution was not streamed by the pool process"
    os.kill(pid, signal.SIGKILL)
    crashed = wait_until(
        lambda: Execution.objects.filter(pk=held, status="crashed").first(),
        what="the lost pool's run to crash",
    )
    assert "lost" in crashed.error_message
    # run_worker restarted the pool; it takes new work.
    [follow_up] = submit(SandboxSession.objects.get(pk=session.pk), code="print('still here')")
    done = wait_until(
        lambda: Execution.objects.filter(pk=follow_up, status="completed").first(),
        what="the restarted pool to run new work",
    )
    assert done.stdout == "still here\n"
    assert int(done.worker.rpartition(":")[2]) != pid


def test_an_owner_past_the_running_execution_cap_gets_429_with_the_limit(
    settings, sessions, make_api_client, user, other_user
):
    settings.SANDBOX_MAX_RUNNING_EXECUTIONS_PER_OWNER = 2
    a, b = make_api_client(user), make_api_client(other_user)
    session_a, session_b = sessions().id, sessions(owner=other_user).id
    body = {"language": "python", "code": "print(1)"}
    # No worker runs: the executions stay pending, and pending ones count.
    for _ in range(2):
        assert a.post(f"/api/v1/sessions/{session_a}/execute", body, format="json").status_code == 201
    refused = a.post(f"/api/v1/sessions/{session_a}/execute", body, format="json")
    assert refused.status_code == 429
    assert refused.json()["error"] == "quota_exceeded"
    assert "the limit is 2" in refused.json()["message"]
    assert a.post(f"/api/v1/sessions/{session_a}/execute-sync", body, format="json").status_code == 429
    # The cap is per owner.
    assert b.post(f"/api/v1/sessions/{session_b}/execute", body, format="json").status_code == 201
    connection.close()


def test_the_console_code_runner_shows_the_execution_cap(settings, sessions, client, user):
    settings.SANDBOX_MAX_RUNNING_EXECUTIONS_PER_OWNER = 1
    session = sessions()
    client.force_login(user)
    url = f"/sessions/{session.id}/executions/run/"
    form = {"language": "python", "code": "print(1)", "event": "{}", "timeout": "30"}
    assert client.post(url, form).status_code == 302  # stays pending: no worker runs here
    refused = client.post(url, form)
    assert refused.status_code == 400
    assert "the limit is 1 at a time" in refused.content.decode()
    assert Execution.objects.filter(session=session).count() == 1


def test_racing_submits_of_one_owner_never_pass_the_execution_cap(settings, sessions, make_api_client, user):
    settings.SANDBOX_MAX_RUNNING_EXECUTIONS_PER_OWNER = 2
    session = sessions()
    client = make_api_client(user)
    body = {"language": "python", "code": "print(1)"}
    url = f"/api/v1/sessions/{session.id}/execute"
    statuses = at_once([lambda: client.post(url, body, format="json").status_code] * 6)
    assert sorted(statuses) == [201] * 2 + [429] * 4, statuses
    assert Execution.objects.filter(session=session).count() == 2
