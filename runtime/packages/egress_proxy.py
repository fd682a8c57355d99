"""A small forward proxy on 127.0.0.1 that every package download goes through, enforcing the index policy.

pip is told `--proxy http://127.0.0.1:<port>`, so every connection it makes - to the index, to a files host
the index links to (pypi.org -> files.pythonhosted.org), to wherever a redirect points - arrives here as a
CONNECT (https) or an absolute-URI request (plain http). For each, the proxy resolves the host once per
download, checks every address against the policy (index_policy.py), pins the first and connects to that
address only; a later DNS answer cannot move the download elsewhere (no rebinding). A refused or unreachable
destination gets one uniform 403 with the same text, so pip's error output cannot tell which ports answer.

One proxy serves one download and is closed after it; it only ever listens on loopback, and only the control
plane's own pip process is told its port.
"""

from __future__ import annotations

import contextlib
import select
import socket
import socketserver
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

from runtime.packages import index_policy

HEADER_LIMIT = 64 * 1024
CONNECT_TIMEOUT = 15.0
IDLE_TIMEOUT = 120.0
_REFUSAL_TEXT = b"destination refused by the package index egress policy\n"
REFUSAL = (
    b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    + f"Content-Length: {len(_REFUSAL_TEXT)}\r\n\r\n".encode()
    + _REFUSAL_TEXT
)


class EgressProxy(socketserver.ThreadingTCPServer):
    """CONNECT and plain-http proxy; `pinned` maps (host, port) to the address chosen on first use."""

    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, rules: index_policy.IndexPolicy) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.rules = rules
        self.pinned: dict[tuple[str, int], str | None] = {}
        self.refused: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def destination(self, host: str, port: int) -> str | None:
        """The pinned address for host:port (resolved and checked on first use), or None: refused."""
        key = (host.lower().rstrip("."), port)
        with self._lock:
            if key not in self.pinned:
                address = index_policy.pick_address(self.rules, key[0], port)
                self.pinned[key] = str(address) if address is not None else None
                if address is None:
                    self.refused.append(key)
            return self.pinned[key]


class _Handler(socketserver.BaseRequestHandler):
    server: EgressProxy

    def handle(self) -> None:
        client: socket.socket = self.request
        client.settimeout(IDLE_TIMEOUT)
        head = _read_head(client)
        if head is None:
            return
        request_line, _, rest = head.partition(b"\r\n")
        parts = request_line.decode("latin-1").split()
        if len(parts) != 3:
            return
        method, target, version = parts
        if method.upper() == "CONNECT":
            host, port = _host_port(target, 443)
            upstream = self._connect(host, port)
            if upstream is None:
                client.sendall(REFUSAL)
                return
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            leftover = head.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in head else b""
            if leftover:
                upstream.sendall(leftover)
            _relay(client, upstream)
            return
        url = urlsplit(target)
        if url.scheme != "http" or not url.hostname:
            client.sendall(REFUSAL)
            return
        upstream = self._connect(url.hostname, url.port or 80)
        if upstream is None:
            client.sendall(REFUSAL)
            return
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        headers, _, body = rest.partition(b"\r\n\r\n")
        kept = [
            line
            for line in headers.split(b"\r\n")
            if line and not line.lower().startswith((b"proxy-", b"connection:", b"keep-alive:"))
        ]
        upstream.sendall(
            f"{method} {path} {version}\r\n".encode("latin-1")
            + b"\r\n".join([*kept, b"Connection: close"])
            + b"\r\n\r\n"
            + body
        )
        _relay(client, upstream)

    def _connect(self, host: str, port: int) -> socket.socket | None:
        address = self.server.destination(host, port)
        if address is None:
            return None
        try:
            upstream = socket.create_connection((address, port), timeout=CONNECT_TIMEOUT)
        except OSError:
            return None  # same answer as a refusal: no port-state oracle
        upstream.settimeout(IDLE_TIMEOUT)
        return upstream


def _read_head(sock: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > HEADER_LIMIT:
            return None
        try:
            chunk = sock.recv(8192)
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return data


def _host_port(target: str, default: int) -> tuple[str, int]:
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else default
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return target, default
    return host, int(port)


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Copy both ways until either side closes or stays idle past IDLE_TIMEOUT."""
    try:
        sockets = [a, b]
        while True:
            readable, _, _ = select.select(sockets, [], [], IDLE_TIMEOUT)
            if not readable:
                return
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                (b if sock is a else a).sendall(data)
    except OSError:
        return
    finally:
        b.close()


@contextlib.contextmanager
def running(rules: index_policy.IndexPolicy) -> Iterator[EgressProxy]:
    """A proxy serving in a background thread for the duration of the block."""
    proxy = EgressProxy(rules)
    thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(timeout=5)
