"""HTTP/1.1 handling: the bearer-token check, routing, JSON replies, the chunked NDJSON stream, file bodies.

http1.RequestHandler reads requests; replies are written by hand, head and body in one write, so a small
answer is one send (no Nagle/delayed-ACK stall on TCP) and nothing is logged per request. The execution
stream uses chunked transfer encoding, one chunk per event, written as the event is produced.
"""

from __future__ import annotations

import json
import re
import socket
from urllib.parse import parse_qs, unquote, urlsplit

from . import VERSION, files
from .executions import DuplicateExecution, Execution
from .http1 import RequestHandler, reason
from .spec import BadRequest, ExecutionSpec

MAX_JSON_BODY = 48 * 1024 * 1024
# Before an early answer (401, 400 ...) an unread body up to this size is read and dropped, so the connection
# stays usable and the client, still sending it, never meets a reset; a bigger one closes the connection.
SKIP_BODY_MAX = 1024 * 1024
_CANCEL = re.compile(r"/executions/([^/]+)/cancel\Z")
# A recursive listing (GET /files?recursive=1) answers at most this many files, or the caller's lower limit.
MAX_LIST_FILES = 100_000


class HTTPError(Exception):
    """Answer the request with this status and JSON body."""

    def __init__(self, status: int, error: str, message: str = "") -> None:
        super().__init__(message or error)
        self.status = status
        self.payload = {"error": error, "message": message} if message else {"error": error}


def _list_limit(raw: str) -> int:
    if not raw:
        return MAX_LIST_FILES
    if not raw.isdigit() or int(raw) < 1:
        raise HTTPError(400, "bad_request", "limit must be a positive integer")
    return min(int(raw), MAX_LIST_FILES)


def _walk(workspace: str, rel: str, limit: int) -> dict:
    # `recursive: true` tells the client this executor walked (an older one ignores the parameter).
    found, truncated = files.walk(workspace, rel, limit)
    return {"files": found, "recursive": True, "truncated": truncated}


