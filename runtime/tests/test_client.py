"""ExecutorClient: talking to a real daemon over TCP, and failing clearly when the other side misbehaves.

The misbehaving peers are tiny socket servers written here: a client's error handling is tested against
real sockets that refuse, stall or cut a stream short, not against a mock of http.client.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from runtime.base import ExecuteRequest, RuntimeFailure
from runtime.client import ConnectionPool, ExecutorClient
from runtime.events import (
    ExecutionMetrics,
    ExecutionResult,
    ExecutionStarted,
    FileChange,
    OutputChunk,
)
from runtime.tests.test_executor_support import (
    TOKEN,
    run,
    running_daemon,
    short_tmp,
    spawn_daemon,
    wait_listening,
)


@contextlib.contextmanager
def fake_executor(reply: Callable[[socket.socket], None]) -> Iterator[str]:
    """A Unix-socket server that reads one request head and then runs `reply` on the connection."""
    with short_tmp("fake-exec-") as root:
        path = str(root / "fake.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(8)
        stop = threading.Event()

        def serve() -> None:
            server.settimeout(0.1)
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except OSError:
                    continue
                with conn:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    try:
                        reply(conn)
                    except OSError:
                        pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield path
        finally:
            stop.set()
            thread.join()
            server.close()


def request(timeout: float = 5.0) -> ExecuteRequest:
    return ExecuteRequest(execution_id="client-test", language="python", code="print(1)", timeout=timeout)


def ndjson(*events: object) -> Callable[[socket.socket], None]:
    """A reply that streams `events` as the executor would, chunked, one event per line."""

    def reply(conn: socket.socket) -> None:
        body = b""
        for event in events:
            line = json.dumps(event).encode() + b"\n"
            body += b"%x\r\n%s\r\n" % (len(line), line)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
            + body
            + b"0\r\n\r\n"
        )

    return reply


STARTED = {"type": "started", "execution_id": "client-test", "pid": 7}


def test_a_missing_socket_is_a_retryable_failure_naming_the_endpoint(tmp_path):
    client = ExecutorClient(str(tmp_path / "absent.sock"), TOKEN)
    with pytest.raises(RuntimeFailure) as info:
        client.health()
    assert str(tmp_path / "absent.sock") in info.value.message
    assert "does not exist" in info.value.message
    assert not info.value.permanent


def test_a_socket_nobody_listens_on_is_connection_refused(tmp_path):
    path = str(tmp_path / "stale.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # bound, never listening: what a crashed executor leaves behind
    try:
        with pytest.raises(RuntimeFailure) as info:
            ExecutorClient(path, TOKEN).execute(request())
        assert "refused" in info.value.message
        assert path in info.value.message
    finally:
        stale.close()


def test_a_closed_tcp_port_is_a_failure():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(RuntimeFailure) as info:
        ExecutorClient(f"http://127.0.0.1:{port}", TOKEN, connect_timeout=1).health()
    assert f"127.0.0.1:{port}" in info.value.message


def test_a_silent_executor_times_out(tmp_path):
    hang_up = threading.Event()
    with fake_executor(lambda conn: hang_up.wait(30)) as path:
        client = ExecutorClient(path, TOKEN, read_timeout=0.3)
        try:
            with pytest.raises(RuntimeFailure) as info:
                client.health()
        finally:
            hang_up.set()
        # The peer never answers nor hangs up until now: only the read timeout can have ended the call.
        assert "did not answer in time" in info.value.message


def test_events_arrive_typed_with_file_sizes_and_unknown_kinds_are_skipped(tmp_path):
    result = {
        "type": "result",
        "execution_id": "client-test",
        "status": "completed",
        "exit_code": 0,
        "return_value": 0,
        "error": None,
        "duration_ms": 12,
        "cpu_time_ms": 3.5,
        "peak_memory_mb": None,
        "stdout_truncated": True,
        "stderr_truncated": False,
        "stdout_bytes": 9,
        "files": {
            "created": ["out/a.txt"],
            "modified": ["b.txt"],
            "deleted": ["c.txt"],
            "sizes": {"out/a.txt": 5, "b.txt": 0, "c.txt": 3},
        },
    }
    stream = ndjson(STARTED, {"type": "progress", "percent": 50}, {"type": "stdout", "data": "hi\n"}, result)
    with fake_executor(stream) as path:
        events = list(ExecutorClient(path, TOKEN).execute(request()))
    assert events == [
        ExecutionStarted(execution_id="client-test", pid=7),
        OutputChunk(stream="stdout", data="hi\n"),
        ExecutionResult(
            execution_id="client-test",
            status="completed",
            exit_code=0,
            return_value=0,
            metrics=ExecutionMetrics(
                duration_ms=12.0, cpu_time_ms=3.5, stdout_truncated=True, stdout_bytes=9
            ),
            files=(
                FileChange("out/a.txt", "created", 5),
                FileChange("b.txt", "modified", 0),
                FileChange("c.txt", "deleted", None),  # a deleted file has no size, whatever was sent
            ),
        ),
    ]


def test_a_result_without_sizes_or_files_still_parses(tmp_path):
    old = {"type": "result", "status": "failed", "exit_code": 1, "error": "ValueError: x"}
    with fake_executor(
        ndjson(STARTED, {**old, "files": {"created": ["a"], "modified": [], "deleted": []}})
    ) as path:
        result = list(ExecutorClient(path, TOKEN).execute(request()))[-1]
    assert isinstance(result, ExecutionResult)
    assert (result.status, result.error, result.files) == (
        "failed",
        "ValueError: x",
        (FileChange("a", "created"),),
    )


@pytest.mark.parametrize(
    "event",
    [
        {"type": "result", "status": "exploded", "exit_code": 0},
        {"type": "result", "status": "completed", "exit_code": "0"},
        {"type": "result", "status": "completed", "exit_code": True},
        {"type": "result", "status": "completed", "duration_ms": "fast"},
        {"type": "result", "status": "completed", "files": ["a.txt"]},
        {"type": "result", "status": "completed", "files": {"created": ["a"], "sizes": {"a": -1}}},
        {"type": "stdout", "data": 42},
        {"type": 3},
        ["not", "an", "object"],
    ],
)
def test_an_event_that_breaks_the_contract_is_a_malformed_event(tmp_path, event):
    with fake_executor(ndjson(STARTED, event)) as path:
        events = ExecutorClient(path, TOKEN).execute(request())
        assert isinstance(next(events), ExecutionStarted)
        with pytest.raises(RuntimeFailure) as info:
            next(events)
    assert "malformed event" in info.value.message and path in info.value.message


def test_a_stream_that_ends_without_a_result_raises(tmp_path):
    with fake_executor(ndjson(STARTED)) as path:
        events = ExecutorClient(path, TOKEN).execute(request())
        assert isinstance(next(events), ExecutionStarted)
        with pytest.raises(RuntimeFailure) as info:
            next(events)
        assert "without a result" in info.value.message


def test_a_stream_cut_mid_chunk_raises(tmp_path):
    def reply(conn: socket.socket) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'40\r\n{"type":"std'
        )

    with fake_executor(reply) as path:
        with pytest.raises(RuntimeFailure):
            list(ExecutorClient(path, TOKEN).execute(request()))


def test_a_stalled_stream_times_out_between_events(tmp_path):
    hang_up = threading.Event()

    def reply(conn: socket.socket) -> None:
        line = b'{"type":"started","execution_id":"client-test","pid":1}\n'
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(line), line)
        )
        hang_up.wait(30)

    with fake_executor(reply) as path:
        # The wait between events is the execution timeout plus a margin, never less: shorten the margin.
        client = ExecutorClient(path, TOKEN, read_timeout=0.2)
        import runtime.client as client_module

        margin = client_module.EXECUTE_MARGIN
        client_module.EXECUTE_MARGIN = 0.0
        try:
            events = client.execute(request(timeout=0.3))
            assert isinstance(next(events), ExecutionStarted)
            with pytest.raises(RuntimeFailure) as info:
                next(events)
            assert "did not answer in time" in info.value.message
        finally:
            client_module.EXECUTE_MARGIN = margin
            hang_up.set()


def test_a_server_error_is_retryable_and_a_bad_request_is_not(tmp_path):
    answers = iter(
        [
            b'HTTP/1.1 500 Internal Server Error\r\nContent-Length: 27\r\n\r\n{"error": "internal_error"}',
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 47\r\n\r\n"
            b'{"error": "bad_request", "message": "no code!"}',
        ]
    )
    with fake_executor(lambda conn: conn.sendall(next(answers))) as path:
        client = ExecutorClient(path, TOKEN)
        with pytest.raises(RuntimeFailure) as info:
            client.execute(request())
        assert not info.value.permanent
        assert "500" in info.value.message
        with pytest.raises(RuntimeFailure) as info:
            client.execute(request())
        assert info.value.permanent
        assert "no code!" in info.value.message


def test_a_download_cut_short_raises(tmp_path):
    def reply(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)

    with fake_executor(reply) as path:
        with pytest.raises(RuntimeFailure) as info:
            b"".join(ExecutorClient(path, TOKEN).download("f.bin"))
        assert "short" in info.value.message


def test_endpoints_must_be_a_socket_path_or_http():
    with pytest.raises(ValueError):
        ExecutorClient("tcp://1.2.3.4:5", TOKEN)


def test_wait_healthy_polls_until_the_daemon_answers():
    answers: list = []
    with short_tmp() as root:
        client = ExecutorClient(str(root / "executor.sock"), TOKEN)
        with pytest.raises(RuntimeFailure):
            client.health()  # nothing listens yet
        waiter = threading.Thread(target=lambda: answers.append(client.wait_healthy(30)))
        waiter.start()  # polling an absent socket while the daemon starts
        proc, log = spawn_daemon(root)
        try:
            waiter.join(timeout=60)
            assert answers and answers[0]["status"] == "ok"
        finally:
            wait_listening(proc, log)
            proc.terminate()
            proc.wait(timeout=5)


def test_wait_healthy_gives_up_with_a_clear_message(tmp_path):
    client = ExecutorClient(str(tmp_path / "never.sock"), TOKEN)
    with pytest.raises(RuntimeFailure) as info:
        client.wait_healthy(0.3)
    assert "did not become healthy within 0.3 s" in info.value.message
    assert "does not exist" in info.value.message and not info.value.permanent


def test_wait_healthy_stops_at_once_on_a_wrong_token():
    with running_daemon() as daemon:
        with pytest.raises(RuntimeFailure) as info:
            ExecutorClient(str(daemon.socket), "bad").wait_healthy(60)
        # The 401 itself, not the give-up message a retrying wait would end with.
        assert info.value.permanent
        assert "rejected the token" in info.value.message


def test_the_daemon_serves_http_over_tcp_too():
    with running_daemon("--tcp", "127.0.0.1:0") as daemon:
        line = daemon.log_text().splitlines()[0]
        endpoints = line.removeprefix("executor listening on ").split(", ")
        assert endpoints[0] == str(daemon.socket)
        url = endpoints[1]
        assert url.startswith("http://127.0.0.1:")
        client = ExecutorClient(url, TOKEN)
        assert client.health()["status"] == "ok"
        result = run(
            client,
            "import time\nprint('a')\ntime.sleep(0.2)\nprint('b')\ndef handler(e, c):\n    return e",
            event=[1],
        )
        assert (result.value, result.stdout) == ([1], "a\nb\n")
        with pytest.raises(RuntimeFailure) as info:
            ExecutorClient(url, "wrong").health()
        assert info.value.permanent


def test_tcp_only_daemon_without_a_socket():
    with short_tmp() as root:
        proc, log = spawn_daemon(root, "--tcp", "127.0.0.1:0", unix=False)
        try:
            line = wait_listening(proc, log)
            url = line.removeprefix("executor listening on ")
            assert url.startswith("http://")
            assert ExecutorClient(url, TOKEN).health()["status"] == "ok"
            assert not (root / "executor.sock").exists()
        finally:
            proc.terminate()
            proc.wait(timeout=5)


# -- pooled keep-alive connections --


def counting_connector(path: str) -> tuple[list[socket.socket], Callable[[float], socket.socket]]:
    """A connector to the Unix socket `path` that remembers every connection it opens."""
    opened: list[socket.socket] = []

    def connect(timeout: float) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(path)
        opened.append(sock)
        return sock

    return opened, connect


def swallowing_peer(seen: list[bytes]) -> Callable[[socket.socket], None]:
    """A reply that takes the whole request (head, then any body until the client waits for an answer) and
    closes without answering: a connection that died after the request went out."""

    def reply(conn: socket.socket) -> None:
        seen.append(b"request")
        conn.settimeout(1.0)  # the client sends a body right after the head, then only waits
        try:
            while conn.recv(65536):
                pass
        except TimeoutError:
            pass

    return reply


def pooled_dead_connection(path: str) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("localhost")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    conn.sock = sock
    return conn


def test_a_pool_keeps_one_connection_for_calls_one_after_another():
    with running_daemon() as daemon:
        opened, connect = counting_connector(str(daemon.socket))
        pool = ConnectionPool()
        for _ in range(3):
            client = ExecutorClient(str(daemon.socket), TOKEN, connector=connect, pool=pool)
            assert client.health()["status"] == "ok"
            assert run(client, "def handler(e, c):\n    return e", event=[2]).value == [2]
            assert client.list_files() == []
            with pytest.raises(FileNotFoundError):
                client.delete("absent")
        assert len(opened) == 1
        pool.close()
        assert all(sock.fileno() == -1 for sock in opened)


def test_a_closed_pooled_connection_is_noticed_before_use():
    with running_daemon() as daemon:
        opened, connect = counting_connector(str(daemon.socket))
        pool = ConnectionPool()
        client = ExecutorClient(str(daemon.socket), TOKEN, connector=connect, pool=pool)
        client.health()
        opened[0].shutdown(socket.SHUT_RDWR)  # as when the pod went away: the far end is closed
        assert run(client, "print(1)").stdout == "1\n"  # an execute too: nothing was sent on the dead one
        assert len(opened) == 2


def test_a_dead_pooled_connection_is_retried_for_a_read_but_an_execute_is_never_sent_twice():
    seen: list[bytes] = []
    with running_daemon() as daemon, fake_executor(swallowing_peer(seen)) as dead:
        opened, connect = counting_connector(str(daemon.socket))
        pool = ConnectionPool()
        client = ExecutorClient(str(daemon.socket), TOKEN, connector=connect, pool=pool)
        pool.give(pooled_dead_connection(dead))
        assert client.health()["status"] == "ok"
        assert len(seen) == 1 and len(opened) == 1  # sent once on the dead one, then on a fresh one

        pool.close()
        pool = ConnectionPool()
        client = ExecutorClient(str(daemon.socket), TOKEN, connector=connect, pool=pool)
        pool.give(pooled_dead_connection(dead))
        with pytest.raises(RuntimeFailure):
            list(client.execute(request()))
        assert len(seen) == 2 and len(opened) == 1  # not sent again on a fresh connection
        assert client.health()["active_executions"] == 0


def test_an_abandoned_stream_is_not_pooled():
    with running_daemon() as daemon:
        opened, connect = counting_connector(str(daemon.socket))
        pool = ConnectionPool()
        client = ExecutorClient(str(daemon.socket), TOKEN, connector=connect, pool=pool)
        events = client.execute(request())
        next(events)  # started, then the caller walks away
        events.close()
        assert pool.sweep() == 0
        assert client.health()["status"] == "ok"
        assert len(opened) == 2
