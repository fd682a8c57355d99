"""LOG_FORMAT=json: one JSON object per line, with the request, session and execution ids and the owner.

The served end (every process of `serve`, uvicorn's own lines) is tested with the metrics in
test_metrics.py; these run in this process with the fake runtime, or start Django in a subprocess to see
what the settings do.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pytest

from sandbox_site.log_format import JsonFormatter, LogContextFilter, log_context
from sandbox_site.request_id import RequestIdLogFilter
from sandbox_site.tests.served_process import BASE_DIR

REQUEST_LOG = "sandbox_site.log_format.RequestLogMiddleware"


@pytest.fixture
def json_lines(settings):
    """Log records of every logger as the JSON handler writes them, and the request log middleware on."""
    settings.MIDDLEWARE = [
        *settings.MIDDLEWARE[:2],
        REQUEST_LOG,
        *settings.MIDDLEWARE[2:],
    ]
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdLogFilter())
    handler.addFilter(LogContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)

    def lines() -> list[dict]:
        return [json.loads(line) for line in sink.getvalue().splitlines()]

    yield lines
    root.removeHandler(handler)
    root.setLevel(old_level)


@pytest.mark.django_db(transaction=True)
def test_the_request_line_carries_request_session_and_execution_ids_and_the_owner(
    api, user, fake_runtime, json_lines
):
    created = api.post("/api/v1/sessions", {"template_id": "python-basic"}, format="json").json()
    response = api.post(
        f"/api/v1/sessions/{created['id']}/execute-sync",
        {"language": "python", "code": "print(1)"},
        format="json",
        HTTP_X_REQUEST_ID="req-json-1",
    )
    assert response.status_code == 200, response.json()
    lines = json_lines()
    requests = [line for line in lines if line["logger"] == "sandbox.request"]
    assert [(line["method"], line["status"]) for line in requests] == [("POST", 201), ("POST", 200)]
    line = requests[1]
    assert line["request_id"] == "req-json-1"
    assert line["session_id"] == created["id"]
    assert line["execution_id"] == response.json()["id"]
    assert line["owner"] == str(user.pk) and line["user"] == user.username
    assert line["path"] == f"/api/v1/sessions/{created['id']}/execute-sync"
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["message"].startswith("POST /api/v1/sessions/")
    assert requests[0]["request_id"] != "req-json-1"  # each request its own id


@pytest.mark.django_db(transaction=True)
def test_service_lines_carry_the_session_they_are_about(api, fake_runtime, json_lines):
    from sessions_app.models import SandboxSession
    from sessions_app.sandboxes import runtime_named

    runtime_named("fake").fail_next_create("fake runtime: no room", permanent=True)
    response = api.post(
        "/api/v1/sessions", {"template_id": "python-basic"}, format="json", HTTP_X_REQUEST_ID="req-json-2"
    )
    assert response.status_code == 503, response.json()  # the sandbox could not be started
    session = SandboxSession.objects.get()
    assert session.status == "failed"
    failures = [line for line in json_lines() if line["message"].startswith("provisioning session")]
    assert len(failures) == 1
    failure = failures[0]
    assert failure["level"] == "WARNING" and failure["logger"] == "sessions_app.services"
    # Provisioned by the task (inline here, as a worker would): it bound the session and its owner.
    assert failure["session_id"] == session.id
    assert failure["owner"] == str(session.owner_id)
    assert failure["request_id"] == "req-json-2"


def test_bound_ids_nest_and_end_with_their_block_and_extra_wins():
    sink = io.StringIO()
    logger = logging.getLogger("sandbox.test.json")
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(LogContextFilter())
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with log_context(session_id="s-1"):
            with log_context(execution_id="e-1"):
                logger.warning("inner")
            logger.warning("outer", extra={"session_id": "s-2", "duration_ms": 1.5})
        logger.warning("after")
        try:
            raise ValueError("broken")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    inner, outer, after, failed = (json.loads(line) for line in sink.getvalue().splitlines())
    assert (inner["session_id"], inner["execution_id"]) == ("s-1", "e-1")
    assert (outer["session_id"], outer["duration_ms"]) == ("s-2", 1.5) and "execution_id" not in outer
    assert "session_id" not in after and "request_id" not in after
    assert failed["level"] == "ERROR" and "ValueError: broken" in failed["exception"]


def _log_from_django(**env: str) -> subprocess.CompletedProcess:
    code = (
        "import django, logging; django.setup(); "
        "from django.conf import settings; "
        "print(settings.LOG_FORMAT, 'sandbox_site.log_format.RequestLogMiddleware' in settings.MIDDLEWARE); "
        "logging.getLogger('sandbox.check').warning('hello %s', 'there')"
    )
    environment = {k: v for k, v in os.environ.items() if k != "LOG_FORMAT"}
    environment.update(DJANGO_SETTINGS_MODULE="sandbox_site.settings", **env)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_plain_text_stays_the_default_and_json_is_one_object_per_line():
    plain = _log_from_django()
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.split() == ["plain", "False"]
    line = [text for text in plain.stderr.splitlines() if "sandbox.check" in text][0]
    assert line.endswith("WARNING [-] sandbox.check hello there")

    structured = _log_from_django(LOG_FORMAT="json")
    assert structured.returncode == 0, structured.stderr
    assert structured.stdout.split() == ["json", "True"]
    entries = [json.loads(text) for text in structured.stderr.splitlines()]
    check = [entry for entry in entries if entry["logger"] == "sandbox.check"]
    assert check == [{**check[0], "level": "WARNING", "message": "hello there"}]
    assert check[0]["time"].endswith("+00:00")

    wrong = _log_from_django(LOG_FORMAT="xml")
    assert wrong.returncode != 0 and "LOG_FORMAT='xml' is not one of: plain, json" in wrong.stderr
