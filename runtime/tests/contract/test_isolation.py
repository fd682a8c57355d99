"""Attacks from inside a sandbox, on every backend: network, host files, other sessions, writes outside the
workspace, processes, privileges, the executor's token and its socket.

Each test runs hostile code as a session would and checks, from inside and from the host, that it achieved
nothing. Attacks that leave nothing behind share one sandbox per module.
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import socket

import pytest

from runtime.base import RuntimeFailure
from runtime.tests.conftest import run_code
from runtime.tests.contract.conftest import run_json, still_serves

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.fixture
def listeners():
    """TCP servers on the host's loopback and on every address (so a bridge gateway would answer too)."""
    servers = []
    for host in ("127.0.0.1", "0.0.0.0"):
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind((host, 0))
        server.listen(8)
        server.setblocking(False)
        servers.append(server)
    yield servers
    for server in servers:
        server.close()


def test_sandboxed_code_cannot_reach_a_tcp_server_on_the_host_or_resolve_names(backend, shared, listeners):
    loopback, anywhere = (server.getsockname()[1] for server in listeners)
    probe = socket.create_connection(("127.0.0.1", loopback), timeout=2)  # the server does answer the host
    listeners[0].accept()[0].close()
    probe.close()
    targets = [
        ("127.0.0.1", loopback),
        ("127.0.0.1", anywhere),
        ("172.17.0.1", anywhere),  # Docker's default bridge gateway
        ("10.0.2.2", anywhere),  # a VM's host
        ("1.1.1.1", 443),
        ("1.1.1.1", loopback),
    ]
    results = run_json(
        backend,
        shared,
        f"""
import json, socket
results = {{}}
for host, port in {targets!r}:
    try:
        socket.create_connection((host, port), timeout=2).close()
        results[f"{{host}}:{{port}}"] = "CONNECTED"
    except OSError as exc:
        results[f"{{host}}:{{port}}"] = type(exc).__name__
try:
    socket.getaddrinfo("pypi.org", 443)
    results["dns"] = "RESOLVED"
except OSError as exc:
    results["dns"] = type(exc).__name__
print(json.dumps(results))
""",
    )
    assert len(results) == len(targets) + 1
    assert "CONNECTED" not in results.values() and results["dns"] != "RESOLVED", results
    for server in listeners:
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing from the sandbox arrived


def test_the_only_network_interface_up_is_loopback_and_there_is_no_route(backend, shared):
    seen = run_json(
        backend,
        shared,
        """
import fcntl, json, os, socket, struct
dev = [line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]]
sys_net = sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else ["lo"]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
up = []
for _, name in socket.if_nameindex():
    request = struct.pack("16sH22x", name.encode(), 0)
    if struct.unpack("16sH22x", fcntl.ioctl(sock, 0x8913, request))[1] & 1:  # SIOCGIFFLAGS, IFF_UP
        up.append(name)
routes = [line.split()[0] for line in open("/proc/net/route").read().splitlines()[1:]]
routes6 = [line.split()[-1] for line in open("/proc/net/ipv6_route").read().splitlines()] if os.path.exists(
    "/proc/net/ipv6_route") else []
print(json.dumps({"sys": sys_net, "proc": sorted(dev), "if": sorted(name for _, name in socket.if_nameindex()),
                  "up": sorted(up), "routes": routes, "routes6": sorted(set(routes6))}))
""",
    )
    assert seen["up"] == ["lo"], seen
    assert seen["routes"] == [] and set(seen["routes6"]) <= {"lo"}, seen  # nothing leaves but through lo
    for listing in ("sys", "proc", "if"):
        assert "lo" in seen[listing] and set(seen[listing]) - {"lo"} <= backend.downed_interfaces, seen


def test_the_code_runs_unprivileged_with_no_capabilities_and_a_seccomp_filter(backend, shared):
    status = run_json(
        backend,
        shared,
        """
import json, os
fields = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
print(json.dumps({"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
                  **{k: fields[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                                                    "NoNewPrivs", "Seccomp")}}))
""",
    )
    uid = backend.sandbox_uid(shared)
    assert uid != 0 and status["uid"] == status["euid"] == uid and status["gid"] == uid
    assert 0 not in status["groups"]
    for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[name], 16) == 0, (name, status)
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"  # a seccomp filter is on


