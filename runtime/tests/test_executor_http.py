"""The executor's HTTP/1.1 reading (runtime/executor/http1.py): keep-alive, refusals of what it cannot read,
`Expect: 100-continue`, and that the daemon starts without http.server and what it imports."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from runtime.tests.test_executor_support import RUNTIME_DIR, TOKEN, running_daemon

AUTH = f"Authorization: Bearer {TOKEN}\r\n"


@pytest.fixture(scope="module")
def executor():
    with running_daemon() as daemon:
        yield daemon


def connect(daemon) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(daemon.socket))
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length body (or none): status, headers by lower-case name, body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed mid-head: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk
        rest += chunk
    return status, headers, rest[:length]


def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_an_http_1_1_connection_serves_request_after_request(executor):
    with connect(executor) as sock:
        for _ in range(3):
            sock.sendall(f"GET /health HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode())
            status, headers, body = read_response(sock)
            assert status == 200 and json.loads(body)["status"] == "ok"
            assert "connection" not in headers


def test_header_names_are_matched_whatever_their_case(executor):
    with connect(executor) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nauthorization: Bearer {TOKEN}\r\n\r\n".encode())
        assert read_response(sock)[0] == 200


@pytest.mark.parametrize(
    "request_head",
    [
        f"GET /health HTTP/1.0\r\n{AUTH}\r\n",  # HTTP/1.0 closes unless asked otherwise
        f"GET /health HTTP/1.1\r\nConnection: close\r\n{AUTH}\r\n",
    ],
)
def test_the_connection_closes_after_the_answer_when_the_client_says_so(executor, request_head):
    with connect(executor) as sock:
        sock.sendall(request_head.encode())
        status, headers, _ = read_response(sock)
        assert status == 200 and headers["connection"] == "close"
        assert closed(sock)


def test_http_1_0_with_keep_alive_keeps_the_connection(executor):
    with connect(executor) as sock:
        for _ in range(2):
            sock.sendall(f"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n{AUTH}\r\n".encode())
            assert read_response(sock)[0] == 200


@pytest.mark.parametrize(
    ("request_head", "status", "error"),
    [
        ("GARBAGE\r\n\r\n", 400, "bad_request"),
        ("GET /health HTTP/x.y\r\n\r\n", 400, "bad_request"),
        ("GET /health HTTP/2.0\r\n\r\n", 505, "version_not_supported"),
        ("GET /" + "a" * 70_000 + " HTTP/1.1\r\n\r\n", 414, "uri_too_long"),
        ("GET /health HTTP/1.1\r\n" + "X-A: b\r\n" * 101 + "\r\n", 431, "headers_too_large"),
        ("GET /health HTTP/1.1\r\nX-Long: " + "a" * 70_000 + "\r\n\r\n", 431, "headers_too_large"),
        ("GET /health HTTP/1.1\r\nno colon here\r\n\r\n", 400, "bad_request"),
        ("GET /health HTTP/1.1\r\n folded: header\r\n\r\n", 400, "bad_request"),
        (f"PATCH /health HTTP/1.1\r\n{AUTH}\r\n", 501, "not_implemented"),
    ],
)
def test_a_request_that_cannot_be_read_gets_a_json_error_and_the_connection_closes(
    executor, request_head, status, error
):
    with connect(executor) as sock:
        sock.sendall(request_head.encode())
        got, headers, body = read_response(sock)
        assert got == status
        assert headers["content-type"] == "application/json" and json.loads(body)["error"] == error
        assert headers["connection"] == "close" and closed(sock)
    assert executor.client.health()["status"] == "ok"  # and the daemon serves on


def test_an_upload_expecting_100_continue_gets_it_before_sending_the_body(executor):
    body = b"x" * 5000
    with connect(executor) as sock:
        sock.sendall(
            f"PUT /files/expect.txt HTTP/1.1\r\n{AUTH}Content-Length: {len(body)}\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += sock.recv(1)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        status, _, answer = read_response(sock)
    assert status == 201 and json.loads(answer) == {"path": "expect.txt", "size": len(body)}
    assert (executor.workspace / "expect.txt").read_bytes() == body


def test_the_daemon_starts_without_http_server_and_its_dependencies():
    # What the daemon imports before it listens is on the path of every cold sandbox start.
    code = "import sys, executor.server; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-E", "-S", "-c", code], cwd=RUNTIME_DIR, capture_output=True, text=True, check=True
    ).stdout.split()
    assert "executor.handlers" in loaded
    for heavy in ("http.server", "http.client", "email.parser", "ssl", "html"):
        assert heavy not in loaded
