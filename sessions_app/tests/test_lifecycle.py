"""Lifecycle services against real bubblewrap sandboxes: sweeps, probes, state sync, warm pools, leases."""

from __future__ import annotations

import os
import signal
import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from executions_app.models import Execution, ExecutionOutputChunk
from executions_app.services import execution_expire_leases, execution_run, execution_submit
from runtime import RuntimeFailure, SandboxSpec
from runtime.kubernetes import KubernetesRuntime
from runtime.process.record import read_record
from sandbox_site.testing import wait_until
from sessions_app.lifecycle import sessions_probe, sessions_sweep, sessions_sync_state
from sessions_app.models import SandboxSession, WarmSandbox
from sessions_app.sandboxes import handle_for, runtime_for, runtime_named
from sessions_app.services import session_create, session_keepalive, session_provision, session_start
from sessions_app.warm_pool import warm_pool_refill

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("real_runtime")]


def new_session(user, template, **fields):
    session = session_provision(session=session_create(owner=user, template=template, **fields))
    assert session.status == "running", session.status_detail
    return session


def sandbox_running(session) -> bool:
    handle = handle_for(session)
    assert handle is not None
    return runtime_for(session).inspect(handle).running


def answers(session) -> bool:
    try:
        return sandbox_serves(session)
    except RuntimeFailure:
        return False


def sandbox_serves(session) -> bool:
    """The sandbox's executor answers. (A backend's status may lag behind a sandbox that just started: the API
    server reports a new pod Pending for a moment after its executor answers.)"""
    handle = handle_for(session)
    assert handle is not None
    runtime_for(session).executor(handle).health()
    return True


def kill_sandbox(session) -> None:
    """Kill the sandbox behind the control plane's back, as a crash or an operator would."""
    handle = handle_for(session)
    assert handle is not None
    if session.runtime_type == "docker":
        import docker

        docker.from_env().containers.get(handle.sandbox_id).kill()
    elif session.runtime_type == "kubernetes":
        runtime = runtime_for(session)
        assert isinstance(runtime, KubernetesRuntime)
        runtime.core().delete_namespaced_pod(handle.sandbox_id, runtime.namespace, grace_period_seconds=0)
        # Not "not running": a new pod may still be reported Pending while it serves. And the pod object
        # goes before its containers do: a connection already open reaches the executor until they stop.
        wait_until(lambda: not runtime.inspect(handle).exists, what="the deleted pod to be gone")
        wait_until(lambda: not answers(session), what="the deleted pod's executor to stop answering")
        return
    else:
        record = read_record(os.path.dirname(handle.workspace_path))
        assert record is not None
        os.killpg(int(record["pid"]), signal.SIGKILL)
    wait_until(lambda: not sandbox_running(session), what="the killed sandbox to stop running")
    # Its executor can outlive the sandbox's main process for a moment (the sandbox's own processes go down
    # after it): killed means it no longer answers either.
    wait_until(lambda: not answers(session), what="the killed sandbox's executor to stop answering")


def test_idle_sessions_are_terminated_and_keepalive_postpones(user, python_template):
    idle = new_session(user, python_template, timeout=10)
    kept = new_session(user, python_template, timeout=10)
    SandboxSession.objects.update(idle_deadline_at=timezone.now() - timedelta(seconds=1))
    session_keepalive(session=SandboxSession.objects.get(pk=kept.pk))
    assert sessions_sweep()["idle"] == 1
    idle.refresh_from_db()
    assert (idle.status, idle.termination_reason) == ("terminated", "idle_timeout")
    assert not runtime_for(idle).inspect(handle_for(idle)).exists
    assert SandboxSession.objects.get(pk=kept.pk).status == "running"
    assert sandbox_serves(SandboxSession.objects.get(pk=kept.pk))


def test_a_session_past_its_lifetime_ends_timeout_and_its_execution_is_cancelled(user, python_template):
    session = new_session(user, python_template, max_lifetime=3600)
    code = "import time\nprint('started', flush=True)\ntime.sleep(300)"
    execution = execution_submit(session=session, language="python", code=code)
    runner = threading.Thread(target=execution_run, args=(execution.id,))
    runner.start()
    wait_until(
        lambda: ExecutionOutputChunk.objects.filter(execution_id=execution.id).exists(),
        what="the execution to run in the sandbox",
    )
    SandboxSession.objects.filter(pk=session.pk).update(expires_at=timezone.now())
    assert sessions_sweep()["lifetime"] == 1
    runner.join(timeout=60)
    session.refresh_from_db()
    assert (session.status, session.termination_reason) == ("timeout", "lifetime_exceeded")
    assert Execution.objects.get(pk=execution.id).status == "cancelled"


def test_a_session_stuck_creating_is_failed(user, python_template, settings):
    session = session_create(owner=user, template=python_template)
    SandboxSession.objects.filter(pk=session.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.SANDBOX_CREATING_TIMEOUT + 1)
    )
    assert sessions_sweep()["stuck_creating"] == 1
    session.refresh_from_db()
    assert (session.status, session.termination_reason) == ("failed", "provisioning_timeout")
    # The provisioning task arriving late finds it ended and builds nothing.
    session_provision(session=session)
    assert runtime_for(session).list_managed() == []


