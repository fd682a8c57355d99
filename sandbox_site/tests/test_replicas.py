"""Stateless replicas: two web processes and two workers on one database, one Redis and one S3 bucket.

Replica A and replica B are each a web server (`manage.py serve --no-workers`) and a worker
(`manage.py run_worker`), as two pods of the Helm chart would be. They share only what deployment docs say
must be shared: the database, Redis (channel layer and task broker), the S3 bucket (moto's server on
loopback) and the sandbox runtime. The runtime here is Docker on this host, whose state is the engine plus
the sandboxes' socket directory under SANDBOX_DATA_DIR, so replicas on one Docker host share that directory;
on Kubernetes the cluster is the record and nothing else is shared.

A session created through A runs an execution submitted through B while a websocket on A streams it. The
execution prints half its lines, then waits for a file that is uploaded through B only after A has been
killed, so A dies mid-stream by construction (not by timing). The client reconnects to B with `?after=`
and must get the rest, each line once. Then the session must still be whole: B serves it, B's worker alone
runs its next execution after A's worker is killed too, and its workspace ends up in the bucket.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket  # websocket-client (a dependency of the kubernetes client)
from served_process import BASE_DIR, Served, free_port, stop, wait_for_health

from sandbox_site.testing import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker, pytest.mark.slow]

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
FIRST_HALF, SECOND_HALF = range(0, 5), range(5, 10)
# Prints the first half, waits for the file `go` in its workspace, prints the second half.
GATED_PRINTER = f"""import os, time
for i in {FIRST_HALF!r}:
    print(f"line {{i}}", flush=True)
while not os.path.exists("go"):
    time.sleep(0.05)
for i in {SECOND_HALF!r}:
    print(f"line {{i}}", flush=True)