WRITE_PROBE = """
import errno, json, os
results = {}
for path in PATHS:
    try:
        with open(path, "a") as fh:
            fh.write("x")
        results[path] = "WROTE"
    except OSError as exc:
        found = os.path.isdir(os.path.dirname(path))
        results[path] = errno.errorcode.get(exc.errno, str(exc.errno)) if found else "no directory"
root = [line.split() for line in open("/proc/mounts") if line.split()[1] == "/"][-1]
results["root mount"] = root[3].split(",")[0]
print(json.dumps(results))
"""


def _try_writes(backend, handle, paths: list[str]) -> dict[str, str]:
    """path -> "WROTE", or why the write failed (the errno's name, "no directory" where the parent is
    missing); "root mount" -> how / is mounted."""
    return run_json(backend, handle, f"PATHS = {paths!r}\n" + WRITE_PROBE)


def test_the_root_filesystem_is_read_only_even_where_permissions_would_allow(backend, shared):
    results = _try_writes(
        backend, shared, ["/var/tmp/x", "/evil", "/opt/sandbox/evil", "/run/lock/x", "/usr/evil", "/etc/evil"]
    )
    assert results.pop("root mount") == "ro"
    # Where the directory exists, only the read-only mount stops the write (/var/tmp is world-writable).
    assert set(results.values()) <= {"EROFS", "no directory"}, results
    assert results["/evil"] == results["/opt/sandbox/evil"] == results["/usr/evil"] == "EROFS"


def test_sandboxed_code_can_write_only_its_workspace_tmp_and_its_own_scratch(backend, shared):
    results = _try_writes(
        backend,
        shared,
        [
            "/workspace/ok.txt",
            "/tmp/ok.txt",
            "/dev/shm/ok",
            "/evil.txt",
            "/usr/evil.txt",
            "/etc/evil.txt",
            "/etc/passwd",
            "/opt/sandbox/executor/evil.py",
            "/opt/packages/evil.py",
            "/run/sandbox/evil",
            "/var/evil.txt",
            "/home/evil.txt",
            "/dev/evil",
            "/proc/sys/kernel/hostname",
            "/sys/evil",
        ],
    )
    results.pop("root mount")
    assert results.pop("/workspace/ok.txt") == "WROTE" and results.pop("/tmp/ok.txt") == "WROTE"
    # /dev/shm is a size-limited, memory-backed tmpfs like /tmp (POSIX semaphores, multiprocessing need it).
    assert results.pop("/dev/shm/ok") == "WROTE"
    for scratch in backend.own_scratch:
        results = {path: value for path, value in results.items() if not path.startswith(scratch + "/")}
    if backend.name == "process" and os.geteuid() != 0:
        results.pop("/run/sandbox/evil")  # only root can hand the run dir to nobody after the socket exists
    assert "WROTE" not in results.values(), results
    # From the control plane: nothing landed outside the workspace, and the workspace is its view too.
    assert not os.path.exists("/evil.txt") and not os.path.exists("/dev/evil")
    assert backend.read_workspace_file(backend.runtime, shared, "ok.txt") is not None
    assert backend.run_dir_entries(shared) in (["executor.sock"], None)  # None: nothing of it in the sandbox
    assert backend.packages_entries(shared) == []


