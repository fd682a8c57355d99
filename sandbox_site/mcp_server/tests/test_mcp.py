"""The MCP server through the real `mcp` client, over both transports: stdio (`manage.py mcp` spawned as an
agent would) and streamable HTTP at /mcp of a live `manage.py serve` (uvicorn with the lifespan on, its web
processes and the worker, as `make run`), both on the embedded default's bubblewrap sandboxes.

Every tool is listed and called on each transport; a second owner's key finds nothing of the first owner's;
bad input is a tool error in the API's error shape and the server goes on answering.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from sandbox_site.tests.served_process import Served, serve_test_database

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed"),
]

BASE_DIR = Path(__file__).resolve().parents[3]
TOOLS = {"create_session", "execute", "upload", "download", "list_files", "terminate", "list_templates"}
# The handler prints, then waits for a file that the test uploads only once that line has reached it as a
# progress notification: the call completes with released=True only if output is passed on while the code
# runs, not with the answer (then the wait runs out and released is False).
HANDLER = """import os, time

def handler(event, context):
    print("waiting", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists("go") and time.monotonic() < deadline:
        time.sleep(0.02)
    print("released", flush=True)
    return {"doubled": event["n"] * 2, "released": os.path.exists("go")}
"""
BINARY = bytes(range(256))


@pytest.fixture(scope="module")
def served(django_db_setup, django_db_blocker) -> Iterator[Served]:
    # One process of each kind is all these calls need (and all a loaded CI machine should have to start).
    with serve_test_database(
        django_db_blocker,
        workers=True,
        SANDBOX_WEB_WORKERS="1",
        SANDBOX_WORKERS="1",
        SANDBOX_PROVISION_WORKERS="1",
    ) as live:
        yield live


@pytest.fixture
def keys(builtin_templates, user, other_user) -> tuple[str, str]:
    from sessions_app.models import ApiKey

    return (
        ApiKey.objects.create_key(owner=user, name="mcp")[1],
        ApiKey.objects.create_key(owner=other_user, name="mcp")[1],
    )


def stdio_environment(served: Served) -> dict[str, str]:
    """What `manage.py mcp` needs to act on the served control plane: its database, secret key, data dir."""
    from django.conf import settings

    from conftest import database_url_of_test_db

    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "REDIS_URL")}
    env.update(
        DATABASE_URL=database_url_of_test_db(),
        DJANGO_SECRET_KEY=settings.SECRET_KEY,
        SANDBOX_DATA_DIR=str(served.data_dir),
        SANDBOX_RUNTIME="process",
        LOG_LEVEL="WARNING",
    )
    return env


def stdio_client(served: Served, key: str) -> Client:
    env = {**stdio_environment(served), "SANDBOX_API_KEY": key}
    command = StdioServerParameters(command=sys.executable, args=["manage.py", "mcp"], cwd=BASE_DIR, env=env)
    return Client(command)


def http_client(served: Served, headers: dict[str, str]) -> Client:
    transport = streamable_http_client(
        f"{served.url}/mcp", http_client=create_mcp_http_client(headers=headers)
    )
    return Client(transport)


async def call(client: Client, tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments or {})
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def refused(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The error body of a call that must fail as a tool error (the API's shape after the SDK's prefix)."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result
    text = result.content[0].text  # type: ignore[union-attr]
    return json.loads(text[text.index("{") :])


async def exercise_every_tool(owner: Client, other: Client) -> None:
    listed = await owner.list_tools()
    assert {tool.name for tool in listed.tools} == TOOLS
    templates = await call(owner, "list_templates")
    assert "python-basic" in [template["id"] for template in templates["templates"]]

    session = await call(owner, "create_session", {"template_id": "python-basic", "metadata": {"via": "mcp"}})
    assert session["status"] == "running", session
    assert session["metadata"] == {"via": "mcp"}
    sid = session["id"]

    streamed: list[str] = []
    releases: list[asyncio.Task] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        streamed.append(message or "")
        if message == "waiting\n":
            # A second call while the first runs; not awaited here, which would hold up the client's reader.
            go = {"session_id": sid, "path": "go", "content": ""}
            releases.append(asyncio.create_task(call(owner, "upload", go)))

    result = await owner.call_tool(
        "execute",
        {"session_id": sid, "code": HANDLER, "event": {"n": 21}, "timeout": 120},
        progress_callback=on_progress,
    )
    assert not result.is_error, result.content
    execution = result.structured_content
    assert execution is not None
    assert execution["status"] == "completed", execution
    assert execution["return_value"] == {"doubled": 42, "released": True}
    assert execution["stdout"] == "waiting\nreleased\n"
    assert streamed == ["waiting\n", "released\n"]
    await asyncio.gather(*releases)

    failed = await call(
        owner, "execute", {"session_id": sid, "code": "echo oops >&2; exit 3", "language": "shell"}
    )
    assert (failed["status"], failed["exit_code"], failed["stderr"]) == ("failed", 3, "oops\n")

    written = await call(owner, "upload", {"session_id": sid, "path": "in/notes.txt", "content": "héllo\n"})
    assert written["file_path"] == "in/notes.txt"
    blob = {
        "session_id": sid,
        "path": "in/blob.bin",
        "content": base64.b64encode(BINARY).decode(),
        "encoding": "base64",
    }
    assert (await call(owner, "upload", blob))["size"] == len(BINARY)
    everything = await call(owner, "list_files", {"session_id": sid})
    assert {entry["name"]: entry["size"] for entry in everything["files"]} == {
        "go": 0,
        "in/notes.txt": len("héllo\n".encode()),
        "in/blob.bin": len(BINARY),
    }
    assert (everything["count"], everything["truncated"]) == (3, False)
    top = await call(owner, "list_files", {"session_id": sid, "recursive": False, "limit": 1})
    assert (len(top["files"]), top["truncated"]) == (1, True)
    text = await call(owner, "download", {"session_id": sid, "path": "in/notes.txt"})
    assert (text["encoding"], text["content"]) == ("text", "héllo\n")
    binary = await call(owner, "download", {"session_id": sid, "path": "in/blob.bin"})
    assert (binary["encoding"], base64.b64decode(binary["content"])) == ("base64", BINARY)

    # Another owner's key: the session does not exist for it, whatever the tool.
    for tool, arguments in [
        ("execute", {"session_id": sid, "code": "print(1)"}),
        ("list_files", {"session_id": sid}),
        ("download", {"session_id": sid, "path": "in/notes.txt"}),
        ("upload", {"session_id": sid, "path": "x.txt", "content": "x"}),
        ("terminate", {"session_id": sid}),
    ]:
        assert (await refused(other, tool, arguments))["error"] == "session_not_found", tool

    # Bad input: a tool error with the API's code, and the server carries on.
    bad_calls: list[tuple[str, dict[str, Any], str]] = [
        ("execute", {"session_id": sid, "code": ""}, "validation_error"),
        ("execute", {"session_id": sid, "code": "print(1)", "timeout": 0}, "validation_error"),
        ("create_session", {"template_id": "no-such-template"}, "template_not_found"),
        ("create_session", {"template_id": "python-basic", "memory": "lots"}, "validation_error"),
        (
            "upload",
            {"session_id": sid, "path": "a.bin", "content": "%%%", "encoding": "base64"},
            "validation_error",
        ),
        ("download", {"session_id": sid, "path": "../etc/passwd"}, "invalid_path"),
        ("download", {"session_id": sid, "path": "missing.txt"}, "file_not_found"),
        ("list_files", {"session_id": sid, "limit": 0}, "validation_error"),
    ]
    for tool, arguments, code in bad_calls:
        assert (await refused(owner, tool, arguments))["error"] == code, (tool, arguments)
    wrong_type = await owner.call_tool("execute", {"session_id": sid, "code": 5, "language": "cobol"})
    assert wrong_type.is_error
    assert "code" in wrong_type.content[0].text and "language" in wrong_type.content[0].text  # type: ignore[union-attr]

    ended = await call(owner, "terminate", {"session_id": sid})
    assert ended["status"] == "terminated"
    assert (await call(owner, "terminate", {"session_id": sid}))["status"] == "terminated"
    assert (await refused(owner, "execute", {"session_id": sid, "code": "print(1)"}))[
        "error"
    ] == "session_not_running"
    # An ended session's files are its saved copy.
    saved = await call(owner, "download", {"session_id": sid, "path": "in/notes.txt"})
    assert saved["content"] == "héllo\n"


async def both(owner: Client, other: Client) -> None:
    async with owner, other:
        await exercise_every_tool(owner, other)


def test_every_tool_over_streamable_http(served, keys):
    owner_key, other_key = keys
    owner = http_client(served, {"Authorization": f"Bearer {owner_key}"})
    other = http_client(served, {"X-API-Key": other_key})
    asyncio.run(both(owner, other))


def test_every_tool_over_stdio(served, keys):
    from sessions_app.models import ApiKey

    owner_key, other_key = keys

    def revoke() -> None:
        ApiKey.objects.get(prefix=owner_key[:12]).revoke()

    async def scenario(owner: Client, other: Client) -> None:
        async with owner, other:
            await exercise_every_tool(owner, other)
            # The process checks its key on every call: revoked, it stops working at once.
            await asyncio.to_thread(revoke)
            assert (await refused(owner, "list_templates", {}))["error"] == "unauthorized"

    asyncio.run(scenario(stdio_client(served, owner_key), stdio_client(served, other_key)))


def post_mcp(served: Served, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
    request = urllib.request.Request(
        f"{served.url}/mcp",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            **headers,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_http_refuses_requests_without_a_valid_key_from_an_unknown_host_or_too_large(served, keys):
    status, body = post_mcp(served, {})
    assert (status, body["error"]) == (401, "unauthorized")
    assert body["request_id"]
    status, body = post_mcp(served, {"Authorization": "Bearer scp_not-a-key"})
    assert (status, body["message"]) == (401, "The API key is unknown or has been revoked.")
    status, body = post_mcp(served, {"X-API-Key": keys[0], "Host": "evil.example"})
    assert (status, body["error"]) == (400, "bad_request")
    status, body = post_mcp(served, {"X-API-Key": keys[0], "Origin": "http://evil.example"})
    assert (status, body["error"]) == (403, "forbidden")
    # Refused from the headers: the announced body is never sent.
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    connection.putrequest("POST", "/mcp")
    for name, value in {
        "X-API-Key": keys[0],
        "Content-Type": "application/json",
        "Content-Length": "999999999",
    }.items():
        connection.putheader(name, value)
    connection.endheaders()
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())["error"]) == (413, "too_large")
    connection.close()


def test_stdio_refuses_to_start_without_a_valid_key(keys, monkeypatch):
    from django.core.management import CommandError, call_command

    from sessions_app.models import ApiKey

    monkeypatch.delenv("SANDBOX_API_KEY", raising=False)
    with pytest.raises(CommandError, match="an API key is required: set SANDBOX_API_KEY or pass --api-key"):
        call_command("mcp")
    with pytest.raises(CommandError, match="unknown or has been revoked"):
        call_command("mcp", api_key="scp_not-a-key")
    monkeypatch.setenv("SANDBOX_API_KEY", keys[0])
    revoked = ApiKey.objects.get(prefix=keys[0][:12])
    revoked.revoke()
    with pytest.raises(CommandError, match="unknown or has been revoked"):
        call_command("mcp")


def test_without_a_lifespan_the_first_request_starts_the_session_manager(keys):
    """daphne (`runserver`) runs no ASGI lifespan: the first /mcp request starts the MCP session manager."""
    import httpx

    from sandbox_site.mcp_server.http import McpRouter

    router = McpRouter(site=None)
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"Authorization": f"Bearer {keys[0]}", "Accept": "application/json, text/event-stream"}

    async def first_request() -> httpx.Response:
        transport = httpx.ASGITransport(app=router)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            response = await http.post("/mcp", json=listing, headers=headers)
        await router.mcp._shutdown()
        return response

    response = asyncio.run(first_request())
    assert response.status_code == 200, response.text
    events = [
        json.loads(line[len("data:") :]) for line in response.text.splitlines() if line.startswith("data:")
    ]
    assert {tool["name"] for tool in events[-1]["result"]["tools"]} == TOOLS
