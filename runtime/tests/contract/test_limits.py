"""Resource abuse inside a sandbox, on every backend: each is stopped by a limit, nothing of it is left, and
the sandbox still serves.

Fork bombs meet the process limit, memory hogs the memory limit (no swap), disk fillers the workspace's own
file system, a CPU hog its CPU quota, runaway output the executor's cap, a busy loop its timeout.
"""

from __future__ import annotations

import pytest

from runtime.tests.conftest import run_code
from runtime.tests.contract.conftest import still_serves
from sandbox_site.testing import wait_until


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
def test_a_fork_bomb_is_stopped_by_the_process_limit_and_leaves_no_process(backend, language, code):
    handle = backend.make(max_processes=64)
    if backend.name == "process" and not backend.runtime.cgroups.available and backend.runtime.privileged:
        pytest.skip("root without a pids cgroup has no process limit (RLIMIT_NPROC does not bind root)")
    baseline = backend.processes(handle)
    out = run_code(backend.runtime, handle, code, language=language, timeout=1.5)
    assert out.status in ("timeout", "failed", "crashed"), out.result
    hits = backend.pids_limit_hits(handle)
    if hits is not None:
        assert hits > 0  # the bomb did hit the pids limit: the limit, not luck, stopped it
    wait_until(lambda: backend.processes(handle) == baseline, what="every bomb process to be gone")
    still_serves(backend, handle)


@pytest.mark.parametrize(
    "code",
    [
        "x = bytearray(4 * 1024 ** 3)\nprint('allocated', len(x))",
        "chunks = []\nwhile True:\n    chunks.append(b'x' * (16 * 1024 * 1024))\n",  # touched page by page
    ],
)
def test_a_memory_hog_is_killed_and_the_session_survives(backend, code):
    handle = backend.make(memory_mb=256)
    out = run_code(backend.runtime, handle, code, timeout=30)
    assert "allocated" not in out.stdout
    if out.status == "failed":  # the allocation itself was refused
        assert "MemoryError" in (out.result.error or ""), out.result
    else:  # the memory limit's OOM killer ended it, and the result says so
        assert out.status == "crashed" and "memory" in (out.result.error or "").lower(), out.result
    state = backend.runtime.inspect(handle)
    assert state.running and state.memory_mb is not None and state.memory_mb < 256
    peak = backend.peak_memory_bytes(handle)
    if peak is not None:
        assert peak <= 256 * 1024 * 1024
    still_serves(backend, handle)


def test_a_busy_loop_in_any_language_times_out_keeping_its_output_and_leaves_no_process(backend):
    handle = backend.make(image="node")
    baseline = backend.processes(handle)
    for language, code in (
        ("python", "print('start', flush=True)\nwhile True:\n    pass\n"),
        ("javascript", "console.log('start');\nwhile (true) {}"),
    ):
        out = run_code(backend.runtime, handle, code, language=language, timeout=1)
        assert out.status == "timeout" and "timeout" in (out.result.error or ""), out.result
        assert out.stdout == "start\n"  # what it printed before is kept
        # The executor, its zygote and the sandbox's init: nothing of the execution is left.
        wait_until(lambda: backend.processes(handle) == baseline, what=f"the timed-out {language} code to go")
    listing = run_code(
        backend.runtime, handle, "import os\nprint(len([p for p in os.listdir('/proc') if p.isdigit()]))"
    )
    assert int(listing.stdout) <= 5  # init, the executor, its zygote, the listing itself (+ its fork)
    still_serves(backend, handle)


def test_a_cpu_hog_gets_no_more_than_its_cpu_quota(backend):
    # A quota caps the share: on a busy host the share only falls, so the bound holds on any machine.
    handle = backend.make(cpu=0.25)
    out = run_code(
        backend.runtime,
        handle,
        """
import time
wall, cpu = time.monotonic(), time.process_time()
while time.monotonic() - wall < 1.0:
    pass
print((time.process_time() - cpu) / (time.monotonic() - wall))
""",
    )
    assert out.status == "completed", out.result
    assert 0 < float(out.stdout) < 0.35, out.stdout


def test_fifty_mebibytes_of_output_is_truncated_and_the_executor_stays_responsive(backend):
    handle = backend.make()
    out = run_code(
        backend.runtime,
        handle,
        "import sys\nchunk = 'x' * (1024 * 1024)\nfor _ in range(50):\n    sys.stdout.write(chunk)\n",
        timeout=60,
    )
    assert out.status == "completed", out.result
    assert out.result.metrics.stdout_truncated is True
    assert 0 < len(out.stdout) <= 1024 * 1024
    still_serves(backend, handle)


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
def test_writing_past_the_disk_limit_fails_clearly_and_the_space_comes_back(backend, language, code):
    if problem := backend.disk_limit_problem():
        pytest.skip(problem)
    handle = backend.make(disk_mb=64, memory_mb=256)
    out = run_code(backend.runtime, handle, code, language=language, timeout=30)
    said = out.stdout + out.stderr + (out.result.error or "")
    assert any(message in said for message in backend.disk_full_messages), out.result
    assert out.status == ("failed" if language == "python" else "completed"), out.result
    cleanup = run_code(
        backend.runtime,
        handle,
        "import os\nsize = os.path.getsize('big') if os.path.exists('big') "
        "else 0\nprint(size <= 64 * 1024 * 1024)\nif size: os.remove('big')",
    )
    assert cleanup.stdout == "True\n"
    still_serves(backend, handle)
    # The space is free again: the limit is the file system's, not a count that only grows.
    again = run_code(
        backend.runtime, handle, "open('ok', 'wb').write(b'x' * (32 * 1024 * 1024))\nprint('ok')"
    )
    assert again.status == "completed" and again.stdout == "ok\n", again.result


def test_the_disk_limit_is_a_total_across_files(backend, shared):
    if problem := backend.disk_limit_problem():
        pytest.skip(problem)
    handle = backend.make(disk_mb=64)
    out = run_code(
        backend.runtime,
        handle,
        """
open("/workspace/small.txt", "w").write("fine")
written = 0
chunk = b"x" * (1 << 20)
try:
    for i in range(40):
        with open(f"/workspace/part{i}", "wb") as fh:
            for _ in range(4):
                fh.write(chunk)
                written += len(chunk)
except OSError as exc:
    print("stopped", exc.strerror)
print(written >> 20)
print(open("/workspace/small.txt").read())
""",
        timeout=60,
    )
    if backend.disk_total_by_eviction:
        # No write fails (each file is under the per-file cap): the kubelet evicts the sandbox, which then
        # reads as ended with the reason, and the control plane goes on serving the others.
        assert out.status in ("completed", "crashed"), out.result

        def ended():
            state = backend.runtime.inspect(handle)
            return None if state.running else state

        # The kubelet measures volumes once a minute and acts on them every 10 s.
        state = wait_until(
            ended, timeout=150, interval=1, what="the sandbox past its disk limit to be evicted"
        )
        assert "Evicted" in state.detail and "workspace" in state.detail, state
        still_serves(backend, shared)
        return
    assert out.status == "completed", out.result
    stopped, total, small = out.stdout.split("\n")[:3]
    assert stopped == "stopped No space left on device"
    assert int(total) < 70 and small == "fine"  # many small files add up to the one limit
