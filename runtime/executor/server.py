"""The executor daemon's process: token hygiene, the zygote, listeners on a Unix socket and/or TCP, shutdown.

Start-up order matters: the token is taken out of the environment first (config), the process is made
non-dumpable (so sandboxed code, running as the same user, cannot read the token from /proc/<pid>/environ or
/proc/<pid>/mem), the zygote is started from the cleaned environment, and then the daemon listens at once and
prints its one "executor listening on ..." line. The zygote warms up (imports) in the background meanwhile:
a sandbox is healthy as soon as its daemon answers, and an execution that comes before the zygote is warm
runs in a fresh interpreter (see zygote.Zygote.fork for why it does not wait). SIGTERM kills every running
execution's process group and the zygote (warm or not), then exits 0 at once.
"""

from __future__ import annotations

import os
import signal
import socket
import socketserver
import stat
import sys
import threading

from . import VERSION
from .config import Config, ConfigError, parse_config
from .executions import Registry
from .handlers import ExecutorHandler
from .network import interfaces_up
from .prctl import set_dumpable
from .zygote import Zygote

# Tests only: the path of a FIFO that holds the first zygote's warm-up until it is opened for writing.
ZYGOTE_GATE_ENV = "SANDBOX_EXECUTOR_TEST_ZYGOTE_GATE"


class App:
    """What every request handler shares: the config, the running executions and the zygote."""

    def __init__(self, config: Config, *, zygote_gate: str | None = None) -> None:
        self.config = config
        self.registry = Registry()
        self.zygote = Zygote(config.base_env, gate=zygote_gate) if config.use_zygote else None

    def health(self) -> dict:
        zygote = self.zygote
        return {
            "status": "ok",
            "version": VERSION,
            "active_executions": len(self.registry),
            "languages": self.config.languages(),
            "interfaces_up": interfaces_up(),
            "zygote": {
                "enabled": zygote is not None,
                "ready": zygote.pid is not None if zygote else False,
                "pid": zygote.pid if zygote else None,
                "restarts": max(zygote.restarts, 0) if zygote else 0,
            },
        }

    def shutdown(self) -> None:
        self.registry.kill_all()
        if self.zygote is not None:
            self.zygote.stop()
        path = self.config.socket_path
        if path:
            try:
                os.unlink(path)
            except OSError:
                pass


class _Quiet:
    """Client disconnects are routine for a streaming server; anything else is worth a traceback."""

    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, socket.timeout)):  # noqa: UP041
            super().handle_error(request, client_address)  # type: ignore[misc]


class UnixServer(_Quiet, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    def __init__(self, path: str, app: App) -> None:
        self.app = app
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)  # left by a previous daemon that did not get to clean up
        except FileNotFoundError:
            pass
        self.path = path
        super().__init__(path, ExecutorHandler)
        # Anyone who can reach the socket's directory may connect; the token is what admits a request. A
        # container's executor often runs as a different uid than the control plane that connects.
        os.chmod(path, 0o666)

    def describe(self) -> str:
        return self.path


class TCPServer(_Quiet, socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True

    def __init__(self, host: str, port: int, app: App) -> None:
        self.app = app
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), ExecutorHandler)
        self.host = host
        self.port = self.socket.getsockname()[1]  # the real one when asked for port 0

    def describe(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def main(argv: list[str] | None = None) -> int:
    zygote_gate = os.environ.pop(ZYGOTE_GATE_ENV, None)  # before config copies the environment for children
    try:
        config = parse_config(argv)
    except ConfigError as exc:
        sys.stderr.write(f"executor: {exc}\n")
        return 2
    set_dumpable(False)  # before the zygote and any listener exist: nothing of ours is readable
    app = App(config, zygote_gate=zygote_gate)

    def stop(signum: int, frame: object) -> None:
        app.shutdown()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if app.zygote is not None:
        app.zygote.start()  # returns once the process exists; it warms up while we listen
    servers: list = []
    try:
        if config.socket_path:
            servers.append(UnixServer(config.socket_path, app))
        if config.tcp:
            servers.append(TCPServer(config.tcp[0], config.tcp[1], app))
    except OSError as exc:
        sys.stderr.write(f"executor: cannot listen: {exc}\n")
        app.shutdown()
        return 1
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, name="tcp-listener", daemon=True).start()
    sys.stderr.write(f"executor listening on {', '.join(s.describe() for s in servers)}\n")
    sys.stderr.flush()
    servers[0].serve_forever()
    return 0
