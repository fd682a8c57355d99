"""The execution websocket against the real ASGI application: authentication, ownership, replay after a seq,
live delivery over the Redis channel layer, and the database fallback when the layer is in-process only."""

from __future__ import annotations

import io
import json
import os
import threading
import uuid

import pytest
import redis
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from executions_app import consumers
from executions_app.models import Execution, ExecutionOutputChunk
from executions_app.output import OutputRecorder, broadcast, execution_group
from executions_app.services import execution_run, execution_submit
from sandbox_site.asgi import application
from sessions_app.files import files_upload
from sessions_app.models import ApiKey

# The consumer reads through its own connections (database_sync_to_async): these tests commit for real.
pytestmark = pytest.mark.django_db(transaction=True)

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
ORIGIN = (b"origin", b"http://testserver")
HOST = (b"host", b"testserver")  # a browser's handshake names the host its Origin is compared with
# How long one step (connect, one event, the close) may take before the test fails: a guard against hanging
# on a loaded machine, not a claim about speed (bench/stream_latency.py measures delivery).
EVENT_WAIT = 30.0
# A database poll this far apart never delivers within EVENT_WAIT: what arrives came through the layer.
POLL_OUT_OF_REACH = 3600.0


@pytest.fixture
def redis_layer(settings):
    """The Redis channel layer under a prefix of this test's own; its keys are flushed afterwards."""
    prefix = f"scp-test-{uuid.uuid4().hex[:12]}"
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": prefix},
        }
    }
    yield
    # Not the layer's flush(): that also closes its connections, some of which belong to the broadcast
    # thread's own event loop (executions_app/output.py) and cannot be closed from another loop.
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture
def key_of():
    def make(owner) -> tuple[bytes, bytes]:
        _, raw = ApiKey.objects.create_key(owner=owner, name="ws")
        return (b"authorization", f"Bearer {raw}".encode())

    return make


@pytest.fixture
def execution(make_session, user):
    session = make_session(user, status="running")
    return Execution.objects.create(session=session, language="python", code="print(1)", status="running")


def store(execution_id: str, *chunks: tuple[int, str, str]) -> None:
    ExecutionOutputChunk.objects.bulk_create(
        [ExecutionOutputChunk(execution_id=execution_id, seq=s, stream=st, data=d) for s, st, d in chunks]
    )


def finish(execution_id: str, **fields) -> None:
    Execution.objects.filter(pk=execution_id).update(status="completed", exit_code=0, **fields)


async def receive_all(
    communicator: WebsocketCommunicator, timeout: float = EVENT_WAIT
) -> tuple[list[dict], int | None]:
    """Every JSON event until the server closes the socket, and the close code."""
    events: list[dict] = []
    while True:
        output = await communicator.receive_output(timeout)
        if output["type"] == "websocket.close":
            return events, output.get("code")
        events.append(json.loads(output["text"]))


class Communicator(WebsocketCommunicator):
    """Channels' test communicator, waiting up to EVENT_WAIT (not its 1 s) for each step by default."""

    async def connect(self, timeout: float = EVENT_WAIT):
        return await super().connect(timeout)

    async def receive_from(self, timeout: float = EVENT_WAIT):
        return await super().receive_from(timeout)

    async def receive_json_from(self, timeout: float = EVENT_WAIT):
        return await super().receive_json_from(timeout)

    async def receive_output(self, timeout: float = EVENT_WAIT):
        return await super().receive_output(timeout)


def connect(execution_id: str, *headers: tuple[bytes, bytes], query: str = "") -> Communicator:
    return Communicator(application, f"/ws/executions/{execution_id}/{query}", headers=list(headers))


def test_it_replays_stored_output_after_the_given_seq_then_sends_the_result(
    redis_layer, execution, user, key_of
):
    store(execution.id, (1, "stdout", "one\n"), (2, "stderr", "two\n"), (3, "stdout", "three\n"))
    finish(execution.id, return_value={"answer": 0})
    key = key_of(user)

    async def scenario():
        communicator = connect(execution.id, key, query="?after=1")
        connected, _ = await communicator.connect()
        assert connected
        events, code = await receive_all(communicator)
        await communicator.disconnect()
        return events, code

    events, code = async_to_sync(scenario)()
    assert code == 1000
    assert events[0] == {"type": "status", "execution_id": execution.id, "status": "completed"}
    assert [(e["seq"], e["stream"], e["data"]) for e in events[1:3]] == [
        (2, "stderr", "two\n"),
        (3, "stdout", "three\n"),
    ]
    result = events[3]
    assert result["type"] == "result" and result["status"] == "completed"
    assert result["exit_code"] == 0 and result["return_value"] == {"answer": 0}
    assert len(events) == 4


