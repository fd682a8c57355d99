"""Executor daemon lifecycle: auth, streaming, timeouts, cancel, output caps, the zygote, limits, shutdown."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from runtime.base import ExecuteRequest, RuntimeFailure
from runtime.client import ExecutorClient
from runtime.events import ExecutionResult, ExecutionStarted, OutputChunk
from runtime.executor.network import interfaces_up
from runtime.tests.test_executor_support import (
    TOKEN,
    Run,
    new_id,
    run,
    running_daemon,
    spawn_daemon,
    wait_gone,
)

# The daemon's test hook (runtime/executor/server.py): a FIFO its first zygote opens before any import, so the
# zygote stays "warming up" until the test opens the FIFO for writing.
ZYGOTE_GATE = "SANDBOX_EXECUTOR_TEST_ZYGOTE_GATE"


@pytest.fixture(scope="module")
def executor():
    with running_daemon() as daemon:
        wait_zygote_ready(daemon.client)
        yield daemon


def wait_zygote_ready(client: ExecutorClient, timeout: float = 10.0) -> dict:
    """The daemon listens before its zygote is warm; tests about the zygote wait for it."""
    deadline = time.monotonic() + timeout
    while True:
        zygote = client.health()["zygote"]
        if zygote["ready"] or time.monotonic() > deadline:
            return zygote
        time.sleep(0.01)


def raw_request(daemon, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """A request that bypasses ExecutorClient, to see exactly what the daemon answers."""

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(10)
            self.sock.connect(str(daemon.socket))

    conn = UnixConnection("localhost")
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read()
    finally:
        conn.close()


# -- auth --


def test_requests_without_a_token_get_401(executor):
    status, ctype, body = raw_request(executor, "GET", "/health")
    assert status == 401
    assert ctype == "application/json"
    assert json.loads(body) == {"error": "unauthorized"}


def test_a_wrong_token_is_refused_and_the_client_says_it_is_permanent(executor):
    status, _, _ = raw_request(executor, "GET", "/health", headers={"Authorization": "Bearer wrong"})
    assert status == 401
    with pytest.raises(RuntimeFailure) as info:
        ExecutorClient(str(executor.socket), "wrong").health()
    assert info.value.permanent
    with pytest.raises(RuntimeFailure):
        ExecutorClient(str(executor.socket), TOKEN + "x").execute(
            ExecuteRequest(execution_id=new_id(), language="python", code="print(1)")
        )


def test_health_reports_languages_and_the_zygote(executor):
    health = executor.client.health()
    assert health["status"] == "ok"
    assert health["active_executions"] == 0
    assert health["languages"] == {"python": True, "javascript": True, "shell": True}
    assert health["zygote"]["enabled"] and health["zygote"]["ready"] and health["zygote"]["pid"] > 0
    # This daemon runs on the host: it sees the host's interfaces that are up, as sysfs lists them.
    assert health["interfaces_up"] == interfaces_up()


def test_interfaces_up_reads_the_up_flag_of_every_interface_but_loopback(tmp_path):
    for name, flags in (("lo", "0x9"), ("eth0", "0x1003"), ("eth1", "0x1002"), ("wg0", "0x91")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "flags").write_text(flags + "\n")
    assert interfaces_up(str(tmp_path)) == ["eth0", "wg0"]
    (tmp_path / "eth1" / "flags").write_text("garbage\n")
    assert interfaces_up(str(tmp_path)) is None  # unreadable: it cannot tell, so it does not say "none"
    assert interfaces_up(str(tmp_path / "missing")) is None


def test_the_daemon_refuses_to_start_without_a_token(tmp_path):
    proc, log = spawn_daemon(tmp_path, "--socket", str(tmp_path / "s"), token=None)
    assert proc.wait(timeout=10) != 0
    assert "token" in log.read_text()


def test_the_token_file_is_read_then_deleted(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("file-token-123\n")
    with running_daemon("--token-file", str(token_file), token=None) as daemon:
        assert not token_file.exists()
        assert ExecutorClient(str(daemon.socket), "file-token-123").health()["status"] == "ok"
        with pytest.raises(RuntimeFailure):
            daemon.client.health()  # the default test token is not this daemon's


def test_a_daemon_given_only_the_token_hash_admits_the_token_and_refuses_others():
    token = "hashed-token-7c1d"
    digest = hashlib.sha256(token.encode()).hexdigest()
    with running_daemon("--token-sha256", digest, token=None) as daemon:
        assert ExecutorClient(str(daemon.socket), token).health()["status"] == "ok"
        for wrong in (digest, token + "x", ""):
            with pytest.raises(RuntimeFailure) as info:
                ExecutorClient(str(daemon.socket), wrong).health()
            assert info.value.permanent
        assert raw_request(daemon, "GET", "/health")[0] == 401
        status, _, _ = raw_request(daemon, "GET", "/health", headers={"Authorization": f"Basic {token}"})
        assert status == 401


@pytest.mark.parametrize("value", ["abc", "g" * 64, ""])
def test_the_daemon_refuses_a_malformed_token_hash(tmp_path, value):
    proc, log = spawn_daemon(tmp_path, "--socket", str(tmp_path / "s"), "--token-sha256", value, token=None)
    assert proc.wait(timeout=10) == 2
    assert "--token-sha256" in log.read_text()


# -- bad requests --


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        json.dumps({"execution_id": "x1", "language": "cobol", "code": "x"}).encode(),
        json.dumps({"execution_id": "x1", "language": "python", "code": ""}).encode(),
        json.dumps({"execution_id": "x1", "language": "python", "code": "x", "timeout": -1}).encode(),
        json.dumps({"execution_id": "x1", "language": "python", "code": "x", "env": {"A": 1}}).encode(),
        json.dumps({"execution_id": "x1", "language": "python", "code": "x", "entrypoint": "a.b"}).encode(),
        json.dumps({"execution_id": "../x", "language": "python", "code": "x"}).encode(),
    ],
)
def test_bad_execute_bodies_get_400_json_not_a_stream(executor, body):
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    status, ctype, raw = raw_request(executor, "POST", "/execute", body=body, headers=headers)
    assert status == 400
    assert ctype == "application/json"
    assert json.loads(raw)["error"] == "bad_request"


def test_the_client_raises_a_permanent_failure_for_a_bad_request(executor):
    with pytest.raises(RuntimeFailure) as info:
        executor.client.execute(ExecuteRequest(execution_id=new_id(), language="cobol", code="x"))
    assert info.value.permanent
    assert "400" in info.value.message


def test_a_duplicate_running_execution_id_gets_409(executor):
    execution_id = new_id()
    events = executor.client.execute(
        ExecuteRequest(execution_id=execution_id, language="python", code="import time\ntime.sleep(5)")
    )
    started = next(events)
    assert isinstance(started, ExecutionStarted)
    with pytest.raises(RuntimeFailure) as info:
        executor.client.execute(ExecuteRequest(execution_id=execution_id, language="python", code="print(1)"))
    assert "409" in info.value.message
    assert executor.client.cancel(execution_id)
    assert Run([started, *events]).status == "cancelled"


# -- streaming --


def test_output_streams_live_before_the_result(executor):
    # The code goes on only once the test has received 'first' (printed without a flush): output that
    # waited for the end would never arrive in time, and the execution would end `timeout`.
    request = ExecuteRequest(
        execution_id=new_id(),
        language="python",
        code=(
            "import os, time\nprint('first', flush=False)\n"
            "while not os.path.exists('go'):\n    time.sleep(0.01)\nprint('second')"
        ),
        timeout=30,
    )
    events = []
    try:
        for event in executor.client.execute(request):
            events.append(event)
            if isinstance(event, OutputChunk):
                (executor.workspace / "go").touch()
    finally:
        (executor.workspace / "go").unlink(missing_ok=True)
    streamed = Run(events)
    assert streamed.status == "completed", streamed.error
    assert streamed.stdout == "first\nsecond\n"


def test_many_small_writes_are_coalesced(executor):
    result = run(executor.client, "for i in range(5000):\n    print(i)")
    chunks = [e for e in result.events if isinstance(e, OutputChunk) and e.stream == "stdout"]
    assert result.stdout == "".join(f"{i}\n" for i in range(5000))
    assert len(chunks) < 100


def test_a_multibyte_character_split_across_reads_survives(executor):
    source = (
        "import os, time\n"
        "data = 'héllo wörld ✓'.encode()\n"
        "for i in range(len(data)):\n"
        "    os.write(1, data[i:i+1])\n"
        "    time.sleep(0.005)\n"
    )
    assert run(executor.client, source).stdout == "héllo wörld ✓"


def test_output_past_the_cap_is_counted_dropped_and_never_blocks(executor):
    source = (
        "import sys\nchunk = 'x' * (1 << 20)\n"
        "for _ in range(50):\n    sys.stdout.write(chunk)\n"
        "print('err', file=sys.stderr)"
    )
    # A writer blocked on a full pipe would never finish: the execution would end `timeout`.
    result = run(executor.client, source, timeout=30)
    assert result.status == "completed"
    assert result.result.metrics.stdout_truncated is True
    assert result.result.metrics.stderr_truncated is False
    assert len(result.stdout) == 1 << 20
    assert result.result.metrics.stdout_bytes == 50 << 20
    assert result.stderr == "err\n"
    assert executor.client.health()["status"] == "ok"


# -- timeouts, cancel, process groups --


def test_a_busy_loop_times_out_promptly_and_leaves_no_process(executor):
    result = run(executor.client, "while True:\n    pass", timeout=2)
    assert result.status == "timeout"
    assert result.error == "execution exceeded its timeout of 2 s"
    assert wait_gone(result.started.pid)


def test_timeout_kills_the_whole_group_including_grandchildren(executor):
    source = (
        "import subprocess, time\n"
        "def handler(event, context):\n"
        "    p = subprocess.Popen(['sleep', '100'])\n"
        "    print(p.pid, flush=True)\n"
        "    time.sleep(100)\n"
    )
    result = run(executor.client, source, timeout=1)
    assert result.status == "timeout"
    grandchild = int(result.stdout.split()[0])
    assert wait_gone(grandchild)
    assert wait_gone(result.started.pid)


def test_background_processes_do_not_outlive_a_completed_execution(executor):
    source = "import subprocess\nprint(subprocess.Popen(['sleep', '100'], stdout=None).pid)"
    # A result held back by the sleeper's inherited stdout would come at the timeout, as `timeout`.
    result = run(executor.client, source, timeout=5)
    assert result.status == "completed"
    assert wait_gone(int(result.stdout))


def test_cancel_kills_a_running_execution(executor):
    execution_id = new_id()
    request = ExecuteRequest(execution_id=execution_id, language="python", code="import time\ntime.sleep(30)")
    events = executor.client.execute(request)
    started = next(events)
    assert isinstance(started, ExecutionStarted)
    assert executor.client.cancel(execution_id) is True
    rest = list(events)
    assert Run([started, *rest]).status == "cancelled"
    assert wait_gone(started.pid)
    assert executor.client.cancel(execution_id) is False  # no longer running


def test_cancel_of_an_unknown_execution_is_false(executor):
    assert executor.client.cancel("no-such-execution") is False


def test_abandoning_the_stream_kills_the_execution(executor):
    events = executor.client.execute(
        ExecuteRequest(
            execution_id=new_id(),
            language="python",
            code="import time\nprint('x', flush=True)\ntime.sleep(30)",
        )
    )
    pid = next(events).pid
    events.close()  # the client goes away mid-stream
    assert wait_gone(pid)
    deadline = time.monotonic() + 3
    while executor.client.health()["active_executions"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert executor.client.health()["active_executions"] == 0


# Each execution waits until all four have started: run one after another, the first would fail.
MEET_THE_OTHERS = """
import os, time
def handler(event, context):
    open(f"arrived-{event['i']}", "w").close()
    deadline = time.monotonic() + 20
    while sum(os.path.exists(f"arrived-{i}") for i in range(4)) < 4:
        if time.monotonic() > deadline:
            raise TimeoutError("the other executions never ran alongside this one")
        time.sleep(0.01)
    return event["i"]
