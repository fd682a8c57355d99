"""Lifecycle behaviour only pods have: eviction by the kubelet, fixed resources, the instance label.

The lifecycle tests every backend shares are in test_lifecycle.py (real_runtime, kubernetes included).
"""

from __future__ import annotations

import pytest

from executions_app.models import Execution
from executions_app.services import execution_run, execution_submit
from runtime import SandboxSpec
from runtime.kubernetes import KubernetesRuntime
from runtime.kubernetes import spec as ks
from sandbox_site.testing import wait_until
from sessions_app.lifecycle import sessions_sync_state
from sessions_app.models import SandboxSession, WarmSandbox
from sessions_app.sandboxes import handle_for, runtime_for, runtime_named
from sessions_app.services import session_create, session_provision, session_start
from sessions_app.warm_pool import warm_pool_refill

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sessions_on_kubernetes")]


def new_session(user, template, **fields):
    session = session_provision(session=session_create(owner=user, template=template, **fields))
    assert session.status == "running", session.status_detail
    return session


def pod_of(session):
    runtime = runtime_for(session)
    return runtime.core().read_namespaced_pod(handle_for(session).sandbox_id, runtime.namespace)


def test_a_session_whose_pod_was_evicted_ends_failed_container_lost(user, python_template):
    filler = new_session(user, python_template, disk_mb=32)
    code = "for i in range(20):\n    open(f'part{i}', 'wb').write(b'x' * (4 << 20))"
    execution_run(execution_submit(session=filler, language="python", code=code).id)
    runtime = runtime_for(filler)

    def evicted():
        state = runtime.inspect(handle_for(filler))
        return state if "Evicted" in state.detail else None

    state = wait_until(evicted, timeout=150, interval=1, what="the pod past its disk limit to be evicted")
    assert state.exists and not state.running  # the kubelet leaves the evicted pod's object behind
    assert sessions_sync_state() == {"orphans_destroyed": 0, "sessions_lost": 1}
    filler.refresh_from_db()
    assert (filler.status, filler.termination_reason) == ("failed", "container_lost")
    assert "Evicted" in filler.status_detail
    assert not runtime.inspect(handle_for(filler)).exists  # ending the session removed the pod


def test_state_sync_leaves_pods_of_another_control_plane_alone(user, python_template, settings):
    ours = new_session(user, python_template)
    runtime = runtime_for(ours)
    neighbour = KubernetesRuntime(
        namespace=runtime.namespace,
        instance=settings.SANDBOX_K8S_INSTANCE + "-neighbour",
        image_pull_policy=runtime.image_pull_policy,
    )
    theirs = neighbour.create(
        SandboxSpec(session_id=f"neighbour-{ours.id}", image=python_template.image_url, token="t")
    )
    try:
        assert sessions_sync_state() == {"orphans_destroyed": 0, "sessions_lost": 0}
        assert neighbour.inspect(theirs).exists
        neighbour.executor(theirs).health()
        assert [h.sandbox_id for h in runtime.list_managed()] == [ours.container_id]
    finally:
        neighbour.destroy(theirs)


def sandbox_container(pod):
    return next(c for c in pod.spec.containers if c.name == ks.CONTAINER)


def test_a_warm_pod_serves_only_the_resources_it_was_made_with(user, python_template):
    python_template.warm_pool_size = 1
    python_template.save()
    assert warm_pool_refill() == 1
    warm = WarmSandbox.objects.ready().get()
    python_template.warm_pool_size = 0  # no refill after the claim
    python_template.save()

    smaller = session_create(owner=user, template=python_template, memory_mb=256)
    session_start(session=smaller)
    smaller = SandboxSession.objects.get(pk=smaller.pk)
    assert smaller.status == "running" and smaller.container_id != warm.container_id
    limits = sandbox_container(pod_of(smaller)).resources.limits
    assert limits["memory"] == "256Mi"
    assert WarmSandbox.objects.ready().get().pk == warm.pk

    default = session_create(owner=user, template=python_template)
    session_start(session=default)
    default = SandboxSession.objects.get(pk=default.pk)
    assert (default.status, default.container_id) == ("running", warm.container_id)
    limits = sandbox_container(pod_of(default)).resources.limits
    assert limits["memory"] == f"{python_template.default_memory_mb}Mi"
    code = "def handler(event):\n    return 6 * 7"
    assert (
        execution_run(execution_submit(session=default, language="python", code=code).id).return_value == 42
    )


def test_a_worker_reconciles_pods_on_start_provisions_new_ones_and_runs_their_executions(
    user, python_template, start_worker, queued
):
    from django_q.tasks import async_task

    runtime = runtime_named("kubernetes")
    orphan = runtime.create(SandboxSpec(session_id="made-behind-our-back", image="", token="t"))
    start_worker()  # it syncs state on start, with this test's instance label
    wait_until(lambda: not runtime.inspect(orphan).exists, what="the orphan pod to be deleted")
    session = session_create(owner=user, template=python_template)
    session_start(session=session)  # queued: the worker provisions the pod
    session = wait_until(
        lambda: SandboxSession.objects.exclude(status="creating").filter(pk=session.pk).first(),
        what="the worker to provision the session",
    )
    assert session.status == "running", session.status_detail
    execution = execution_submit(session=session, language="python", code="def handler(e):\n    return 'pod'")
    async_task("executions_app.tasks.execution_run_task", execution.id)
    done = wait_until(
        lambda: Execution.objects.filter(pk=execution.pk, status="completed").first(),
        what="the worker to run the execution",
    )
    assert done.return_value == "pod"