def test_a_failed_provision_fails_the_session_and_leaves_nothing(user, python_template, settings):
    session = session_create(owner=user, template=python_template, env_vars={"LD_PRELOAD": "/x.so"})
    session = session_provision(session=session)
    assert (session.status, session.termination_reason) == ("failed", "provisioning_failed")
    assert "LD_PRELOAD" in session.status_detail
    assert runtime_for(session).list_managed() == []


def test_the_probe_fails_a_session_after_repeated_failures(user, python_template, settings):
    settings.SANDBOX_HEALTH_FAILURES = 2
    healthy = new_session(user, python_template)
    lost = new_session(user, python_template)
    kill_sandbox(lost)
    first = sessions_probe()
    assert first["healthy"] == 1 and first["unhealthy"] == 1 and first["lost"] == 0
    assert SandboxSession.objects.get(pk=healthy.pk).memory_usage_mb is not None
    assert sessions_probe()["lost"] == 1
    lost.refresh_from_db()
    assert (lost.status, lost.termination_reason) == ("failed", "container_lost")
    assert SandboxSession.objects.get(pk=healthy.pk).status == "running"


def test_state_sync_removes_orphans_and_fails_sessions_whose_sandbox_vanished(user, python_template):
    alive = new_session(user, python_template)
    vanished = new_session(user, python_template)
    runtime = runtime_for(alive)
    orphan = runtime.create(
        SandboxSpec(session_id="orphan-behind-our-back", image=python_template.image_url, token="t")
    )
    kill_sandbox(vanished)
    counts = sessions_sync_state()
    assert counts == {"orphans_destroyed": 1, "sessions_lost": 1}
    assert not runtime.inspect(orphan).exists
    vanished.refresh_from_db()
    assert (vanished.status, vanished.termination_reason) == ("failed", "container_lost")
    assert sandbox_serves(SandboxSession.objects.get(pk=alive.pk))


def test_the_warm_pool_fills_and_a_claim_returns_running_at_once(user, python_template, settings):
    python_template.warm_pool_size = 2
    python_template.save()
    assert warm_pool_refill() == 2
    assert WarmSandbox.objects.ready().count() == 2
    assert warm_pool_refill() == 0
    warm_sandboxes = set(WarmSandbox.objects.values_list("container_id", flat=True))
    # A backend that can resize a live sandbox claims for other resources too; a pod cannot be resized, so
    # there only a session asking for the template's defaults claims one.
    asked = {"memory_mb": 256} if runtime_named(settings.SANDBOX_RUNTIME).resizes_live else {}
    session = session_create(owner=user, template=python_template, env_vars={"GREETING": "hi"}, **asked)
    session_start(session=session)
    session.refresh_from_db()
    assert session.status == "running"
    assert session.container_id in warm_sandboxes
    assert WarmSandbox.objects.count() == 2  # claimed one, the refill task (run inline) started another
    assert not SandboxSession.objects.filter(pk__startswith="warm_").exists()
    execution = execution_submit(
        session=session,
        language="python",
        code="import os\ndef handler(e):\n    return os.environ['GREETING']",
    )
    assert execution_run(execution.id).return_value == "hi"


def test_two_concurrent_creates_never_share_a_warm_sandbox(user, python_template):
    python_template.warm_pool_size = 1
    python_template.save()
    warm_pool_refill()
    warm = WarmSandbox.objects.get()
    python_template.warm_pool_size = 0  # no refill: the loser must cold-start
    python_template.save()
    sessions = [session_create(owner=user, template=python_template) for _ in range(2)]
    barrier = threading.Barrier(2)

    def start(session):
        from django.db import close_old_connections

        barrier.wait()
        session_start(session=session)
        close_old_connections()

    threads = [threading.Thread(target=start, args=(s,)) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = [SandboxSession.objects.get(pk=s.pk) for s in sessions]
    assert [s.status for s in stored] == ["running", "running"]
    assert sorted(s.container_id == warm.container_id for s in stored) == [False, True]
    assert len({s.container_id for s in stored}) == 2


def test_a_lapsed_lease_crashes_the_execution(user, python_template):
    session = new_session(user, python_template)
    execution = execution_submit(session=session, language="python", code="print(1)")
    Execution.objects.filter(pk=execution.pk).update(
        status="running", worker="elsewhere:1", lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert execution_expire_leases() == 1
    stored = Execution.objects.get(pk=execution.pk)
    assert stored.status == "crashed" and "worker" in stored.error_message and "lost" in stored.error_message


def test_an_execution_of_a_dead_local_worker_crashes_before_its_lease_lapses(user, python_template):
    import socket
    import subprocess

    session = new_session(user, python_template)
    execution = execution_submit(session=session, language="python", code="print(1)")
    dead = subprocess.Popen(["true"])
    dead.wait()
    Execution.objects.filter(pk=execution.pk).update(
        status="running",
        worker=f"{socket.gethostname()}:{dead.pid}",
        lease_expires_at=timezone.now() + timedelta(minutes=5),
    )
    assert execution_expire_leases() == 1
    assert Execution.objects.get(pk=execution.pk).status == "crashed"
