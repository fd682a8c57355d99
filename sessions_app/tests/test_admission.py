"""Admission control of new sessions: per-owner memory quota (429) and host capacity (503 + Retry-After).

The sessions run on the fake runtime: what is under test is the control plane's admission, which decides
before any sandbox exists. The concurrency test races real creates on separate database connections; run
this file with DATABASE_URL=mysql://... as well, where the row locks do the work.
"""

from __future__ import annotations

import pytest

from conftest import at_once
from sessions_app.models import SandboxSession

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fake_runtime")]


def create(client, memory: str):
    return client.post("/api/v1/sessions", {"template_id": "python-basic", "memory": memory}, format="json")


def test_an_owner_past_their_session_memory_quota_gets_429_with_the_limit(settings, api, other_api):
    settings.SANDBOX_MAX_SESSION_MEMORY_PER_OWNER = 1024
    assert create(api, "512Mi").status_code == 201
    assert create(api, "512Mi").status_code == 201
    refused = create(api, "512Mi")
    assert refused.status_code == 429
    body = refused.json()
    assert body["error"] == "quota_exceeded"
    assert "limit of 1 GiB" in body["message"]
    assert set(body) >= {"error", "message", "detail", "request_id"}
    # Another owner's quota is their own.
    assert create(other_api, "1Gi").status_code == 201


def test_ending_a_session_gives_its_memory_back_to_the_owner(settings, api):
    settings.SANDBOX_MAX_SESSION_MEMORY_PER_OWNER = 1024
    first = create(api, "1Gi").json()["id"]
    assert create(api, "64Mi").status_code == 429
    assert api.post(f"/api/v1/sessions/{first}/terminate").status_code == 200
    assert create(api, "1Gi").status_code == 201


def test_sessions_past_host_memory_times_overcommit_get_503_with_retry_after(
    settings, make_api_client, django_user_model
):
    # The finding: 20 sessions x 8 GiB were accepted on a 24 GiB host. 24 GiB x 1.5 holds four of them.
    settings.SANDBOX_HOST_MEMORY = 24 * 1024
    settings.SANDBOX_MEMORY_OVERCOMMIT = 1.5
    settings.SANDBOX_CAPACITY_RETRY_AFTER = 30
    clients = [
        make_api_client(django_user_model.objects.create_user(username=f"tenant{i}")) for i in range(5)
    ]
    for client in clients[:4]:
        assert create(client, "8Gi").status_code == 201
    refused = create(clients[4], "8Gi")
    assert refused.status_code == 503
    assert refused.json()["error"] == "capacity_exhausted"
    assert "36 GiB" in refused.json()["message"]
    assert refused["Retry-After"] == "30"
    # A smaller session still fits in what is left.
    assert create(clients[4], "4Gi").status_code == 201
    assert SandboxSession.objects.live().count() == 5


def test_capacity_comes_from_meminfo_when_host_memory_is_not_set(settings, api):
    from sessions_app.admission import capacity_mib

    settings.SANDBOX_HOST_MEMORY = 0
    with open("/proc/meminfo") as meminfo:
        total_mib = int(meminfo.readline().split()[1]) // 1024
    assert capacity_mib() == int(total_mib * settings.SANDBOX_MEMORY_OVERCOMMIT)


def test_concurrent_creates_never_admit_more_than_the_capacity(settings, make_api_client, django_user_model):
    """Eight owners create at the same instant; exactly as many sessions as fit are admitted."""
    settings.SANDBOX_HOST_MEMORY = 1024
    settings.SANDBOX_MEMORY_OVERCOMMIT = 1.5  # room for three sessions of 512 MiB
    clients = [make_api_client(django_user_model.objects.create_user(username=f"racer{i}")) for i in range(8)]
    statuses = at_once([lambda client=client: create(client, "512Mi").status_code for client in clients])
    assert sorted(statuses) == [201] * 3 + [503] * 5, statuses
    assert SandboxSession.objects.live().count() == 3


def test_one_owner_racing_creates_gets_no_more_than_their_quota(settings, api):
    settings.SANDBOX_MAX_SESSION_MEMORY_PER_OWNER = 1024
    statuses = at_once([lambda: create(api, "512Mi").status_code] * 6)
    assert sorted(statuses) == [201] * 2 + [429] * 4, statuses


def test_the_console_shows_the_capacity_refusal_on_the_create_form(settings, client, user, builtin_templates):
    settings.SANDBOX_HOST_MEMORY = 256
    settings.SANDBOX_MEMORY_OVERCOMMIT = 1.0
    client.force_login(user)
    response = client.post("/sessions/new/", {"template_id": "python-basic", "memory": "512Mi"})
    assert response.status_code == 400
    assert "the platform is at capacity" in response.content.decode()
    assert not SandboxSession.objects.exists()
