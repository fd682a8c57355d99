"""/metrics: who may read it, what a scripted run of creates and executions leaves in it (read with
prometheus_client's own text-format parser), and values from every process of `manage.py serve`."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from sandbox_site.testing import wait_until
from sandbox_site.tests.served_process import serve_test_database

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when there are none)."""
    wanted = set(labels.items())
    return sum(v for (n, sample_labels), v in samples.items() if n == name and wanted <= sample_labels)


def present(samples: Samples, name: str, **labels: str) -> bool:
    wanted = set(labels.items())
    return any(n == name and wanted <= sample_labels for (n, sample_labels) in samples)


def scrape(client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(response.content.decode())


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


# --- who may read it -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_loopback_reads_the_metrics_by_default_and_other_addresses_get_403(client):
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    refused = client.get("/metrics", REMOTE_ADDR="203.0.113.7")
    assert refused.status_code == 403
    body = refused.json()
    assert body["error"] == "forbidden" and "SANDBOX_METRICS_ALLOW" in body["message"]
    assert body["request_id"] == refused["X-Request-ID"]
    # A scraper that asks for OpenMetrics gets it.
    openmetrics = client.get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert openmetrics["Content-Type"].startswith("application/openmetrics-text")
    assert openmetrics.content.rstrip().endswith(b"# EOF")


@pytest.mark.django_db
def test_the_token_opens_the_metrics_from_anywhere_and_a_wrong_one_is_401(client, settings):
    settings.SANDBOX_METRICS_TOKEN = "metrics-secret-1"
    settings.SANDBOX_METRICS_ALLOW = "10.0.0.0/8"
    far = {"REMOTE_ADDR": "203.0.113.7"}
    ok = client.get("/metrics", HTTP_AUTHORIZATION="Bearer metrics-secret-1", **far)
    assert ok.status_code == 200 and b"# TYPE" in ok.content
    for header in ("Bearer metrics-secret-2", "Basic bWV0cmljczpzZWNyZXQ=", "Bearer "):
        wrong = client.get("/metrics", HTTP_AUTHORIZATION=header, **far)
        assert wrong.status_code == 401, header
        assert wrong["WWW-Authenticate"].startswith("Bearer")
    # No header: the address decides, and outside the allow list the answer asks for the token.
    missing = client.get("/metrics", **far)
    assert missing.status_code == 401 and "SANDBOX_METRICS_TOKEN" in missing.json()["message"]
    assert client.get("/metrics", REMOTE_ADDR="10.20.30.40").status_code == 200
    # Loopback is no longer in the list, and a wrong token is refused even from an allowed address.
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401
    wrong_inside = client.get("/metrics", REMOTE_ADDR="10.20.30.40", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong_inside.status_code == 401


@pytest.mark.django_db
def test_staff_may_read_the_metrics_but_not_users_or_api_keys(
    client, settings, staff_user, user, make_api_client
):
    settings.SANDBOX_METRICS_ALLOW = "none"
    far = {"REMOTE_ADDR": "203.0.113.7"}
    assert client.get("/metrics", **far).status_code == 403
    api_key = make_api_client(user).raw_key
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {api_key}", **far).status_code == 401
    client.force_login(user)
    assert client.get("/metrics", **far).status_code == 403
    client.force_login(staff_user)
    assert client.get("/metrics", **far).status_code == 200


def test_a_malformed_allow_list_stops_start_up():
    import os
    import subprocess
    import sys

    from sandbox_site.tests.served_process import BASE_DIR

    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=BASE_DIR,
        env={**os.environ, "SANDBOX_METRICS_ALLOW": "127.0.0.1,10.0.0.x"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "SANDBOX_METRICS_ALLOW: '10.0.0.x' is not an IP address or network" in result.stderr


# --- what a scripted run leaves in it --------------------------------------------------------------------


def _create(api) -> dict:
    response = api.post("/api/v1/sessions", {"template_id": "python-basic"}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["status"] == "running", response.json()
    return response.json()


def _execute(api, session: dict, language: str, code: str) -> dict:
    response = api.post(
        f"/api/v1/sessions/{session['id']}/execute-sync",
        {"language": language, "code": code},
        format="json",
    )
    assert response.status_code == 200, response.json()
    return response.json()


@pytest.mark.django_db(transaction=True)
def test_a_scripted_run_of_creates_and_executions_shows_in_the_metrics(
    api, client, user, sessions_on_process, builtin_templates, make_session
):
    from sessions_app.lifecycle import sessions_probe, sessions_sweep
    from sessions_app.models import SandboxSession
    from sessions_app.warm_pool import warm_pool_refill, warm_pool_trim
    from templates_app.models import SandboxTemplate

    before = scrape(client)

    # A warm start: the pool holds one ready sandbox, which the create claims.
    SandboxTemplate.objects.filter(pk="python-basic").update(warm_pool_size=1)
    warm_pool_refill(template_id="python-basic")
    pool = scrape(client)
    assert value(pool, "sandbox_warm_pool_target", template="python-basic") == 1
    assert value(pool, "sandbox_warm_pool_sandboxes", template="python-basic", state="ready") == 1
    warm = _create(api)
    # A cold start: no pool any more.
    SandboxTemplate.objects.filter(pk="python-basic").update(warm_pool_size=0)
    warm_pool_trim(SandboxTemplate.objects.get(pk="python-basic"))
    cold = _create(api)

    assert _execute(api, warm, "python", "print('x' * 10)")["status"] == "completed"
    assert _execute(api, cold, "python", "raise ValueError('no')")["status"] == "failed"
    assert _execute(api, cold, "shell", "echo hello")["status"] == "completed"
    assert api.post(f"/api/v1/sessions/{warm['id']}/terminate").status_code == 200

    # Housekeeping: a session past its idle deadline is swept; one whose sandbox never answers fails a probe.
    idle = make_session(user, status="running", runtime_type="process")
    SandboxSession.objects.filter(pk=idle.pk).update(idle_deadline_at=timezone.now() - timedelta(seconds=5))
    make_session(user, status="running", runtime_type="process", container_id="gone", executor_endpoint="/x")
    sessions_sweep()
    sessions_probe()

    after = scrape(client)
    for start in ("warm", "cold"):
        labels = {"template": "python-basic", "start": start}
        assert delta(before, after, "sandbox_session_creates_total", result="success", **labels) == 1
        assert delta(before, after, "sandbox_session_create_duration_seconds_count", **labels) == 1
        assert delta(before, after, "sandbox_session_create_duration_seconds_sum", **labels) > 0
        # The slowest bucket holds it, and no bucket holds more than the count.
        assert (
            delta(before, after, "sandbox_session_create_duration_seconds_bucket", le="+Inf", **labels) == 1
        )
    running = SandboxSession.objects.filter(
        status="running", template_id="python-basic", runtime_type="process"
    ).count()
    assert running >= 2
    gauge = value(after, "sandbox_sessions", status="running", template="python-basic", runtime="process")
    assert gauge == running
    # Templates without live sessions read 0, not nothing.
    assert present(after, "sandbox_sessions", status="running", template="nodejs-basic")
    assert value(after, "sandbox_sessions", template="nodejs-basic") == 0
    assert value(after, "sandbox_sessions", status="creating", template="python-basic") == 0
    assert value(after, "sandbox_memory_limit_bytes", template="python-basic") > 0
    assert value(after, "sandbox_cpu_limit_cores", template="python-basic") > 0

    python_ok = {"language": "python", "status": "completed"}
    assert delta(before, after, "sandbox_execution_duration_seconds_count", **python_ok) == 1
    assert (
        delta(before, after, "sandbox_execution_duration_seconds_count", language="python", status="failed")
        == 1
    )
    assert (
        delta(before, after, "sandbox_execution_duration_seconds_count", language="shell", status="completed")
        == 1
    )
    assert (
        delta(before, after, "sandbox_execution_output_bytes_total", language="python", stream="stdout") == 11
    )
    assert (
        delta(before, after, "sandbox_execution_output_bytes_total", language="shell", stream="stdout") == 6
    )
    assert (
        delta(before, after, "sandbox_execution_output_bytes_total", language="python", stream="stderr") > 0
    )

    finished = "sandbox_sessions_finished_total"
    assert (
        delta(before, after, finished, template="python-basic", status="terminated", reason="user_request")
        == 1
    )
    assert (
        delta(before, after, finished, template="python-basic", status="terminated", reason="idle_timeout")
        == 1
    )
    assert delta(before, after, "sandbox_sweep_actions_total", action="idle_timeout") == 1
    assert delta(before, after, "sandbox_probe_failures_total", runtime="process") == 1
    for queue in ("default", "provision"):
        assert present(after, "sandbox_task_queue_depth", queue=queue)
        assert value(after, "sandbox_task_queue_depth", queue=queue) >= 0

    # django-prometheus: requests by method and by view and status, queries by database.
    assert delta(before, after, "django_http_requests_total_by_method_total", method="POST") >= 6
    statuses = "django_http_responses_total_by_status_view_method_total"
    assert delta(before, after, statuses, status="201", method="POST") == 2
    assert delta(before, after, "django_db_execute_total", alias="default") > 0
    assert delta(before, after, "django_db_query_duration_seconds_count", alias="default") > 0
    assert value(after, "django_db_new_connections_total", alias="default") >= 1


@pytest.mark.django_db(transaction=True)
def test_dependency_installs_and_failed_starts_are_counted(api, client, fake_runtime):
    from sessions_app.sandboxes import runtime_named

    before = scrape(client)
    for version in ("2.0.0", "0.0.0"):  # the fake runtime fails a pin to 0.0.0 as pip would
        response = api.post(
            "/api/v1/sessions",
            {"template_id": "python-basic", "dependencies": [{"name": "fakepkg", "version": version}]},
            format="json",
        )
        assert response.status_code == 201, response.json()
    runtime_named("fake").fail_next_create("no room", permanent=True)
    failed = api.post("/api/v1/sessions", {"template_id": "python-basic"}, format="json")
    assert failed.status_code == 503, failed.json()  # the sandbox could not be started
    after = scrape(client)
    assert delta(before, after, "sandbox_dependency_install_duration_seconds_count", result="completed") == 1
    assert delta(before, after, "sandbox_dependency_install_duration_seconds_count", result="failed") == 1
    cold = {"template": "python-basic", "start": "cold"}
    assert delta(before, after, "sandbox_session_creates_total", result="failure", **cold) == 1
    assert delta(before, after, "sandbox_session_creates_total", result="success", **cold) == 2
    assert delta(before, after, "sandbox_session_create_duration_seconds_count", **cold) == 2
    reason = {"status": "failed", "reason": "provisioning_failed"}
    assert delta(before, after, "sandbox_sessions_finished_total", template="python-basic", **reason) == 1


# --- every process of `serve` ------------------------------------------------------------------------------


def _request(url: str, *, method: str = "GET", body: dict | None = None, headers: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _pids(names: Iterable[str]) -> set[int]:
    return {int(name.rsplit("_", 1)[1].removesuffix(".db")) for name in names if name.endswith(".db")}


@pytest.mark.django_db(transaction=True)
def test_serve_adds_up_every_process_and_logs_json_lines(
    django_db_blocker, user, builtin_templates, tmp_path
):
    """One real `serve` (web process and workers) with JSON logs: values written by the provisioning worker
    and the execution stream pool show up at /metrics beside the web process's, stale files of an earlier
    run are gone, and every log line of every process is one JSON object carrying the ids."""
    from executions_app.models import Execution
    from sessions_app.models import ApiKey

    _, raw_key = ApiKey.objects.create_key(owner=user, name="metrics")
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"\0" * 64)  # a previous run's leftovers
    token = "serve-metrics-token"
    api = {"Authorization": f"Bearer {raw_key}"}
    with serve_test_database(
        django_db_blocker,
        workers=True,
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        SANDBOX_WEB_WORKERS="1",
        SANDBOX_METRICS_TOKEN=token,
        SANDBOX_METRICS_ALLOW="none",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    ) as served:
        assert not (metrics_dir / "counter_999999.db").exists()
        assert _request(f"{served.url}/metrics")[0] == 401

        status, _, body = _request(
            f"{served.url}/api/v1/sessions", method="POST", body={"template_id": "python-basic"}, headers=api
        )
        assert status == 201, body
        session = json.loads(body)
        assert session["status"] == "running", session
        base = f"{served.url}/api/v1/sessions/{session['id']}"
        status, _, body = _request(
            f"{base}/execute", method="POST", body={"language": "python", "code": "print(1)"}, headers=api
        )
        assert status == 201, body
        queued = json.loads(body)["execution_id"]
        status, headers, body = _request(
            f"{base}/execute-sync",
            method="POST",
            body={"language": "python", "code": "print(2)"},
            headers={**api, "X-Request-ID": "metrics-json-1"},
        )
        assert status == 200, body
        inline = json.loads(body)["id"]

        def finished() -> bool:
            return (
                json.loads(_request(f"{served.url}/api/v1/executions/{queued}", headers=api)[2])["status"]
                == "completed"
            )

        wait_until(
            finished,
            what="the queued execution to complete in the stream pool",
            timeout=120,  # the pool starts with the worker, which serve does not wait for
            context=lambda: served.log.read_text()[-6000:],
        )
        with django_db_blocker.unblock():
            workers = dict(Execution.objects.filter(pk__in=[queued, inline]).values_list("pk", "worker"))
        # Two processes ran the two executions: the stream pool the queued one, the web process the other.
        assert workers[queued].rsplit(":", 1)[1] != workers[inline].rsplit(":", 1)[1]

        status, headers, body = _request(
            f"{served.url}/metrics", headers={"Authorization": f"Bearer {token}"}
        )
        assert status == 200, body
        samples = parse(body.decode())
        ok = {"language": "python", "status": "completed"}
        assert value(samples, "sandbox_execution_duration_seconds_count", **ok) == 2
        assert value(samples, "sandbox_execution_output_bytes_total", language="python", stream="stdout") == 4
        cold = {"template": "python-basic", "start": "cold"}
        assert (
            value(samples, "sandbox_session_create_duration_seconds_count", **cold) == 1
        )  # provisioning worker
        assert value(samples, "sandbox_sessions", status="running", template="python-basic") == 1
        assert value(samples, "django_http_requests_total_by_method_total", method="POST") >= 3
        files = [path.name for path in Path(metrics_dir).iterdir()]
        assert len(_pids(files)) >= 3, files  # web, provisioning worker, stream pool (and more)

        def request_line() -> dict | None:
            for line in served.log.read_text().splitlines():
                if '"metrics-json-1"' in line and '"sandbox.request"' in line:
                    return json.loads(line)
            return None

        line = wait_until(request_line, what="the execute-sync request's log line")
        lines = [text for text in served.log.read_text().splitlines() if text.strip()]

    assert line["request_id"] == "metrics-json-1"
    assert line["method"] == "POST" and line["status"] == 200
    assert line["path"] == f"/api/v1/sessions/{session['id']}/execute-sync"
    assert line["execution_id"] == inline
    assert line["session_id"] == session["id"]  # the internal id: the same when the owner chose none
    assert line["owner"] == str(user.pk)
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
    not_json = [text for text in lines if not text.startswith("{")]
    assert not not_json, not_json  # every line of every process is one JSON object
    parsed = [json.loads(text) for text in lines]
    loggers = {entry["logger"] for entry in parsed}
    assert {"sandbox.request", "django-q"} <= loggers, loggers
    assert any(entry["logger"].startswith("uvicorn") for entry in parsed), loggers
