"""Reaching an executor through the API server: a port-forward stream per connection.

The control plane never talks to pod IPs (they need not be routable from where it runs, and on the test
cluster they are not): the API server opens the stream to the kubelet, which connects to the executor on the
pod's own loopback. `kubernetes.stream.portforward` gives one end of a socket pair, serviced by a thread of
the client library, which http.client uses like any socket.

Opening a port-forward costs a websocket handshake through the API server to the kubelet (~13-25 ms on the
test cluster), so the backend keeps the connections alive: its clients share a `runtime.client.ConnectionPool`
per pod and one port-forward carries request after request (HTTP/1.1 keep-alive; the executor keeps
connections open). bench/k8s_transport.py compares the three ways in: on the one-node test cluster, 2 cores
at a load average of 8 (other test runs), medians of 40 samples were /health 3.4 ms on a kept-alive
port-forward against 26.5 ms on a fresh one, an execute of `print(1)` 17.5 ms against 43.6 ms, and an exec
stream running `cat` 96.8 ms, so requests go over kept-alive port-forwards and exec streams are not used.

The client library opens a stream by swapping its ApiClient's `request` method for the length of the call,
which is not thread-safe: two overlapping opens can leave the swapped method in place, and every later REST
call on that client then fails. So streams use an ApiClient of their own (never the one for REST calls), and
opening one holds STREAM_LOCK (only the handshake; the stream itself runs unlocked).
"""

from __future__ import annotations

import functools
import socket
import threading
import time
from typing import Any

from kubernetes.stream import portforward, ws_client

STREAM_LOCK = threading.Lock()


def _ending_cleanly(proxy: Any) -> Any:
    """The library's proxy thread, made to close the local socket and the websocket when it fails.

    When the API server ends a port-forward while the thread is still writing to it (the kubelet could not
    connect: the executor does not listen yet), the write raises in the thread, which then dies with a
    logged traceback and leaves the application's end of the socket pair open: a request on it would wait
    for its whole read timeout instead of failing at once. Ended here, it fails at once and quietly.
    """

    @functools.wraps(proxy)
    def run(self: Any) -> None:
        try:
            proxy(self)
        except Exception:  # noqa: BLE001 - any failure ends the stream; the application sees it closed
            for port in self.local_ports.values():
                try:
                    port.python.close()
                except OSError:
                    pass
            try:
                self.websocket.close()
            except Exception:  # noqa: BLE001, S110 - already broken
                pass

    run.ends_cleanly = True  # type: ignore[attr-defined]
    return run


if not getattr(ws_client.PortForward._proxy, "ends_cleanly", False):
    ws_client.PortForward._proxy = _ending_cleanly(ws_client.PortForward._proxy)


def connector(stream_core: Any, namespace: str, pod: str, port: int) -> Any:
    """A `runtime.client.Connector` for the executor listening on `port` inside `pod`; `stream_core` is a
    CoreV1Api used for streams only."""

    def connect(timeout: float) -> socket.socket:
        try:
            with STREAM_LOCK:
                forward = portforward(
                    stream_core.connect_get_namespaced_pod_portforward,
                    pod,
                    namespace,
                    ports=str(port),
                    _request_timeout=timeout,
                )
        except Exception as exc:  # ApiException, websocket and socket errors all mean "cannot reach it"
            raise ConnectionRefusedError(f"port-forward to pod {namespace}/{pod}:{port}: {exc}") from exc
        sock = QuietClose(forward.socket(port))
        sock.settimeout(timeout)
        return sock  # type: ignore[return-value]  # a socket in every way http.client uses one

    return connect


class QuietClose:
    """The application's end of a port-forward socket pair, closed so that the library's proxy thread sees
    an orderly end of stream.

    Closing a socket pair end with data still unread in it (a response body abandoned half way, a download
    stopped early) makes the proxy thread's next read fail with ConnectionResetError: the thread dies with
    a logged traceback and leaves its websocket open. So `close` first shuts down writing (the proxy reads
    the end of stream, closes its end and then the websocket), discards whatever is still arriving until
    the proxy's end is closed, with a short deadline, and only then closes.
    """

    def __init__(self, sock: Any, grace: float = 2.0) -> None:
        self._sock = sock
        self._grace = grace
        self._closed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + self._grace
            while (left := deadline - time.monotonic()) > 0:
                self._sock.settimeout(left)
                if not self._sock.recv(65536):
                    break
        except OSError:
            pass
        finally:
            self._sock.close()
