"""The control plane's client for a sandbox's executor daemon (runtime/executor), over a Unix socket or HTTP.

By default one connection per call: a local executor (a Unix socket) costs next to nothing to connect to, and
a fresh connection can never be left half-read by an abandoned stream. Where connecting is dear (a
port-forward through the Kubernetes API server), the backend hands its clients a `ConnectionPool`: a
connection whose answer was read to its end goes back to the pool (HTTP/1.1 keep-alive; the executor keeps
connections open), and the next call on that executor reuses it. A pooled connection the far end has closed
(the pod went away, the executor dropped it after its idle timeout) is noticed before use and discarded; one
that fails anyway is retried once on a fresh connection, but only for idempotent calls: an execute or an
upload is never sent twice. Every transport failure becomes a RuntimeFailure naming the endpoint; 401 is
permanent (a wrong token will not become right), other failures may be retried by the caller.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit

from runtime import readiness
from runtime.base import ExecuteRequest, RuntimeFailure
from runtime.events import ExecutionEvent, ExecutionResult, parse_event
from runtime.listing import walk_listing

CHUNK = 64 * 1024
# The stream may be silent for as long as the execution runs; allow this much more for the result.
EXECUTE_MARGIN = 10.0


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout, blocksize=CHUNK)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            connect_unix(sock, self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


# sun_path holds 108 bytes including the terminating NUL.
UNIX_PATH_MAX = 107


def connect_unix(sock: socket.socket, path: str) -> None:
    """Connect to a Unix socket, even one whose path is longer than sun_path allows.

    A long path is reached through its directory: open the directory and connect to
    /proc/self/fd/<fd>/<name>, which the kernel resolves like the real path. Deep data dirs and long
    client-chosen session ids would otherwise make a sandbox unreachable.
    """
    if len(os.fsencode(path)) <= UNIX_PATH_MAX:
        sock.connect(path)
        return
    directory, name = os.path.split(path)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        short = f"/proc/self/fd/{dir_fd}/{name}"
        if len(os.fsencode(short)) > UNIX_PATH_MAX:
            raise OSError(f"socket name too long: {name!r}")
        sock.connect(short)
    finally:
        os.close(dir_fd)


# Opens a connected stream socket to the executor, given the connect timeout (e.g. a port-forward through
# the Kubernetes API server); the endpoint is then only a name for messages.
Connector = Callable[[float], socket.socket]


class _FactoryConnection(http.client.HTTPConnection):
    def __init__(self, connector: Connector, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout, blocksize=CHUNK)
        self._connector = connector

    def connect(self) -> None:
        self.sock = self._connector(float(self.timeout or 0) or 5.0)


class ConnectionPool:
    """Idle keep-alive connections to one executor, shared by the clients a backend makes for it.

    At most `max_idle` are kept, none longer than `max_age` seconds idle (below the executor's own idle
    timeout, so the pool does not hand out connections the executor is about to drop).
    """

    def __init__(self, max_idle: int = 4, max_age: float = 60.0) -> None:
        self.max_idle = max_idle
        self.max_age = max_age
        self._idle: list[tuple[float, http.client.HTTPConnection]] = []
        self._lock = threading.Lock()
        self.closed = False

    def take(self) -> http.client.HTTPConnection | None:
        """An idle connection that still looks open, or None."""
        while True:
            with self._lock:
                if not self._idle:
                    return None
                since, conn = self._idle.pop()
            if time.monotonic() - since <= self.max_age and _looks_open(conn):
                return conn
            conn.close()

    def give(self, conn: http.client.HTTPConnection) -> None:
        """Keep `conn` (its last answer read to the end) for the next call, or close it."""
        if conn.sock is not None:
            with self._lock:
                if not self.closed and len(self._idle) < self.max_idle:
                    self._idle.append((time.monotonic(), conn))
                    return
        conn.close()

    def sweep(self) -> int:
        """Close connections idle for longer than `max_age`; return how many are left."""
        now = time.monotonic()
        with self._lock:
            old = [conn for since, conn in self._idle if now - since > self.max_age]
            self._idle = [(since, conn) for since, conn in self._idle if now - since <= self.max_age]
            left = len(self._idle)
        for conn in old:
            conn.close()
        return left

    def close(self) -> None:
        """Close every idle connection; connections given back later are closed too."""
        with self._lock:
            self.closed = True
            idle, self._idle = self._idle, []
        for _, conn in idle:
            conn.close()


def _looks_open(conn: http.client.HTTPConnection) -> bool:
    """An idle connection has nothing to read: readable means closed by the far end (or out of step)."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


