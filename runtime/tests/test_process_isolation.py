"""Attacks from inside a ProcessRuntime sandbox under real bubblewrap: network, files, processes, the token.

Each test runs hostile code as a session would and checks, from the host, that it achieved nothing.
"""

from __future__ import annotations

import json
import os
import socket

import pytest

from runtime.process.record import read_record
from runtime.tests.conftest import needs_bwrap, run_code

pytestmark = needs_bwrap

PROBE_PATHS = """
import json, os
results = {}
for path in PATHS:
    try:
        with open(path, "rb") as fh:
            results[path] = "READ " + fh.read(64).hex()
    except OSError as exc:
        results[path] = type(exc).__name__
print(json.dumps(results))
"""


def _probe(runtime, handle, paths):
    out = run_code(runtime, handle, f"PATHS = {paths!r}\n" + PROBE_PATHS)
    assert out.status == "completed", out
    return json.loads(out.stdout)


@pytest.fixture
def listener():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


def test_sandboxed_code_cannot_reach_a_tcp_server_on_the_hosts_loopback(
    process_runtime, make_sandbox, listener
):
    port = listener.getsockname()[1]
    probe = socket.create_connection(("127.0.0.1", port), timeout=2)  # the server does answer the host
    listener.accept()[0].close()
    probe.close()
    handle = make_sandbox()
    out = run_code(
        process_runtime,
        handle,
        f"""
import socket
for host in ("127.0.0.1", "10.0.2.2", "1.1.1.1"):
    try:
        socket.create_connection((host, {port}), timeout=2).close()
        print(host, "CONNECTED")
    except OSError as exc:
        print(host, "blocked", type(exc).__name__)
try:
    socket.getaddrinfo("pypi.org", 443)
    print("dns RESOLVED")
except OSError:
    print("dns blocked")
print(sorted(name for _, name in socket.if_nameindex()))
""",
    )
    assert out.status == "completed", out
    assert "CONNECTED" not in out.stdout and "RESOLVED" not in out.stdout
    assert out.stdout.count("blocked") == 4
    assert out.stdout.strip().endswith("['lo']")  # a network namespace of its own, loopback only
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing from the sandbox arrived


def test_sandboxed_code_cannot_read_host_secrets_the_project_or_the_data_dir(process_runtime, make_sandbox):
    handle = make_sandbox()
    here = os.path.abspath(__file__)
    project = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    meta = os.path.join(process_runtime.session_dir(handle.session_id), "sandbox.json")
    paths = [
        "/etc/shadow",
        "/etc/gshadow",
        "/etc/ssl/private/ssl-cert-snakeoil.key",
        "/root/.bash_history",
        here,
        os.path.join(project, "pyproject.toml"),
        os.path.join(project, "runtime", "process.py"),
        meta,
        os.path.join(process_runtime.session_dir(handle.session_id), "executor.log"),
    ]
    results = _probe(process_runtime, handle, paths)
    assert all(not value.startswith("READ") for value in results.values()), results
    out = run_code(
        process_runtime,
        handle,
        f"""
import os
print(os.path.exists({project!r}), os.path.exists({process_runtime.data_dir!r}), os.path.exists("/root"))
print(sorted(os.listdir("/etc")))
print(sorted(os.listdir("/opt/sandbox")))
""",
    )
    lines = out.stdout.splitlines()
    assert lines[0] == "False False False"
    assert "shadow" not in lines[1] and "passwd" in lines[1]
    assert lines[2] == "['executor']"  # the executor package and nothing else of the project


