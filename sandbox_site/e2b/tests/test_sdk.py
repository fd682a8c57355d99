"""The real, unmodified E2B SDKs (`e2b`, `e2b-code-interpreter`) against a served product (`manage.py serve`,
uvicorn and the workers, as `make run` starts it), on bubblewrap processes and on Docker containers.

One server for the module: the Docker runs use a template whose backend is docker, so both backends share it.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2b import Sandbox as BaseSandbox
from e2b.exceptions import NotFoundException, SandboxException, SandboxNotFoundException, TimeoutException
from e2b.sandbox.commands.command_handle import CommandExitException
from e2b_code_interpreter import Sandbox

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from served_process import Served, serve_test_database  # noqa: E402

from sandbox_site.testing import wait_until  # noqa: E402

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed"),
]

BACKENDS = ["process", pytest.param("docker", marks=pytest.mark.docker)]


@pytest.fixture(scope="module")
def served(django_db_setup, django_db_blocker) -> Iterator[Served]:
    with serve_test_database(
        django_db_blocker, workers=True, SANDBOX_WEB_WORKERS="1", SANDBOX_WORKERS="1"
    ) as live:
        yield live


@pytest.fixture(params=BACKENDS)
def template(request, builtin_templates) -> str:
    """The template to create sandboxes from: E2B's default alias on processes, a docker-backed copy of the
    Python template on Docker."""
    if request.param == "process":
        return "code-interpreter-v1"
    from runtime.tests.test_docker_support import PYTHON_IMAGE, require

    require(PYTHON_IMAGE)
    copy = builtin_templates["python-basic"]
    copy.pk, copy.name, copy.sandbox_backend, copy.image_url = (
        "e2b-docker",
        "E2B on Docker",
        "docker",
        PYTHON_IMAGE,
    )
    copy.save(force_insert=True)
    return "e2b-docker"


def key_of(owner) -> str:
    from sessions_app.models import ApiKey

    return ApiKey.objects.create_key(owner=owner, name="e2b")[1]


def connection(served: Served, key: str) -> dict[str, Any]:
    url = f"{served.url}/e2b"
    return {"api_url": url, "sandbox_url": url, "api_key": key}


def raw(served: Served, method: str, path: str, headers: dict[str, str], body: bytes | None = None):
    """(status, JSON body without its request id) of a plain HTTP call to the E2B surface."""
    request = urllib.request.Request(f"{served.url}/e2b{path}", method=method, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    answer = json.loads(payload) if payload else None
    if isinstance(answer, dict):
        answer.pop("request_id", None)
    return status, answer


def test_the_sdks_run_code_files_and_commands(served, user, template, monkeypatch):
    monkeypatch.setenv("E2B_API_URL", f"{served.url}/e2b")  # ConnectionConfig reads these where no option is
    monkeypatch.setenv("E2B_SANDBOX_URL", f"{served.url}/e2b")
    opts = connection(served, key_of(user))
    sandbox = Sandbox.create(
        template=template, metadata={"suite": "e2b"}, envs={"GREETING": "hi"}, timeout=120, **opts
    )
    try:
        # run_code: printed output arrives through the callback and the logs, the last expression is the result
        seen: list[str] = []
        execution = sandbox.run_code(
            "import os\nprint(os.environ['GREETING'], 'there')\nanswer = 6 * 7\nanswer",
            on_stdout=lambda m: seen.append(m.line),
        )
        assert execution.error is None, execution.error
        assert execution.logs.stdout == ["hi there\n"] and seen == ["hi there\n"]
        assert execution.text == "42" and execution.results[0].is_main_result
        # state carries over between cells of the default context; definitions too
        sandbox.run_code("def double(x):\n    return 2 * x\nitems = [1, 2]")
        assert sandbox.run_code("double(answer) + len(items)").text == "86"
        failed = sandbox.run_code("1 / 0")
        assert failed.error is not None and failed.error.name == "ZeroDivisionError"
        assert failed.error.value == "division by zero" and "1 / 0" in failed.error.traceback
        assert sandbox.run_code("print('no value')").results == []

        # files: write, read, list, make_dir, rename, exists, remove
        info = sandbox.files.write("/home/user/notes/a.txt", "first line\n")
        assert info.path == "/workspace/notes/a.txt"
        assert sandbox.files.read("notes/a.txt") == "first line\n"
        assert [(e.name, e.size) for e in sandbox.files.list("/home/user/notes")] == [("a.txt", 11)]
        assert sandbox.files.make_dir("/workspace/out") is True
        assert sandbox.files.make_dir("/workspace/out") is False
        moved = sandbox.files.rename("/workspace/notes/a.txt", "/workspace/out/b.txt")
        assert moved.path == "/workspace/out/b.txt" and moved.size == 11
        assert sandbox.files.exists("/workspace/notes/a.txt") is False
        assert sandbox.run_code("open('out/b.txt').read()").text == "'first line\\n'"
        sandbox.files.remove("/workspace/out/b.txt")
        with pytest.raises(NotFoundException):
            sandbox.files.read("/workspace/out/b.txt")

        # commands: exit codes, stderr, and stdout streamed while the command runs: it waits for a file
        # that the stdout callback itself writes, so it can only end if the first line arrived before the end
        result = sandbox.commands.run("echo out; echo err >&2; echo $GREETING; wc -c")
        assert (result.exit_code, result.stdout, result.stderr) == (0, "out\nhi\n0\n", "err\n")
        with pytest.raises(CommandExitException) as exited:
            sandbox.commands.run("echo failing; exit 3")
        assert exited.value.exit_code == 3 and exited.value.stdout == "failing\n"
        lines: list[str] = []

        def on_stdout(line: str) -> None:
            lines.append(line)
            if line.startswith("waiting"):
                sandbox.files.write("/workspace/go", "")

        script = "echo waiting; while [ ! -e go ]; do sleep 0.05; done; echo done"
        streamed = sandbox.commands.run(script, on_stdout=on_stdout, timeout=60)
        assert streamed.exit_code == 0 and "".join(lines) == "waiting\ndone\n"

        # a background command is listed until killed; a command the client stops waiting for is cancelled
        handle = sandbox.commands.run("sleep 60", background=True)
        wait_until(lambda: handle.pid in [p.pid for p in sandbox.commands.list()], what="the command listed")
        assert sandbox.commands.kill(handle.pid) is True
        with pytest.raises(CommandExitException) as killed_command:
            handle.wait()
        assert killed_command.value.exit_code == -1
        with pytest.raises(TimeoutException):
            sandbox.commands.run("sleep 60", timeout=1)
        wait_until(lambda: sandbox.commands.list() == [], what="the abandoned command cancelled")

        # lifecycle: set_timeout moves the end, list finds it by metadata, kill ends it
        sandbox.set_timeout(900)
        assert sandbox.get_info().end_at.timestamp() > time.time() + 800
        listed = BaseSandbox.list(query=_query({"suite": "e2b"}), **opts).next_items()
        assert [s.sandbox_id for s in listed] == [sandbox.sandbox_id]
        assert BaseSandbox.list(query=_query({"suite": "other"}), **opts).next_items() == []
        assert BaseSandbox.connect(sandbox.sandbox_id, **opts).is_running()
    finally:
        killed = sandbox.kill()
    assert killed is True
    assert sandbox.is_running() is False
    assert BaseSandbox.kill(sandbox.sandbox_id, **opts) is False
    with pytest.raises(SandboxNotFoundException):
        BaseSandbox.get_info(sandbox.sandbox_id, **opts)


def _query(metadata: dict[str, str]):
    from e2b.sandbox.sandbox_api import SandboxQuery

    return SandboxQuery(metadata=metadata)


def test_another_tenant_cannot_touch_a_sandbox(served, user, other_user, template):
    mine, theirs = connection(served, key_of(user)), connection(served, key_of(other_user))
    sandbox = Sandbox.create(template=template, **mine)
    try:
        # the control API: exactly what a sandbox that does not exist gets
        with pytest.raises(SandboxNotFoundException):
            BaseSandbox.connect(sandbox.sandbox_id, **theirs)
        with pytest.raises(SandboxNotFoundException):
            BaseSandbox.set_timeout(sandbox.sandbox_id, 600, **theirs)
        assert BaseSandbox.kill(sandbox.sandbox_id, **theirs) is False
        assert BaseSandbox.list(**theirs).next_items() == []
        owned = raw(served, "GET", f"/sandboxes/{sandbox.sandbox_id}", {"X-API-KEY": theirs["api_key"]})
        missing = raw(served, "GET", "/sandboxes/sess_doesnotexist", {"X-API-KEY": theirs["api_key"]})
        assert owned[0] == missing[0] == 404
        assert owned[1]["message"].replace(sandbox.sandbox_id, "X") == missing[1]["message"].replace(
            "sess_doesnotexist", "X"
        )
        # the sandbox's services: their key, or a made-up access token, as for a sandbox that does not exist
        for credentials in ({"X-API-KEY": theirs["api_key"]}, {"X-Access-Token": "0" * 64}):
            for sandbox_id in (sandbox.sandbox_id, "sess_doesnotexist"):
                status, body = raw(
                    served, "GET", "/files?path=a.txt", {**credentials, "E2b-Sandbox-Id": sandbox_id}
                )
                assert status == 502 and body["message"] == f"The sandbox {sandbox_id} was not found"
        # no credentials at all: refused from the headers
        assert raw(served, "GET", "/v2/sandboxes", {})[0] == 401
        assert raw(served, "POST", "/files?path=a", {"E2b-Sandbox-Id": sandbox.sandbox_id}, b"x")[0] == 401
        # bad input is refused as the API refuses it, with the reason
        with pytest.raises(
            SandboxException, match="timeout: Ensure this value is greater than or equal to 10"
        ):
            Sandbox.create(template=template, timeout=5, **mine)
        with pytest.raises(SandboxException, match="template 'no-such-template' not found"):
            Sandbox.create(template="no-such-template", **mine)
        # unsupported calls say so
        with pytest.raises(SandboxException, match="pausing sandboxes is not supported"):
            sandbox.pause()
        # and the owner's sandbox is untouched
        assert sandbox.run_code("'still here'").text == "'still here'"
    finally:
        sandbox.kill()


def headers_only(served: Served, path: str, headers: dict[str, str]) -> int:
    """Send a POST's headers announcing 300 MiB and no body; the status of the answer, which must come and
    be followed by the end of the connection (a server waiting for the body fails the recv's timeout)."""
    head = [f"POST /e2b{path} HTTP/1.1", f"Host: 127.0.0.1:{served.port}", f"Content-Length: {300 * 2**20}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    return int(raw.split(b" ", 2)[1])


@pytest.mark.parametrize(
    "credentials",
    [{}, {"X-API-KEY": "scp_not-a-key"}, {"X-Access-Token": "0" * 64, "E2b-Sandbox-Id": "sess_doesnotexist"}],
    ids=["none", "unknown-key", "made-up-token"],
)
def test_an_upload_without_valid_credentials_is_refused_before_its_body_is_sent(served, credentials):
    status = headers_only(
        served, "/files?path=big.bin", {"Content-Type": "application/octet-stream", **credentials}
    )
    assert status == 401