def test_live_output_is_pushed_through_the_redis_layer(redis_layer, execution, user, key_of, monkeypatch):
    # With the poll pushed out of reach, only the channel layer can deliver within the test's timeouts.
    monkeypatch.setattr(consumers, "POLL_INTERVAL_SHARED", POLL_OUT_OF_REACH)
    key = key_of(user)

    def record(start_seq: int, data: str) -> None:
        recorder = OutputRecorder(execution.id, start_seq=start_seq)
        recorder.add("stdout", data)
        recorder.flush()  # stores, then broadcasts after the commit

    def end() -> None:
        finish(execution.id)
        broadcast(execution.id, {"event": "result", "status": "completed", "exit_code": 0})

    async def scenario():
        communicator = connect(execution.id, key)
        assert (await communicator.connect())[0]
        assert (await communicator.receive_json_from())["status"] == "running"
        await database_sync_to_async(record)(0, "first\n")
        first = await communicator.receive_json_from()
        await database_sync_to_async(record)(1, "second\n")
        second = await communicator.receive_json_from()
        await database_sync_to_async(end)()
        rest, code = await receive_all(communicator)
        await communicator.disconnect()
        return first, second, rest, code

    first, second, rest, code = async_to_sync(scenario)()
    assert (first["seq"], first["data"]) == (1, "first\n")
    assert (second["seq"], second["data"]) == (2, "second\n")
    assert [event["type"] for event in rest] == ["result"] and code == 1000


def test_a_gap_in_live_events_is_filled_from_the_database_and_duplicates_are_dropped(
    redis_layer, execution, user, key_of, monkeypatch
):
    monkeypatch.setattr(consumers, "POLL_INTERVAL_SHARED", POLL_OUT_OF_REACH)
    key = key_of(user)

    async def scenario():
        communicator = connect(execution.id, key)
        assert (await communicator.connect())[0]
        await communicator.receive_json_from()  # status
        await database_sync_to_async(store)(
            execution.id, (1, "stdout", "a"), (2, "stdout", "b"), (3, "stdout", "c")
        )
        layer = get_channel_layer()
        group = execution_group(execution.id)
        # Events 1 and 2 were lost; 3 arrives, then 2 again (a duplicate).
        await layer.group_send(
            group, {"type": "execution.event", "event": "output", "seq": 3, "stream": "stdout", "data": "c"}
        )
        await layer.group_send(
            group, {"type": "execution.event", "event": "output", "seq": 2, "stream": "stdout", "data": "b"}
        )
        await database_sync_to_async(finish)(execution.id)
        await layer.group_send(group, {"type": "execution.event", "event": "result", "status": "completed"})
        events, code = await receive_all(communicator)
        await communicator.disconnect()
        return events, code

    events, code = async_to_sync(scenario)()
    assert [(e["type"], e.get("seq")) for e in events] == [
        ("output", 1),
        ("output", 2),
        ("output", 3),
        ("result", None),
    ]
    assert code == 1000