def test_a_session_cannot_find_or_read_another_sessions_workspace(process_runtime, make_sandbox):
    a, b = make_sandbox(), make_sandbox()
    secret = "s3cret-" + os.urandom(8).hex()
    written = run_code(process_runtime, b, f"open('secret-of-b.txt', 'w').write({secret!r}); print('ok')")
    assert written.stdout == "ok\n"
    b_workspace = process_runtime.workspace_dir(b.session_id)
    assert os.path.exists(os.path.join(b_workspace, "secret-of-b.txt"))
    out = run_code(
        process_runtime,
        a,
        f"""
import os
found = []
for top in ("/", ):
    for dirpath, dirnames, filenames in os.walk(top):
        if dirpath in ("/proc", "/sys", "/usr", "/dev"):
            dirnames[:] = []
            continue
        found += [os.path.join(dirpath, f) for f in filenames if "secret-of-b" in f]
print("found:", found)
print(os.path.exists({b_workspace!r}), os.listdir("/workspace"))
""",
        timeout=30,
    )
    assert out.status == "completed", out
    assert out.stdout == "found: []\nFalse []\n"
    assert secret not in out.stdout


def test_sandboxed_code_can_write_only_its_workspace_and_tmp(process_runtime, make_sandbox):
    handle = make_sandbox()
    targets = [
        "/workspace/ok.txt",
        "/tmp/ok.txt",
        "/evil.txt",
        "/usr/evil.txt",
        "/etc/evil.txt",
        "/etc/passwd",
        "/opt/sandbox/executor/evil.py",
        "/opt/packages/evil.py",
        "/run/sandbox/evil",
        "/var/evil.txt",
        "/home/evil.txt",
    ]
    out = run_code(
        process_runtime,
        handle,
        f"""
import json
results = {{}}
for path in {targets!r}:
    try:
        with open(path, "a") as fh:
            fh.write("x")
        results[path] = "WROTE"
    except OSError as exc:
        results[path] = type(exc).__name__
print(json.dumps(results))
""",
    )
    results = json.loads(out.stdout)
    assert results.pop("/workspace/ok.txt") == "WROTE" and results.pop("/tmp/ok.txt") == "WROTE"
    if os.geteuid() != 0:  # only root can hand the run dir to nobody after the socket exists
        results.pop("/run/sandbox/evil")
    assert "WROTE" not in results.values(), results
    assert not os.path.exists("/evil.txt") and not os.path.exists("/tmp/ok.txt")


def test_sandboxed_code_sees_only_its_own_processes(process_runtime, make_sandbox):
    handle = make_sandbox()
    out = run_code(
        process_runtime,
        handle,
        """
import os
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
print(pids)
print(open("/proc/1/cmdline", "rb").read().split(b"\\0")[0].decode())
""",
    )
    lines = out.stdout.splitlines()
    pids = json.loads(lines[0])
    assert 1 <= len(pids) <= 8 and max(pids) < 100, pids
    assert os.getpid() not in pids
    assert (
        os.path.basename(lines[1]) == "bwrap"
    )  # pid 1 is bwrap's reaper in a pid namespace, not the host's init


def test_the_token_is_invisible_to_sandboxed_code(process_runtime, make_sandbox):
    handle = make_sandbox()
    out = run_code(
        process_runtime,
        handle,
        """
import os
print("ENV", dict(os.environ))
try:
    print("RUN", os.listdir("/run/sandbox"))
except OSError as exc:
    print("RUN", type(exc).__name__)
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    for name in ("environ", "cmdline", "mem"):
        try:
            with open(f"/proc/{pid}/{name}", "rb") as fh:
                data = fh.read(1 << 20) if name != "mem" else b"<mem readable>"
            print(pid, name, data)
        except OSError as exc:
            print(pid, name, type(exc).__name__)
""",
    )
    assert out.status == "completed", out
    assert handle.token not in out.stdout and handle.token not in out.stderr
    assert process_runtime.data_dir not in out.stdout  # bwrap's options (host paths) went through --args
    # The run dir is the control plane's once the executor listens: not even listable from inside.
    assert "RUN ['executor.sock']" in out.stdout or "RUN PermissionError" in out.stdout
    assert "SANDBOX_EXECUTOR_TOKEN" not in out.stdout
    run_dir = os.path.join(process_runtime.session_dir(handle.session_id), "run")
    assert os.listdir(run_dir) == ["executor.sock"]
    meta_text = json.dumps(read_record(process_runtime.session_dir(handle.session_id)))
    assert handle.token not in meta_text