"""


class Client:
    """The REST API of one replica, with an API key."""

    def __init__(self, served: Served, key: str) -> None:
        self.served, self.key = served, key

    def call(self, method: str, path: str, expect: tuple[int, ...] = (200, 201), **kwargs: Any) -> Any:
        response = requests.request(
            method,
            f"{self.served.url}/api/v1{path}",
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=60,
            **kwargs,
        )
        assert response.status_code in expect, (method, path, response.status_code, response.text[:2000])
        return response.json() if response.content else None

    def websocket(self, execution_id: str, after: int = 0) -> websocket.WebSocket:
        return websocket.create_connection(
            f"ws://127.0.0.1:{self.served.port}/ws/executions/{execution_id}/?after={after}",
            header=[f"Authorization: Bearer {self.key}"],
            timeout=60,
        )


def kill_tree(served: Served) -> None:
    """SIGKILL `serve` and everything under it (uvicorn's supervisor and web process), as a node loss would."""
    for pid in served.tree():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    served.process.wait(timeout=30)


@pytest.fixture
def shared(settings, sessions_on_docker, moto_server) -> dict[str, str]:
    """The environment every replica gets: one database, Redis, bucket, secret key and Docker data dir."""
    from conftest import database_url_of_test_db

    return {
        "DATABASE_URL": database_url_of_test_db(),
        "REDIS_URL": REDIS_URL,
        "SANDBOX_DATA_DIR": str(settings.DATA_DIR),
        "SANDBOX_RUNTIME": "docker",
        "SANDBOX_S3_BUCKET": f"replicas-{uuid.uuid4().hex[:12]}",
        "SANDBOX_S3_ENDPOINT_URL": moto_server,
        "SANDBOX_S3_ACCESS_KEY_ID": "testing",
        "SANDBOX_S3_SECRET_ACCESS_KEY": "testing",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "SANDBOX_WORKERS": "2",
        "SANDBOX_PROVISION_WORKERS": "1",
        "SANDBOX_WEB_WORKERS": "1",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def start_web(shared, settings) -> Iterator[Any]:
    """Start `manage.py serve --no-workers` (one web process) with the shared environment; stopped at the end."""
    started: list[Served] = []

    def start(name: str) -> Served:
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        env.update(shared, LOG_LEVEL="WARNING")
        port = free_port()
        log = Path(settings.DATA_DIR) / f"web-{name}.log"
        command = [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)]
        with open(log, "ab") as sink:
            process = subprocess.Popen(
                [*command, "--no-workers"],
                cwd=BASE_DIR,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        served = Served(
            url=f"http://127.0.0.1:{port}",
            port=port,
            process=process,
            data_dir=Path(settings.DATA_DIR),
            log=log,
        )
        started.append(served)
        wait_for_health(served)
        return served

    yield start
    for served in started:
        stop(served)
        print(f"--- web {served.log.name} ---\n{served.log.read_text()[-4000:]}")


def read_until_result(client: websocket.WebSocket, lines: list[str], seqs: list[int]) -> dict[str, Any]:
    """Collect stdout lines and chunk seqs from the socket until the result arrives."""
    while True:
        message = json.loads(client.recv())
        if message["type"] == "output":
            seqs.append(message["seq"])
            if message["stream"] == "stdout":
                lines.extend(message["data"].splitlines())
        elif message["type"] == "result":
            return message
        elif message["type"] == "error":
            pytest.fail(f"the websocket refused: {message}")


def test_a_replica_killed_mid_stream_loses_no_output_and_no_session(
    shared, start_web, start_worker, user, builtin_templates
):
    from sessions_app.models import ApiKey

    _, key = ApiKey.objects.create_key(owner=user, name="replicas")
    worker_a = start_worker(**shared)
    start_worker(**shared)
    a = Client(start_web("a"), key)
    b = Client(start_web("b"), key)

    session = a.call("POST", "/sessions", json={"template_id": "python-basic"})
    session_id = session["id"]
    if session["status"] == "creating":
        session = wait_until(
            lambda: (s := b.call("GET", f"/sessions/{session_id}"))["status"] != "creating" and s,
            what="the session to leave creating",
        )
    assert session["status"] == "running", session
    import docker

    engine = docker.DockerClient(version="auto", timeout=30)
    containers = engine.containers.list(filters={"label": f"sandbox.session={session_id}"})
    engine.close()
    assert [c.id for c in containers] == [session["container_id"]], (containers, session)

    execution = b.call(
        "POST",
        f"/sessions/{session_id}/execute",
        json={"language": "python", "code": GATED_PRINTER, "timeout": 120},
    )
    execution_id = execution["execution_id"]

    # The first half arrives on A's websocket; the execution then waits, so A dies mid-stream.
    lines: list[str] = []
    seqs: list[int] = []
    on_a = a.websocket(execution_id)
    try:
        while len(lines) < len(FIRST_HALF):
            message = json.loads(on_a.recv())
            assert message["type"] in ("status", "output"), message
            if message["type"] == "output":
                seqs.append(message["seq"])
                if message["stream"] == "stdout":
                    lines.extend(message["data"].splitlines())
        assert lines == [f"line {i}" for i in FIRST_HALF], lines
        kill_tree(a.served)
        with pytest.raises((websocket.WebSocketException, OSError)):
            on_a.recv()  # the socket died with A
    finally:
        on_a.close()
    assert b.call("GET", f"/executions/{execution_id}")["status"] == "running"

    # The client goes to B for the rest; the gate opens through B.
    on_b = b.websocket(execution_id, after=seqs[-1])
    try:
        b.call("POST", f"/sessions/{session_id}/files/upload", params={"path": "go"}, files={"file": b"go\n"})
        result = read_until_result(on_b, lines, seqs)
    finally:
        on_b.close()
    assert result["status"] == "completed", result
    assert lines == [f"line {i}" for i in (*FIRST_HALF, *SECOND_HALF)], lines
    assert seqs == sorted(set(seqs)), seqs  # every chunk once, in order
    stored = b.call("GET", f"/executions/{execution_id}")
    assert stored["stdout"].splitlines() == lines, stored

    # The session outlives replica A: its worker goes too, and B alone runs the next execution.
    worker_a.send_signal(signal.SIGKILL)
    worker_a.wait(timeout=30)
    assert b.call("GET", f"/sessions/{session_id}")["status"] == "running"
    second = b.call(
        "POST",
        f"/sessions/{session_id}/execute",
        json={"language": "python", "code": "print(open('go').read().strip() * 2)"},
    )
    done = wait_until(
        lambda: (
            (e := b.call("GET", f"/executions/{second['execution_id']}"))["status"]
            not in ("pending", "running")
            and e
        ),
        what="replica B's worker to run the next execution",
    )
    assert (done["status"], done["stdout"]) == ("completed", "gogo\n"), done

    # Its workspace is in the shared bucket once it ends, and B serves it from there.
    b.call("POST", f"/sessions/{session_id}/terminate")
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=shared["SANDBOX_S3_ENDPOINT_URL"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    keys = [
        item["Key"]
        for item in s3.list_objects_v2(
            Bucket=shared["SANDBOX_S3_BUCKET"], Prefix=f"sessions/{session_id}/"
        ).get("Contents", [])
    ]
    assert f"sessions/{session_id}/workspace/go" in keys, keys
    listed = b.call("GET", f"/sessions/{session_id}/files")
    assert "go" in [entry["name"] for entry in listed["files"]], listed