@pytest.mark.usefixtures("sessions_on_process", "redis_layer")
def test_a_real_execution_streams_its_prints_live_through_redis(running_session, user, key_of, monkeypatch):
    monkeypatch.setattr(consumers, "POLL_INTERVAL_SHARED", POLL_OUT_OF_REACH)
    key = key_of(user)
    # Prints a line, then waits until the test drops `go` into the workspace, then prints two more.
    code = (
        "import os, time\nprint(0, flush=True)\nwhile not os.path.exists('go'):\n    time.sleep(0.05)\n"
        "print(1, flush=True)\nprint(2, flush=True)\n"
    )
    execution = execution_submit(session=running_session, language="python", code=code)

    def status() -> str:
        return Execution.objects.values_list("status", flat=True).get(pk=execution.id)

    def release() -> None:
        files_upload(session=running_session, path="go", fileobj=io.BytesIO(b"go"), size=2)

    async def scenario():
        communicator = connect(execution.id, key)
        assert (await communicator.connect())[0]
        runner = threading.Thread(target=execution_run, args=(execution.id,))
        runner.start()
        events = []
        while not any(event["type"] == "output" for event in events):
            events.append(await communicator.receive_json_from())
        # The program cannot end before it is released: the first line came while it still ran.
        status_at_first_line = await database_sync_to_async(status)()
        await database_sync_to_async(release)()
        while events[-1]["type"] != "result":
            events.append(await communicator.receive_json_from())
        assert (await communicator.receive_output())["type"] == "websocket.close"
        await communicator.disconnect()
        await database_sync_to_async(runner.join)()
        return status_at_first_line, events

    status_at_first_line, events = async_to_sync(scenario)()
    outputs = [event for event in events if event["type"] == "output"]
    assert status_at_first_line == "running"
    assert outputs[0]["data"] == "0\n"
    assert "".join(event["data"] for event in outputs) == "0\n1\n2\n"
    assert [event["seq"] for event in outputs] == list(range(1, len(outputs) + 1))
    assert events[-1]["status"] == "completed" and events[-1]["exit_code"] == 0


def test_without_a_shared_layer_output_still_arrives_from_the_database(memory_layer, execution, user, key_of):
    # As on the embedded default: the worker is another process, so nothing reaches this layer; the chunks
    # are written straight to the database, as that worker would.
    key = key_of(user)

    async def scenario():
        communicator = connect(execution.id, key)
        assert (await communicator.connect())[0]
        await communicator.receive_json_from()  # status
        await database_sync_to_async(store)(execution.id, (1, "stdout", "from the worker\n"))
        first = await communicator.receive_json_from()
        await database_sync_to_async(store)(execution.id, (2, "stderr", "warning\n"))
        # The same chunk also pushed in-process (a web-process run): still delivered once.
        await get_channel_layer().group_send(
            execution_group(execution.id),
            {"type": "execution.event", "event": "output", "seq": 2, "stream": "stderr", "data": "warning\n"},
        )
        await database_sync_to_async(finish)(execution.id)
        rest, code = await receive_all(communicator)
        await communicator.disconnect()
        return first, rest, code

    # How soon the poll delivers is measured by bench/stream_latency.py (mode "embedded").
    first, rest, code = async_to_sync(scenario)()
    assert first["data"] == "from the worker\n"
    assert [(e["type"], e.get("seq")) for e in rest] == [("output", 2), ("result", None)]
    assert code == 1000


def test_without_a_shared_layer_the_status_change_is_read_from_the_database(
    memory_layer, execution, user, key_of
):
    Execution.objects.filter(pk=execution.pk).update(status="pending")
    key = key_of(user)

    async def scenario():
        communicator = connect(execution.id, key)
        assert (await communicator.connect())[0]
        first = await communicator.receive_json_from()
        await database_sync_to_async(Execution.objects.filter(pk=execution.pk).update)(status="running")
        second = await communicator.receive_json_from()
        await communicator.disconnect()
        return first, second

    first, second = async_to_sync(scenario)()
    assert (first["type"], first["status"]) == ("status", "pending")
    assert (second["type"], second["status"]) == ("status", "running")


@pytest.mark.parametrize("credentials", ["none", "unknown key", "revoked key"])
def test_it_refuses_a_connection_without_valid_credentials(redis_layer, execution, user, credentials):
    headers = [ORIGIN, HOST]
    if credentials != "none":
        key, raw = ApiKey.objects.create_key(owner=user)
        if credentials == "unknown key":
            raw = raw[:-4] + "zzzz"
        else:
            key.revoke()
        headers.append((b"authorization", f"Bearer {raw}".encode()))

    async def scenario():
        communicator = connect(execution.id, *headers)
        await communicator.connect()
        events, code = await receive_all(communicator)
        await communicator.disconnect()
        return events, code

    events, code = async_to_sync(scenario)()
    assert code == 4401
    assert [event["error"] for event in events] == ["unauthenticated"]


