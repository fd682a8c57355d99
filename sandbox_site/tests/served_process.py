"""A real `manage.py serve` on a free loopback port against the test run's database, for tests that need the
served application (uvicorn, its web processes, the worker) rather than Django's test client."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sandbox_site.testing import wait_until

BASE_DIR = Path(__file__).resolve().parents[2]


@dataclass
class Served:
    url: str
    port: int
    process: subprocess.Popen
    data_dir: Path
    log: Path

    def tree(self) -> list[int]:
        """Pids of `serve` and every process below it (uvicorn's supervisor and web processes, the worker)."""
        return process_tree(self.process.pid)

    def rss(self) -> int:
        """Resident memory of the whole process tree, in bytes (VmRSS from /proc/<pid>/status)."""
        return sum(rss_of(pid) for pid in self.tree())


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, []))
    return found


def children_of(parent: int) -> list[int]:
    return [pid for pid in process_tree(parent) if pid != parent and _parent_of(pid) == parent]


def _parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def rss_of(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_health(served: Served, timeout: float = 60) -> None:
    def answers() -> bool:
        if served.process.poll() is not None:
            raise RuntimeError(
                f"the server exited with {served.process.returncode}:\n{served.log.read_text()[-3000:]}"
            )
        urllib.request.urlopen(f"{served.url}/api/v1/health", timeout=10).close()
        return True

    wait_until(
        answers,
        timeout=timeout,
        interval=0.1,
        ignoring=(OSError,),
        what=f"{served.url}/api/v1/health to answer",
        context=lambda: served.log.read_text()[-3000:],
    )


def stop(served: Served, timeout: float = 20) -> None:
    """One SIGTERM to `serve` (it passes one on to each child), then SIGKILL for whatever is left."""
    if served.process.poll() is None:
        os.killpg(served.process.pid, signal.SIGTERM)
        try:
            served.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for pid in served.tree():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            served.process.wait()


@contextmanager
def serve(database_url: str, secret_key: str, *, workers: bool, **env_overrides: str) -> Iterator[Served]:
    """`manage.py serve` in a fresh data dir; the log is printed at the end (pytest shows it on failure)."""
    # Short path under /tmp: sandboxes' Unix sockets live below it, and socket paths are capped at 108 bytes.
    data_dir = Path(tempfile.mkdtemp(prefix="scp-srv-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "REDIS_URL")}
    env.update(
        DATABASE_URL=database_url,
        SANDBOX_DATA_DIR=str(data_dir),
        SANDBOX_RUNTIME="process",
        DJANGO_SECRET_KEY=secret_key,
        PYTHONUNBUFFERED="1",
        **{"LOG_LEVEL": "WARNING", **env_overrides},
    )
    port = free_port()
    log = data_dir / "serve.log"
    command = [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "ab") as sink:
        process = subprocess.Popen(
            command + ([] if workers else ["--no-workers"]),
            cwd=BASE_DIR,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    served = Served(url=f"http://127.0.0.1:{port}", port=port, process=process, data_dir=data_dir, log=log)
    try:
        wait_for_health(served)
        yield served
    finally:
        stop(served)
        print(f"--- server log ---\n{log.read_text()[-4000:]}")
        shutil.rmtree(data_dir, ignore_errors=True)


@contextmanager
def serve_test_database(django_db_blocker, *, workers: bool, **env_overrides: str) -> Iterator[Served]:
    """`serve` against this test run's database, with its secret key (module-scoped fixtures use this)."""
    from django.conf import settings

    from conftest import database_url_of_test_db

    with django_db_blocker.unblock():
        database_url = database_url_of_test_db()
    with serve(database_url, settings.SECRET_KEY, workers=workers, **env_overrides) as live:
        yield live
