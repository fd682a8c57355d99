"""API bodies and errors show container paths only: never the data dir, sockets or the install prefix."""

from __future__ import annotations

import json
import os

import pytest
from django.conf import settings

from sandbox_site.host_paths import public_text

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sessions_on_process")]


def body_of(response) -> str:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode("utf-8", "replace")
    return response.content.decode("utf-8", "replace")


def assert_no_host_paths(text: str) -> None:
    data_dir = str(settings.DATA_DIR)
    assert data_dir not in text and os.path.realpath(data_dir) not in text, text
    assert "/tmp/scp-" not in text, text
    assert str(settings.BASE_DIR) not in text, text
    assert "executor.sock" not in text, text


def test_session_bodies_show_the_container_workspace_only(api):
    created = api.post("/api/v1/sessions", {"template_id": "python-basic"}, format="json")
    assert created.status_code == 201, created.json()
    session_id = created.json()["id"]
    try:
        assert created.json()["workspace_path"] == "/workspace"
        assert_no_host_paths(body_of(created))
        assert_no_host_paths(body_of(api.get(f"/api/v1/sessions/{session_id}")))
        assert_no_host_paths(body_of(api.get("/api/v1/sessions")))
        assert_no_host_paths(body_of(api.get(f"/api/v1/sessions/{session_id}/files")))
    finally:
        api.post(f"/api/v1/sessions/{session_id}/terminate")


def test_runtime_failures_reach_clients_without_host_paths(api):
    from sessions_app.models import SandboxSession

    session_id = api.post("/api/v1/sessions", {"template_id": "python-basic"}, format="json").json()["id"]
    session = SandboxSession.objects.get(pk=session_id)
    assert str(settings.DATA_DIR) in session.executor_endpoint  # the host path exists, only hidden
    os.unlink(session.executor_endpoint)  # the executor is unreachable from now on
    try:
        listing = api.get(f"/api/v1/sessions/{session_id}/files")
        assert listing.status_code == 503 and listing.json()["error"] == "runtime_unavailable"
        assert "executor" in listing.json()["message"]
        assert_no_host_paths(body_of(listing))

        ran = api.post(
            f"/api/v1/sessions/{session_id}/execute-sync",
            {"code": "print(1)", "language": "python"},
            format="json",
        )
        assert_no_host_paths(body_of(ran))
        if ran.status_code == 200:
            assert ran.json()["error_message"], ran.json()
            executions = api.get(f"/api/v1/sessions/{session_id}/executions")
            assert_no_host_paths(body_of(executions))
        assert_no_host_paths(body_of(api.get(f"/api/v1/sessions/{session_id}")))
    finally:
        api.post(f"/api/v1/sessions/{session_id}/terminate")


def test_a_failed_sessions_stored_detail_has_no_host_paths(api, user, python_template):
    from sessions_app.models import SandboxSession

    session = SandboxSession.objects.create(owner=user, template=python_template)
    socket = f"{settings.DATA_DIR}/sandboxes/{session.id}/run/executor.sock"
    session.transition("failed", reason="provisioning_failed", detail=f"executor at {socket} did not answer")
    session.refresh_from_db()
    assert_no_host_paths(session.status_detail)
    assert "the sandbox's executor did not answer" in session.status_detail
    assert_no_host_paths(body_of(api.get(f"/api/v1/sessions/{session.id}")))


def test_public_text_replaces_the_servers_roots_and_keeps_container_paths():
    data_dir = str(settings.DATA_DIR)
    text = (
        f"pip failed writing {data_dir}/pip-cache/x.whl; see /workspace/out.txt and "
        f"/usr/lib/python3/dist-packages (executor at {data_dir}/run/executor.sock: upload answered 400: no)"
    )
    public = public_text(text)
    assert_no_host_paths(public)
    assert "/workspace/out.txt" in public and "/usr/lib/python3/dist-packages" in public
    assert "<data dir>" in public or "<package cache>" in public


def test_detailed_health_has_no_host_paths(client):
    response = client.get("/api/v1/health/detailed")
    assert_no_host_paths(json.dumps(response.json()))
