"""Faults with real worker processes (django-q2 clusters started by the test) and real bubblewrap sandboxes."""

from __future__ import annotations

import os
import signal

import pytest
from django_q.tasks import async_task

from executions_app.models import Execution
from executions_app.services import execution_submit
from runtime import SandboxSpec
from runtime.process.record import read_record
from sandbox_site.testing import wait_until
from sessions_app.models import SandboxSession
from sessions_app.sandboxes import handle_for, runtime_named
from sessions_app.services import session_create, session_keepalive, session_provision

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sessions_on_process")]


def execution_in(pk: str, status: str) -> Execution | None:
    return Execution.objects.filter(pk=pk, status=status).first()


def new_session(user, template, **fields):
    session = session_provision(session=session_create(owner=user, template=template, **fields))
    assert session.status == "running", session.status_detail
    return session


def enqueue(session, code):
    execution = execution_submit(session=session, language="python", code=code)
    async_task("executions_app.tasks.execution_run_task", execution.id)
    return execution


def test_a_killed_worker_crashes_its_execution_and_a_new_worker_takes_queued_work(
    user, python_template, start_worker, queued
):
    start_worker(SANDBOX_EXECUTION_LEASE="6")
    session = new_session(user, python_template)
    execution = enqueue(session, "import time\ntime.sleep(300)")
    running = wait_until(
        lambda: execution_in(execution.pk, "running"), what="the worker to claim the execution"
    )
    pid = int(running.worker.rpartition(":")[2])
    os.kill(pid, signal.SIGKILL)
    # How soon that happens (within the lease) is measured by bench/worker_crash.py, not asserted here.
    crashed = wait_until(lambda: execution_in(execution.pk, "crashed"), what="the lost worker's run to crash")
    assert "worker" in crashed.error_message and "lost" in crashed.error_message
    follow_up = enqueue(SandboxSession.objects.get(pk=session.pk), "print('still here')")
    done = wait_until(lambda: execution_in(follow_up.pk, "completed"), what="a new worker to run queued work")
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
    done = wait_until(lambda: execution_in(execution.pk, "completed"), what="the survivor to run code")
    assert done.return_value == "alive"


@pytest.mark.slow  # waits for django-q2's scheduler to run the sweep: half a minute or more
def test_an_idle_session_is_terminated_by_the_scheduled_sweep_and_keepalive_postpones_it(
    user, python_template, start_worker, queued
):
    idle = new_session(user, python_template, timeout=10)
    kept = new_session(user, python_template, timeout=10)
    idle_deadline = SandboxSession.objects.get(pk=idle.pk).idle_deadline_at
    start_worker()

    def swept():
        session_keepalive(session=SandboxSession.objects.get(pk=kept.pk))
        return SandboxSession.objects.filter(pk=idle.pk, status="terminated").first()

    # django-q2's scheduler wakes every 30 s and the sweep runs every minute: one interval plus a wake,
    # and as much again for a loaded machine.
    ended = wait_until(swept, timeout=2 * (10 + 60 + 35), interval=2, what="the scheduled sweep")
    assert ended.termination_reason == "idle_timeout"
    assert ended.completed_at >= idle_deadline, "ended before its idle deadline"
    assert SandboxSession.objects.get(pk=kept.pk).status == "running"
