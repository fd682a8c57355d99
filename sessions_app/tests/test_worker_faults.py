"""Faults with real worker processes (django-q2 clusters started by the test) and real bubblewrap sandboxes."""

from __future__ import annotations

import os
import signal
import time

import pytest
from django_q.tasks import async_task

from executions_app.models import Execution
from executions_app.services import execution_submit
from runtime import SandboxSpec
from runtime.process.record import read_record
from sessions_app.models import SandboxSession
from sessions_app.sandboxes import handle_for, runtime_named
from sessions_app.services import session_create, session_keepalive, session_provision

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sessions_on_process")]


def wait_for(predicate, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def new_session(user, template, **fields):
    session = session_provision(session=session_create(owner=user, template=template, **fields))
    assert session.status == "running", session.status_detail
    return session


def enqueue(session, code):
    execution = execution_submit(session=session, language="python", code=code)
    async_task("executions_app.tasks.execution_run_task", execution.id)
    return execution


@pytest.fixture
def queued(monkeypatch):
    """Tasks go through the broker to the worker processes, not inline."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", False)


def test_a_killed_worker_crashes_its_execution_and_a_new_worker_takes_queued_work(
    user, python_template, start_worker, queued
):
    start_worker(SANDBOX_EXECUTION_LEASE="6")
    session = new_session(user, python_template)
    execution = enqueue(session, "import time\ntime.sleep(30)")
    running = wait_for(lambda: Execution.objects.filter(pk=execution.pk, status="running").first(), 30)
    pid = int(running.worker.rpartition(":")[2])
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    crashed = wait_for(lambda: Execution.objects.filter(pk=execution.pk, status="crashed").first(), 20)
    assert time.monotonic() - killed_at < 6 + 2, "not within the lease time"
    assert "worker" in crashed.error_message and "lost" in crashed.error_message
    follow_up = enqueue(SandboxSession.objects.get(pk=session.pk), "print('still here')")
    done = wait_for(lambda: Execution.objects.filter(pk=follow_up.pk, status="completed").first(), 30)
    assert done.stdout == "still here\n"


def test_a_restarted_control_plane_keeps_live_sessions_and_reconciles_the_rest(
    user, python_template, start_worker, queued, settings
):
    from runtime.registry import reset_runtimes

    survivor = new_session(user, python_template)
    victim = new_session(user, python_template)
    runtime = runtime_named("process")
    orphan = runtime.create(SandboxSpec(session_id="made-behind-our-back", image="-", token="t"))
    record = read_record(os.path.dirname(handle_for(victim).workspace_path))
    os.killpg(int(record["pid"]), signal.SIGKILL)
    # The "restart": fresh runtime objects here, and a new worker process, which syncs state on start.
    reset_runtimes()
    start_worker()
    assert not runtime_named("process").inspect(orphan).exists
    victim.refresh_from_db()
    assert (victim.status, victim.termination_reason) == ("failed", "container_lost")
    execution = enqueue(SandboxSession.objects.get(pk=survivor.pk), "def handler(e):\n    return 'alive'")
    done = wait_for(lambda: Execution.objects.filter(pk=execution.pk, status="completed").first(), 30)
    assert done.return_value == "alive"


def test_an_idle_session_is_terminated_by_the_scheduled_sweep_and_keepalive_postpones_it(
    user, python_template, start_worker, queued
):
    idle = new_session(user, python_template, timeout=10)
    kept = new_session(user, python_template, timeout=10)
    started = time.monotonic()
    start_worker()

    def swept():
        session_keepalive(session=SandboxSession.objects.get(pk=kept.pk))
        return SandboxSession.objects.filter(pk=idle.pk, status="terminated").first()

    # django-q2's scheduler wakes every 30 s and the sweep runs every minute: allow one interval plus a wake.
    ended = wait_for(swept, 10 + 60 + 35, interval=2)
    assert ended.termination_reason == "idle_timeout"
    assert time.monotonic() - started >= 10
    assert SandboxSession.objects.get(pk=kept.pk).status == "running"
