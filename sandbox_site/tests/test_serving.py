"""`manage.py serve` as `make run` starts it: uvicorn with several web processes plus the worker, on the
embedded default (SQLite, in-process channel layer, bubblewrap sandboxes).

With the in-process channel layer a web process hears nothing that another process broadcasts, so live
output must reach every websocket through the database poll of its consumer, whichever web process holds
it: here the execution runs in the worker, and several sockets (spread over the web processes by the
kernel) must each receive every line and the result.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import websocket  # websocket-client (a dependency of the kubernetes client)
from served_process import Served, children_of, command_line, serve_test_database, stop, wait_for_health

from sandbox_site.testing import wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed"),
]

WEB_PROCESSES = 2
PRINTER = """import time
for i in range(6):
    print(f"line {i}", flush=True)
    time.sleep(0.3)
"""


@pytest.fixture(scope="module")
def served(django_db_setup, django_db_blocker) -> Iterator[Served]:
    with serve_test_database(
        django_db_blocker,
        workers=True,
        SANDBOX_WEB_WORKERS=str(WEB_PROCESSES),
        SANDBOX_WORKERS="2",
    ) as live:
        yield live


def web_processes(served: Served) -> list[int]:
    """uvicorn's web processes: its supervisor's children, less multiprocessing's resource tracker."""
    supervisors = [pid for pid in served.tree() if "uvicorn" in command_line(pid)]
    assert len(supervisors) == 1, [command_line(pid) for pid in served.tree()]
    return [
        pid
        for pid in children_of(supervisors[0])
        if not any("resource_tracker" in part for part in command_line(pid))
    ]


def call(served: Served, key: str, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{served.url}/api/v1{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_serve_runs_the_configured_number_of_web_processes(served):
    assert len(web_processes(served)) == WEB_PROCESSES, [command_line(pid) for pid in served.tree()]


def test_live_output_reaches_websockets_on_every_web_process(served, user, builtin_templates):
    from sessions_app.models import ApiKey

    _, key = ApiKey.objects.create_key(owner=user, name="serving")
    status, session = call(served, key, "POST", "/sessions", {"template_id": "python-basic"})
    assert status in (200, 201, 202), session
    session_id = session["id"]

    def started() -> dict | None:
        body = call(served, key, "GET", f"/sessions/{session_id}")[1]
        return body if body["status"] != "creating" else None

    if session["status"] == "creating":
        session = wait_until(started, timeout=90, interval=0.2, what="the session to leave creating")
    assert session["status"] == "running", session
    try:
        status, execution = call(
            served,
            key,
            "POST",
            f"/sessions/{session['id']}/execute",
            {"language": "python", "code": PRINTER, "timeout": 60},
        )
        assert status in (200, 201, 202), execution
        ws_url = f"ws://127.0.0.1:{served.port}/ws/executions/{execution['execution_id']}/"
        # Several sockets, so that the web processes (which share the listening socket) each get some.
        sockets = [
            websocket.create_connection(ws_url, header=[f"Authorization: Bearer {key}"], timeout=60)
            for _ in range(4 * WEB_PROCESSES)
        ]
        try:
            for client in sockets:
                lines: list[str] = []
                result = None
                while result is None:
                    message = json.loads(client.recv())
                    if message["type"] == "output" and message["stream"] == "stdout":
                        lines.extend(message["data"].splitlines())
                    elif message["type"] == "result":
                        result = message
                    elif message["type"] == "error":
                        pytest.fail(f"the websocket refused: {message}")
                assert result["status"] == "completed", result
                assert lines == [f"line {i}" for i in range(6)], lines
        finally:
            for client in sockets:
                client.close()
    finally:
        call(served, key, "POST", f"/sessions/{session['id']}/terminate")


def test_a_web_process_that_dies_is_replaced(served):
    before = web_processes(served)
    os.kill(before[0], signal.SIGKILL)

    def replaced() -> list[int]:
        now = web_processes(served)
        return now if len(now) == WEB_PROCESSES and before[0] not in now else []

    wait_until(replaced, interval=0.2, what=f"uvicorn to replace web process {before[0]} of {before}")
    for _ in range(4 * WEB_PROCESSES):  # every process answers (connections are spread over them)
        wait_for_health(served, timeout=30)


def test_one_sigterm_stops_every_process_of_serve(django_db_setup, django_db_blocker):
    with serve_test_database(django_db_blocker, workers=True, SANDBOX_WEB_WORKERS="2") as live:
        pids = live.tree()
        assert len(pids) >= 4, [command_line(pid) for pid in pids]  # serve, uvicorn, 2 web, worker...
        os.killpg(live.process.pid, signal.SIGTERM)
        assert live.process.wait(timeout=30) == 0

        def alive() -> list[int]:
            return [pid for pid in pids if os.path.exists(f"/proc/{pid}") and not _zombie(pid)]

        wait_until(
            lambda: not alive(),
            interval=0.1,
            what="every process of serve to end after SIGTERM",
            context=lambda: f"still running: {alive()}",
        )
        stop(live)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False