# Calls that may be sent again when a reused connection turns out to be dead: they change nothing, or
# nothing more the second time.
_IDEMPOTENT = ("GET", "DELETE")


class ExecutorClient:
    """Talks to one executor. `endpoint` is a Unix socket path ("/...") or "http://host:port"; with
    `connector`, every connection comes from it and `endpoint` only names the executor in messages."""

    def __init__(
        self,
        endpoint: str,
        token: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        connector: Connector | None = None,
        pool: ConnectionPool | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.token = token
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._connector = connector
        self._pool = pool
        self._unix_path: str | None = None
        if connector is not None:
            self._host, self._port = "", 0
        elif endpoint.startswith("/"):
            self._unix_path = endpoint
            self._host, self._port = "", 0
        else:
            parts = urlsplit(endpoint)
            if parts.scheme != "http" or not parts.hostname:
                raise ValueError(
                    f"executor endpoint must be a socket path or http://host:port, got {endpoint!r}"
                )
            self._unix_path = None
            self._host, self._port = parts.hostname, parts.port or 80

    def __repr__(self) -> str:
        return f"ExecutorClient({self.endpoint!r})"

    # -- API --

    def health(self) -> dict[str, Any]:
        return self._json_call("GET", "/health")

    def wait_healthy(self, timeout: float) -> dict[str, Any]:
        """Poll /health until it answers; RuntimeFailure if it has not within `timeout` seconds."""
        return readiness.wait_healthy(self, timeout)

    def execute(self, request: ExecuteRequest) -> Iterator[ExecutionEvent]:
        """Start an execution and return an iterator over its typed events; the last one is the result.

        Refusals (400 bad request, 409 duplicate id, 401) raise here, before iteration starts; a malformed
        event, or a stream that ends without a result, raises RuntimeFailure during iteration.
        """
        body = json.dumps(request.as_json()).encode("utf-8")
        read_timeout = max(self.read_timeout, float(request.timeout) + EXECUTE_MARGIN)
        conn, resp = self._open(
            "POST",
            "/execute",
            body=body,
            headers={"Content-Type": "application/json"},
            read_timeout=read_timeout,
        )
        if resp.status != 200:
            self._fail(conn, resp, "execute")
        return self._events(conn, resp)

    def cancel(self, execution_id: str) -> bool:
        url = f"/executions/{quote(execution_id, safe='')}/cancel"
        return bool(self._json_call("POST", url, idempotent=True).get("cancelled"))

    def list_files(self, path: str = "") -> list[dict[str, Any]]:
        return self._json_call("GET", f"/files?path={quote(path, safe='')}", files=True)["files"]

    def walk_files(self, path: str = "", *, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Files under `path` at any depth (executor/files.py `walk`) and whether there were more than `limit`.

        One request; an executor from before recursive listings ignores the parameter and answers one level,
        which is then walked from here a directory at a time.
        """
        url = f"/files?path={quote(path, safe='')}&recursive=1&limit={limit}"
        answer = self._json_call("GET", url, files=True)
        if answer.get("recursive"):
            return answer["files"], bool(answer.get("truncated"))
        top = answer["files"]  # the old executor's answer: `path` itself, one level
        return walk_listing(
            lambda directory: top if directory == path else self.list_files(directory), path, limit
        )

    def download(self, path: str) -> Iterator[bytes]:
        """Return an iterator over the file's bytes in chunks; FileNotFoundError / ValueError raise here."""
        conn, resp = self._open("GET", self._file_url(path))
        if resp.status != 200:
            self._fail(conn, resp, "download", files=True)
        return self._body(conn, resp)

    def upload(self, path: str, fileobj: BinaryIO, size: int) -> dict[str, Any]:
        """Stream `size` bytes of `fileobj` to `path` in the workspace, never holding it whole."""
        conn = self._connection(self.read_timeout, reuse=False)  # never sent twice: a fresh connection
        try:
            conn.putrequest("PUT", self._file_url(path), skip_accept_encoding=True)
            self._headers(conn, {"Content-Type": "application/octet-stream", "Content-Length": str(size)})
            remaining = size
            resp = None
            while remaining > 0:
                chunk = fileobj.read(min(CHUNK, remaining))
                if not chunk:
                    raise ValueError(
                        f"upload of {path!r}: the file ended after {size - remaining} of {size} bytes"
                    )
                try:
                    conn.send(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    resp = self._early_response(conn)  # refused before the end (bad path): say why
                    if resp is None:
                        raise
                    break
                remaining -= len(chunk)
            if resp is None:
                resp = conn.getresponse()
        except ValueError:
            conn.close()
            raise
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise self._transport_error(exc) from exc
        return self._finish_json(conn, resp, "upload", files=True, expect=(201,))

    def delete(self, path: str) -> None:
        conn, resp = self._open("DELETE", self._file_url(path))
        if resp.status != 204:
            self._fail(conn, resp, "delete", files=True)
        self._release(conn, resp)

    # -- plumbing --

    def _file_url(self, path: str) -> str:
        return "/files/" + quote(path, safe="/")

    def _connection(self, read_timeout: float, *, reuse: bool = True) -> http.client.HTTPConnection:
        if reuse and self._pool is not None:
            pooled = self._pool.take()
            if pooled is not None:
                pooled.sock.settimeout(read_timeout)
                pooled.reused = True  # type: ignore[attr-defined]
                return pooled
        if self._connector is not None:
            conn: http.client.HTTPConnection = _FactoryConnection(self._connector, self.connect_timeout)
        elif self._unix_path is not None:
            conn = _UnixConnection(self._unix_path, self.connect_timeout)
        else:
            conn = http.client.HTTPConnection(
                self._host, self._port, timeout=self.connect_timeout, blocksize=CHUNK
            )
        try:
            conn.connect()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise self._transport_error(exc, connecting=True) from exc
        conn.sock.settimeout(read_timeout)
        if self._unix_path is None and self._connector is None:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.reused = False  # type: ignore[attr-defined]
        return conn

    def _release(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        """After an answer read to its end: back to the pool when the executor keeps the connection open."""
        if self._pool is not None and resp.isclosed() and not resp.will_close:
            self._pool.give(conn)
        else:
            conn.close()

    def _headers(self, conn: http.client.HTTPConnection, headers: dict[str, str]) -> None:
        conn.putheader("Authorization", f"Bearer {self.token}")
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()

    def _open(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        read_timeout: float | None = None,
        idempotent: bool | None = None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send one request and read the head of its answer.

        A reused connection that turns out dead is replaced by a fresh one and the request sent again when
        the request could not be sent whole (then nothing ran), or when it is idempotent; a request that went
        out is never sent twice otherwise (an execute whose answer was lost may have run).
        """
        again = method in _IDEMPOTENT if idempotent is None else idempotent
        timeout = read_timeout if read_timeout is not None else self.read_timeout
        all_headers = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        conn = self._connection(timeout)
        if getattr(conn, "reused", False):
            try:
                conn.request(method, url, body=body, headers=all_headers)
            except (OSError, http.client.HTTPException):
                conn.close()  # not sent whole: the executor cannot have acted on it
            else:
                try:
                    return conn, conn.getresponse()
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    if not again or isinstance(exc, TimeoutError):
                        raise self._transport_error(exc) from exc
            conn = self._connection(timeout, reuse=False)
        try:
            try:
                conn.request(method, url, body=body, headers=all_headers)
            except (BrokenPipeError, ConnectionResetError):
                # The executor may answer (401, 400) and close before reading a body we were still sending.
                resp = self._early_response(conn)
                if resp is None:
                    raise
                return conn, resp
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise self._transport_error(exc) from exc

    @staticmethod
    def _early_response(conn: http.client.HTTPConnection) -> http.client.HTTPResponse | None:
        try:
            return conn.getresponse()
        except (OSError, http.client.HTTPException):
            return None

    def _json_call(
        self, method: str, url: str, *, files: bool = False, idempotent: bool | None = None
    ) -> Any:
        conn, resp = self._open(method, url, idempotent=idempotent)
        return self._finish_json(conn, resp, f"{method} {url.split('?')[0]}", files=files)

    def _finish_json(
        self,
        conn: http.client.HTTPConnection,
        resp: http.client.HTTPResponse,
        what: str,
        *,
        files: bool = False,
        expect: tuple[int, ...] = (200,),
    ) -> Any:
        if resp.status not in expect:
            self._fail(conn, resp, what, files=files)
        try:
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise self._transport_error(exc) from exc
        self._release(conn, resp)
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise RuntimeFailure(
                f"executor at {self.endpoint} sent malformed JSON for {what}: {exc}"
            ) from exc

    def _fail(
        self,
        conn: http.client.HTTPConnection,
        resp: http.client.HTTPResponse,
        what: str,
        *,
        files: bool = False,
    ) -> None:
        """Turn a non-success answer into the right exception, and close the connection."""
        try:
            raw = resp.read(64 * 1024)
        except (OSError, http.client.HTTPException):
            raw = b""
            conn.close()
        else:
            self._release(conn, resp)  # kept only when the answer was read to its end
        try:
            detail = json.loads(raw)
            message = detail.get("message") or detail.get("error") or ""
        except (ValueError, AttributeError):
            message = raw.decode("utf-8", "replace")[:200]
        text = f"executor at {self.endpoint}: {what} answered {resp.status}: {message}"
        if resp.status == 401:
            raise RuntimeFailure(f"executor at {self.endpoint} rejected the token (401)", permanent=True)
        if files and resp.status == 404:
            raise FileNotFoundError(text)
        if files and resp.status in (400, 411):
            raise ValueError(text)
        # 4xx will not change on retry (bad request, duplicate id); 5xx might.
        raise RuntimeFailure(text, permanent=400 <= resp.status < 500)

    def _transport_error(self, exc: BaseException, *, connecting: bool = False) -> RuntimeFailure:
        if isinstance(exc, TimeoutError):
            what = "did not connect" if connecting else "did not answer"
            limit = self.connect_timeout if connecting else "the read timeout"
            return RuntimeFailure(f"executor at {self.endpoint} {what} in time ({limit}): {exc}")
        if isinstance(exc, FileNotFoundError):
            return RuntimeFailure(f"executor at {self.endpoint} is unreachable: the socket does not exist")
        if isinstance(exc, ConnectionRefusedError):
            return RuntimeFailure(f"executor at {self.endpoint} is unreachable: connection refused")
        return RuntimeFailure(f"executor at {self.endpoint} failed: {type(exc).__name__}: {exc}")

    def _events(
        self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse
    ) -> Iterator[ExecutionEvent]:
        owned: http.client.HTTPConnection | None = conn  # closed on the way out unless given back
        try:
            while True:
                try:
                    line = resp.readline()
                except (OSError, http.client.HTTPException) as exc:
                    raise self._transport_error(exc) from exc
                if not line:
                    raise RuntimeFailure(f"executor at {self.endpoint} ended the stream without a result")
                if not line.strip():
                    continue
                try:
                    event = parse_event(json.loads(line))
                except ValueError as exc:
                    raise RuntimeFailure(
                        f"executor at {self.endpoint} sent a malformed event: {exc}"
                    ) from exc
                if event is None:
                    continue  # a kind of event this control plane does not know
                if isinstance(event, ExecutionResult):
                    self._finish_stream(conn, resp)
                    owned = None
                    yield event
                    return
                yield event
        finally:
            if owned is not None:
                owned.close()

    def _finish_stream(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        """After the result: read the stream's end (its last chunk), then keep or close the connection."""
        if self._pool is None:
            conn.close()
            return
        try:
            rest = resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            return
        if rest.strip():
            conn.close()  # more than the end after the result: not a connection to reuse
        else:
            self._release(conn, resp)

    def _body(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> Iterator[bytes]:
        owned: http.client.HTTPConnection | None = conn  # closed on the way out unless given back
        try:
            while True:
                try:
                    chunk = resp.read1(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise self._transport_error(exc) from exc
                if not chunk:
                    if resp.length:  # http.client ends a short Content-Length body quietly
                        raise RuntimeFailure(
                            f"executor at {self.endpoint} ended the download {resp.length} bytes short"
                        )
                    self._release(conn, resp)
                    owned = None
                    return
                yield chunk
        finally:
            if owned is not None:
                owned.close()
