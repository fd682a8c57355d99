"""Reading HTTP/1.1 requests off a connection, for the executor's handler (handlers.py), instead of http.server.

The daemon's start-up is on the path of every cold sandbox start, and importing http.server brings
http.client, ssl, email and html along: about 40% of the CPU the daemon spends until it listens. The
executor needs none of that: a request line, headers by case-insensitive name, keep-alive, and
`Expect: 100-continue`. What it refuses (a malformed request line, too long a line, too many headers, an
unknown method, HTTP/2 and later) is answered through the handler's `refuse` and the connection closed.
"""

from __future__ import annotations

import socket
import socketserver
from http import HTTPStatus

MAX_LINE = 65536  # request line and each header line, as http.server allows
MAX_HEADERS = 100


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class Headers:
    """A request's headers by case-insensitive name; `get` gives the first of repeated ones."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    def add(self, name: str, value: str) -> None:
        self._values.setdefault(name.lower(), value)

    def get(self, name: str) -> str | None:
        return self._values.get(name.lower())


class Refused(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


class RequestHandler(socketserver.StreamRequestHandler):
    """Answers requests on one connection until either side ends it; `do_<METHOD>` answers one request.

    After each request `close_connection` says whether to stop: HTTP/1.1 keeps the connection unless the
    client sends `Connection: close`, HTTP/1.0 closes it unless the client asks for keep-alive.
    """

    close_connection = True
    command = ""
    path = ""
    request_version = ""
    headers = Headers()

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection:
            self.handle_one_request()

    def handle_one_request(self) -> None:
        try:
            line = self.rfile.readline(MAX_LINE + 1)
            if not line:
                self.close_connection = True
                return
            try:
                self._parse(line)
                answer = getattr(self, "do_" + self.command, None)
                if answer is None:
                    raise Refused(501, "not_implemented", f"unsupported method {self.command!r}")
            except Refused as exc:
                self.close_connection = True
                self.refuse(exc.status, exc.error, exc.message)
                return
            answer()
        except (TimeoutError, socket.timeout):  # noqa: UP041 - distinct on Python 3.9; a read or write timed out
            self.close_connection = True

    def refuse(self, status: int, error: str, message: str) -> None:
        """Answer a request that cannot be read (the subclass writes the body)."""
        raise NotImplementedError

    def _parse(self, raw: bytes) -> None:
        self.command = ""
        if len(raw) > MAX_LINE:
            raise Refused(414, "uri_too_long", "the request line is too long")
        words = raw.decode("iso-8859-1").rstrip("\r\n").split()
        if len(words) != 3:
            raise Refused(400, "bad_request", "malformed request line")
        command, path, version = words
        major, _, minor = version[5:].partition(".") if version.startswith("HTTP/") else ("", "", "")
        if not (major.isdigit() and minor.isdigit() and len(major) <= 10 and len(minor) <= 10):
            raise Refused(400, "bad_request", f"bad HTTP version {version!r}")
        number = (int(major), int(minor))
        if number >= (2, 0):
            raise Refused(505, "version_not_supported", f"HTTP version {version!r} is not supported")
        self.command, self.request_version = command, version
        # "//x" would read as a host name to urlsplit; as http.server does, it is the path "/x".
        self.path = "/" + path.lstrip("/") if path.startswith("//") else path
        self.headers = self._read_headers()
        connection = (self.headers.get("Connection") or "").lower()
        self.close_connection = connection == "close" or (number < (1, 1) and connection != "keep-alive")
        expect = (self.headers.get("Expect") or "").lower()
        if expect == "100-continue" and number >= (1, 1):
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _read_headers(self) -> Headers:
        headers = Headers()
        count = 0
        while True:
            line = self.rfile.readline(MAX_LINE + 1)
            if len(line) > MAX_LINE:
                raise Refused(431, "headers_too_large", "a header line is too long")
            if line in (b"\r\n", b"\n", b""):
                return headers
            count += 1
            if count > MAX_HEADERS:
                raise Refused(431, "headers_too_large", f"more than {MAX_HEADERS} headers")
            name, colon, value = line.decode("iso-8859-1").partition(":")
            if not colon or not name or name != name.strip():
                raise Refused(400, "bad_request", "malformed header line")
            headers.add(name, value.strip())
