"""Resource abuse inside a Docker sandbox: each is contained by the container's limits, and the session survives.

Fork bombs meet the pids cgroup, memory hogs the memory cgroup (no swap), disk fillers the workspace's own
file system, runaway CPU and output the executor; every test then runs a normal execution to prove the
sandbox still serves.
"""

from __future__ import annotations

import http.client
import socket
import time

import pytest

from runtime.base import RuntimeFailure
from runtime.client import ExecutorClient
from runtime.tests.conftest import run_code
from runtime.tests.test_docker_support import PYTHON_IMAGE, Sandboxes, engine, require


@pytest.fixture
def sbx(data_dir):
    require(PYTHON_IMAGE)
    with Sandboxes(data_dir) as sandboxes:
        yield sandboxes


def _still_serves(sbx, handle) -> None:
    assert sbx.runtime.executor(handle).health()["status"] == "ok"
    out = run_code(sbx.runtime, handle, "print(6 * 7)")
    assert out.status == "completed" and out.stdout == "42\n", out.result


def _processes(handle) -> list[str]:
    """The container's processes as `docker top` sees them from the host (command lines)."""
    top = engine().api.top(handle.sandbox_id, ps_args="-o pid,args")
    return [row[-1] for row in top["Processes"]]


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
def test_a_fork_bomb_is_stopped_by_the_pids_limit(sbx, language, code):
    handle = sbx.make(max_processes=64)
    baseline = len(_processes(handle))
    started = time.monotonic()
    out = run_code(sbx.runtime, handle, code, language=language, timeout=3)
    assert time.monotonic() - started < 15
    assert out.status in ("timeout", "failed", "crashed"), out.result
    failcnt = (
        engine()
        .containers.get(handle.sandbox_id)
        .exec_run(["cat", "/sys/fs/cgroup/pids/pids.events"])
        .output.decode()
    )
    if failcnt.startswith("max"):  # cgroup v1/v2 pids.events: the bomb hit pids.max, the limit stopped it
        assert int(failcnt.split()[-1]) > 0
    deadline = time.monotonic() + 5
    while len(_processes(handle)) > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_processes(handle)) == baseline  # not one bomb process is left
    _still_serves(sbx, handle)


@pytest.mark.parametrize(
    "code",
    [
        "x = bytearray(4 * 1024 ** 3)\nprint('allocated', len(x))",
        "chunks = []\nwhile True:\n    chunks.append(b'x' * (16 * 1024 * 1024))\n",  # touched page by page
    ],
)
def test_a_memory_hog_is_killed_and_the_session_survives(sbx, code):
    handle = sbx.make(memory_mb=256)
    out = run_code(sbx.runtime, handle, code, timeout=30)
    assert "allocated" not in out.stdout
    error = out.result.error or ""
    if out.status == "failed":  # the allocation itself was refused
        assert "MemoryError" in error, out.result
    else:  # the cgroup's OOM killer ended it, and the result says so
        assert out.status == "crashed" and "memory" in error.lower(), out.result
    state = sbx.runtime.inspect(handle)
    assert state.running and state.memory_mb is not None and state.memory_mb < 256
    _still_serves(sbx, handle)


def test_a_busy_loop_times_out_on_time_and_leaves_no_process(sbx):
    handle = sbx.make()
    baseline = sorted(_processes(handle))
    started = time.monotonic()
    out = run_code(sbx.runtime, handle, "while True:\n    pass\n", timeout=2)
    assert out.status == "timeout", out.result
    assert time.monotonic() - started < 3.0
    assert sorted(_processes(handle)) == baseline  # tini, the executor and its zygote: nothing else
    _still_serves(sbx, handle)


def test_fifty_mebibytes_of_output_is_truncated_and_the_executor_stays_responsive(sbx):
    handle = sbx.make()
    started = time.monotonic()
    out = run_code(
        sbx.runtime,
        handle,
        "import sys\nchunk = 'x' * (1024 * 1024)\nfor _ in range(50):\n    sys.stdout.write(chunk)\n",
        timeout=60,
    )
    assert out.status == "completed", out.result
    assert out.result.metrics.stdout_truncated is True
    assert 0 < len(out.stdout) <= 1024 * 1024
    assert time.monotonic() - started < 20
    health_started = time.monotonic()
    _still_serves(sbx, handle)
    assert time.monotonic() - health_started < 2


def test_a_request_without_the_token_gets_401(sbx):
    handle = sbx.make()
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
    _still_serves(sbx, handle)


@pytest.mark.parametrize(
    "language,code",
    [
        (
            "python",
            "with open('big', 'wb') as fh:\n    while True:\n        fh.write(b'x' * (1024 * 1024))\n",
        ),
        ("shell", "dd if=/dev/zero of=big bs=1M count=200 2>&1; echo dd-exit=$?; rm -f big"),
    ],
)
def test_writing_past_the_disk_limit_fails_with_enospc_and_the_session_survives(sbx, language, code):
    handle = sbx.make(disk_mb=64, memory_mb=256)
    out = run_code(sbx.runtime, handle, code, language=language, timeout=30)
    assert "No space left on device" in out.stdout + out.stderr + (out.result.error or ""), out.result
    assert out.status == ("failed" if language == "python" else "completed"), out.result
    cleanup = run_code(
        sbx.runtime,
        handle,
        "import os\nsize = os.path.getsize('big') if os.path.exists('big') "
        "else 0\nprint(size <= 64 * 1024 * 1024)\nif size: os.remove('big')",
    )
    assert cleanup.stdout == "True\n"
    _still_serves(sbx, handle)
    # The space is free again: the limit is the file system's, not a count that only grows.
    again = run_code(sbx.runtime, handle, "open('ok', 'wb').write(b'x' * (32 * 1024 * 1024))\nprint('ok')")
    assert again.status == "completed" and again.stdout == "ok\n", again.result