class ExecutorHandler(RequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"sandbox-executor/{VERSION}"
    # Applies to each read and write on the connection: an idle keep-alive connection or a client that
    # stops reading a stream is dropped after this long (a silent running execution writes nothing).
    timeout = 120

    def setup(self) -> None:
        super().setup()
        if self.connection.family in (socket.AF_INET, socket.AF_INET6):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._replied = False
        self._body_touched = False

    def refuse(self, status: int, error: str, message: str) -> None:
        self._json(status, {"error": error, "message": message})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        self._replied = False
        self._body_touched = False
        app = self.server.app  # type: ignore[attr-defined]
        if not self._authorized(app.config):
            self._skip_body()
            self._json(401, {"error": "unauthorized"})
            return
        try:
            self._route(app, method)
        except HTTPError as exc:
            self._skip_body()
            self._json(exc.status, exc.payload)
        except (ConnectionError, TimeoutError, socket.timeout):  # noqa: UP041 - distinct on Python 3.9
            self.close_connection = True
        except Exception:  # a bug: answer 500 if we still can, and keep serving others
            import traceback  # only here: its import is not worth a share of every daemon start

            traceback.print_exc()
            self.close_connection = True
            if not self._replied:
                self._json(500, {"error": "internal_error"})

    def _authorized(self, config) -> bool:
        scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
        # The hash is compared whatever the scheme, so a refusal takes as long for every header.
        admitted = config.admits(given)
        return admitted and scheme == "Bearer" and bool(given)

    def _route(self, app, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path
        cancel = _CANCEL.match(path)
        if path == "/health" and method == "GET":
            self._json(200, app.health())
        elif path == "/execute" and method == "POST":
            self._execute(app)
        elif cancel is not None and method == "POST":
            self._read_body(1024 * 1024)
            execution_id = unquote(cancel.group(1))
            self._json(200, {"cancelled": app.registry.cancel(execution_id)})
        elif path == "/files" and method == "GET":
            query = parse_qs(url.query, keep_blank_values=True)
            rel = query.get("path", [""])[0]
            if query.get("recursive", [""])[0] in ("1", "true"):
                limit = _list_limit(query.get("limit", [""])[0])
                self._files_call(lambda: self._json(200, _walk(app.config.workspace, rel, limit)))
            else:
                self._files_call(
                    lambda: self._json(200, {"files": files.list_dir(app.config.workspace, rel)})
                )
        elif path.startswith("/files/") and method in ("GET", "PUT", "DELETE"):
            rel = unquote(path[len("/files/") :])
            action = {"GET": self._download, "PUT": self._upload, "DELETE": self._delete}[method]
            self._files_call(lambda: action(app.config.workspace, rel))
        else:
            raise HTTPError(404, "not_found", f"no route for {method} {path}")

    # -- executions --

    def _execute(self, app) -> None:
        try:
            body = json.loads(self._read_body(MAX_JSON_BODY))
        except ValueError as exc:
            raise HTTPError(400, "bad_request", f"the body is not valid JSON: {exc}") from None
        try:
            spec = ExecutionSpec.parse(body)
        except BadRequest as exc:
            raise HTTPError(400, "bad_request", str(exc)) from None
        execution = Execution(spec, app.config, app.zygote)
        try:
            app.registry.add(execution)
        except DuplicateExecution:
            execution.close()
            raise HTTPError(
                409, "duplicate_execution", f"execution {spec.execution_id} is already running"
            ) from None
        try:
            self._write(
                self._head(200, [("Content-Type", "application/x-ndjson"), ("Transfer-Encoding", "chunked")])
            )
            result = execution.run(self._emit, self.connection)
        finally:
            app.registry.remove(execution)
        self._emit(result)
        self._write(b"0\r\n\r\n")

    def _emit(self, event: dict) -> None:
        try:
            line = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
        except UnicodeEncodeError:
            # A lone surrogate (a return value like "\udc80" survives JSON): keep it as an escape instead.
            line = json.dumps(event, separators=(",", ":")).encode("ascii") + b"\n"
        self._write(b"%x\r\n%s\r\n" % (len(line), line))

    # -- files --

    def _files_call(self, call) -> None:
        try:
            call()
        except files.PathError as exc:
            raise HTTPError(400, "bad_path", str(exc)) from None
        except FileNotFoundError:
            raise HTTPError(404, "not_found", "no such file or directory") from None
        except NotADirectoryError:
            raise HTTPError(404, "not_found", "no such file or directory") from None

    def _download(self, workspace: str, rel: str) -> None:
        fd, size = files.open_for_read(workspace, rel)
        with open(fd, "rb") as fh:
            self._write(
                self._head(200, [("Content-Type", "application/octet-stream"), ("Content-Length", size)])
            )
            sent = self.connection.sendfile(fh, 0, size) if size else 0
        if sent < size:
            self.close_connection = True  # it shrank while we sent it: the client sees a short body

    def _upload(self, workspace: str, rel: str) -> None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise HTTPError(411, "length_required", "send the upload with a Content-Length")
        length = self._content_length()
        path = files.resolve(workspace, rel)

        def read(n: int) -> bytes:
            self._body_touched = True
            return self.rfile.read(n)

        size = files.write_stream(workspace, rel, read, length)
        self._json(201, {"path": files.relative(workspace, path), "size": size})

    def _delete(self, workspace: str, rel: str) -> None:
        files.delete(workspace, rel)
        self._json(204, None)

    # -- plumbing --

    def _content_length(self) -> int:
        raw = self.headers.get("Content-Length")
        if raw is None:
            raise HTTPError(411, "length_required", "Content-Length is required")
        if not raw.strip().isdigit():
            raise HTTPError(400, "bad_request", "Content-Length is not a number")
        return int(raw)

    def _skip_body(self) -> None:
        if self._body_touched:
            self.close_connection = True  # half-read: we no longer know where the next request starts
            return
        self._body_touched = True
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            return
        raw = (self.headers.get("Content-Length") or "0").strip()
        if not raw.isdigit() or int(raw) > SKIP_BODY_MAX:
            self.close_connection = True
            return
        try:
            if len(self.rfile.read(int(raw))) != int(raw):
                self.close_connection = True
        except OSError:
            self.close_connection = True

    def _read_body(self, limit: int) -> bytes:
        if self.headers.get("Content-Length") is None and self.command == "POST":
            return b""
        length = self._content_length()
        if length > limit:
            raise HTTPError(413, "too_large", f"the body may be at most {limit} bytes")
        self._body_touched = True
        body = self.rfile.read(length)
        if len(body) != length:
            raise ConnectionError("the client sent a short body")
        return body

    def _head(self, status: int, headers: list) -> bytes:
        self._replied = True
        lines = [f"HTTP/1.1 {status} {reason(status)}", f"Server: {self.server_version}"]
        lines += [f"{name}: {value}" for name, value in headers]
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _json(self, status: int, payload: object) -> None:
        if status == 204:
            self._write(self._head(204, []))
            return
        body = json.dumps(payload).encode("utf-8")
        self._write(
            self._head(status, [("Content-Type", "application/json"), ("Content-Length", len(body))]) + body
        )

    def _write(self, data: bytes) -> None:
        self.wfile.write(data)