"""


def test_executions_run_concurrently(executor):
    results: list[Run] = []

    def one(i: int) -> None:
        results.append(run(executor.client, MEET_THE_OTHERS, event={"i": i}, timeout=30))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for i in range(4):
            (executor.workspace / f"arrived-{i}").unlink(missing_ok=True)
    assert sorted(r.value for r in results) == [0, 1, 2, 3], [(r.status, r.error) for r in results]


# -- the zygote --


@contextlib.contextmanager
def zygote_held(tmp_path):
    """A daemon whose first zygote is held before its imports; yields the daemon and a `release` function."""
    gate = tmp_path / "zygote-gate"
    os.mkfifo(gate)

    def release() -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                # Non-blocking: fails with ENXIO until the zygote has the FIFO open for reading.
                os.close(os.open(gate, os.O_WRONLY | os.O_NONBLOCK))
                return
            except OSError as exc:
                if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                    raise
            time.sleep(0.01)

    with running_daemon(env={**os.environ, ZYGOTE_GATE: str(gate)}) as daemon:
        yield daemon, release


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return found


PARENT = "import os\ndef handler(event, context):\n    return os.getppid()"


def test_health_answers_and_executions_run_while_the_zygote_is_still_warming_up(tmp_path):
    with zygote_held(tmp_path) as (daemon, release):
        # running_daemon returned once the daemon listened: it did not wait for the zygote.
        health = daemon.client.health()
        assert health["status"] == "ok"
        assert health["zygote"] == {"enabled": True, "ready": False, "pid": None, "restarts": 0}
        assert len(children_of(daemon.proc.pid)) == 1  # the held zygote: started, not warm
        early = run(daemon.client, PARENT)
        assert early.status == "completed"
        assert early.value == daemon.proc.pid  # a fresh interpreter, spawned by the daemon itself
        assert run(daemon.client, "print('still fine')", language="python").stdout == "still fine\n"

        release()
        zygote = wait_zygote_ready(daemon.client)
        assert zygote["ready"] and zygote["pid"] > 0 and zygote["restarts"] == 0
        assert run(daemon.client, PARENT).value == zygote["pid"]  # forked by the now warm zygote


def test_sigterm_while_the_zygote_warms_up_takes_the_zygote_along(tmp_path):
    with zygote_held(tmp_path) as (daemon, _):
        [zygote] = children_of(daemon.proc.pid)
        assert daemon.stop() == 0
        assert wait_gone(zygote)


def test_fifty_trivial_executions_through_the_zygote(executor):
    for i in range(50):
        result = run(executor.client, "def handler(event, context):\n    return event['i']", event={"i": i})
        assert (result.status, result.value) == ("completed", i)


def test_the_zygote_is_restarted_after_it_is_killed(executor):
    before = executor.client.health()["zygote"]
    os.kill(before["pid"], signal.SIGKILL)
    for i in range(3):  # whether the new zygote or a fresh interpreter runs them, they work
        assert run(executor.client, "def handler(e, c):\n    return e", event=i).value == i
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        after = executor.client.health()["zygote"]
        if after["pid"] and after["pid"] != before["pid"]:
            break
        time.sleep(0.05)
    assert after["pid"] != before["pid"]
    assert after["restarts"] == before["restarts"] + 1
    assert run(executor.client, "def handler(e, c):\n    return 'warm again'").value == "warm again"


def test_an_execution_whose_zygote_dies_ends_crashed_and_is_killed(executor):
    events = executor.client.execute(
        ExecuteRequest(execution_id=new_id(), language="python", code="import time\ntime.sleep(30)")
    )
    pid = next(events).pid
    os.kill(executor.client.health()["zygote"]["pid"], signal.SIGKILL)
    result = list(events)[-1]
    assert isinstance(result, ExecutionResult) and result.status == "crashed"
    assert "zygote died" in result.error
    assert wait_gone(pid)


def test_without_the_zygote_executions_spawn_fresh_interpreters():
    with running_daemon("--no-zygote") as daemon:
        assert daemon.client.health()["zygote"]["enabled"] is False
        assert run(daemon.client, "def handler(e, c):\n    return e", event={"a": 1}).value == {"a": 1}
        failed = run(daemon.client, "raise KeyError('k')")
        assert (failed.status, failed.error) == ("failed", "KeyError: 'k'")
        assert "Traceback" in failed.stderr
        timed_out = run(daemon.client, "while True:\n    pass", timeout=1)
        assert timed_out.status == "timeout"
        assert wait_gone(timed_out.started.pid)


def test_the_zygote_does_not_import_modules_from_the_workspace(executor):
    # A json.py in the workspace must not be picked up by the zygote when it restarts.
    (executor.workspace / "json.py").write_text("raise SystemExit('hijacked')\n")
    try:
        pid = executor.client.health()["zygote"]["pid"]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while executor.client.health()["zygote"]["pid"] in (None, pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert executor.client.health()["zygote"]["pid"] not in (None, pid)
        assert run(executor.client, "def handler(e, c):\n    return 'ok'").value == "ok"
    finally:
        (executor.workspace / "json.py").unlink()


# -- limits --


def test_file_size_limit_applies_to_children():
    with running_daemon("--limit", "fsize=100000", "--limit", "nofile=64") as daemon:
        source = "def handler(e, c):\n    open('big.bin', 'wb').write(b'x' * 200000)"
        result = run(daemon.client, source)
        assert result.status == "failed"
        assert "File too large" in result.error
        fds = run(
            daemon.client,
            "import resource\ndef handler(e, c):\n    return resource.getrlimit(resource.RLIMIT_NOFILE)",
        )
        assert fds.value == [64, 64]
        shell = run(daemon.client, "head -c 200000 /dev/zero > big2.bin", language="shell")
        # head dies of SIGXFSZ (restored to its default for programs the executor starts), bash reports it.
        assert shell.status == "failed"
        assert shell.exit_code == 128 + signal.SIGXFSZ
        direct = run(daemon.client, "exec head -c 200000 /dev/zero > big3.bin", language="shell")
        assert direct.status == "crashed"
        assert "SIGXFSZ" in direct.error


def test_the_cpu_limit_follows_the_timeout(executor):
    source = "import resource\ndef handler(e, c):\n    return resource.getrlimit(resource.RLIMIT_CPU)"
    assert run(executor.client, source, timeout=2.5).value == [4, 5]


# -- shutdown --


def test_sigterm_kills_running_executions_and_exits_zero():
    with running_daemon() as daemon:
        wait_zygote_ready(daemon.client)
        events = daemon.client.execute(
            ExecuteRequest(execution_id=new_id(), language="python", code="import time\ntime.sleep(60)")
        )
        pid = next(events).pid
        zygote = daemon.client.health()["zygote"]["pid"]
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=30) == 0
        assert wait_gone(pid)
        assert wait_gone(zygote)
        assert not daemon.socket.exists()
        # The request's thread may still report the killed child before the daemon exits, or the stream is
        # cut off first: either way the execution ends killed, never as a normal completion.
        try:
            tail = list(events)
        except RuntimeFailure:
            return
        assert isinstance(tail[-1], ExecutionResult)
        assert tail[-1].status == "crashed", tail[-1]


def test_the_daemon_runs_on_python_3_9_if_available():
    python39 = "/root/.pyenv/versions/3.9.18/bin/python"
    candidates = [python39, "/usr/bin/python3.9"]
    found = next((p for p in candidates if os.path.exists(p)), None)
    if found is None:
        pytest.skip("no Python 3.9 interpreter on this machine")
    version = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
    assert version.startswith("Python 3.9")
    with running_daemon(python=found) as daemon:
        client = daemon.client
        assert run(client, "import sys\ndef handler(e, c):\n    return sys.version_info[:2]").value == [3, 9]
        assert run(client, "async def handler(e, c):\n    return 'async on 3.9'").value == "async on 3.9"
        assert run(client, "exports.handler = async () => 7", language="javascript").value == 7
        assert run(client, "echo hi", language="shell").stdout == "hi\n"
        assert run(client, "while True:\n    pass", timeout=1).status == "timeout"
        assert daemon.stop() == 0