def test_another_owners_execution_is_refused_exactly_like_a_missing_one(
    redis_layer, execution, other_user, key_of
):
    store(execution.id, (1, "stdout", "secret output\n"))
    key = key_of(other_user)

    async def attempt(execution_id: str):
        communicator = connect(execution_id, key)
        await communicator.connect()
        events, code = await receive_all(communicator)
        await communicator.disconnect()
        return events, code

    theirs = async_to_sync(attempt)(execution.id)
    missing = async_to_sync(attempt)("exec_doesnotexist00")
    assert theirs[1] == missing[1] == 4404
    assert [e["error"] for e in theirs[0]] == [e["error"] for e in missing[0]] == ["execution_not_found"]
    assert "secret output" not in json.dumps(theirs[0])


def test_the_console_cookie_the_token_parameter_and_staff_are_accepted(
    redis_layer, execution, user, staff_user, client
):
    store(execution.id, (1, "stdout", "hi\n"))
    finish(execution.id)
    client.force_login(user)
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
    _, raw = ApiKey.objects.create_key(owner=user)
    staff = ApiKey.objects.create_key(owner=staff_user)[1]

    async def watch(*headers, query=""):
        communicator = connect(execution.id, *headers, query=query)
        await communicator.connect()
        events, code = await receive_all(communicator)
        await communicator.disconnect()
        return [event["type"] for event in events], code

    expected = (["status", "output", "result"], 1000)
    assert async_to_sync(watch)(ORIGIN, HOST, cookie) == expected
    assert async_to_sync(watch)(query=f"?token={raw}") == expected
    assert async_to_sync(watch)((b"x-api-key", staff.encode())) == expected


def test_a_foreign_page_is_refused_but_a_client_without_origin_is_not(
    redis_layer, execution, user, client, key_of
):
    finish(execution.id)
    client.force_login(user)
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
    key = key_of(user)

    async def scenario():
        foreign = connect(execution.id, (b"origin", b"http://evil.example"), cookie)
        refused, _ = await foreign.connect()
        await foreign.disconnect()
        agent = connect(execution.id, key)
        accepted, _ = await agent.connect()
        await agent.disconnect()
        return refused, accepted

    assert async_to_sync(scenario)() == (False, True)


def test_the_origin_must_match_scheme_host_and_port_exactly(redis_layer, execution, user, client, settings):
    finish(execution.id)
    settings.ALLOWED_HOSTS = ["localhost"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://sandbox.example.com"]
    client.force_login(user)
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
    host = (b"host", b"localhost:8000")

    async def accepted(*headers) -> bool:
        communicator = connect(execution.id, *headers, cookie)
        ok, _ = await communicator.connect()
        await communicator.disconnect()
        return ok

    async def scenario():
        return {
            "same origin": await accepted((b"origin", b"http://localhost:8000"), host),
            "another port": await accepted((b"origin", b"http://localhost:9999"), host),
            "no port (80)": await accepted((b"origin", b"http://localhost"), host),
            "https on the same port": await accepted((b"origin", b"https://localhost:8000"), host),
            "a host not allowed": await accepted(
                (b"origin", b"http://evil.example:8000"), (b"host", b"evil.example:8000")
            ),
            "a trusted proxy origin": await accepted(
                (b"origin", b"https://sandbox.example.com"), (b"host", b"backend:8000")
            ),
            "the proxy origin on another port": await accepted(
                (b"origin", b"https://sandbox.example.com:8443"), (b"host", b"backend:8000")
            ),
            "no Host header": await accepted((b"origin", b"http://localhost:8000")),
            "a malformed origin": await accepted((b"origin", b"http://localhost:notaport"), host),
        }

    assert async_to_sync(scenario)() == {
        "same origin": True,
        "another port": False,
        "no port (80)": False,
        "https on the same port": False,
        "a host not allowed": False,
        "a trusted proxy origin": True,
        "the proxy origin on another port": False,
        "no Host header": False,
        "a malformed origin": False,
    }


def test_a_malformed_after_is_refused(redis_layer, execution, user, key_of):
    key = key_of(user)

    async def scenario():
        communicator = connect(execution.id, key, query="?after=-1")
        await communicator.connect()
        events, code = await receive_all(communicator)
        await communicator.disconnect()
        return events, code

    events, code = async_to_sync(scenario)()
    assert code == 4400 and events[0]["error"] == "validation_error"
