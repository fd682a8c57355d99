"""Warm claims on the in-memory fake runtime: which sessions a warm sandbox may serve, by backend ability."""

from __future__ import annotations

import pytest

from runtime.fake import FakeRuntime
from sessions_app.models import SandboxSession, WarmSandbox
from sessions_app.sandboxes import runtime_named
from sessions_app.services import session_create, session_start
from sessions_app.warm_pool import warm_pool_refill

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fake_runtime")]


@pytest.fixture
def warm_one(python_template):
    """One ready warm sandbox of python-basic; the pool does not refill after a claim."""
    python_template.warm_pool_size = 1
    python_template.save()
    assert warm_pool_refill() == 1
    warm = WarmSandbox.objects.ready().get()
    python_template.warm_pool_size = 0
    python_template.save()
    return warm


def create(user, template, **asked):
    """A `creating` session asking for `asked` resources (max_processes is not an API field: set on the row)."""
    processes = asked.pop("max_processes", None)
    session = session_create(owner=user, template=template, **asked)
    if processes is not None:
        SandboxSession.objects.filter(pk=session.pk).update(max_processes=processes)
        session.refresh_from_db()
    return session


def test_a_resizing_backend_claims_for_any_resources_and_resizes(user, python_template, warm_one):
    session = create(user, python_template, memory_mb=256, max_processes=64)
    session_start(session=session)
    session.refresh_from_db()
    assert (session.status, session.container_id) == ("running", warm_one.container_id)
    resources = runtime_named("fake").sandboxes[warm_one.id].resources
    assert (resources.memory_mb, resources.max_processes) == (256, 64)


@pytest.mark.parametrize(
    "asked",
    [{"memory_mb": 256}, {"cpu": "0.25"}, {"disk_mb": 2048}, {"max_processes": 64}],
    ids=["memory", "cpu", "disk", "processes"],
)
def test_a_backend_that_cannot_resize_cold_starts_a_session_asking_for_other_resources(
    user, python_template, warm_one, monkeypatch, asked
):
    monkeypatch.setattr(FakeRuntime, "resizes_live", False)
    session = create(user, python_template, **asked)
    session_start(session=session)
    session.refresh_from_db()
    assert session.status == "running"
    assert session.container_id != warm_one.container_id
    assert WarmSandbox.objects.ready().get().pk == warm_one.pk  # still there for a matching session
    built = runtime_named("fake").sandboxes[warm_one.id].resources
    assert (built.memory_mb, built.max_processes) == (python_template.default_memory_mb, 128)


def test_a_backend_that_cannot_resize_claims_for_the_template_defaults_without_resizing(
    user, python_template, warm_one, monkeypatch
):
    monkeypatch.setattr(FakeRuntime, "resizes_live", False)
    built = runtime_named("fake").sandboxes[warm_one.id].resources
    session = create(user, python_template)
    session_start(session=session)
    session.refresh_from_db()
    assert (session.status, session.container_id) == ("running", warm_one.container_id)
    assert not WarmSandbox.objects.exists()
    # update_resources (which would store a new Resources) was not called: the sandbox keeps its own.
    assert runtime_named("fake").sandboxes[warm_one.id].resources is built
