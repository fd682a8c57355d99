"""Resource abuse inside a ProcessRuntime sandbox under real bubblewrap: contained, and the session survives.

Fork bombs and memory hogs are stopped by the sandbox's cgroup (root ignores RLIMIT_NPROC), runaway CPU and
output by the executor; every test then runs a normal execution to prove the sandbox still serves.
"""

from __future__ import annotations

import http.client
import os
import socket
import time

import pytest

from runtime.base import RuntimeFailure
from runtime.client import ExecutorClient
from runtime.process.record import read_record
from runtime.tests.conftest import needs_bwrap, run_code

pytestmark = needs_bwrap


def _cgroup_file(runtime, handle, controller: str, name: str) -> str | None:
    paths = ((read_record(runtime.session_dir(handle.session_id)) or {}).get("cgroup") or {}).get("paths", {})
    directory = paths.get(controller) or paths.get("unified")
    if not directory or not os.path.exists(os.path.join(directory, name)):
        return None
    with open(os.path.join(directory, name)) as fh:
        return fh.read()


def _cgroup_procs(runtime, handle) -> set[int]:
    raw = _cgroup_file(runtime, handle, "pids", "cgroup.procs")
    return {int(line) for line in (raw or "").split()}


def _still_serves(runtime, handle) -> None:
    assert runtime.executor(handle).health()["status"] == "ok"
    out = run_code(runtime, handle, "print(6 * 7)")
    assert out.status == "completed" and out.stdout == "42\n", out


@pytest.mark.parametrize(
    "language,code",
    [
        (
            "python",
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        ),
        ("shell", ":(){ :|:& };:\nsleep 10\n"),
    ],
)
def test_a_fork_bomb_is_stopped_by_the_process_limit(process_runtime, make_sandbox, language, code):
    handle = make_sandbox(max_processes=64)
    if not process_runtime.cgroups.available and os.geteuid() == 0:
        pytest.skip("root without a pids cgroup has no process limit (RLIMIT_NPROC does not bind root)")
    baseline = _cgroup_procs(process_runtime, handle)
    started = time.monotonic()
    out = run_code(process_runtime, handle, code, language=language, timeout=3)
    assert time.monotonic() - started < 15
    assert out.status in ("timeout", "failed", "crashed"), out.result
    events = _cgroup_file(process_runtime, handle, "pids", "pids.events")
    uid = read_record(process_runtime.session_dir(handle.session_id))["uid"]
    if events is not None and uid == 0:
        assert int(events.split()[-1]) > 0  # the bomb did hit pids.max: the limit, not luck, stopped it
    # A session with a host uid of its own meets RLIMIT_NPROC (max_processes) before pids.max: either way a
    # limit, not luck, stopped it, and nothing of it is left below.
    deadline = time.monotonic() + 5
    while _cgroup_procs(process_runtime, handle) != baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _cgroup_procs(process_runtime, handle) == baseline  # not one bomb process is left
    _still_serves(process_runtime, handle)


def test_a_memory_hog_is_killed_and_the_session_survives(process_runtime, make_sandbox):
    handle = make_sandbox(memory_mb=256)
    out = run_code(
        process_runtime, handle, "x = bytearray(4 * 1024 ** 3)\nprint('allocated', len(x))", timeout=30
    )
    assert "allocated" not in out.stdout
    assert out.status == "crashed" or (
        out.status == "failed" and "MemoryError" in (out.result.error or "")
    ), out.result
    peak = _cgroup_file(process_runtime, handle, "memory", "memory.max_usage_in_bytes")
    if peak is not None:
        assert int(peak) <= 256 * 1024 * 1024
    _still_serves(process_runtime, handle)


def test_a_busy_loop_times_out_on_time_and_leaves_no_process(process_runtime, make_sandbox):
    handle = make_sandbox()
    baseline = _cgroup_procs(process_runtime, handle)
    started = time.monotonic()
    out = run_code(process_runtime, handle, "while True:\n    pass\n", timeout=2)
    elapsed = time.monotonic() - started
    assert out.status == "timeout", out.result
    assert elapsed < 3.0
    listing = run_code(
        process_runtime, handle, "import os\nprint(len([p for p in os.listdir('/proc') if p.isdigit()]))"
    )
    procs_after = _cgroup_procs(process_runtime, handle)
    if baseline:
        # The listing's own child has exited by now: exactly the daemon's processes remain.
        assert procs_after == baseline
    assert int(listing.stdout) <= 5  # bwrap's init, the daemon, its zygote, the listing itself (+ its fork)
    _still_serves(process_runtime, handle)


def test_fifty_mebibytes_of_output_is_truncated_and_the_executor_stays_responsive(
    process_runtime, make_sandbox
):
    handle = make_sandbox()
    started = time.monotonic()
    out = run_code(
        process_runtime,
        handle,
        "import sys\nchunk = 'x' * (1024 * 1024)\nfor _ in range(50):\n    sys.stdout.write(chunk)\n",
        timeout=60,
    )
    assert out.status == "completed", out.result
    assert out.result.metrics.stdout_truncated is True
    assert 0 < len(out.stdout) <= 1024 * 1024
    assert time.monotonic() - started < 20
    health_started = time.monotonic()
    _still_serves(process_runtime, handle)
    assert time.monotonic() - health_started < 2


def test_a_request_without_the_token_gets_401(process_runtime, make_sandbox):
    handle = make_sandbox()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(handle.endpoint)
    conn = http.client.HTTPConnection("localhost")
    conn.sock = sock
    conn.request(
        "POST",
        "/execute",
        body=b'{"execution_id":"x","language":"python","code":"print(1)"}',
        headers={"Content-Type": "application/json"},
    )
    assert conn.getresponse().status == 401
    conn.close()
    with pytest.raises(RuntimeFailure) as info:
        ExecutorClient(handle.endpoint, "not-the-token").health()
    assert info.value.permanent and "401" in info.value.message
    _still_serves(process_runtime, handle)