def test_sandboxed_code_cannot_read_host_files_the_project_or_the_data_dir(backend, shared):
    paths = [
        "/etc/shadow",
        "/etc/gshadow",
        "/etc/ssl/private/ssl-cert-snakeoil.key",
        "/root/.bash_history",
        os.path.abspath(__file__),
        os.path.join(PROJECT, "pyproject.toml"),
        os.path.join(PROJECT, "runtime", "process", "backend.py"),
        backend.data_dir,
        *backend.private_paths(shared),
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/var/lib/docker",
    ]
    results = run_json(
        backend,
        shared,
        f"""
import json, os
results = {{}}
for path in {paths!r}:
    try:
        with open(path, "rb") as fh:
            results[path] = "READ " + fh.read(16).hex()
    except OSError as exc:
        results[path] = type(exc).__name__
results["shadow readable"] = os.access("/etc/shadow", os.R_OK)
results["project"] = os.path.exists({PROJECT!r})
results["data dir"] = os.path.exists({backend.data_dir!r})
try:
    results["/root"] = os.listdir("/root")
except OSError as exc:
    results["/root"] = type(exc).__name__
results["/opt/sandbox"] = sorted(os.listdir("/opt/sandbox"))
print(json.dumps(results))
""",
    )
    assert results.pop("/opt/sandbox") == ["executor"]  # the executor package and nothing else of the project
    assert results.pop("shadow readable") is False
    assert results.pop("project") is False and results.pop("data dir") is False
    assert results.pop("/root") in ("FileNotFoundError", "PermissionError")
    assert not any(value.startswith("READ") for value in results.values()), results
    assert results[os.path.abspath(__file__)] == "FileNotFoundError"
    assert results["/var/run/docker.sock"] == "FileNotFoundError"


def test_a_session_cannot_find_or_read_another_sessions_workspace(backend):
    a, b = backend.make(), backend.make()
    secret = "s3cret-" + os.urandom(8).hex()
    written = run_code(backend.runtime, b, f"open('secret-of-b.txt', 'w').write({secret!r}); print('ok')")
    assert written.stdout == "ok\n"
    assert backend.read_workspace_file(backend.runtime, b, "secret-of-b.txt") == secret.encode()
    # Where b's workspace is a host directory, a must not find it there either.
    b_workspace = backend.host_workspace(backend.runtime, b) or "/nonexistent-host-workspace"
    out = run_code(
        backend.runtime,
        a,
        f"""
import os
found = []
for dirpath, dirnames, filenames in os.walk("/"):
    if dirpath in ("/proc", "/sys", "/usr", "/dev"):
        dirnames[:] = []
        continue
    found += [os.path.join(dirpath, f) for f in filenames if "secret-of-b" in f]
print("found:", found)
print(os.path.exists({b_workspace!r}), os.listdir("/workspace"))
""",
        timeout=60,
    )
    assert out.status == "completed", out.result
    assert out.stdout == "found: []\nFalse []\n"
    assert secret not in out.stdout


def test_sandboxed_code_sees_only_its_own_processes(backend, shared):
    seen = run_json(
        backend,
        shared,
        """
import json, os
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
print(json.dumps({"pids": pids, "init": open("/proc/1/cmdline", "rb").read().split(b"\\0")[0].decode()}))
""",
    )
    assert 1 <= len(seen["pids"]) <= 8 and max(seen["pids"]) < 100, seen
    assert os.getpid() not in seen["pids"] or os.getpid() < 100  # this test's own process is not among them
    # pid 1 is the sandbox's own init (bubblewrap's reaper, the container's tini), not the host's.
    assert os.path.basename(seen["init"]) == backend.init_command


def test_the_token_is_invisible_to_sandboxed_code_and_kept_nowhere_on_the_host(backend, shared):
    out = run_code(
        backend.runtime,
        shared,
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
    assert out.status == "completed", out.result
    assert shared.token not in out.stdout and shared.token not in out.stderr
    assert "SANDBOX_EXECUTOR_TOKEN" not in out.stdout
    run_line = next(line for line in out.stdout.splitlines() if line.startswith("RUN "))
    assert run_line.removeprefix("RUN ") in backend.run_dir_views, run_line
    assert backend.data_dir not in out.stdout  # no host path reaches the sandbox's view
    # The token file was read and removed (a remote backend keeps no run dir in the sandbox).
    assert backend.run_dir_entries(shared) in (["executor.sock"], None)
    assert shared.token not in backend.host_record(shared)


def test_a_request_without_the_token_gets_401(backend, shared):
    sock = backend.connect_raw(shared)
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
        backend.runtime.executor(dataclasses.replace(shared, token="not-the-token")).health()
    assert info.value.permanent and "401" in info.value.message
    still_serves(backend, shared)
