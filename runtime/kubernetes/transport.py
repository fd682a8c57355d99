"""Reaching an executor through the API server: a port-forward stream per connection.

The control plane never talks to pod IPs (they need not be routable from where it runs, and on the test
cluster they are not): the API server opens the stream to the kubelet, which connects to the executor on the
pod's own loopback. `kubernetes.stream.portforward` gives one end of a socket pair, serviced by a thread of
the client library, which http.client uses like any socket.

The client library opens a stream by swapping its ApiClient's `request` method for the length of the call,
which is not thread-safe: two overlapping opens can leave the swapped method in place, and every later REST
call on that client then fails. So streams use an ApiClient of their own (never the one for REST calls), and
opening one holds STREAM_LOCK (only the handshake; the stream itself runs unlocked).
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from kubernetes.stream import portforward

STREAM_LOCK = threading.Lock()


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
        sock: socket.socket = forward.socket(port)
        sock.settimeout(timeout)
        return sock

    return connect
