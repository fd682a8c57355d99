from __future__ import annotations

import pytest

from sessions_app.models import SandboxSession

# Sessions are provisioned by a task enqueued after commit: these tests commit for real.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fake_runtime")]

README_BODY = {
    "template_id": "python-basic",
    "timeout": 300,
    "resources": {"cpu": "1", "memory": "512Mi", "disk": "1Gi"},
}


def create(api, **body):
    return api.post("/api/v1/sessions", {"template_id": "python-basic", **body}, format="json")


def test_create_takes_the_readme_request_with_nested_resources(api):
    response = api.post("/api/v1/sessions", README_BODY, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["id"].startswith("sess_") and body["status"] == "running"
    assert body["resource_limit"] == {"cpu": "1", "memory": "512Mi", "disk": "1Gi", "max_processes": 128}
    assert body["timeout"] == 300 and body["template_id"] == "python-basic"
    assert body["runtime_type"] == "python3.11" and body["sandbox_backend"] == "fake"
    assert body["termination_reason"] is None
    assert body["created_at"].endswith("Z")


def test_create_takes_flat_resources_and_template_defaults(api):
    body = create(api, cpu=0.5, memory=1024, disk="2Gi").json()
    assert body["resource_limit"]["cpu"] == "0.5"
    assert body["resource_limit"]["memory"] == "1Gi"
    assert body["resource_limit"]["disk"] == "2Gi"
    defaults = create(api).json()
    assert defaults["resource_limit"] == {"cpu": "1", "memory": "512Mi", "disk": "1Gi", "max_processes": 128}
    assert defaults["timeout"] == 300


def test_create_honours_a_client_id_and_refuses_a_duplicate_of_your_own(api, other_api):
    assert create(api, id="run-42").json()["id"] == "run-42"
    response = create(api, id="run-42")
    assert response.status_code == 409
    assert response.json()["error"] == "duplicate_id"
    # Ids are per owner: another owner's "run-42" is a different session, not a collision.
    assert create(other_api, id="run-42").status_code == 201
    assert SandboxSession.objects.filter(client_id="run-42").count() == 2


def test_create_keeps_env_metadata_and_dependencies(api):
    body = create(
        api,
        env_vars={"MODE": "test"},
        metadata={"team": "blue"},
        dependencies=[{"name": "requests", "version": "2.31.0"}, {"name": "Requests"}],
    ).json()
    assert body["env_vars"] == {"MODE": "test"}
    assert body["metadata"] == {"team": "blue"}
    assert body["requested_dependencies"] == [{"name": "Requests"}]
    # The install is queued once the sandbox runs; here the worker runs inline and the fake runtime installs.
    assert body["dependency_install_status"] == "completed"
    assert body["installed_dependencies"] == [{"name": "Requests", "version": "1.0.0"}]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"memory": "512MB"}, "memory"),
        ({"memory": "32Mi"}, "memory"),
        ({"memory": True}, "memory"),
        ({"cpu": "lots"}, "cpu"),
        ({"cpu": 9}, "cpu"),
        ({"disk": "100Gi"}, "disk"),
        ({"timeout": 5}, "timeout"),
        ({"timeout": "abc"}, "timeout"),
        ({"id": "../x"}, "id"),
        ({"env_vars": {"1BAD": "x"}}, "env_vars"),
        ({"env_vars": ["x"]}, "env_vars"),
        ({"metadata": {"k": 5}}, "metadata"),
        ({"dependencies": [{"name": "--index-url=http://evil"}]}, "dependencies"),
        ({"dependencies": [{"name": "ok", "version": "1.0; rm -rf /"}]}, "dependencies"),
        ({"dependencies": [{"name": f"p{i}"} for i in range(51)]}, "dependencies"),
        ({"python_package_index_url": "not a url"}, "python_package_index_url"),
        ({"resources": {"memory": "1 Gi"}}, "resources"),
        ({"memory": "1Gi", "resources": {"memory": "2Gi"}}, "memory"),
    ],
)
def test_create_refuses_bad_input_and_creates_nothing(api, body, field):
    response = create(api, **body)
    assert response.status_code == 400, response.json()
    error = response.json()
    assert error["error"] == "validation_error"
    assert field in error["detail"]
    assert error["request_id"]
    assert not SandboxSession.objects.exists()


def test_create_with_an_unknown_template_is_404(api):
    response = api.post("/api/v1/sessions", {"template_id": "cobol-basic"}, format="json")
    assert response.status_code == 404
    assert response.json()["error"] == "template_not_found"
    assert not SandboxSession.objects.exists()


def test_create_refuses_a_deactivated_template(api, python_template):
    python_template.is_active = False
    python_template.save()
    assert create(api).status_code == 409


def test_create_refuses_non_json_and_wrong_content_types(api):
    response = api.post("/api/v1/sessions", "{not json", content_type="application/json")
    assert response.status_code == 400 and response.json()["error"] == "validation_error"
    response = api.post(
        "/api/v1/sessions", "template_id=python-basic", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 415 and response.json()["error"] == "unsupported_media_type"
    response = api.post("/api/v1/sessions", [1, 2], format="json")
    assert response.status_code == 400
    assert not SandboxSession.objects.exists()


def test_the_session_quota_answers_429(api, settings):
    settings.SANDBOX_MAX_SESSIONS_PER_KEY = 2
    assert create(api).status_code == 201
    second = create(api).json()
    assert create(api).status_code == 429
    api.post(f"/api/v1/sessions/{second['id']}/terminate")
    assert create(api).status_code == 201


def test_list_filters_and_paginates_newest_first(api):
    ids = [create(api, metadata={"team": "red" if i % 2 else "blue"}).json()["id"] for i in range(5)]
    api.post(f"/api/v1/sessions/{ids[0]}/terminate")
    page = api.get("/api/v1/sessions?limit=2").json()
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 0 and page["has_more"] is True
    assert [s["id"] for s in page["items"]] == [ids[4], ids[3]]
    last = api.get("/api/v1/sessions?limit=2&offset=4").json()
    assert [s["id"] for s in last["items"]] == [ids[0]] and last["has_more"] is False
    assert {s["id"] for s in api.get("/api/v1/sessions?status=terminated").json()["items"]} == {ids[0]}
    assert {s["id"] for s in api.get("/api/v1/sessions?metadata.team=red").json()["items"]} == {
        ids[1],
        ids[3],
    }
    assert api.get("/api/v1/sessions?template_id=nodejs-basic").json()["total"] == 0


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "limit=x", "offset=-1", "status=sleeping"])
def test_list_refuses_bad_parameters(api, query):
    response = api.get(f"/api/v1/sessions?{query}")
    assert response.status_code == 400 and response.json()["error"] == "validation_error"


def test_get_terminate_keepalive_delete(api):
    session_id = create(api).json()["id"]
    assert api.get(f"/api/v1/sessions/{session_id}").json()["status"] == "running"
    before = SandboxSession.objects.get(pk=session_id).last_activity_at
    assert api.post(f"/api/v1/sessions/{session_id}/keepalive").status_code == 200
    assert SandboxSession.objects.get(pk=session_id).last_activity_at > before
    first = api.post(f"/api/v1/sessions/{session_id}/terminate")
    again = api.post(f"/api/v1/sessions/{session_id}/terminate")
    assert first.status_code == again.status_code == 200
    assert again.json()["status"] == "terminated" and again.json()["termination_reason"] == "user_request"
    keepalive = api.post(f"/api/v1/sessions/{session_id}/keepalive")
    assert keepalive.status_code == 409 and keepalive.json()["error"] == "session_not_running"
    assert api.delete(f"/api/v1/sessions/{session_id}").status_code == 204
    assert api.get(f"/api/v1/sessions/{session_id}").status_code == 404


def test_delete_of_a_live_session_removes_its_sandbox(api):
    from runtime.registry import get_runtime

    session_id = create(api).json()["id"]
    runtime = get_runtime("fake")
    assert any(h.session_id == session_id for h in runtime.list_managed())
    assert api.delete(f"/api/v1/sessions/{session_id}").status_code == 204
    assert not any(h.session_id == session_id for h in runtime.list_managed())
    assert not SandboxSession.objects.filter(pk=session_id).exists()


def test_dependencies_install_merges_by_name(api):
    session_id = create(api, dependencies=[{"name": "requests", "version": "2.31.0"}]).json()["id"]
    response = api.post(
        f"/api/v1/sessions/{session_id}/dependencies/install",
        {"dependencies": [{"name": "six"}, {"name": "requests", "version": ">=2.32"}]},
        format="json",
    )
    assert response.status_code == 202
    assert response.json()["requested_dependencies"] == [
        {"name": "requests", "version": ">=2.32"},
        {"name": "six"},
    ]
    bad = api.post(
        f"/api/v1/sessions/{session_id}/dependencies/install",
        {"dependencies": [{"name": "/etc"}]},
        format="json",
    )
    assert bad.status_code == 400


def test_another_owners_session_is_404_like_a_missing_one(api, other_api):
    session_id = create(api).json()["id"]
    missing = other_api.get("/api/v1/sessions/sess_doesnotexist00")
    for method, suffix in [
        ("get", ""),
        ("delete", ""),
        ("post", "/terminate"),
        ("post", "/keepalive"),
        ("get", "/files"),
        ("get", "/executions"),
        ("post", "/execute"),
    ]:
        response = getattr(other_api, method)(f"/api/v1/sessions/{session_id}{suffix}", {}, format="json")
        assert response.status_code == 404, (method, suffix)
        assert response.json()["error"] == missing.json()["error"] == "session_not_found"
    assert other_api.get("/api/v1/sessions").json()["total"] == 0
    assert SandboxSession.objects.get(pk=session_id).status == "running"


def test_staff_see_every_session(api, staff_api):
    session_id = create(api).json()["id"]
    assert staff_api.get(f"/api/v1/sessions/{session_id}").status_code == 200
    assert staff_api.get("/api/v1/sessions").json()["total"] == 1


def test_a_provisioning_failure_answers_503_and_keeps_the_failed_session(api):
    from runtime.registry import get_runtime

    get_runtime("fake").fail_next_create("engine down")
    response = create(api)
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "runtime_unavailable" and "engine down" in body["message"]
    session = SandboxSession.objects.get(pk=body["session_id"])
    assert session.status == "failed" and session.termination_reason == "provisioning_failed"
